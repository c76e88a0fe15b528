"""fastcore kernels: compiled kernel vs pure-Python twin vs numpy vs memory copy.

Run with ``python -m benchmarks fastcore`` (or ``./dev bench fastcore``). Every figure
is measured in this run, the contenders interleaved round by round (these machines are
shared and noisy); the table shows the best round and the median, ratios use the best.
Timings are never asserted anywhere; this prints whether the issue's goals were met.

Aggregation: 10,000 loads (1 grid meter, 200 PV inverters, 100 batteries, consumers)
polled every 10 s in a fixed shuffled order, 100 polls = 1,000,000 samples of
(int32 load, float64 time, float64 W) = 20 bytes each, over 16:40 of a spring workday
(11:55–12:12, 2024-04-10) on the shipped Shandong 2024 calendar (five periods, the 2024
holidays), so the stream crosses a demand-window boundary (12:00; the period stays 深谷,
but every segment change looks up the day type and the period). The kernel is fed per poll
(10,000 samples per call, the way the controller feeds it) and as one batch. The numpy
contender is a vectorised formulation of the same aggregation (energy with zero
crossings and gaps, splitting at window/period boundaries, TOU energy and cost, per-load
window demand and maximum, per-window grid share and carbon) on the whole batch — its
best case; its results are checked against the kernel's. "memcpy" copies the same input
bytes (np.copyto of the three arrays into preallocated buffers).

Shedding: 1k / 10k / 100k loads (priorities 1..10, 80 % sheddable, 5 % locked out,
20 % in groups, some inside their minimum on-time), target = 20 % of the load.

分类分项 roll-up: 10,000 series (5 % uncoded) into the shipped code tree (21 codes, up
to three levels), once per 15-min window: kernel vs twin vs a numpy formulation
(np.bincount per code, then each code added to its parent, children first).
"""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from benchmarks.common import Results, print_goals
from controller.tariffs import DEFAULT_TARIFF, load_tariff
from drivers.energycodes import ancestors, energy_codes
from fastcore import _codes_py, _meter_py, _shed_py
from fastcore._common import (
    ROLE_GRID,
    MeterConfig,
    compile_tables,
)

CALENDAR = load_tariff(DEFAULT_TARIFF).calendar

try:
    from fastcore import _codes, _meter, _shed
except ImportError:  # pragma: no cover - reported in the output
    _codes = _meter = _shed = None  # type: ignore[assignment]

N_LOADS = 10_000
POLLS = 100
POLL_S = 10.0
START_S = 1_712_736_000.0 - 8 * 3600 + 11 * 3600 + 55 * 60  # 2024-04-10 11:55 local
ROUNDS = 5


def best_and_median(times: list[float]) -> tuple[float, float]:
    return min(times), statistics.median(times)


def timed(run: Callable[[], object]) -> Callable[[], float]:
    """A contender that is timed as a whole."""
    def contender() -> float:
        start = time.perf_counter()
        run()
        return time.perf_counter() - start
    return contender


