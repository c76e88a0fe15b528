"""Which protocol driver talks to a device of the site file: one place that knows them all."""

from __future__ import annotations

from drivers.dlt645_driver import Dlt645Driver
from drivers.modbus import ModbusDriver
from drivers.points import Protocol
from drivers.protocol import Driver
from drivers.site import DeviceSpec

__all__ = ["driver_for"]


def driver_for(device: DeviceSpec) -> Driver:
    """The protocol session for ``device`` on its line (framed as its line requires)."""
    if device.protocol is Protocol.MODBUS:
        return ModbusDriver(device.device_map, device.unit, device.line.framing,
                            max_registers=device.max_registers)
    return Dlt645Driver(device.device_map, device.meter_address, password=device.password,
                        operator=device.operator)
