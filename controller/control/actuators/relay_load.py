"""Loads on relay channels: read as :class:`LoadState` (relay read-back, sub-meter
power, what we did to them), switched by the relay module's channel write; the load
memory records who shed what since when."""

from __future__ import annotations

from controller.control.actuators.base import LoadMemory, LoopState, WritePlan
from controller.control.model import Actuator, ActuatorKind, LoadState, Proposal, Snapshot
from controller.control.plant import Plant
from drivers.devices import Relay


def read_loads(plant: Plant, memory: LoadMemory) -> tuple[LoadState, ...]:
    """Every load of the site, as its relay and sub-meter report it."""
    v = plant.value
    loads = []
    for load in plant.site.loads.values():
        on = None
        if load.device is not None and load.channel is not None:
            channel = v(load.device, f"channel_{load.channel}_on")
            on = None if channel is None else bool(channel)
        power_w = None if load.meter is None else v(load.meter[0], f"ch{load.meter[1]}_power_w")
        loads.append(LoadState(
            load.name, load.rated_w, load.priority, load.sheddable, on, power_w,
            load.min_on_s, load.min_off_s, load.max_shed_s, load.group, load.dc_bus,
            memory.switched.get(load.name), memory.shed_since.get(load.name)))
    return tuple(loads)


class RelayLoads:
    kind = ActuatorKind.LOAD

    def plan(self, actuator: Actuator, proposal: Proposal, snapshot: Snapshot,
             state: LoopState, now_s: float) -> WritePlan | None:
        site = state.plant.site
        load = site.loads[actuator.name]
        assert load.device is not None
        assert load.channel is not None
        want_on = bool(proposal.value)
        if snapshot.load(actuator.name).on is want_on and actuator in state.commanded \
                and state.commanded[actuator] == want_on:
            return None
        relay = Relay(site.devices[load.device].device_map,
                      state.plant.device_values(load.device))
        memory, owner = state.memory, proposal.owner

        def effect() -> None:
            state.commanded[actuator] = want_on
            memory.switched[load.name] = now_s
            if want_on:
                memory.shed_since.pop(load.name, None)
                memory.shed_by.pop(load.name, None)
            else:
                memory.shed_since.setdefault(load.name, now_s)
                memory.shed_by[load.name] = owner
        return WritePlan(load.device, [relay.set_channel(load.channel, want_on)], effect)
