"""Strategies: pure functions of a snapshot that return proposals. No I/O, no clock.

They run in precedence order — safety, utility events, site goals, comfort — through
:func:`compose`, which gives each actuator to the first strategy that asks for it in a
cycle; later (lower) strategies see what is taken and the constraints set above them
(e.g. a maximum site import), and only propose for what is free. So strategies never
fight: one owner per actuator per cycle.

The workhorse is :func:`hold_import`: keep site import at or below (or, for VPP dispatch,
at) a limit, with the battery as a fast continuous trimmer (integral feedback on the
measured grid power) and discrete resources — the heat pump's SG-Ready "blocked" state,
relay loads, flexible DC loads — chosen by the fastcore planner when the battery is not
enough. Discrete needs are computed on the *counterfactual* import (what the site would
draw without our interventions), so shedding a load does not make the next cycle think
it is no longer needed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

import fastcore
from controller.control.events import DrEvent, EventKind
from controller.control.model import (
    Actuator,
    ActuatorKind,
    BatteryState,
    HeatPumpState,
    Level,
    PlanSetpoints,
    Proposal,
    SgReadyState,
    Snapshot,
    TariffStretch,
)
from controller.control.settings import ControlSettings

SG_BLOCKED, SG_NORMAL, SG_BOOST, SG_FORCED = (SgReadyState.BLOCKED, SgReadyState.NORMAL,
                                              SgReadyState.BOOST, SgReadyState.FORCED)
#: Battery setpoint changes smaller than this fraction of its rating are not worth a write.
BATTERY_DEADBAND = 0.01
#: How long peak shaving plans the battery to last, s.
PEAK_HORIZON_S = 3600.0
#: Comfort-band hysteresis for blocking a heat pump, K.
HYSTERESIS_K = 0.5


@dataclass(frozen=True, slots=True)
class RunningEvent:
    """A running event with what it asks for now (limits in W, already ramped)."""

    event: DrEvent
    limit_w: float | None  # reduction/cap: max import; setpoint: the grid setpoint
    two_sided: bool  # setpoint tracking (vs. a one-sided cap)


@dataclass(frozen=True)
class Context:
    settings: ControlSettings
    events: tuple[RunningEvent, ...] = ()
    upcoming: tuple[DrEvent, ...] = ()
    shed_by: Mapping[str, str] = field(default_factory=dict)  # load -> owner (last cycle)
    plan: PlanSetpoints | None = None  # the planner's setpoints now (None: rules only)


@dataclass
class Decision:
    """Claims so far in this cycle, and constraints for the strategies below."""

    claims: dict[Actuator, Proposal] = field(default_factory=dict)
    max_import_w: float | None = None
    dropped: list[Proposal] = field(default_factory=list)

    def free(self, actuator: Actuator) -> bool:
        return actuator not in self.claims


Strategy = Callable[[Snapshot, Context, Decision], Iterable[Proposal]]


def compose(snapshot: Snapshot, context: Context, strategies: Sequence[Strategy]) -> Decision:
    """Run ``strategies`` in order; the first proposal for an actuator wins it."""
    decision = Decision()
    for strategy in strategies:
        for proposal in strategy(snapshot, context, decision):
            if decision.free(proposal.actuator):
                decision.claims[proposal.actuator] = proposal
            else:
                decision.dropped.append(proposal)
    return decision


# -- helpers ----------------------------------------------------------------------------


def battery_actuator(battery: BatteryState) -> Actuator:
    return Actuator(ActuatorKind.BATTERY, battery.name)


def _discharge_room_w(battery: BatteryState, floor_soc: float,
                      horizon_s: float | None = None) -> float:
    """Discharge power available: the rating, or — over ``horizon_s`` — only what the
    energy above ``floor_soc`` can sustain that long."""
    if not battery.ok or battery.soc_pct is None or battery.soc_pct <= floor_soc:
        return 0.0
    rating = battery.max_discharge_w or battery.max_charge_w or 0.0
    if horizon_s is None or not battery.capacity_wh:
        return rating
    energy_wh = (battery.soc_pct - floor_soc) / 100.0 * battery.capacity_wh
    return min(rating, energy_wh * 3600.0 / max(horizon_s, 60.0))


def _charge_room_w(battery: BatteryState, ceiling_soc: float) -> float:
    if not battery.ok or battery.soc_pct is None or battery.soc_pct >= ceiling_soc:
        return 0.0
    return battery.max_charge_w or 0.0


def counterfactual_import_w(snapshot: Snapshot, context: Context) -> float | None:
    """Site import without our interventions: measured grid power plus what we shed,
    block and discharge right now."""
    if snapshot.grid_w is None:
        return None
    total = snapshot.grid_w
    for battery in snapshot.batteries:
        total += battery.power_w or 0.0
    for load in snapshot.loads:
        if load.name in context.shed_by and load.on is False:
            total += load.expected_w
    for heat_pump in snapshot.heat_pumps:
        actuator = Actuator(ActuatorKind.SG_READY, heat_pump.name)
        if snapshot.commanded.get(actuator) == SG_BLOCKED:
            total += heat_pump.blocked_draw_w
    return total


def _shed_candidates(snapshot: Snapshot, context: Context, decision: Decision, owner: str,
                     allowed: Sequence[str] | None) -> list[tuple[Actuator, float, int, bool,
                                                                   str | None]]:
    """(actuator, kW, priority, currently ours, group) of what may be shed now."""
    settings = context.settings
    items = []
    for load in snapshot.loads:
        actuator = Actuator(ActuatorKind.LOAD, load.name)
        if not load.sheddable or not decision.free(actuator):
            continue
        if allowed is not None and load.name not in allowed:
            continue
        ours = context.shed_by.get(load.name) == owner and load.on is False
        if not ours and load.on is not True:
            continue
        if load.shed_since_s is not None and (
                snapshot.now_s - load.shed_since_s >= load.max_shed_s):
            continue  # shed long enough: it must come back (the restore plan does that)
        if not ours and load.switched_s is not None and (
                snapshot.now_s - load.switched_s < load.min_on_s):
            continue  # just switched on: may not go off yet
        items.append((actuator, load.expected_w / 1000.0, load.priority, ours, load.group))
    if allowed is None:
        for heat_pump in snapshot.heat_pumps:
            actuator = Actuator(ActuatorKind.SG_READY, heat_pump.name)
            if not decision.free(actuator) or heat_pump.power_w is None:
                continue
            ours = snapshot.commanded.get(actuator) == SG_BLOCKED
            now = snapshot.now_s
            if not ours and heat_pump.held_until_s is not None and \
                    heat_pump.held_until_s > now:
                continue  # its state must dwell: it cannot be blocked yet
            if ours and heat_pump.block_until_s is not None and heat_pump.block_until_s <= now:
                continue  # blocked as long as the label allows: it comes back now
            power_kw = (heat_pump.blocked_draw_w if ours else heat_pump.power_w) / 1000
            # Hysteresis: start blocking only 0.5 K inside the comfort band, keep blocking
            # until its edge — so the heat pump does not toggle at the boundary.
            margin = 0.0 if ours else HYSTERESIS_K
            if power_kw <= 0.1 or not _within_comfort(heat_pump, settings, margin):
                continue
            items.append((actuator, power_kw, settings.heat_pump_priority, ours, None))
    return items


def _within_comfort(heat_pump: HeatPumpState, settings: ControlSettings,
                    margin_k: float = 0.0) -> bool:
    """Whether blocking the heat pump keeps the room inside the comfort band: the room
    drifts down when heating is blocked, up when cooling is."""
    indoor = heat_pump.indoor_c
    if indoor is None:
        return False
    if cooling(heat_pump):
        return indoor <= settings.comfort_max_c - margin_k
    return indoor >= settings.comfort_min_c + margin_k


def plan_discrete(items: list[tuple[Actuator, float, int, bool, str | None]],
                  needed_kw: float) -> set[Actuator]:
    """The fastcore planner over ``items``: lowest priority cost to cover ``needed_kw``;
    what is already shed costs half, so the plan does not churn."""
    if needed_kw <= 0 or not items:
        return set()
    power = np.array([kw for _, kw, _, _, _ in items], dtype=np.float64)
    priority = np.array([p for _, _, p, _, _ in items], dtype=np.int8)
    sheddable = np.ones(len(items), dtype=np.bool_)
    cost = np.array([fastcore.default_cost(p) * (0.5 if ours else 1.0)
                     for _, _, p, ours, _ in items], dtype=np.float64)
    names = {g for *_, g in items if g is not None}
    group_ids = {g: i for i, g in enumerate(sorted(names))}
    group = np.array([group_ids.get(g, -1) if g is not None else -1 for *_, g in items],
                     dtype=np.int32)
    plan = fastcore.plan_shed(power, priority, sheddable, target_kw=needed_kw, group=group,
                              cost=cost)
    return {items[int(i)][0] for i in plan.shed}


# -- the import controller ----------------------------------------------------------------


def hold_import(snapshot: Snapshot, context: Context, decision: Decision, *,
                limit_w: float, two_sided: bool, level: Level, owner: str,
                horizon_s: float, allowed_loads: Sequence[str] | None = None,
                floor_soc: float | None = None) -> list[Proposal]:
    """Proposals that keep site import ≤ ``limit_w`` (``two_sided``: = ``limit_w``) for
    the next ``horizon_s`` seconds: the battery counts for what it can sustain that
    long, discrete resources make up the rest."""
    settings = context.settings
    grid = snapshot.grid_w
    if grid is None:
        return []
    floor = settings.min_soc_pct if floor_soc is None else floor_soc
    proposals: list[Proposal] = []
    excess = grid - limit_w
    free_batteries = [b for b in snapshot.batteries
                      if b.ok and decision.free(battery_actuator(b))]
    discharge_room = sum(_discharge_room_w(b, floor, horizon_s) for b in free_batteries)
    battery_now = sum(b.power_w or 0.0 for b in free_batteries)
    # Discrete resources: only for what the battery cannot cover, judged on the import
    # the site would have without us.
    uncontrolled = counterfactual_import_w(snapshot, context)
    assert uncontrolled is not None
    needed_kw = (uncontrolled - limit_w - discharge_room) / 1000.0
    if needed_kw > 0:
        needed_kw *= 1.05  # a margin: rated powers are estimates
    chosen = plan_discrete(_shed_candidates(snapshot, context, decision, owner, allowed_loads),
                           needed_kw)
    for actuator in chosen:
        if actuator.kind is ActuatorKind.LOAD:
            proposals.append(Proposal(actuator, False, level, owner, "shed to hold import"))
        else:
            proposals.append(Proposal(actuator, SG_BLOCKED, level, owner,
                                      "blocked to hold import"))
    # Battery: integral feedback on the measured grid power.
    if free_batteries:
        target = battery_now + excess
        if not two_sided:
            target = max(0.0, target)  # a cap never needs charging
        for battery in free_batteries:
            share = _split(target, free_batteries, battery, floor, settings.max_soc_pct)
            if not two_sided and share <= 0 and (battery.power_w or 0.0) <= 0:
                continue  # not needed: leave the battery to lower levels
            proposals.append(Proposal(battery_actuator(battery), share, level, owner,
                                      "trim import"))
    if not two_sided:
        decision.max_import_w = limit_w if decision.max_import_w is None else min(
            decision.max_import_w, limit_w)
    return proposals


def _split(total_w: float, batteries: Sequence[BatteryState], battery: BatteryState,
           floor_soc: float, ceiling_soc: float) -> float:
    """This battery's share of ``total_w`` (+ discharge), within its limits."""
    if total_w >= 0:
        rooms = [_discharge_room_w(b, floor_soc) for b in batteries]
        room = _discharge_room_w(battery, floor_soc)
    else:
        rooms = [_charge_room_w(b, ceiling_soc) for b in batteries]
        room = _charge_room_w(battery, ceiling_soc)
    whole = sum(rooms)
    if whole <= 0:
        return 0.0
    value = total_w * room / whole
    return max(-room, min(room, value))