def interleave(contenders: dict[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
    """Run each contender once per round, round after round. A contender returns the
    seconds it measured itself (so set-up can be left out of the timing)."""
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, run in contenders.items():
            times[name].append(run())
    return times


# ======================================================================= aggregation


def make_stream() -> tuple[npt.NDArray[np.int32], npt.NDArray[np.float64],
                           npt.NDArray[np.float64], npt.NDArray[np.int8]]:
    rng = np.random.default_rng(2024)
    roles = np.zeros(N_LOADS, dtype=np.int8)
    roles[0] = ROLE_GRID
    roles[1:201] = 1  # pv
    roles[201:301] = 3  # battery
    order = rng.permutation(N_LOADS).astype(np.int32)
    idx = np.tile(order, POLLS)
    base = np.repeat(START_S + POLL_S * np.arange(POLLS), N_LOADS)
    ts = base + rng.random(N_LOADS * POLLS) * 0.5  # response jitter
    level = rng.lognormal(7.0, 1.0, N_LOADS)  # ~1 kW typical
    level[roles[order] == 1] *= -3.0  # PV exports
    level[roles[order] == 3] *= np.where(rng.random(int((roles[order] == 3).sum())) < 0.5,
                                         1.0, -1.0)
    level[order == 0] = 2e6
    pw = np.tile(level, POLLS) * (1.0 + 0.05 * rng.standard_normal(N_LOADS * POLLS))
    return idx, ts, pw, roles


def meter_options(roles: npt.NDArray[np.int8]) -> dict[str, Any]:
    return {"roles": roles, "tariff": CALENDAR, "max_gap_s": 60.0,
            "emission_factor_kg_per_kwh": [0.55 + 0.01 * (h % 7) for h in range(24)]}


def numpy_aggregate(config: MeterConfig, idx: npt.NDArray[np.int32],
                    ts: npt.NDArray[np.float64],
                    pw: npt.NDArray[np.float64]) -> dict[str, npt.NDArray[np.float64]]:
    """The same aggregation as the kernel, vectorised, for one batch from a fresh state.

    Assumes each accepted interval crosses at most one segment boundary (true when
    max_gap_s is shorter than the shortest time-of-use period or demand window; checked).
    """
    tables = compile_tables(config)
    n = config.n_loads
    n_periods = tables.n_periods
    off = float(config.utc_offset_s)
    window_s = float(config.demand_window_s)
    # group by load, keeping arrival (= time) order; numpy radix-sorts 16-bit keys
    keys = idx.astype(np.uint16) if 0 <= n <= 65536 and idx.min() >= 0 else idx
    order = np.argsort(keys, kind="stable")
    li, ti, pi = idx[order], ts[order], pw[order]
    dt = ti[1:] - ti[:-1]
    ok = ((li[1:] == li[:-1]) & (dt > 0) & (dt <= config.max_gap_s)
          & np.isfinite(pi[1:]) & np.isfinite(pi[:-1]))
    load = li[1:][ok]
    t0, t1, p0, p1 = ti[:-1][ok], ti[1:][ok], pi[:-1][ok], pi[1:][ok]

    def context(t: npt.NDArray[np.float64]) -> tuple[Any, ...]:
        local = t + off
        day = np.floor(local / 86400.0)
        minute = np.clip(((local - day * 86400.0) / 60.0).astype(np.int64), 0, 1439)
        month = day.astype("datetime64[D]").astype("datetime64[M]").astype(np.int64) % 12
        season = tables.month_season[month]
        number = day.astype(np.int64)
        rel = number - tables.special_first
        listed = (rel >= 0) & (rel < tables.n_special)
        special = tables.special[np.where(listed, rel, 0)]
        kind = np.where(listed & (special >= 0), special,
                        np.where((number + 3) % 7 >= 5, 1, 0))  # holiday / weekend / workday
        profile = tables.day_profile[season * tables.n_day_types + kind]
        base = profile * 1440 + minute
        period = tables.minute_period[base]
        window = np.floor(local / window_s)
        end = np.minimum(day * 86400.0 + tables.next_change[base] * 60.0 - off,
                         (window + 1) * window_s - off)
        return (period, tables.prices[season * n_periods + period], window.astype(np.int64),
                end)

    period, price, window, seg_end = context(t0)
    cross = t1 > seg_end
    b = seg_end[cross]
    pb = p0[cross] + (p1[cross] - p0[cross]) * ((b - t0[cross]) / (t1[cross] - t0[cross]))
    period_b, price_b, window_b, end_b = context(b)
    if (t1[cross] > end_b).any():
        raise RuntimeError("numpy formulation: an interval crosses two boundaries")
    # pieces: [t0, min(t1, end)] in the start context, [b, t1] in the next one
    a_end = np.where(cross, seg_end, t1)
    a_p1 = p1.copy()
    a_p1[cross] = pb
    pa = np.concatenate([p0, pb])
    pz = np.concatenate([a_p1, p1[cross]])
    span = np.concatenate([a_end - t0, t1[cross] - b])
    who = np.concatenate([load, load[cross]])
    per = np.concatenate([period, period_b])
    cost = np.concatenate([price, price_b])
    win = np.concatenate([window, window_b])
    neg_a, neg_z = pa < 0, pz < 0
    frac = np.divide(pa, pa - pz, out=np.zeros_like(pa), where=neg_a != neg_z)
    both = neg_a == neg_z
    imp = np.where(both, np.where(neg_z, 0.0, (pa + pz) * span),
                   np.where(neg_a, pz * ((1 - frac) * span), pa * (frac * span))) / 7200.0
    exp = -np.where(both, np.where(neg_z, (pa + pz) * span, 0.0),
                    np.where(neg_a, pa * (frac * span), pz * ((1 - frac) * span))) / 7200.0
    result: dict[str, npt.NDArray[Any]] = {  # bincount of float weights: float64
        "import_wh": np.bincount(who, imp, n),
        "export_wh": np.bincount(who, exp, n),
        "tou_import_wh": np.bincount(who * n_periods + per, imp,
                                     n * n_periods).reshape(n, n_periods),
        "tou_cost_cny": np.bincount(who * n_periods + per, imp * cost / 1000.0,
                                    n * n_periods).reshape(n, n_periods),
    }
    # demand: per load and window; a load's window is complete once it has a later one
    w_min = int(win.min())
    n_w = int(win.max()) - w_min + 1
    energy = np.bincount(who * n_w + (win - w_min), imp, n * n_w).reshape(n, n_w)
    last = np.full(n, -1)
    np.maximum.at(last, who, win - w_min)
    complete = np.arange(n_w)[None, :] < last[:, None]
    kw = np.where(complete, energy * 3.6 / window_s, -np.inf)
    best = kw.max(axis=1)
    result["max_demand_kw"] = np.where(np.isfinite(best), best, np.nan)
    # carbon: grid share of each window, applied to every non-grid load's import
    grid = config.roles == ROLE_GRID
    is_grid = grid[who]
    slot = win - w_min
    gi = np.bincount(slot[is_grid], imp[is_grid], n_w)
    nexp = np.bincount(slot[~is_grid], exp[~is_grid], n_w)
    supply = gi + nexp
    g = np.divide(gi, supply, out=np.ones_like(gi), where=supply > 0)
    per_day = 86400 // config.demand_window_s
    ef = tables.window_ef[np.mod(np.arange(n_w) + w_min, per_day)]
    factor = np.where(is_grid, 1.0, g[slot]) * ef[slot]
    result["carbon_kg"] = np.bincount(who, imp * factor / 1000.0, n)
    return result


def bench_aggregation() -> list[tuple[str, bool, str]]:
    idx, ts, pw, roles = make_stream()
    samples = idx.shape[0]
    options = meter_options(roles)
    config = MeterConfig.create(N_LOADS, **options)
    polls: list[tuple[npt.NDArray[Any], ...]] = [
        (idx[k * N_LOADS:(k + 1) * N_LOADS], ts[k * N_LOADS:(k + 1) * N_LOADS],
         pw[k * N_LOADS:(k + 1) * N_LOADS]) for k in range(POLLS)]
    copies: list[npt.NDArray[Any]] = [np.empty_like(idx), np.empty_like(ts),
                                      np.empty_like(pw)]
    poll_copies = [np.empty_like(a) for a in polls[0]]

    def fed(module: Any, batches: list[tuple[Any, ...]]) -> Any:
        agg = module.MeterAggregator(N_LOADS, **options)
        for batch in batches:
            agg.add_samples(*batch)
        return agg

    def feeding(module: Any, batches: list[tuple[Any, ...]]) -> Callable[[], float]:
        def contender() -> float:  # constructing the aggregator is not timed
            agg = module.MeterAggregator(N_LOADS, **options)
            start = time.perf_counter()
            for batch in batches:
                agg.add_samples(*batch)
            return time.perf_counter() - start
        return contender

    sources: tuple[npt.NDArray[Any], ...] = (idx, ts, pw)

    def memcpy_whole() -> None:
        for source, target in zip(sources, copies, strict=True):
            np.copyto(target, source)

    def memcpy_per_poll() -> None:
        for batch in polls:
            for source, target in zip(batch, poll_copies, strict=True):
                np.copyto(target, source)

    # check first: the contenders compute the same figures
    whole = [(idx, ts, pw)]
    kernel = fed(_meter, whole)
    reference = numpy_aggregate(config, idx, ts, pw)
    totals = kernel.totals()
    agree = all(np.allclose(getattr(totals, name), value, rtol=1e-9, atol=1e-9,
                            equal_nan=True) for name, value in reference.items())
    twin_agrees = np.array_equal(fed(_meter_py, whole).totals().import_wh, totals.import_wh)
    per_poll_agrees = np.array_equal(fed(_meter, polls).totals().import_wh, totals.import_wh)
    print(f"aggregation: {N_LOADS} loads x {POLLS} polls = {samples:,} samples "
          f"({samples * 20 / 1e6:.0f} MB of input); results: numpy == kernel: {agree}, "
          f"twin == kernel: {twin_agrees}, per-poll == one batch: {per_poll_agrees}")
    setup = interleave({"construct": timed(lambda: _meter.MeterAggregator(N_LOADS, **options))},
                       ROUNDS)
    print(f"constructing a {N_LOADS}-load aggregator (not timed below, done once at start-up):"
          f" {min(setup['construct']) * 1e3:.2f} ms")
    fast = interleave({
        "kernel, per poll (10k/call)": feeding(_meter, polls),
        "kernel, one batch": feeding(_meter, whole),
        "numpy formulation, one batch": timed(lambda: numpy_aggregate(config, idx, ts, pw)),
        "memcpy, per poll": timed(memcpy_per_poll),
        "memcpy, one batch": timed(memcpy_whole),
    }, ROUNDS * 2)
    slow = interleave({"pure-Python twin, one batch": feeding(_meter_py, whole)}, 2)
    times = {**fast, **slow}
    rate = {name: samples / min(t) for name, t in times.items()}
    print(f"\n{'contender':32} {'best ms':>10} {'median ms':>10} {'M samples/s':>12}")
    for name, t in times.items():
        best, median = best_and_median(t)
        print(f"{name:32} {best * 1e3:10.2f} {median * 1e3:10.2f} {rate[name] / 1e6:12.1f}")
    k_poll, k_whole = rate["kernel, per poll (10k/call)"], rate["kernel, one batch"]
    vs_twin = k_whole / rate["pure-Python twin, one batch"]
    vs_numpy = k_whole / rate["numpy formulation, one batch"]
    mem_poll = k_poll / rate["memcpy, per poll"]
    mem_whole = k_whole / rate["memcpy, one batch"]
    print(f"\nkernel / twin          {vs_twin:8.1f} x   (goal >= 50 x)")
    print(f"kernel / numpy         {vs_numpy:8.1f} x   (goal >= 10 x)")
    print(f"kernel / memcpy        {mem_poll:8.1%} per poll, {mem_whole:.1%} one batch "
          f"(goal >= 20 %)")
    return [
        ("aggregation >= 50x twin", vs_twin >= 50, f"{vs_twin:.0f}x"),
        ("aggregation >= 10x numpy", vs_numpy >= 10, f"{vs_numpy:.1f}x"),
        ("aggregation >= 20% of memcpy (per poll)", mem_poll >= 0.2, f"{mem_poll:.1%}"),
        ("aggregation >= 20% of memcpy (one batch)", mem_whole >= 0.2, f"{mem_whole:.1%}"),
        ("numpy/twin results agree with kernel", agree and twin_agrees,
         "agree" if agree and twin_agrees else "differ"),
    ]


# ========================================================================= shedding


def make_loads(n: int, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    now = 1_712_736_000.0
    power = rng.lognormal(1.0, 1.0, n)  # ~3 kW typical, long tail
    group = np.where(rng.random(n) < 0.2, rng.integers(0, max(1, n // 5), n), -1)
    return {
        "power_kw": power,
        "priority": rng.integers(1, 11, n).astype(np.int8),
        "sheddable": rng.random(n) < 0.8,
        "locked_out": rng.random(n) < 0.05,
        "on_since_s": np.where(rng.random(n) < 0.1, now - rng.uniform(0, 600, n), np.nan),
        "min_on_s": np.full(n, 300.0),
        "now_s": now,
        "group": group.astype(np.int32),
        "target_kw": float(power.sum() * 0.2),
    }


def bench_shedding() -> list[tuple[str, bool, str]]:
    print(f"\n{'shedding':10} {'kernel ms':>10} {'twin ms':>10} {'twin/kernel':>12} "
          f"{'np.sort ms':>11} {'kernel/sort':>12} {'items':>7} {'exact':>6}")
    goals: list[tuple[str, bool, str]] = []
    for n in (1_000, 10_000, 100_000):
        loads = make_loads(n, n)
        priority = loads["priority"]
        priority32 = priority.astype(np.int32)
        a = _shed.plan_shed(**loads)
        b = _shed_py.plan_shed(**loads)
        assert a.shed.tolist() == b.shed.tolist(), "kernel and twin disagree"
        rounds = ROUNDS * 4 if n < 100_000 else ROUNDS * 2
        times = interleave({
            "kernel": timed(functools.partial(_shed.plan_shed, **loads)),
            "sort int8": timed(functools.partial(np.sort, priority)),
            "sort int32": timed(functools.partial(np.sort, priority32)),
        }, rounds)
        times.update(interleave(
            {"twin": timed(functools.partial(_shed_py.plan_shed, **loads))},
            3 if n < 100_000 else 2))
        kernel, twin = min(times["kernel"]), min(times["twin"])
        sort8, sort32 = min(times["sort int8"]), min(times["sort int32"])
        print(f"{n:10,} {kernel * 1e3:10.3f} {twin * 1e3:10.1f} {twin / kernel:12.0f} "
              f"{sort8 * 1e3:11.3f} {kernel / sort8:12.2f} {a.n_items:7} {a.exact!s:>6}")
        goals.append((f"shedding {n:,} loads >= 50x twin", twin / kernel >= 50,
                      f"{twin / kernel:.0f}x"))
        if n == 100_000:
            print(f"{'':10} np.sort of the same priorities as int32: {sort32 * 1e3:.3f} ms "
                  f"-> kernel/sort = {kernel / sort32:.1f} (informational; the planner "
                  f"takes int8 priorities)")
            goals.append(("shedding 100k loads <= 3x np.sort(priorities) (int8, as passed)",
                          kernel <= 3 * sort8, f"{kernel / sort8:.2f}x"))
    return goals


def bench_rollup() -> list[tuple[str, bool, str]]:
    codes = list(energy_codes())
    index = {c: i for i, c in enumerate(codes)}
    parent = np.array([index[ancestors(c)[0]] if ancestors(c) else -1 for c in codes],
                      dtype=np.int32)
    rng = np.random.default_rng(13)
    n = 10_000
    series = rng.integers(0, len(codes), n).astype(np.int32)
    series[rng.random(n) < 0.05] = -1
    energy = rng.exponential(2.0, n)

    def with_numpy() -> npt.NDArray[np.float64]:
        coded = series >= 0
        out = np.asarray(np.bincount(series[coded], weights=energy[coded],
                                     minlength=len(codes)), dtype=np.float64)
        for c in range(len(codes) - 1, -1, -1):  # children come after their parents
            if parent[c] >= 0:
                out[parent[c]] += out[c]
        return out

    kernel_out = _codes.rollup_codes(series, parent, energy)
    assert np.array_equal(kernel_out, _codes_py.rollup_codes(series, parent, energy))
    assert np.allclose(kernel_out, with_numpy())
    times = interleave({
        "kernel": timed(functools.partial(_codes.rollup_codes, series, parent, energy)),
        "numpy": timed(with_numpy),
    }, ROUNDS * 20)
    times.update(interleave({"twin": timed(functools.partial(
        _codes_py.rollup_codes, series, parent, energy))}, ROUNDS))
    kernel, twin, numpy_s = (min(times[k]) for k in ("kernel", "twin", "numpy"))
    print(f"\n{'roll-up':10} {'kernel us':>10} {'twin us':>10} {'twin/kernel':>12} "
          f"{'numpy us':>10} {'kernel/numpy':>13}")
    print(f"{n:10,} {kernel * 1e6:10.1f} {twin * 1e6:10.0f} {twin / kernel:12.0f} "
          f"{numpy_s * 1e6:10.1f} {kernel / numpy_s:13.2f}")
    return [("roll-up of 10k series into 分类分项 codes >= 20x twin", twin / kernel >= 20,
             f"{twin / kernel:.0f}x"),
            ("roll-up of 10k series <= numpy bincount formulation", kernel <= numpy_s,
             f"{kernel / numpy_s:.2f}x")]


def main() -> Results:
    results = Results()
    if _meter is None or _shed is None or _codes is None:
        print("compiled fastcore kernels are not built: nothing to compare "
              "(pip install . or python setup.py build_ext --inplace)")
        results.goal("compiled kernels built", False, "not built")
        return results
    for name, met, figure in bench_aggregation() + bench_shedding() + bench_rollup():
        results.goal(name.strip(), met, figure)
        results.figures[name.strip()] = figure  # ratios measured side by side in this run
    return results


if __name__ == "__main__":
    print_goals(main().goals)
