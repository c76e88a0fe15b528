"""Property tests: the compiled metering kernel and its twin agree on random (and nasty)
inputs, and the aggregation is invariant to how a stream is cut into batches."""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from calendars import DAY_TYPES
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastcore import _energy_py, _meter_py
from fastcore._common import LOAD_F64_FIELDS

T0 = 1_735_660_800.0 - 8 * 3600 - 1800  # 2024-12-31 23:30 local: year, holidays ahead
N_LOADS = 5
ROLES = ["grid", "pv", "battery", "consumer", "consumer"]

FAST = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])

steps = st.one_of(
    st.floats(0.05, 60.0),  # ordinary polling
    st.just(0.0),  # duplicate timestamp
    st.floats(-600.0, -0.01),  # out of order / negative step
    st.floats(200.0, 4000.0),  # gaps, window and period crossings
    st.floats(3600.0, 40 * 86400.0),  # long outages: days to months
    st.sampled_from([math.nan, math.inf, -math.inf, -2e10]),  # bad timestamps
)
powers = st.one_of(
    st.floats(-8000.0, 8000.0),
    st.sampled_from([0.0, -0.0, math.nan, math.inf, -math.inf, 2e12, -1e300]),
)


@dataclass
class Stream:
    idx: np.ndarray[Any, Any]
    ts: np.ndarray[Any, Any]
    pw: np.ndarray[Any, Any]
    cuts: list[int]
    counters: tuple[Any, ...]


@st.composite
def streams(draw: st.DrawFn) -> Stream:
    size = draw(st.integers(1, 80))
    loads = draw(st.lists(st.integers(-1, N_LOADS), min_size=size, max_size=size))
    step_list = draw(st.lists(steps, min_size=size, max_size=size))
    power_list = draw(st.lists(powers, min_size=size, max_size=size))
    starts = draw(st.lists(st.floats(0.0, 1800.0), min_size=N_LOADS + 2,
                           max_size=N_LOADS + 2))
    clock = [T0 + s for s in starts]
    times = []
    for load, step in zip(loads, step_list, strict=True):
        slot = load + 1
        if math.isfinite(step) and step > -1e10:
            clock[slot] += step
            times.append(clock[slot])
        else:
            times.append(step)  # NaN / inf / absurd timestamp, clock unchanged
    cuts = sorted(draw(st.lists(st.integers(0, size), max_size=3)))
    # counter readings: increasing with occasional wraps, resets, glitches, bad values
    n_counter = draw(st.integers(0, 30))
    c_loads = draw(st.lists(st.integers(-1, N_LOADS), min_size=n_counter,
                            max_size=n_counter))
    c_values = draw(st.lists(st.one_of(
        st.floats(0.0, 5000.0), st.floats(-20.0, 0.0), st.floats(-2e6, -1e5),
        st.sampled_from([math.nan, -1.0, 5e6, math.inf])),
        min_size=n_counter, max_size=n_counter))
    c_steps = draw(st.lists(st.one_of(st.floats(1.0, 3600.0), st.just(0.0),
                                      st.floats(-100.0, -1.0)),
                            min_size=n_counter, max_size=n_counter))
    levels = [1_048_576.0 - 3000.0] * (N_LOADS + 2)  # close to the wrap point
    c_clock = [T0] * (N_LOADS + 2)
    c_ts, c_imp = [], []
    for load, delta, step in zip(c_loads, c_values, c_steps, strict=True):
        slot = load + 1
        c_clock[slot] += step
        if math.isfinite(delta) and delta > -1e6 + 1:
            levels[slot] = (levels[slot] + delta) % 1_048_576.0 if delta >= -1e5 else 50.0
            c_imp.append(levels[slot])
        else:
            c_imp.append(delta)
        c_ts.append(c_clock[slot])
    counters = (np.array(c_loads, np.int32), np.array(c_ts, np.float64),
                np.array(c_imp, np.float64), np.array(c_imp[::-1], np.float64))
    return Stream(np.array(loads, np.int32), np.array(times, np.float64),
                  np.array(power_list, np.float64), cuts, counters)