# -- strategies ---------------------------------------------------------------------------


def safety_export_limit(snapshot: Snapshot, context: Context,
                        decision: Decision) -> list[Proposal]:
    """Keep export within ``export_limit_kw`` by the inverters' power limit (refreshed
    by the executor well within their revert timeout)."""
    limit_kw = context.settings.export_limit_kw
    if limit_kw is None or snapshot.grid_w is None:
        return []
    export_w = -snapshot.grid_w
    limit_w = limit_kw * 1000.0
    proposals = []
    for inverter in snapshot.inverters:
        actuator = Actuator(ActuatorKind.INVERTER_LIMIT, inverter.name)
        if not decision.free(actuator) or not inverter.rated_w or inverter.power_w is None:
            continue
        current = inverter.limit_pct if inverter.limit_pct is not None else 100.0
        over = export_w - limit_w * 0.95  # aim a little inside the limit
        wanted_w = inverter.power_w - over
        pct = max(0.0, min(100.0, wanted_w / inverter.rated_w * 100.0))
        if pct >= 99.5 and current >= 99.5:
            continue  # no limit needed
        if over < 0:  # below the limit: open up gradually, not in one jump
            pct = min(pct, current + 10.0)
        proposals.append(Proposal(actuator, round(pct, 1), Level.SAFETY, "export_limit",
                                  f"export {export_w / 1000:.1f} kW, limit {limit_kw:g} kW"))
    return proposals


