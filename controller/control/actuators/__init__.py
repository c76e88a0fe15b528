"""The actuators, one module per kind: each reads its devices into the snapshot and
translates proposals into its devices' writes (OpenEMS's one controller per folder,
evcc's small interfaces). The loop looks them up here and knows no kind itself."""

from __future__ import annotations

from controller.control.actuators.base import (
    ActuatorHandler,
    DeviceReader,
    LoadMemory,
    LoopState,
    ReadContext,
    SgHold,
    WritePlan,
)
from controller.control.actuators.battery import BatterySetpoints, read_battery
from controller.control.actuators.dc_bus import read_dc_bus
from controller.control.actuators.inverter_limit import InverterLimits, read_inverter
from controller.control.actuators.relay_load import RelayLoads, read_loads
from controller.control.actuators.sg_ready import SgReadyStates, read_heat_pump
from controller.control.model import ActuatorKind

__all__ = ["HANDLERS", "READERS", "ActuatorHandler", "LoadMemory", "LoopState", "ReadContext",
           "SgHold", "WritePlan", "read_loads"]

#: The handler of each actuator kind a strategy may propose for.
HANDLERS: dict[ActuatorKind, ActuatorHandler] = {
    handler.kind: handler
    for handler in (RelayLoads(), BatterySetpoints(), SgReadyStates(), InverterLimits())}

#: Per device kind: its reader, and the snapshot field its states go to.
READERS: dict[str, tuple[DeviceReader, str]] = {
    "battery": (read_battery, "batteries"),
    "heat_pump": (read_heat_pump, "heat_pumps"),
    "inverter": (read_inverter, "inverters"),
    "dc_bus": (read_dc_bus, "dc_buses"),
}