def make(module: ModuleType, **overrides: Any) -> Any:
    options: dict[str, Any] = {
        "roles": ROLES, "tariff": DAY_TYPES, "max_gap_s": 900.0,
        "demand_window_s": 900, "counter_wrap_wh": 1_048_576.0,
        "counter_max_power_w": 20_000.0,
        "emission_factor_kg_per_kwh": [0.4 + 0.01 * h for h in range(24)],
    }
    options.update(overrides)
    return module.MeterAggregator(N_LOADS, **options)


def feed(agg: Any, stream: Stream, cuts: list[int] | None = None) -> int:
    bounds = [0, *(stream.cuts if cuts is None else cuts), len(stream.idx)]
    accepted = 0
    for a, b in itertools.pairwise(bounds):
        accepted += agg.add_samples(stream.idx[a:b], stream.ts[a:b], stream.pw[a:b])
    agg.add_counters(*stream.counters)
    return accepted


def assert_same_raw(a: Any, b: Any) -> None:
    raw_a, raw_b = a._raw_state(), b._raw_state()
    assert raw_a.keys() == raw_b.keys()
    for key in raw_a:
        assert np.array_equal(np.asarray(raw_a[key]), np.asarray(raw_b[key]),
                              equal_nan=True), key


@FAST
@given(streams())
def test_kernel_and_twin_agree(meter_c: ModuleType, stream: Stream) -> None:
    kernel, twin = make(meter_c), make(_meter_py)
    assert feed(kernel, stream) == feed(twin, stream)
    assert_same_raw(kernel, twin)
    assert kernel.anomalies() == twin.anomalies()
    assert kernel.site_figures() == twin.site_figures()
    kernel.reset_period()
    twin.reset_period()
    assert_same_raw(kernel, twin)


@FAST
@given(streams(), st.sampled_from([300, 900, 3600]), st.sampled_from([0, 28800, -18000]))
def test_kernel_and_twin_agree_for_other_windows_and_offsets(
        meter_c: ModuleType, stream: Stream, window_s: int, offset_s: int) -> None:
    kernel = make(meter_c, demand_window_s=window_s, utc_offset_s=offset_s,
                  roles=["consumer", "pv", "battery", "consumer", "consumer"])
    twin = make(_meter_py, demand_window_s=window_s, utc_offset_s=offset_s,
                roles=["consumer", "pv", "battery", "consumer", "consumer"])
    feed(kernel, stream)
    feed(twin, stream)
    assert_same_raw(kernel, twin)
    assert kernel.site_figures() == twin.site_figures()


@FAST
@given(streams(), st.lists(st.integers(0, 80), max_size=4))
def test_batch_boundaries_do_not_matter(meter_impl: ModuleType, stream: Stream,
                                        cuts: list[int]) -> None:
    whole, split = make(meter_impl), make(meter_impl)
    cuts = sorted(min(c, len(stream.idx)) for c in cuts)
    assert feed(whole, stream, cuts=[]) == feed(split, stream, cuts=cuts)
    assert_same_raw(whole, split)


@FAST
@given(streams(), st.integers(0, 80))
def test_save_and_restore_mid_stream(meter_impl: ModuleType, stream: Stream,
                                     cut: int) -> None:
    cut = min(cut, len(stream.idx))
    whole = make(meter_impl)
    whole.add_samples(stream.idx, stream.ts, stream.pw)
    first = make(meter_impl)
    first.add_samples(stream.idx[:cut], stream.ts[:cut], stream.pw[:cut])
    resumed = meter_impl.MeterAggregator.from_state(
        json.loads(json.dumps(first.state(), allow_nan=False)))
    resumed.add_samples(stream.idx[cut:], stream.ts[cut:], stream.pw[cut:])
    assert_same_raw(whole, resumed)