def safety_dc_bus(snapshot: Snapshot, context: Context, decision: Decision) -> list[Proposal]:
    """Flexible DC loads follow the bus voltage: below the shed band they go off one per
    cycle, least important first; they stay off until the bus is back above the restore
    band (above the raise band they may all come back at once)."""
    proposals = []
    for bus in snapshot.dc_buses:
        if bus.voltage_v is None or not bus.nominal_v:
            continue
        shed_pct, restore_pct, _ = context.settings.dc_band(bus.nominal_v)
        ratio = bus.voltage_v / bus.nominal_v * 100.0
        loads = [load for load in snapshot.loads if load.dc_bus == bus.name and load.sheddable]
        ours = [load for load in loads if context.shed_by.get(load.name) == "dc_bus"
                and load.on is False]
        keep = ours if ratio < restore_pct else []
        if ratio < shed_pct:
            candidates = sorted((load for load in loads if load.on and load not in ours),
                                key=lambda load: (load.priority, load.name))
            keep = ours + candidates[:1]
        for load in keep:
            actuator = Actuator(ActuatorKind.LOAD, load.name)
            if decision.free(actuator):
                proposals.append(Proposal(actuator, False, Level.SAFETY, "dc_bus",
                                          f"bus at {ratio:.1f} % of nominal"))
    return proposals


