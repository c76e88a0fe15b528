"""PV inverter active-power limits: read as :class:`InverterState`, written by the
map's ``power_limit`` recipe (% of rating), refreshed within the inverter's revert
timeout, released when nobody needs a limit."""

from __future__ import annotations

from controller.control.actuators.base import LoopState, ReadContext, WritePlan
from controller.control.model import Actuator, ActuatorKind, InverterState, Proposal, Snapshot
from controller.control.plant import Plant
from drivers.devices import Inverter
from drivers.site import DeviceSpec

#: Limit changes smaller than this are not worth a write, % of rating.
LIMIT_DEADBAND_PCT = 0.5


def read_inverter(plant: Plant, device: DeviceSpec, _: ReadContext) -> InverterState:
    v, name = plant.value, device.name
    limit_pct = v(name, "power_limit_pct") if v(name, "power_limit_enabled") else None
    return InverterState(name, v(name, "power_w"), v(name, "rated_power_w"), limit_pct)


class InverterLimits:
    kind = ActuatorKind.INVERTER_LIMIT

    def plan(self, actuator: Actuator, proposal: Proposal, snapshot: Snapshot,
             state: LoopState, now_s: float) -> WritePlan | None:
        inverter = Inverter(state.plant.site.devices[actuator.name].device_map,
                            state.plant.device_values(actuator.name))
        if proposal.value is None:
            if state.commanded.get(actuator) is None:
                return None  # never limited, or released already
            return WritePlan(actuator.name, inverter.release_power_limit(),
                             state.remember(actuator, None, now_s))
        limit_pct = float(proposal.value)
        previous = state.commanded.get(actuator)
        if isinstance(previous, float) and abs(previous - limit_pct) < LIMIT_DEADBAND_PCT \
                and not state.refresh_due(actuator, now_s):
            return None
        writes = inverter.limit_power(limit_pct, revert_s=state.settings.inverter_revert_s)
        return WritePlan(actuator.name, writes, state.remember(actuator, limit_pct, now_s))