@FAST
@given(streams())
def test_totals_are_finite_and_consistent(meter_impl: ModuleType, stream: Stream) -> None:
    agg = make(meter_impl)
    accepted = feed(agg, stream)
    totals = agg.totals()
    for name in ("import_wh", "export_wh", "tou_import_wh", "tou_cost_cny", "carbon_kg",
                 "counter_import_wh", "counter_export_wh", "gap_s"):
        values = getattr(totals, name)
        assert np.isfinite(values).all(), name
        assert (values >= 0).all(), name
    np.testing.assert_allclose(totals.tou_import_wh.sum(axis=1), totals.import_wh,
                               rtol=1e-9, atol=1e-9)
    counts = agg.anomalies()
    dropped = sum(counts[k] for k in ("unknown_load", "bad_time", "bad_power", "duplicate",
                                      "out_of_order"))
    assert accepted + dropped == len(stream.idx)
    site = agg.site_figures()
    for ratio in (site.self_consumption_ratio, site.self_sufficiency_ratio,
                  site.renewable_share):
        assert math.isnan(ratio) or 0.0 <= ratio <= 1.0


@FAST
@given(st.lists(st.tuples(st.floats(0.5, 120.0), st.floats(-5000.0, 5000.0)),
                min_size=2, max_size=60),
       st.floats(0.0, 86400.0))
def test_energy_matches_plain_integration(meter_impl: ModuleType,
                                          points: list[tuple[float, float]],
                                          start: float) -> None:
    """Splitting intervals at window and period boundaries conserves energy."""
    times = T0 + start + np.cumsum([p[0] for p in points])
    power = np.array([p[1] for p in points])
    agg = meter_impl.MeterAggregator(1, tariff=DAY_TYPES, max_gap_s=100.0)
    agg.add_samples(np.zeros(len(times), np.int32), times, power)
    reference = _energy_py.integrate_energy(times.tolist(), power.tolist(), 100.0)
    totals = agg.totals()
    assert totals.import_wh[0] == pytest.approx(reference.import_wh, rel=1e-9, abs=1e-9)
    assert totals.export_wh[0] == pytest.approx(reference.export_wh, rel=1e-9, abs=1e-9)
    assert agg.anomalies()["gap"] == reference.gaps


@FAST
@given(streams(), st.randoms(use_true_random=False))
def test_interleaving_across_loads_does_not_change_load_energy(
        meter_impl: ModuleType, stream: Stream, rnd: Any) -> None:
    """Per-load order is what matters: any interleaving gives the same per-load energy."""
    order = list(range(len(stream.idx)))
    rnd.shuffle(order)
    by_load: dict[int, list[int]] = {}
    for position in order:
        by_load.setdefault(int(stream.idx[position]), []).append(position)
    for positions in by_load.values():
        positions.sort()  # keep each load's own order
    interleaved = []
    cursor = dict.fromkeys(by_load, 0)
    for position in order:
        load = int(stream.idx[position])
        interleaved.append(by_load[load][cursor[load]])
        cursor[load] += 1
    a, b = make(meter_impl), make(meter_impl)
    a.add_samples(stream.idx, stream.ts, stream.pw)
    perm = np.array(interleaved, dtype=np.intp)
    b.add_samples(stream.idx[perm], stream.ts[perm], stream.pw[perm])
    ta, tb = a.totals(), b.totals()
    for name in ("import_wh", "export_wh", "tou_import_wh", "tou_cost_cny", "gap_s",
                 "max_demand_kw", "demand_kw"):
        np.testing.assert_allclose(getattr(ta, name), getattr(tb, name), rtol=1e-9,
                                   atol=1e-9, equal_nan=True, err_msg=name)
    counts_a, counts_b = a.anomalies(), b.anomalies()
    counts_a.pop("late_window")  # depends on how far loads run ahead of each other
    counts_b.pop("late_window")
    assert counts_a == counts_b


def test_raw_state_fields_cover_the_hot_record(meter_c: ModuleType) -> None:
    """The compiled kernel exports every per-load field of the shared layout."""
    raw = make(meter_c)._raw_state()
    assert set(LOAD_F64_FIELDS) <= raw.keys()