def safety_indoor(snapshot: Snapshot, context: Context, decision: Decision) -> list[Proposal]:
    """Outside the hard indoor limits the heat pump runs normally, whatever else wants."""
    settings = context.settings
    proposals = []
    for heat_pump in snapshot.heat_pumps:
        indoor = heat_pump.indoor_c
        actuator = Actuator(ActuatorKind.SG_READY, heat_pump.name)
        if indoor is None or not decision.free(actuator):
            continue
        if indoor < settings.safety_min_c or indoor > settings.safety_max_c:
            proposals.append(Proposal(actuator, SG_NORMAL, Level.SAFETY, "indoor_limits",
                                      f"indoor {indoor:.1f} °C outside the hard limits"))
    return proposals


def event_overrides(snapshot: Snapshot, context: Context, decision: Decision
                    ) -> list[Proposal]:
    """Commands that set one device: a battery setpoint, an SG-Ready state."""
    proposals: list[Proposal] = []
    for running in context.events:
        event = running.event
        if event.kind is EventKind.BATTERY:
            proposals.append(Proposal(Actuator(ActuatorKind.BATTERY, event.target),
                                      event.battery_w, Level.EVENT, f"event:{event.id}",
                                      "battery setpoint"))
        elif event.kind is EventKind.SG_READY:
            proposals.append(Proposal(Actuator(ActuatorKind.SG_READY, event.target),
                                      event.sg_state, Level.EVENT, f"event:{event.id}",
                                      "SG-Ready command"))
    return proposals


