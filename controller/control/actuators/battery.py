"""Battery power setpoints: read as :class:`BatteryState`, written by the map's
``power_setpoint`` recipe (W, + discharge), refreshed within the battery's revert
timeout, handed back by its release steps."""

from __future__ import annotations

from controller.control.actuators.base import LoopState, ReadContext, WritePlan
from controller.control.model import Actuator, ActuatorKind, BatteryState, Proposal, Snapshot
from controller.control.plant import Plant
from drivers.devices import Battery
from drivers.site import DeviceSpec

#: Setpoint changes smaller than this fraction of the rating are not worth a write.
BATTERY_DEADBAND = 0.01


def read_battery(plant: Plant, device: DeviceSpec, _: ReadContext) -> BatteryState:
    v, name = plant.value, device.name
    return BatteryState(name, v(name, "soc_pct"), v(name, "power_w"), v(name, "max_charge_w"),
                        v(name, "max_discharge_w"), v(name, "capacity_wh"))


class BatterySetpoints:
    kind = ActuatorKind.BATTERY

    def plan(self, actuator: Actuator, proposal: Proposal, snapshot: Snapshot,
             state: LoopState, now_s: float) -> WritePlan | None:
        device = state.plant.site.devices[actuator.name]
        battery = Battery(device.device_map, state.plant.device_values(actuator.name))
        rating = battery.max_charge_w or 1.0
        if proposal.value is None:
            if state.commanded.get(actuator) is None:
                return None  # never commanded, or handed back already
            return WritePlan(actuator.name, battery.release(),
                             state.remember(actuator, None, now_s))
        setpoint_w = max(-rating, min(rating, float(proposal.value)))
        previous = state.commanded.get(actuator)
        if isinstance(previous, float) and abs(previous - setpoint_w) < \
                BATTERY_DEADBAND * rating and not state.refresh_due(actuator, now_s):
            return None
        writes = battery.set_power_w(setpoint_w, revert_s=state.settings.battery_revert_s)
        return WritePlan(actuator.name, writes, state.remember(actuator, setpoint_w, now_s))
