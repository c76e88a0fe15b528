"""Shared parts of the load-shedding planner: input validation, quantisation rules and
result types, used by both the compiled kernel (``_shed.pyx``) and its twin
(``_shed_py.py``). The specification is in ``docs/fastcore.md`` ("Load shedding")."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from fastcore._common import (
    F64,
    I32,
    I64,
    MAX_TIMESTAMP_S,
    check_array,
    check_same_length,
)

BoolArray = npt.NDArray[np.bool_]
I8 = npt.NDArray[np.int8]

MIN_PRIORITY: Final = 1  # least important
MAX_PRIORITY: Final = 10  # most important
MAX_POWER_KW: Final = 1.0e7  # larger (or non-finite, or negative) power is "invalid"
MAX_COST: Final = 1.0e9  # per-load cost limit (keeps integer sums exact)
EXACT_MAX_ITEMS: Final = 20  # default: solve exactly up to this many candidate items
MAX_EXACT_ITEMS: Final = 40  # the largest exact_max_items accepted
CORE_HALF_WIDTH: Final = 10  # heuristic: exact search over +-10 items around the break item
CORE_NODE_LIMIT: Final = 100_000  # heuristic: node budget of that search
NO_LIMIT: Final = 2**62
MAX_DURATION_S: Final = 1.0e9  # limit of min_off_s and step_s


def default_cost(priority: int) -> float:
    """Default shedding cost of one load: 10 ** (priority - 1).

    Shedding one load of priority p+1 costs as much as shedding ten loads of priority p,
    so the planner exhausts less important loads first unless that takes ten times as
    many of them.
    """
    return float(10 ** (priority - 1))


_DEFAULT_COST_MILLI: Final = np.array(
    [0] + [int(default_cost(p)) * 1000 for p in range(MIN_PRIORITY, MAX_PRIORITY + 1)],
    dtype=np.int64)


def quantize(value: float) -> int:
    """kW (or cost units) -> integer milli-units, rounding half up (same as the kernel)."""
    return math.floor(value * 1000.0 + 0.5)


@dataclass(frozen=True, eq=False)
class ShedPlan:
    """Result of :func:`plan_shed`.

    ``shed`` are load indices (int32, ascending). kW figures are resolved to 1 W.
    ``cost`` is the sum of the shed loads' costs; ``overshoot_kw`` is shed minus target
    (>= 0); ``shortfall_kw`` > 0 when even all eligible loads cannot meet the target (then
    all of them are shed). ``exact`` is True when the plan is proven optimal (the
    candidate count was at most ``exact_max_items``, or the target is 0 or unreachable).
    ``n_items`` counts candidates (eligible ungrouped loads + eligible groups);
    ``n_invalid`` counts loads with NaN/inf/negative/absurd power (never shed).
    """

    shed: I32
    target_kw: float
    shed_kw: float
    overshoot_kw: float
    shortfall_kw: float
    cost: float
    exact: bool
    n_items: int
    n_invalid: int


@dataclass(frozen=True, eq=False)
class RestorePlan:
    """Result of :func:`plan_restore`: loads in restore order.

    ``load_index[k]`` comes back at ``restore_at_s[k]`` (UNIX s) in step ``step[k]``
    (step s happens at now_s + s * step_s; steps with nothing ready are skipped). Members
    of a group are consecutive and share a step. ``step_kw[s]`` is not given per step;
    use ``power_kw[load_index]`` grouped by ``step``.
    """

    load_index: I32
    restore_at_s: F64
    step: I32
    n_steps: int


# value errors, in the order both implementations check them
PRIORITY_ERROR: Final = "priority must be 1..10 (1 = least important)"
GROUP_ERROR: Final = ("group ids must be -1 (none) or 0 .. n_loads-1; relabel with "
                      "np.unique(ids, return_inverse=True)")
MIN_ON_ERROR: Final = "min_on_s must be finite and >= 0"
COST_ERROR: Final = f"cost must be 0 .. {MAX_COST:g} (and not NaN)"
SHED_VALUE_ERRORS: Final = (PRIORITY_ERROR, GROUP_ERROR, MIN_ON_ERROR, COST_ERROR)


@dataclass(frozen=True, eq=False)
class ShedInputs:
    """Planner inputs with checked types, shapes and scalars (internal). Optional arrays
    are None when not given; element values are checked by each implementation (the
    kernel in its single pass over the loads, the twin with :func:`check_shed_values`)."""

    power_kw: F64
    priority: I8
    sheddable: BoolArray
    locked_out: BoolArray | None
    on_since_s: F64 | None
    min_on_s: F64 | None
    group: I32 | None
    cost: F64 | None
    target_w: int
    now_s: float


def _given(name: str, array: object, dtype: type[np.generic], n: int) -> npt.NDArray[Any]:
    checked = check_array(name, array, dtype)
    if checked.shape[0] != n:
        raise ValueError(f"{name} has {checked.shape[0]} entries, power_kw has {n}")
    return checked


def _optional(name: str, array: object, dtype: type[np.generic], n: int,
              fill: float | bool | int) -> npt.NDArray[Any]:
    if array is None:
        return np.full(n, fill, dtype=dtype)
    return _given(name, array, dtype, n)


def check_priority(priority: I8) -> None:
    if priority.size and (int(priority.min()) < MIN_PRIORITY
                          or int(priority.max()) > MAX_PRIORITY):
        raise ValueError(PRIORITY_ERROR)


def check_group(group: I32, n: int) -> None:
    if group.size and (int(group.min()) < -1 or int(group.max()) >= n):
        raise ValueError(GROUP_ERROR)


def check_shed_inputs(
    power_kw: object, priority: object, sheddable: object, *,
    target_kw: float | None, import_cap_kw: float | None, site_import_kw: float | None,
    locked_out: object, on_since_s: object, min_on_s: object, now_s: float | None,
    group: object, cost: object, exact_max_items: int,
) -> ShedInputs:
    """Check planner argument types, shapes and scalars: ``TypeError`` for non-ndarrays /
    wrong dtypes, ``ValueError`` for shapes, lengths and invalid scalars."""
    power = check_array("power_kw", power_kw, np.float64)
    prio = check_array("priority", priority, np.int8)
    flags = check_array("sheddable", sheddable, np.bool_)
    n = power.shape[0]
    if prio.shape[0] != n or flags.shape[0] != n:
        check_same_length(power_kw=power, priority=prio, sheddable=flags)  # raises
    locked = None if locked_out is None else _given("locked_out", locked_out, np.bool_, n)
    since = None if on_since_s is None else _given("on_since_s", on_since_s, np.float64, n)
    min_on = None if min_on_s is None else _given("min_on_s", min_on_s, np.float64, n)
    groups = None if group is None else _given("group", group, np.int32, n)
    costs = None if cost is None else _given("cost", cost, np.float64, n)
    target_w, now = check_shed_scalars(
        target_kw=target_kw, import_cap_kw=import_cap_kw, site_import_kw=site_import_kw,
        on_since_given=since is not None, min_on_given=min_on is not None, now_s=now_s,
        exact_max_items=exact_max_items)
    return ShedInputs(power_kw=power, priority=prio, sheddable=flags, locked_out=locked,
                      on_since_s=since, min_on_s=min_on, group=groups, cost=costs,
                      target_w=target_w, now_s=now)


def check_shed_scalars(*, target_kw: float | None, import_cap_kw: float | None,
                       site_import_kw: float | None, on_since_given: bool,
                       min_on_given: bool, now_s: float | None,
                       exact_max_items: int) -> tuple[int, float]:
    """Check the scalar planner arguments; returns (target in W, now_s or NaN)."""
    if on_since_given != min_on_given:
        raise ValueError("give on_since_s and min_on_s together (or neither)")
    now = math.nan
    if on_since_given:
        if now_s is None or not math.isfinite(now_s):
            raise ValueError("now_s (finite UNIX seconds) is required with on_since_s")
        now = float(now_s)
    if (target_kw is None) == (import_cap_kw is None):
        raise ValueError("give exactly one of target_kw or import_cap_kw (with site_import_kw)")
    if target_kw is not None:
        target = float(target_kw)
    else:
        if site_import_kw is None:
            raise ValueError("import_cap_kw needs site_import_kw (current site import, kW)")
        target = float(site_import_kw) - float(import_cap_kw)  # type: ignore[arg-type]
    if not (math.isfinite(target) and abs(target) <= 1.0e12):
        raise ValueError(f"target must be finite kW, got {target}")
    if isinstance(exact_max_items, bool) or not isinstance(exact_max_items, int):
        raise TypeError("exact_max_items must be an int")
    if not 0 <= exact_max_items <= MAX_EXACT_ITEMS:
        raise ValueError(f"exact_max_items must be 0 .. {MAX_EXACT_ITEMS}")
    return quantize(target), now


def check_shed_values(inputs: ShedInputs) -> tuple[BoolArray, F64, F64, I32, I64]:
    """Element checks (``ValueError`` with the SHED_VALUE_ERRORS messages, in that order)
    and defaults, vectorised; returns locked_out, on_since_s, min_on_s, group and the
    cost in milli-units. Used by the twin; the kernel does the same in its loop."""
    n = inputs.power_kw.shape[0]
    check_priority(inputs.priority)
    groups = inputs.group if inputs.group is not None else np.full(n, -1, np.int32)
    check_group(groups, n)
    min_on = inputs.min_on_s if inputs.min_on_s is not None else np.zeros(n)
    if not bool(np.all(np.isfinite(min_on) & (min_on >= 0))):
        raise ValueError(MIN_ON_ERROR)
    if inputs.cost is None:
        cost_milli = _DEFAULT_COST_MILLI[inputs.priority]
    else:
        if not bool(np.all((inputs.cost >= 0) & (inputs.cost <= MAX_COST))):
            raise ValueError(COST_ERROR)
        cost_milli = np.floor(inputs.cost * 1000.0 + 0.5).astype(np.int64)
    locked = (inputs.locked_out if inputs.locked_out is not None
              else np.zeros(n, dtype=np.bool_))
    since = inputs.on_since_s if inputs.on_since_s is not None else np.full(n, math.nan)
    return locked, since, min_on, groups, cost_milli


@dataclass(frozen=True, eq=False)
class RestoreInputs:
    power_kw: F64
    priority: I8
    shed: BoolArray
    shed_since_s: F64
    min_off_s: F64
    max_shed_s: F64
    group: I32
    now_s: float
    cap_w: int
    step_s: float


def check_restore_inputs(
    power_kw: object, priority: object, shed: object, *, now_s: float,
    max_kw_per_step: float, step_s: float, shed_since_s: object, min_off_s: object,
    max_shed_s: object, group: object,
) -> RestoreInputs:
    """Validate restore inputs (same error rules as :func:`check_shed_inputs`)."""
    power = check_array("power_kw", power_kw, np.float64)
    prio = check_array("priority", priority, np.int8)
    flags = check_array("shed", shed, np.bool_)
    n = check_same_length(power_kw=power, priority=prio, shed=flags)
    since = _optional("shed_since_s", shed_since_s, np.float64, n, math.nan)
    min_off = _optional("min_off_s", min_off_s, np.float64, n, 0.0)
    max_shed = _optional("max_shed_s", max_shed_s, np.float64, n, math.inf)
    groups = _optional("group", group, np.int32, n, -1)
    check_priority(prio)
    check_group(groups, n)
    if not bool(np.all((min_off >= 0) & (min_off <= MAX_DURATION_S))):  # NaN fails
        raise ValueError(f"min_off_s must be 0 .. {MAX_DURATION_S:g} s")
    if not bool(np.all(max_shed >= 0)):  # NaN fails too
        raise ValueError("max_shed_s must be >= 0 (inf = no limit)")
    if not bool(np.all(np.isnan(since) | ((since >= 0) & (since <= MAX_TIMESTAMP_S)))):
        raise ValueError("shed_since_s must be NaN (unknown) or UNIX seconds 0 .. 1e10")
    if not 0.0 <= now_s <= MAX_TIMESTAMP_S:
        raise ValueError("now_s must be UNIX seconds 0 .. 1e10")
    if not (math.isfinite(max_kw_per_step) and 0 < max_kw_per_step <= MAX_POWER_KW):
        raise ValueError("max_kw_per_step must be > 0 kW")
    if not (math.isfinite(step_s) and 1e-3 <= step_s <= MAX_DURATION_S):
        raise ValueError(f"step_s must be 0.001 .. {MAX_DURATION_S:g} s")
    cap = quantize(max_kw_per_step)
    if cap < 1:
        raise ValueError("max_kw_per_step must be at least 0.001 kW")
    return RestoreInputs(power_kw=power, priority=prio, shed=flags, shed_since_s=since,
                         min_off_s=min_off, max_shed_s=max_shed, group=groups,
                         now_s=float(now_s), cap_w=cap, step_s=float(step_s))