def event_limits(snapshot: Snapshot, context: Context, decision: Decision
                 ) -> list[Proposal]:
    """DR events and VPP dispatch: hold the site import below a cap (reduction events
    are caps at baseline − reduction) or at a setpoint (the newest setpoint, never above
    a running cap)."""
    limits = [r for r in context.events if r.limit_w is not None]
    if not limits:
        return []
    setpoints = [r for r in limits if r.two_sided]
    caps = [r.limit_w for r in limits if not r.two_sided and r.limit_w is not None]
    if setpoints:
        limit = setpoints[-1].limit_w
        assert limit is not None
        return hold_import(snapshot, context, decision, limit_w=min([limit, *caps]),
                           two_sided=True, level=Level.EVENT, owner="dr",
                           horizon_s=setpoints[-1].event.end_s - snapshot.now_s)
    running = min((r for r in limits if not r.two_sided),
                  key=lambda r: r.limit_w if r.limit_w is not None else math.inf)
    assert running.limit_w is not None
    return hold_import(snapshot, context, decision, limit_w=running.limit_w, two_sided=False,
                       level=Level.EVENT, owner="dr",
                       horizon_s=running.event.end_s - snapshot.now_s,
                       allowed_loads=running.event.loads or None)


def follow_plan(snapshot: Snapshot, context: Context, decision: Decision) -> list[Proposal]:
    """The planner's setpoints, corrected in real time: the batteries run their planned
    power and take the forecast error to hold the planned grid power (within
    ``tracking_w`` of the plan, and as far as needed to stay under the planned peak);
    heat pumps take the planned SG-Ready state while the room is inside the comfort
    band (blocking only with room to drift, boosting only with room to store);
    deferrable loads switch as planned. Without a plan (none yet, too old, failed): no
    proposals, and the rule-based goals below act."""
    plan = context.plan
    if plan is None or snapshot.grid_w is None:
        return []
    settings = context.settings
    proposals: list[Proposal] = []
    free = [b for b in snapshot.batteries if b.ok and decision.free(battery_actuator(b))]
    if free:
        uncontrolled = snapshot.grid_w + sum(b.power_w or 0.0 for b in free)
        target = min(max(uncontrolled - plan.grid_w, plan.battery_w - plan.tracking_w),
                     plan.battery_w + plan.tracking_w)
        ceiling = plan.peak_w
        demand = snapshot.demand
        if demand is not None and demand.billed:  # the 15-min average is what is billed
            ceiling = demand.allowed_w(max(plan.peak_w, (demand.month_peak_kw or 0.0)
                                           * 1000.0) / 1000.0, snapshot.now_s)
        if decision.max_import_w is not None:
            ceiling = min(ceiling, decision.max_import_w)
        target = max(target, uncontrolled - ceiling)
        for battery in free:
            share = _split(target, free, battery, settings.min_soc_pct, settings.max_soc_pct)
            proposals.append(Proposal(battery_actuator(battery), share, Level.SITE, "planner",
                                      "following the plan"))
    for heat_pump in snapshot.heat_pumps:
        actuator = Actuator(ActuatorKind.SG_READY, heat_pump.name)
        state = plan.sg_states.get(heat_pump.name)
        indoor = heat_pump.indoor_c
        if state is None or indoor is None or not decision.free(actuator):
            continue
        if not settings.comfort_min_c <= indoor <= settings.comfort_max_c:
            continue  # outside the band: the comfort default brings it back
        if state == SG_BLOCKED and not _within_comfort(heat_pump, settings, HYSTERESIS_K):
            continue
        if state in (SG_BOOST, SG_FORCED) and not _room_to_store(heat_pump, settings):
            continue
        proposals.append(Proposal(actuator, state, Level.SITE, "planner", "planned state"))
    for name, on in plan.loads_on.items():
        actuator = Actuator(ActuatorKind.LOAD, name)
        if decision.free(actuator):
            proposals.append(Proposal(actuator, on, Level.SITE, "planner",
                                      "planned " + ("on" if on else "off")))
    return proposals


def _room_to_store(heat_pump: HeatPumpState, settings: ControlSettings) -> bool:
    """Whether the room can take more heat (cold) and stay 0.5 K inside the band."""
    indoor = heat_pump.indoor_c
    if indoor is None:
        return False
    if cooling(heat_pump):
        return indoor > settings.comfort_min_c + 0.5
    return indoor < settings.comfort_max_c - 0.5


