"""Pure-Python twin of the ``_shed`` kernel: load-shedding and staggered-restore planner.

Identical API and results as the compiled :mod:`fastcore._shed` (all sums are exact
integers of watts and milli-cost units; the few floating-point values are computed with
the same operations), used when the compiled module is unavailable and as the reference
in the property tests. Specification: ``docs/fastcore.md`` ("Load shedding").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fastcore._common import F64, I32
from fastcore._shed_common import (
    CORE_HALF_WIDTH,
    CORE_NODE_LIMIT,
    EXACT_MAX_ITEMS,
    I8,
    MAX_POWER_KW,
    NO_LIMIT,
    BoolArray,
    RestorePlan,
    ShedPlan,
    check_restore_inputs,
    check_shed_inputs,
    check_shed_values,
)

_Item = tuple[float, int, int, int, int]  # (cost per W, rep load, watts, cost milli, group)


def _watts(kw: float) -> int:
    """Quantised power in W, or -1 when the value is invalid (NaN, inf, < 0, absurd)."""
    if not (kw >= 0.0 and kw <= MAX_POWER_KW):
        return -1
    return math.floor(kw * 1000.0 + 0.5)


def _bnb(w: list[int], c: list[int], target: int,
         node_limit: int) -> tuple[list[int] | None, int, int]:
    """Best subset (positions) of items sorted by cost per W covering ``target`` W.

    Objective: minimum cost, then minimum overshoot; ties go to the subset found first
    by the include-first depth-first search, i.e. the one containing the earliest item
    in (cost per W, index) order. Returns (positions or None, cost, watts).
    """
    m = len(w)
    suffix = [0] * (m + 1)
    for j in range(m - 1, -1, -1):
        suffix[j] = suffix[j + 1] + w[j]
    best_c = NO_LIMIT
    best_over = NO_LIMIT
    best_w = 0
    best: list[int] | None = None
    path: list[int] = []
    nodes = 0
    stop = False

    def lower_bound(j: int, need: int) -> int:
        full = 0
        acc = 0
        for q in range(j, m):
            if acc + w[q] >= need:
                frac = float(c[q]) * (float(need - acc) / float(w[q]))
                return full + math.ceil(frac * (1.0 - 1e-12) - 1e-9)
            acc += w[q]
            full += c[q]
        return NO_LIMIT

    def dfs(j: int, cur_w: int, cur_c: int) -> None:
        nonlocal nodes, stop, best_c, best_over, best_w, best
        nodes += 1
        if nodes > node_limit:
            stop = True
        if stop or j == m or cur_w + suffix[j] < target:
            return
        bound = cur_c + lower_bound(j, target - cur_w)
        if bound > best_c or (bound >= best_c and best_over == 0):
            return
        new_w = cur_w + w[j]
        new_c = cur_c + c[j]
        path.append(j)
        if new_w >= target:
            over = new_w - target
            if new_c < best_c or (new_c == best_c and over < best_over):
                best_c, best_over, best_w, best = new_c, over, new_w, list(path)
        else:
            dfs(j + 1, new_w, new_c)
        path.pop()
        dfs(j + 1, cur_w, cur_c)

    dfs(0, 0, 0)
    return best, best_c, best_w


def _drop(items: list[_Item], chosen: list[int], over: int) -> list[int]:
    """Remove redundant items: repeatedly the costliest (then largest, then latest in
    cost-per-W order) chosen item whose watts fit in the overshoot."""
    candidates = sorted((q for q in chosen if items[q][2] <= over),
                        key=lambda q: (items[q][3], items[q][2], items[q][0], items[q][1]),
                        reverse=True)
    dropped = set()
    for q in candidates:
        if items[q][2] <= over:
            dropped.add(q)
            over -= items[q][2]
    return [q for q in chosen if q not in dropped]


def _choose(items: list[_Item], target: int, exact_max_items: int) -> tuple[list[int], bool]:
    """Positions (into ``items``) of the items to shed, and whether that is exact."""
    m = len(items)
    total = sum(item[2] for item in items)
    if target <= 0:
        return [], True
    if total < target:
        return list(range(m)), True
    order = sorted(range(m), key=lambda q: (items[q][0], items[q][1]))
    if m <= exact_max_items:
        found, _, _ = _bnb([items[q][2] for q in order], [items[q][3] for q in order],
                           target, NO_LIMIT)
        assert found is not None
        return [order[r] for r in found], True
    # heuristic: greedy by cost per W up to the break item k, exact search on a core of
    # +-CORE_HALF_WIDTH items around k, then drop redundant items; compare with "all
    # items before k + the best single item that completes them".
    acc = 0
    k = 0
    while acc + items[order[k]][2] < target:
        acc += items[order[k]][2]
        k += 1
    lo, hi = max(0, k - CORE_HALF_WIDTH), min(m, k + CORE_HALF_WIDTH + 1)
    prefix = order[:lo]
    prefix_w = sum(items[q][2] for q in prefix)
    core = order[lo:hi]
    found, _, _ = _bnb([items[q][2] for q in core], [items[q][3] for q in core],
                       target - prefix_w, CORE_NODE_LIMIT)
    first = prefix + ([core[r] for r in found] if found is not None else order[lo:k + 1])
    first = _drop(items, first, sum(items[q][2] for q in first) - target)
    need = target - acc  # acc = watts of ranks < k
    single = min((q for q in order[k:] if items[q][2] >= need),
                 key=lambda q: (items[q][3], items[q][2], items[q][0], items[q][1]))
    second = [*order[:k], single]
    second = _drop(items, second, sum(items[q][2] for q in second) - target)

    def score(chosen: list[int]) -> tuple[int, int]:
        return sum(items[q][3] for q in chosen), sum(items[q][2] for q in chosen)

    return (second if score(second) < score(first) else first), False


def plan_shed(
    power_kw: F64,
    priority: I8,
    sheddable: BoolArray,
    *,
    target_kw: float | None = None,
    import_cap_kw: float | None = None,
    site_import_kw: float | None = None,
    locked_out: BoolArray | None = None,
    on_since_s: F64 | None = None,
    min_on_s: F64 | None = None,
    now_s: float | None = None,
    group: I32 | None = None,
    cost: F64 | None = None,
    exact_max_items: int = EXACT_MAX_ITEMS,
) -> ShedPlan:
    """Choose the loads to shed so that at least ``target_kw`` kW come off (or, with
    ``import_cap_kw`` and ``site_import_kw``, the site import falls to the cap).

    Inputs per load (equal-length numpy arrays): ``power_kw`` (float64, current kW),
    ``priority`` (int8, 1 = least important .. 10), ``sheddable`` (bool), optional
    ``locked_out`` (bool, never shed), ``on_since_s`` + ``min_on_s`` + ``now_s`` (a load
    switched on less than ``min_on_s`` ago is not eligible; NaN = unknown = eligible),
    ``group`` (int32, -1 = none; a group is shed whole or not at all, and not at all if
    any switched-on member is ineligible), ``cost`` (float64 0..1e9, default
    10 ** (priority - 1)).

    Objective: meet the target at minimum total cost, then minimum overshoot; ties go
    to the plan containing the earliest candidate in (cost per kW, load index) order.
    Exact (branch and bound) up to ``exact_max_items`` candidates, otherwise a greedy
    + core branch-and-bound + drop heuristic. Deterministic. If the target cannot be met
    everything eligible is shed and ``shortfall_kw`` says by how much.

    Raises ``TypeError`` for wrong array types/dtypes and ``ValueError`` for wrong
    shapes or invalid configuration values (priority, group ids, cost, target).
    """
    inputs = check_shed_inputs(
        power_kw, priority, sheddable, target_kw=target_kw, import_cap_kw=import_cap_kw,
        site_import_kw=site_import_kw, locked_out=locked_out, on_since_s=on_since_s,
        min_on_s=min_on_s, now_s=now_s, group=group, cost=cost,
        exact_max_items=exact_max_items)
    locked_out, on_since, min_on_s, group_ids, cost_milli = check_shed_values(inputs)
    power = inputs.power_kw.tolist()
    shed_ok = inputs.sheddable.tolist()
    locked = locked_out.tolist()
    since = on_since.tolist()
    min_on = min_on_s.tolist()
    groups = group_ids.tolist()
    costs = cost_milli.tolist()
    now = inputs.now_s
    n = len(power)
    watts = [0] * n
    n_invalid = 0
    items: list[_Item] = []
    group_w: dict[int, int] = {}
    group_c: dict[int, int] = {}
    group_rep: dict[int, int] = {}
    blocked: set[int] = set()
    for i in range(n):
        wi = _watts(power[i])
        if wi < 0:
            n_invalid += 1
        watts[i] = wi
        if wi == 0:
            continue  # off: neither a candidate nor blocking its group
        eligible = (wi > 0 and shed_ok[i] and not locked[i]
                    and not (since[i] == since[i] and now - since[i] < min_on[i]))
        g = groups[i]
        if g < 0:
            if eligible:
                items.append((float(costs[i]) / float(wi), i, wi, costs[i], -1))
        elif not eligible:
            blocked.add(g)
        else:
            group_w[g] = group_w.get(g, 0) + wi
            group_c[g] = group_c.get(g, 0) + costs[i]
            group_rep.setdefault(g, i)
    for g in sorted(group_w):
        if g not in blocked:
            items.append((float(group_c[g]) / float(group_w[g]), group_rep[g], group_w[g],
                          group_c[g], g))
    target = inputs.target_w
    chosen, exact = _choose(items, target, exact_max_items)
    chosen_loads = {items[q][1] for q in chosen if items[q][4] < 0}
    chosen_groups = {items[q][4] for q in chosen if items[q][4] >= 0}
    shed = [i for i in range(n) if watts[i] > 0 and (
        i in chosen_loads or (groups[i] >= 0 and groups[i] in chosen_groups))]
    shed_w = sum(items[q][2] for q in chosen)
    goal = max(target, 0)
    return ShedPlan(
        shed=np.array(shed, dtype=np.int32),
        target_kw=goal / 1000.0,
        shed_kw=shed_w / 1000.0,
        overshoot_kw=max(shed_w - goal, 0) / 1000.0,
        shortfall_kw=max(goal - shed_w, 0) / 1000.0,
        cost=sum(items[q][3] for q in chosen) / 1000.0,
        exact=exact,
        n_items=len(items),
        n_invalid=n_invalid,
    )


def plan_restore(
    power_kw: F64,
    priority: I8,
    shed: BoolArray,
    *,
    now_s: float,
    max_kw_per_step: float,
    step_s: float,
    shed_since_s: F64 | None = None,
    min_off_s: F64 | None = None,
    max_shed_s: F64 | None = None,
    group: I32 | None = None,
) -> RestorePlan:
    """Plan a staggered restore of the loads flagged in ``shed`` (bool).

    ``power_kw`` is the kW each load draws when back on (NaN/inf/negative = unknown:
    restored in a step of its own). A load is ready at ``shed_since_s + min_off_s``
    (NaN shed time = ready now). Order: loads shed for at least ``max_shed_s`` first,
    then by priority (most important first), then by index; shed members of a group
    come back together. Step s is at ``now_s + s * step_s`` and restores, in that order,
    the ready loads while their total stays within ``max_kw_per_step``; the first ready
    load that does not fit ends the step (nothing overtakes it), except that a load
    larger than the limit is restored alone. Steps where nothing is ready are skipped.

    Raises ``TypeError``/``ValueError`` like :func:`plan_shed`.
    """
    inputs = check_restore_inputs(
        power_kw, priority, shed, now_s=now_s, max_kw_per_step=max_kw_per_step,
        step_s=step_s, shed_since_s=shed_since_s, min_off_s=min_off_s,
        max_shed_s=max_shed_s, group=group)
    power = inputs.power_kw.tolist()
    prio = inputs.priority.tolist()
    flags = inputs.shed.tolist()
    since = inputs.shed_since_s.tolist()
    min_off = inputs.min_off_s.tolist()
    max_shed = inputs.max_shed_s.tolist()
    groups = inputs.group.tolist()
    now, cap, step_s = inputs.now_s, inputs.cap_w, inputs.step_s
    by_group: dict[int, _RestoreItem] = {}
    items: list[_RestoreItem] = []
    for i in range(len(power)):
        if not flags[i]:
            continue
        wi = _watts(power[i])
        ready = now if since[i] != since[i] else since[i] + min_off[i]
        overdue = since[i] == since[i] and now - since[i] >= max_shed[i]
        g = groups[i]
        item = by_group.get(g) if g >= 0 else None
        if item is None:
            item = _RestoreItem(overdue, prio[i], i, wi, ready, [i])
            items.append(item)
            if g >= 0:
                by_group[g] = item
        else:
            item.members.append(i)
            item.overdue = item.overdue or overdue
            item.priority = max(item.priority, prio[i])
            item.watts = -1 if (wi < 0 or item.watts < 0) else item.watts + wi
            item.ready_s = max(item.ready_s, ready)
    items.sort(key=lambda it: (not it.overdue, -it.priority, it.rep))
    remaining = items
    out_load: list[int] = []
    out_time: list[float] = []
    out_step: list[int] = []
    k = 0
    n_steps = 0
    while remaining:
        t_k = now + k * step_s
        used = 0
        taken: list[int] = []
        for position, item in enumerate(remaining):
            if item.ready_s > t_k:
                continue
            if not taken and (item.watts < 0 or item.watts > cap):
                taken.append(position)
                break
            if item.watts < 0 or used + item.watts > cap:
                break
            used += item.watts
            taken.append(position)
        if taken:
            n_steps += 1
            for position in taken:
                for i in remaining[position].members:
                    out_load.append(i)
                    out_time.append(t_k)
                    out_step.append(k)
            chosen = set(taken)
            remaining = [it for p, it in enumerate(remaining) if p not in chosen]
            k += 1
        else:
            first_ready = min(it.ready_s for it in remaining)
            k = max(k + 1, math.ceil((first_ready - now) / step_s))
    return RestorePlan(load_index=np.array(out_load, dtype=np.int32),
                       restore_at_s=np.array(out_time, dtype=np.float64),
                       step=np.array(out_step, dtype=np.int32), n_steps=n_steps)


@dataclass
class _RestoreItem:
    """A load, or the shed members of a group, to restore together."""

    overdue: bool  # shed for at least max_shed_s (any member)
    priority: int  # highest member priority
    rep: int  # lowest member index
    watts: int  # total W, -1 = unknown
    ready_s: float  # earliest restore time (latest member's shed_since + min_off)
    members: list[int]
