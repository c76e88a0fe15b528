"""Load-shedding and restore planner: exactness against brute force, agreement of the
kernel with its twin, the eligibility rules, determinism and input errors."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastcore import _shed_py

SETTINGS = settings(max_examples=200, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.function_scoped_fixture])
NOW = 1_700_000_000.0


@dataclass
class Loads:
    power_kw: np.ndarray[Any, Any]
    priority: np.ndarray[Any, Any]
    sheddable: np.ndarray[Any, Any]
    locked_out: np.ndarray[Any, Any]
    on_since_s: np.ndarray[Any, Any]
    min_on_s: np.ndarray[Any, Any]
    group: np.ndarray[Any, Any]
    cost: np.ndarray[Any, Any] | None

    def kwargs(self) -> dict[str, Any]:
        return {"locked_out": self.locked_out, "on_since_s": self.on_since_s,
                "min_on_s": self.min_on_s, "now_s": NOW, "group": self.group,
                "cost": self.cost}


@st.composite
def loads(draw: st.DrawFn, min_size: int = 1, max_size: int = 10,
          nasty: bool = True) -> Loads:
    n = draw(st.integers(min_size, max_size))
    power_values = st.floats(0.0, 50.0)
    if nasty:
        power_values = st.one_of(power_values, st.sampled_from(
            [0.0, 0.0004, math.nan, math.inf, -1.0, 5.0, 5.0]))
    power = draw(st.lists(power_values, min_size=n, max_size=n))
    priority = draw(st.lists(st.integers(1, 10), min_size=n, max_size=n))
    sheddable = draw(st.lists(st.booleans() if nasty else st.just(True), min_size=n,
                              max_size=n))
    locked = draw(st.lists(st.sampled_from([False, False, False, nasty]), min_size=n,
                           max_size=n))
    since = draw(st.lists(st.sampled_from([math.nan, NOW - 10, NOW - 1000]), min_size=n,
                          max_size=n))
    min_on = draw(st.lists(st.sampled_from([0.0, 60.0]), min_size=n, max_size=n))
    group = draw(st.lists(st.sampled_from([-1, -1, -1, 0, 1, min(2, n - 1)]), min_size=n,
                          max_size=n))
    group = [min(g, n - 1) for g in group]
    cost = None
    if draw(st.booleans()):
        cost = np.array(draw(st.lists(st.sampled_from([0.0, 1.0, 2.5, 3.0, 10.0, 1e9]),
                                      min_size=n, max_size=n)), dtype=np.float64)
    return Loads(np.array(power, np.float64), np.array(priority, np.int8),
                 np.array(sheddable, np.bool_), np.array(locked, np.bool_),
                 np.array(since, np.float64), np.array(min_on, np.float64),
                 np.array(group, np.int32), cost)


# --------------------------------------------------------------------- reference


def reference_plan(data: Loads, target_kw: float) -> tuple[list[int], int, int]:
    """Brute force over all candidate subsets, written from the specification."""
    n = len(data.power_kw)
    watts = []
    for kw in data.power_kw.tolist():
        watts.append(math.floor(kw * 1000 + 0.5) if 0 <= kw <= 1e7 else -1)
    if data.cost is None:
        costs = [10 ** (int(p) - 1) * 1000 for p in data.priority]
    else:
        costs = [math.floor(c * 1000 + 0.5) for c in data.cost.tolist()]

    def eligible(i: int) -> bool:
        since = data.on_since_s[i]
        recently_on = not math.isnan(since) and NOW - since < data.min_on_s[i]
        return (watts[i] > 0 and bool(data.sheddable[i]) and not data.locked_out[i]
                and not recently_on)

    items: list[tuple[list[int], int, int]] = []  # (members, watts, cost)
    for i in range(n):
        if data.group[i] < 0 and eligible(i):
            items.append(([i], watts[i], costs[i]))
    for g in sorted(set(data.group.tolist()) - {-1}):
        members = [i for i in range(n) if data.group[i] == g and watts[i] != 0]
        if members and all(eligible(i) for i in members):
            items.append((members, sum(watts[i] for i in members),
                          sum(costs[i] for i in members)))
    target = math.floor(target_kw * 1000 + 0.5)
    order = sorted(range(len(items)),
                   key=lambda q: (float(items[q][2]) / float(items[q][1]), items[q][0][0]))
    total = sum(item[1] for item in items)
    if target <= 0:
        chosen: tuple[int, ...] = ()
    elif total < target:
        chosen = tuple(range(len(items)))
    else:
        best: tuple[Any, ...] | None = None
        for mask in itertools.product([0, 1], repeat=len(items)):
            w = sum(items[q][1] for q in range(len(items)) if mask[q])
            if w < target:
                continue
            c = sum(items[q][2] for q in range(len(items)) if mask[q])
            key = (c, w - target, tuple(1 - mask[q] for q in order))
            if best is None or key < best:
                best = key
                chosen = tuple(q for q in range(len(items)) if mask[q])
    shed = sorted(i for q in chosen for i in items[q][0])
    return shed, sum(items[q][1] for q in chosen), sum(items[q][2] for q in chosen)


# ------------------------------------------------------------------ exactness


@SETTINGS
@given(loads(max_size=9), st.floats(-5.0, 200.0))
def test_exact_plan_matches_brute_force(shed_impl: ModuleType, data: Loads,
                                        target_kw: float) -> None:
    plan = shed_impl.plan_shed(data.power_kw, data.priority, data.sheddable,
                               target_kw=target_kw, **data.kwargs())
    shed, watts, cost = reference_plan(data, target_kw)
    assert plan.exact
    assert plan.shed.tolist() == shed
    assert plan.shed_kw == watts / 1000
    assert plan.cost == cost / 1000


@SETTINGS
@given(loads(min_size=1, max_size=300), st.floats(0.0, 1.0))
def test_kernel_and_twin_agree(shed_c: ModuleType, data: Loads, fraction: float) -> None:
    target = float(np.nansum(np.where(np.isfinite(data.power_kw), data.power_kw, 0))) * fraction
    for exact_max in (0, 20):
        a = shed_c.plan_shed(data.power_kw, data.priority, data.sheddable, target_kw=target,
                             exact_max_items=exact_max, **data.kwargs())
        b = _shed_py.plan_shed(data.power_kw, data.priority, data.sheddable,
                               target_kw=target, exact_max_items=exact_max, **data.kwargs())
        assert a.shed.tolist() == b.shed.tolist()
        assert (a.target_kw, a.shed_kw, a.overshoot_kw, a.shortfall_kw, a.cost, a.exact,
                a.n_items, a.n_invalid) == (b.target_kw, b.shed_kw, b.overshoot_kw,
                                            b.shortfall_kw, b.cost, b.exact, b.n_items,
                                            b.n_invalid)


@pytest.mark.parametrize("seed", range(6))
def test_kernel_and_twin_agree_on_large_instances(shed_c: ModuleType, seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 20_000
    power = rng.uniform(0, 30, n)
    power[rng.random(n) < 0.01] = np.nan
    priority = rng.integers(1, 11, n).astype(np.int8)
    sheddable = rng.random(n) < 0.8
    group = np.where(rng.random(n) < 0.2, rng.integers(0, n // 10, n), -1).astype(np.int32)
    if seed % 2:  # many equal keys: exercises the selection fallback
        power = np.round(power / 10) * 10 + 5
    for fraction in (0.01, 0.3, 0.8, 1.5):
        target = float(np.nansum(power)) * fraction
        a = shed_c.plan_shed(power, priority, sheddable, group=group, target_kw=target)
        b = _shed_py.plan_shed(power, priority, sheddable, group=group, target_kw=target)
        assert a.shed.tolist() == b.shed.tolist()
        assert (a.cost, a.shed_kw, a.exact) == (b.cost, b.shed_kw, b.exact)


@SETTINGS
@given(loads(min_size=22, max_size=30, nasty=False), st.floats(0.05, 0.7))
def test_heuristic_is_feasible_and_near_optimal(shed_impl: ModuleType, data: Loads,
                                                fraction: float) -> None:
    target = float(data.power_kw.sum()) * fraction
    heuristic = shed_impl.plan_shed(data.power_kw, data.priority, data.sheddable,
                                    target_kw=target, exact_max_items=0, **data.kwargs())
    exact = shed_impl.plan_shed(data.power_kw, data.priority, data.sheddable,
                                target_kw=target, exact_max_items=40, **data.kwargs())
    assert exact.exact
    assert heuristic.shed_kw + heuristic.shortfall_kw >= exact.target_kw - 1e-9
    if exact.shortfall_kw == 0 and exact.target_kw > 0:
        assert not heuristic.exact  # the heuristic really ran
        assert heuristic.shortfall_kw == 0
        assert exact.cost <= heuristic.cost <= 2 * exact.cost + 1e-9


# ----------------------------------------------------------------------- rules


def test_target_unreachable_sheds_everything_eligible(shed_impl: ModuleType) -> None:
    power = np.array([5.0, 3.0, 2.0, 7.0])
    plan = shed_impl.plan_shed(power, np.array([1, 2, 3, 4], np.int8),
                               np.array([True, True, False, True]), target_kw=100.0,
                               locked_out=np.array([False, False, False, True]))
    assert plan.shed.tolist() == [0, 1]
    assert plan.shortfall_kw == pytest.approx(92.0)
    assert plan.exact


def test_lowest_priority_first_and_least_overshoot(shed_impl: ModuleType) -> None:
    power = np.array([4.0, 6.0, 5.0, 10.0, 1.0])
    priority = np.array([1, 1, 1, 5, 1], np.int8)
    plan = shed_impl.plan_shed(power, priority, np.ones(5, np.bool_), target_kw=10.0)
    # two priority-1 loads (cost 2) beat the priority-5 load (cost 10 000); of the pairs
    # reaching 10 kW, 4 + 6 hits it exactly
    assert plan.shed.tolist() == [0, 1]
    assert plan.overshoot_kw == 0.0
    assert plan.cost == 2.0


def test_groups_are_all_or_nothing(shed_impl: ModuleType) -> None:
    power = np.array([3.0, 3.0, 3.0, 8.0])
    group = np.array([0, 0, 0, -1], np.int32)
    sheddable = np.ones(4, np.bool_)
    plan = shed_impl.plan_shed(power, np.ones(4, np.int8), sheddable, target_kw=2.0,
                               group=group, cost=np.array([1.0, 1.0, 1.0, 5.0]))
    assert plan.shed.tolist() == [0, 1, 2]  # cost 3 < 5 although 9 kW > 8 kW
    locked = np.array([False, True, False, False])
    plan = shed_impl.plan_shed(power, np.ones(4, np.int8), sheddable, target_kw=2.0,
                               group=group, cost=np.array([1.0, 1.0, 1.0, 5.0]),
                               locked_out=locked)
    assert plan.shed.tolist() == [3]  # one locked member blocks its whole group


def test_min_on_time_blocks_recently_started_loads(shed_impl: ModuleType) -> None:
    power = np.array([5.0, 5.0])
    since = np.array([NOW - 30, NOW - 3600])
    plan = shed_impl.plan_shed(power, np.ones(2, np.int8), np.ones(2, np.bool_),
                               target_kw=4.0, on_since_s=since, min_on_s=np.full(2, 300.0),
                               now_s=NOW)
    assert plan.shed.tolist() == [1]


def test_invalid_power_is_never_shed_and_counted(shed_impl: ModuleType) -> None:
    power = np.array([math.nan, 5.0, math.inf, -2.0, 1e8])
    plan = shed_impl.plan_shed(power, np.ones(5, np.int8), np.ones(5, np.bool_),
                               target_kw=100.0)
    assert plan.shed.tolist() == [1]
    assert plan.n_invalid == 4


def test_import_cap_target(shed_impl: ModuleType) -> None:
    power = np.array([10.0, 20.0, 30.0])
    plan = shed_impl.plan_shed(power, np.array([3, 1, 2], np.int8), np.ones(3, np.bool_),
                               import_cap_kw=480.0, site_import_kw=500.0)
    assert plan.target_kw == 20.0
    assert plan.shed.tolist() == [1]
    plan = shed_impl.plan_shed(power, np.array([3, 1, 2], np.int8), np.ones(3, np.bool_),
                               import_cap_kw=600.0, site_import_kw=500.0)
    assert plan.shed.tolist() == []
    assert plan.target_kw == 0.0


def test_deterministic_on_ties(shed_impl: ModuleType) -> None:
    power = np.full(8, 5.0)
    for _ in range(3):
        plan = shed_impl.plan_shed(power, np.ones(8, np.int8), np.ones(8, np.bool_),
                                   target_kw=12.0)
        assert plan.shed.tolist() == [0, 1, 2]


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"power_kw": [1.0]}, TypeError),
        ({"power_kw": np.ones(1, np.float32)}, TypeError),
        ({"priority": np.ones(1, np.int32)}, TypeError),
        ({"sheddable": np.ones(1, np.int8)}, TypeError),
        ({"priority": np.zeros(1, np.int8)}, ValueError),
        ({"priority": np.full(1, 11, np.int8)}, ValueError),
        ({"power_kw": np.ones((1, 1))}, ValueError),
        ({"power_kw": np.ones(2)}, ValueError),
        ({"group": np.array([5], np.int32)}, ValueError),
        ({"group": np.array([-2], np.int32)}, ValueError),
        ({"cost": np.array([-1.0])}, ValueError),
        ({"cost": np.array([math.nan])}, ValueError),
        ({"target_kw": None}, ValueError),
        ({"import_cap_kw": 5.0}, ValueError),
        ({"target_kw": math.nan}, ValueError),
        ({"on_since_s": np.zeros(1)}, ValueError),
        ({"on_since_s": np.zeros(1), "min_on_s": np.zeros(1)}, ValueError),  # no now_s
        ({"exact_max_items": 41}, ValueError),
        ({"locked_out": np.zeros(2, np.bool_)}, ValueError),
    ],
)
def test_invalid_inputs_raise(shed_impl: ModuleType, kwargs: dict[str, Any],
                              error: type[Exception]) -> None:
    args: dict[str, Any] = {"power_kw": np.ones(1), "priority": np.ones(1, np.int8),
                            "sheddable": np.ones(1, np.bool_), "target_kw": 1.0}
    args.update(kwargs)
    if args.get("target_kw") is None and "import_cap_kw" not in args:
        args.pop("target_kw")
    with pytest.raises(error):
        shed_impl.plan_shed(args.pop("power_kw"), args.pop("priority"),
                            args.pop("sheddable"), **args)


def test_empty_input(shed_impl: ModuleType) -> None:
    plan = shed_impl.plan_shed(np.zeros(0), np.zeros(0, np.int8), np.zeros(0, np.bool_),
                               target_kw=5.0)
    assert plan.shed.tolist() == []
    assert plan.shortfall_kw == 5.0


# --------------------------------------------------------------------- restore


def test_restore_order_steps_and_limits(shed_impl: ModuleType) -> None:
    power = np.array([4.0, 3.0, 5.0, 2.0, 20.0, 1.0])
    priority = np.array([5, 9, 5, 1, 3, 7], np.int8)
    shed = np.array([True, True, True, True, True, False])
    since = np.array([NOW - 100, NOW - 100, NOW - 100, NOW - 5000, NOW - 100, NOW])
    min_off = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    min_off[2] = 130.0  # load 2 may come back 30 s from now
    max_shed = np.full(6, 3600.0)
    plan = shed_impl.plan_restore(power, priority, shed, now_s=NOW, max_kw_per_step=8.0,
                                  step_s=15.0, shed_since_s=since, min_off_s=min_off,
                                  max_shed_s=max_shed)
    # order: 3 (overdue: shed 5000 s > 3600 s, first despite priority 1), 1 (prio 9),
    # 0 and 2 (prio 5, by index), 4 (prio 3). Step 0: 3 + 1 = 5 kW, 0 would exceed 8 kW.
    # Step 1 (+15 s): 0; 2 is not ready before +30 s and is passed over; 4 (20 kW) is
    # ready but does not fit, so the step ends. Step 2: 2. Step 3: 4 alone (> limit).
    assert plan.load_index.tolist() == [3, 1, 0, 2, 4]
    assert plan.step.tolist() == [0, 0, 1, 2, 3]
    assert plan.restore_at_s.tolist() == [NOW, NOW, NOW + 15, NOW + 30, NOW + 45]
    assert plan.n_steps == 4


def test_restore_groups_come_back_together(shed_impl: ModuleType) -> None:
    power = np.array([2.0, 2.0, 2.0, 2.0])
    plan = shed_impl.plan_restore(power, np.array([1, 9, 1, 5], np.int8),
                                  np.ones(4, np.bool_), now_s=NOW, max_kw_per_step=4.0,
                                  step_s=10.0, group=np.array([0, -1, 0, -1], np.int32))
    assert plan.load_index.tolist() == [1, 3, 0, 2]
    assert plan.step.tolist() == [0, 0, 1, 1]


def test_restore_skips_empty_steps(shed_impl: ModuleType) -> None:
    plan = shed_impl.plan_restore(np.array([1.0]), np.array([1], np.int8),
                                  np.array([True]), now_s=NOW, max_kw_per_step=5.0,
                                  step_s=10.0, shed_since_s=np.array([NOW]),
                                  min_off_s=np.array([95.0]))
    assert plan.step.tolist() == [10]
    assert plan.restore_at_s.tolist() == [NOW + 100]


@st.composite
def restore_inputs(draw: st.DrawFn) -> dict[str, Any]:
    n = draw(st.integers(0, 40))
    floats = st.lists(st.floats(0.0, 30.0), min_size=n, max_size=n)
    return {
        "power_kw": np.array(draw(st.lists(st.one_of(st.floats(0.0, 30.0), st.just(math.nan)),
                                           min_size=n, max_size=n)), np.float64),
        "priority": np.array(draw(st.lists(st.integers(1, 10), min_size=n, max_size=n)),
                             np.int8),
        "shed": np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)), np.bool_),
        "shed_since_s": NOW - 10 * np.array(draw(floats), np.float64),
        "min_off_s": 10 * np.array(draw(floats), np.float64),
        "max_shed_s": 10 * np.array(draw(floats), np.float64),
        "group": np.array(draw(st.lists(st.integers(-1, 3), min_size=n, max_size=n)),
                          np.int32) if n > 3 else None,
        "max_kw_per_step": draw(st.floats(0.5, 50.0)),
        "step_s": draw(st.floats(1.0, 60.0)),
    }


@SETTINGS
@given(restore_inputs())
def test_restore_properties(shed_impl: ModuleType, inputs: dict[str, Any]) -> None:
    plan = shed_impl.plan_restore(now_s=NOW, **inputs)
    shed = np.nonzero(inputs["shed"])[0]
    assert sorted(plan.load_index.tolist()) == shed.tolist()  # each exactly once
    ready = inputs["shed_since_s"] + inputs["min_off_s"]
    assert (plan.restore_at_s >= ready[plan.load_index] - 1e-9).all()
    assert (np.diff(plan.step) >= 0).all()
    cap_w = math.floor(inputs["max_kw_per_step"] * 1000 + 0.5)  # the planner works in W
    for step in np.unique(plan.step):
        members = plan.load_index[plan.step == step]
        kw = inputs["power_kw"][members]
        step_w = sum(math.floor(x * 1000 + 0.5) for x in kw.tolist() if math.isfinite(x))
        if not np.isfinite(kw).all() or step_w > cap_w:
            # only a single load (or a single group) larger than the limit stands alone
            groups = inputs["group"]
            if groups is None or (groups[members] < 0).any():
                assert len(members) == 1
            else:
                assert len(set(groups[members].tolist())) == 1


@SETTINGS
@given(restore_inputs())
def test_restore_kernel_and_twin_agree(shed_c: ModuleType, inputs: dict[str, Any]) -> None:
    a = shed_c.plan_restore(now_s=NOW, **inputs)
    b = _shed_py.plan_restore(now_s=NOW, **inputs)
    assert a.load_index.tolist() == b.load_index.tolist()
    assert a.restore_at_s.tolist() == b.restore_at_s.tolist()
    assert a.step.tolist() == b.step.tolist()
    assert a.n_steps == b.n_steps


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"max_kw_per_step": 0.0}, "max_kw_per_step"), ({"step_s": 0.0}, "step_s"),
     ({"now_s": math.nan}, "now_s"), ({"min_off_s": np.array([-1.0])}, "min_off_s"),
     ({"shed_since_s": np.array([math.inf])}, "shed_since_s"),
     ({"max_shed_s": np.array([math.nan])}, "max_shed_s")],
)
def test_restore_invalid_inputs_raise(shed_impl: ModuleType, kwargs: dict[str, Any],
                                      message: str) -> None:
    args: dict[str, Any] = {"now_s": NOW, "max_kw_per_step": 5.0, "step_s": 10.0}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        shed_impl.plan_restore(np.ones(1), np.ones(1, np.int8), np.ones(1, np.bool_), **args)