def peak_shaving(snapshot: Snapshot, context: Context, decision: Decision) -> list[Proposal]:
    """Hold the configured import cap: battery first, then shedding.

    With the basic charge on demand (需量电费, the month's highest 15-min average), the
    cap is the 15-min average, not the instant: the limit is what keeps the open window's
    average at the cap for the rest of the window; and a cap below the month's peak so far
    is raised to that peak — shaving under it saves nothing this month and only wears
    the battery."""
    cap_kw = context.settings.import_cap_kw
    if cap_kw is None:
        return []
    limit_w = cap_kw * 1000.0
    demand = snapshot.demand
    if demand is not None and demand.billed:
        target_kw = max(cap_kw, demand.month_peak_kw or 0.0)
        limit_w = demand.allowed_w(target_kw, snapshot.now_s)
    return hold_import(snapshot, context, decision, limit_w=limit_w, two_sided=False,
                       level=Level.SITE, owner="peak_shaving", horizon_s=PEAK_HORIZON_S,
                       floor_soc=context.settings.reserve_soc_pct)


def battery_goal(snapshot: Snapshot, context: Context, decision: Decision) -> list[Proposal]:
    """PV self-consumption, with time-of-use arbitrage when configured: charge from
    surplus, cover import from the battery, and (arbitrage) charge in 深谷 and 低谷 —
    cheapest hours first — and discharge in 尖峰 and 高峰 — dearest hours first — holding
    in 平段; all within the SoC limits and the import cap."""
    settings = context.settings
    if settings.battery_mode == "idle" or snapshot.grid_w is None:
        return []
    free = [b for b in snapshot.batteries if b.ok and decision.free(battery_actuator(b))]
    if not free:
        return []
    battery_now = sum(b.power_w or 0.0 for b in free)
    uncontrolled = snapshot.grid_w + battery_now  # grid without these batteries
    target = uncontrolled  # self-consumption: cover import, absorb export
    reason = "self-consumption"
    if settings.battery_mode == "tou_arbitrage":
        target, reason = _arbitrage(snapshot, settings, free, uncontrolled)
    if decision.max_import_w is not None:
        # Never charge so hard that import exceeds a cap set above us.
        target = max(target, uncontrolled - decision.max_import_w)
    proposals = []
    for battery in free:
        share = _split(target, free, battery, settings.reserve_soc_pct, settings.max_soc_pct)
        proposals.append(Proposal(battery_actuator(battery), share, Level.SITE, "battery",
                                  reason))
    return proposals


def _arbitrage(snapshot: Snapshot, settings: ControlSettings, batteries: list[BatteryState],
               uncontrolled_w: float) -> tuple[float, str]:
    """(battery target W, + discharge; reason) for time-of-use arbitrage."""
    tier = snapshot.period.tier
    stretch = _stretch_ahead(snapshot, cheap=tier.cheap)
    if tier.cheap:
        need_wh = sum(max(0.0, (settings.max_soc_pct - (b.soc_pct or 0.0)) / 100.0
                          * (b.capacity_wh or 0.0)) for b in batteries)
        rate_w = sum(_charge_room_w(b, settings.max_soc_pct) for b in batteries)
        power = _allocate(stretch, need_wh, rate_w, snapshot.now_s, cheapest_first=True)
        return min(min(0.0, uncontrolled_w), -power), f"{snapshot.period} charging"
    if tier.dear:
        energy_wh = sum(max(0.0, ((b.soc_pct or 0.0) - settings.reserve_soc_pct) / 100.0
                            * (b.capacity_wh or 0.0)) for b in batteries)
        draw_w = min(max(0.0, uncontrolled_w), sum(_discharge_room_w(b, settings.reserve_soc_pct)
                                                   for b in batteries))
        power = _allocate(stretch, energy_wh, draw_w, snapshot.now_s, cheapest_first=False)
        return max(0.0, min(uncontrolled_w, power)), f"{snapshot.period} discharge"
    # flat: keep the charge for the dear hours, absorb surplus only
    return min(0.0, uncontrolled_w), "holding for the peak"


