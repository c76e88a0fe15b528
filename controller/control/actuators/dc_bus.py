"""DC buses: read as :class:`DcBusState` (the loads on them are relay loads)."""

from __future__ import annotations

from controller.control.actuators.base import ReadContext
from controller.control.model import DcBusState
from controller.control.plant import Plant
from drivers.site import DeviceSpec


def read_dc_bus(plant: Plant, device: DeviceSpec, _: ReadContext) -> DcBusState:
    v, name = plant.value, device.name
    return DcBusState(name, v(name, "bus_voltage_v"), v(name, "nominal_voltage_v"),
                      v(name, "power_w"))
