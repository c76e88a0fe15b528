"""Heat pumps by SG-Ready: read as :class:`HeatPumpState` (the state from the relay
contacts' read-back when the site wires them, else the heat pump's register), written as
one verified contact sequence on the relay module or the map's ``sg_ready`` recipe. The
state set last dwells (the site's ``min_dwell_s``); a block ends at the label's limit."""

from __future__ import annotations

from collections.abc import Mapping

from controller.control.actuators.base import (
    LoadMemory,
    LoopState,
    ReadContext,
    SgHold,
    WritePlan,
)
from controller.control.model import (
    Actuator,
    ActuatorKind,
    HeatPumpState,
    Level,
    Proposal,
    SgReadyState,
    Snapshot,
)
from controller.control.plant import Plant
from drivers.devices import HeatPump, Relay, Write, sg_ready_contact_writes, sg_ready_from_contacts
from drivers.site import SG_READY_MAX_BLOCKED_S, DeviceSpec, SiteSpec

#: The owner of the proposal that ends a block at the SG-Ready label's limit.
BLOCK_LIMIT = "sg_ready_limit"


def sg_ready_state(plant: Plant, device: DeviceSpec) -> int | None:
    """A heat pump's SG-Ready state as read: from its relay contacts' read-back when the
    site wires them, else from its own register (None while unknown)."""
    wiring = device.sg_ready
    if wiring is not None and wiring.relay is not None and wiring.contacts is not None:
        first, second = (plant.value(wiring.relay, f"channel_{c}_on") for c in wiring.contacts)
        return sg_ready_from_contacts(None if first is None else bool(first),
                                      None if second is None else bool(second))
    value = plant.value(device.name, "sg_ready_state")
    return None if value is None else int(value)


def read_heat_pump(plant: Plant, device: DeviceSpec, context: ReadContext) -> HeatPumpState:
    v, name = plant.value, device.name
    hold = context.sg_holds.get(name, SgHold(None, None))
    return HeatPumpState(name, sg_ready_state(plant, device), v(name, "power_w"),
                         v(name, "indoor_temp_c"), v(name, "outdoor_temp_c"),
                         v(name, "rated_power_w"), context.heat_pump_running_w.get(name),
                         hold.held_until_s, hold.block_until_s, v(name, "indoor_setpoint_c"))


def contacts(site: SiteSpec, heat_pump: str) -> tuple[str, tuple[int, int]] | None:
    """(relay, (contact 1, contact 2)) when the site wires the heat pump's SG-Ready
    terminals to relay channels."""
    device = site.devices.get(heat_pump)
    wiring = None if device is None else device.sg_ready
    if wiring is None or wiring.relay is None or wiring.contacts is None:
        return None
    return wiring.relay, wiring.contacts


def sg_writes(plant: Plant, heat_pump: str, state: int) -> tuple[str, list[Write]]:
    """(device written, writes) that put ``heat_pump`` into SG-Ready ``state``: its
    relay contacts when the site wires them (one verified sequence on the relay
    module), else the map's ``sg_ready`` recipe."""
    site = plant.site
    wired = contacts(site, heat_pump)
    if wired is not None:
        relay_name, channels = wired
        relay = Relay(site.devices[relay_name].device_map, plant.device_values(relay_name))
        return relay_name, sg_ready_contact_writes(relay, channels, state)
    device = HeatPump(site.devices[heat_pump].device_map, plant.device_values(heat_pump))
    return heat_pump, device.set_sg_ready_state(state)


def sg_holds(site: SiteSpec, memory: LoadMemory) -> dict[str, SgHold]:
    """Per heat pump, until when the SG-Ready state set last must dwell, and by when
    a block must end (the site's ``sg_ready`` table; without one no dwell, and the
    label's two-hour block)."""
    holds = {}
    for device in site.devices.values():
        if device.device_map.kind != "heat_pump":
            continue
        wiring, name = device.sg_ready, device.name
        since = memory.sg_since.get(name)
        dwell_s = 0.0 if wiring is None else wiring.min_dwell_s
        limit_s = SG_READY_MAX_BLOCKED_S if wiring is None else wiring.max_blocked_s
        blocked = memory.blocked_since.get(name)
        holds[name] = SgHold(
            None if since is None or dwell_s <= 0 else since + dwell_s,
            None if blocked is None or memory.sg_state.get(name) != SgReadyState.BLOCKED
            else blocked + limit_s)
    return holds


def end_long_blocks(snapshot: Snapshot) -> list[Proposal]:
    """Safety proposals that bring a heat pump blocked as long as the SG-Ready label
    allows back to normal operation, whatever the strategies want (and before any
    dwell)."""
    proposals = []
    for heat_pump in snapshot.heat_pumps:
        ends = heat_pump.block_until_s
        if ends is not None and snapshot.now_s >= ends:
            actuator = Actuator(ActuatorKind.SG_READY, heat_pump.name)
            proposals.append(Proposal(actuator, SgReadyState.NORMAL, Level.SAFETY,
                                      BLOCK_LIMIT,
                                      "blocked as long as the SG-Ready label allows"))
    return proposals


class SgReadyStates:
    kind = ActuatorKind.SG_READY

    def plan(self, actuator: Actuator, proposal: Proposal, snapshot: Snapshot,
             state: LoopState, now_s: float) -> WritePlan | None:
        name = actuator.name
        wanted = SgReadyState(int(proposal.value)) if proposal.value is not None \
            else SgReadyState.NORMAL
        current = next((h.sg_ready_state for h in snapshot.heat_pumps if h.name == name), None)
        if actuator in state.commanded and state.commanded[actuator] == wanted \
                and current == wanted:
            return None
        memory = state.memory
        held = memory.sg_state.get(name)
        until = held_until(snapshot, name)
        if held is not None and wanted != held and until is not None and now_s < until \
                and proposal.owner != BLOCK_LIMIT:
            return None  # the state set last must dwell: the proposal waits
        device, writes = sg_writes(state.plant, name, wanted)

        def effect() -> None:
            state.commanded[actuator] = wanted
            state.last_written[actuator] = now_s
            memory.sg_changed(name, wanted, now_s, moved=current != wanted)
        return WritePlan(device, writes, effect)


def held_until(snapshot: Snapshot, heat_pump: str) -> float | None:
    """Until when ``heat_pump``'s SG-Ready state must dwell (None: free now)."""
    return next((h.held_until_s for h in snapshot.heat_pumps if h.name == heat_pump), None)


def running_draws(snapshot: Snapshot, known: Mapping[str, float]) -> dict[str, float]:
    """Each heat pump's draw when last seen running (what blocking it takes off the
    grid): ``known`` updated with those running now, unblocked, above 100 W."""
    draws = dict(known)
    for heat_pump in snapshot.heat_pumps:
        if heat_pump.sg_ready_state != SgReadyState.BLOCKED and (
                heat_pump.power_w or 0.0) > 100.0:
            draws[heat_pump.name] = heat_pump.power_w or 0.0
    return draws