def _stretch_ahead(snapshot: Snapshot, *, cheap: bool) -> list[TariffStretch]:
    """The tariff stretches from now on while the tier stays cheap (or dear)."""
    out: list[TariffStretch] = []
    for item in snapshot.tariff_ahead:
        if item.end_s <= snapshot.now_s:
            continue
        if (item.period.tier.cheap if cheap else item.period.tier.dear):
            out.append(item)
        else:
            break
    return out


def _allocate(stretch: list[TariffStretch], energy_wh: float, power_w: float, now_s: float,
              *, cheapest_first: bool) -> float:
    """Power (W) for now when ``energy_wh`` is spread over ``stretch`` at up to
    ``power_w``, filling the cheapest (or dearest) stretches first; now's stretch gets
    what is left for it, spread over its remaining time. Without a tariff outlook: all of
    ``power_w`` while there is energy to move."""
    if energy_wh <= 0 or power_w <= 0:
        return 0.0
    if not stretch:
        return power_w
    current = stretch[0]
    ranked = sorted(stretch, key=lambda s: s.price_cny_per_kwh,
                    reverse=not cheapest_first)
    left = energy_wh
    for item in ranked:
        hours = (item.end_s - max(item.start_s, now_s)) / 3600.0
        if item is current:
            return min(power_w, left / max(hours, 0.25)) if left > 0 else 0.0
        left -= power_w * 0.9 * max(0.0, hours)  # 10 % margin: the later stretch may be short
    return 0.0


def thermal_storage(snapshot: Snapshot, context: Context, decision: Decision
                    ) -> list[Proposal]:
    """Store heat (or cold) in the building while the room has room in the comfort band:
    SG-Ready 3 on PV surplus or in the cheap hours (深谷/低谷 — the midday valley in
    spring, autumn and winter), and before a known event (4 if the event is close)."""
    settings = context.settings
    surplus = snapshot.grid_w is not None and -snapshot.grid_w > settings.thermal_surplus_kw * 1000
    cheap = snapshot.period.tier.cheap
    soon = [e for e in context.upcoming if e.kind in ("reduction", "cap")]
    proposals = []
    for heat_pump in snapshot.heat_pumps:
        actuator = Actuator(ActuatorKind.SG_READY, heat_pump.name)
        indoor = heat_pump.indoor_c
        if not decision.free(actuator) or indoor is None:
            continue
        if not settings.comfort_min_c <= indoor <= settings.comfort_max_c:
            continue
        # Heating stores heat up to the top of the band, cooling cold down to its bottom.
        if cooling(heat_pump):
            room = indoor - (settings.comfort_min_c + 0.5)
        else:
            room = (settings.comfort_max_c - 0.5) - indoor
        if room <= 0:
            continue
        if soon:
            lead = min(e.begin_s for e in soon) - snapshot.now_s
            state = SG_FORCED if lead < settings.preheat_s / 3 else SG_BOOST
            proposals.append(Proposal(actuator, state, Level.SITE, "thermal_storage",
                                      f"pre-conditioning, event in {lead / 60:.0f} min"))
        elif surplus:
            proposals.append(Proposal(actuator, SG_BOOST, Level.SITE, "thermal_storage",
                                      "PV surplus"))
        elif cheap:
            proposals.append(Proposal(actuator, SG_BOOST, Level.SITE, "thermal_storage",
                                      f"storing in {snapshot.period}"))
    return proposals


def cooling(heat_pump: HeatPumpState) -> bool:
    """Whether the heat pump is cooling (the outdoors is warmer than the room)."""
    return (heat_pump.outdoor_c is not None and heat_pump.indoor_c is not None
            and heat_pump.outdoor_c > heat_pump.indoor_c + 2.0)


def comfort(snapshot: Snapshot, context: Context, decision: Decision) -> list[Proposal]:
    """The default: heat pumps in normal operation."""
    wanted = (Actuator(ActuatorKind.SG_READY, hp.name) for hp in snapshot.heat_pumps)
    return [Proposal(actuator, SG_NORMAL, Level.COMFORT, "comfort")
            for actuator in wanted if decision.free(actuator)]


#: The strategies, in precedence order.
ALL: tuple[Strategy, ...] = (
    safety_export_limit, safety_dc_bus, safety_indoor,
    event_overrides, event_limits,
    follow_plan, peak_shaving, battery_goal, thermal_storage,
    comfort,
)
