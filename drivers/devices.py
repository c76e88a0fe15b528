"""Semantic device classes: the values of a poll, by capability, with units in the names.

A device object wraps a map and the values decoded from one poll; it never does I/O.
Setters return :class:`Write` objects — encoded, range-checked register writes — for the
controller to execute and verify. Capabilities a map does not offer read as None;
writing one raises :class:`~drivers.codec.WriteRangeError`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

from drivers.codec import WriteRangeError, encode_write, scale_factor_value
from drivers.points import DeviceMap, Point, Table, Value

__all__ = [
    "Battery",
    "DcBus",
    "Device",
    "HeatPump",
    "Inverter",
    "Meter",
    "Relay",
    "SubMeter",
    "SubMeterChannel",
    "Write",
    "device_class",
]


@dataclass(frozen=True, slots=True)
class Write:
    """One encoded write: ``values`` (registers, or 0/1 for a coil) at ``address``."""

    point: str
    table: Table
    address: int
    values: tuple[int, ...]
    value: Value  # the engineering value requested, for logs and read-back checks


class Device:
    """Base of the semantic classes: capability lookup and write encoding."""

    kind: ClassVar[str] = ""

    def __init__(self, device_map: DeviceMap, values: Mapping[str, Value]) -> None:
        if device_map.kind != self.kind:
            raise TypeError(f"{device_map.model} is a {device_map.kind}, not a {self.kind}")
        self.map = device_map
        self.values = values

    def value(self, capability: str) -> Value:
        """The decoded value behind ``capability`` (None if not offered or not read)."""
        name = self.map.capabilities.get(capability)
        return None if name is None else self.values.get(name)

    def number(self, capability: str) -> float | None:
        value = self.value(capability)
        if value is None or isinstance(value, str | bool):
            return None
        return float(value)

    def write(self, capability: str, value: Value) -> Write:
        """Encode ``value`` for the point behind ``capability``.

        Raises :class:`WriteRangeError` if the map does not offer the capability, the
        point is read-only, the value is outside its limits, or the point's scale factor
        has not been read yet.
        """
        point = self.map.capability_point(capability)
        if point is None:
            raise WriteRangeError(f"{self.map.model} has no writable {capability}")
        return Write(point.name, point.table, point.address,
                     tuple(encode_write(point, value, self._scale_factor(point))), value)

    def _scale_factor(self, point: Point) -> int | None:
        if point.scale_factor is None:
            return None
        raw = self.values.get(point.scale_factor)
        sf = scale_factor_value(raw if isinstance(raw, int) else None)
        if sf is None:
            raise WriteRangeError(
                f"{point.name}: scale factor {point.scale_factor} unknown — read it first"
            )
        return sf


class Meter(Device):
    """A grid or sub-distribution meter. ``power_w``: + import, − export."""

    kind = "meter"

    @property
    def power_w(self) -> float | None:
        return self.number("power_w")

    @property
    def import_wh(self) -> float | None:
        return self.number("import_wh")

    @property
    def export_wh(self) -> float | None:
        return self.number("export_wh")

    @property
    def frequency_hz(self) -> float | None:
        return self.number("frequency_hz")

    @property
    def power_factor(self) -> float | None:
        return self.number("power_factor")

    def voltage_v(self, phase: int) -> float | None:
        return self.number(f"l{phase}_voltage_v")

    def current_a(self, phase: int) -> float | None:
        return self.number(f"l{phase}_current_a")

    def phase_power_w(self, phase: int) -> float | None:
        return self.number(f"l{phase}_power_w")


class Inverter(Device):
    """A PV inverter. ``power_w``: + AC production."""

    kind = "inverter"

    @property
    def power_w(self) -> float | None:
        return self.number("power_w")

    @property
    def energy_wh(self) -> float | None:
        return self.number("energy_wh")

    @property
    def rated_power_w(self) -> float | None:
        return self.number("rated_power_w")

    @property
    def dc_power_w(self) -> float | None:
        return self.number("dc_power_w")

    @property
    def power_limit_pct(self) -> float | None:
        """The active power limit in % of rated power, None when limiting is disabled."""
        enabled = self.value("power_limit_enabled")
        if enabled is not None and not enabled:
            return None
        return self.number("power_limit_pct")

    def limit_power(self, pct: float, *, revert_s: int) -> list[Write]:
        """Writes that cap AC output at ``pct`` % of rated power; the inverter drops the
        cap by itself ``revert_s`` seconds after the last refresh (SunSpec RvrtTms)."""
        return [
            self.write("power_limit_revert_s", revert_s),
            self.write("power_limit_pct", pct),
            self.write("power_limit_enabled", 1),
        ]

    def release_power_limit(self) -> list[Write]:
        return [self.write("power_limit_enabled", 0)]


class Battery(Device):
    """A battery storage system. ``power_w``: + discharge, − charge.

    Control follows SunSpec model 124: with both bits of ``control_mode`` set, the
    battery's power is held inside [−discharge_limit, +charge_limit] (in % of
    ``max_charge_w``), so equal and opposite limits pin it to one setpoint.
    """

    kind = "battery"
    CHARGE_LIMIT_BIT = 0b01
    DISCHARGE_LIMIT_BIT = 0b10

    @property
    def soc_pct(self) -> float | None:
        return self.number("soc_pct")

    @property
    def power_w(self) -> float | None:
        return self.number("power_w")

    @property
    def capacity_wh(self) -> float | None:
        return self.number("capacity_wh")

    @property
    def max_charge_w(self) -> float | None:
        return self.number("max_charge_w")

    def set_power_w(self, power_w: float, *, revert_s: int) -> list[Write]:
        """Writes that hold the battery at ``power_w`` (+ discharge, − charge) until
        released or ``revert_s`` seconds after the last refresh.

        Raises :class:`WriteRangeError` when ``max_charge_w`` has not been read or the
        setpoint exceeds it.
        """
        rating = self.max_charge_w
        if not rating:
            raise WriteRangeError("battery: max_charge_w unknown — read it first")
        pct = power_w / rating * 100.0
        return [
            self.write("control_revert_s", revert_s),
            self.write("charge_limit_pct", -pct),
            self.write("discharge_limit_pct", pct),
            self.write("control_mode", self.CHARGE_LIMIT_BIT | self.DISCHARGE_LIMIT_BIT),
        ]

    def release(self) -> list[Write]:
        """Writes that hand control back to the battery's own logic."""
        return [self.write("control_mode", 0)]


class HeatPump(Device):
    """A heat pump with an SG-Ready interface. ``power_w``: + electric consumption."""

    kind = "heat_pump"
    SG_READY_STATES: ClassVar[Mapping[int, str]] = {
        1: "blocked", 2: "normal", 3: "boost recommended", 4: "forced on",
    }

    @property
    def sg_ready_state(self) -> int | None:
        value = self.number("sg_ready_state")
        return None if value is None else int(value)

    @property
    def power_w(self) -> float | None:
        return self.number("power_w")

    @property
    def energy_wh(self) -> float | None:
        return self.number("energy_wh")

    @property
    def flow_setpoint_c(self) -> float | None:
        return self.number("flow_setpoint_c")

    @property
    def flow_temp_c(self) -> float | None:
        return self.number("flow_temp_c")

    @property
    def outdoor_temp_c(self) -> float | None:
        return self.number("outdoor_temp_c")

    @property
    def indoor_temp_c(self) -> float | None:
        return self.number("indoor_temp_c")

    def set_sg_ready_state(self, state: int) -> Write:
        if state not in self.SG_READY_STATES:
            raise WriteRangeError(f"SG-Ready state must be 1–4, got {state}")
        return self.write("sg_ready_state", state)

    def set_flow_setpoint_c(self, celsius: float) -> Write:
        return self.write("flow_setpoint_c", celsius)


class Relay(Device):
    """A relay module: channels numbered from 1, True = closed (load on)."""

    kind = "relay"

    @property
    def channel_count(self) -> int:
        return sum(1 for c in self.map.capabilities if c.startswith("channel_"))

    def channel_on(self, channel: int) -> bool | None:
        value = self.value(f"channel_{channel}_on")
        return None if value is None else bool(value)

    @property
    def watchdog_s(self) -> float | None:
        return self.number("watchdog_s")

    def set_channel(self, channel: int, on: bool) -> Write:
        return self.write(f"channel_{channel}_on", on)

    def set_watchdog_s(self, seconds: float) -> Write:
        return self.write("watchdog_s", seconds)


class DcBus(Device):
    """The building's DC bus, as its interface converter reports it.

    ``power_w``: + into the bus. The converter follows a voltage–power droop: its power
    rises by ``droop_pct`` % of rating per 1 % the bus sags below ``voltage_setpoint_v``.
    """

    kind = "dc_bus"

    @property
    def voltage_v(self) -> float | None:
        return self.number("bus_voltage_v")

    @property
    def power_w(self) -> float | None:
        return self.number("power_w")

    @property
    def load_power_w(self) -> float | None:
        return self.number("load_power_w")

    @property
    def voltage_setpoint_v(self) -> float | None:
        return self.number("voltage_setpoint_v")

    @property
    def droop_pct(self) -> float | None:
        return self.number("droop_pct")

    def set_voltage_setpoint_v(self, volts: float) -> Write:
        return self.write("voltage_setpoint_v", volts)

    def set_droop_pct(self, pct: float) -> Write:
        return self.write("droop_pct", pct)

    def set_power_limit_w(self, watts: float) -> Write:
        return self.write("power_limit_w", watts)


@dataclass(frozen=True, slots=True)
class SubMeterChannel:
    voltage_v: float | None
    current_a: float | None
    power_w: float | None
    power_factor: float | None
    import_wh: float | None
    export_wh: float | None


class SubMeter(Device):
    """A multi-channel sub-meter (the ESP32 firmware). Channels numbered from 1."""

    kind = "sub_meter"

    @property
    def channel_count(self) -> int:
        return len({c.split("_", 1)[0] for c in self.map.capabilities if c.startswith("ch")})

    def channel(self, channel: int) -> SubMeterChannel:
        prefix = f"ch{channel}_"
        return SubMeterChannel(*(self.number(prefix + field) for field in (
            "voltage_v", "current_a", "power_w", "power_factor", "import_wh", "export_wh",
        )))


_CLASSES: dict[str, type[Device]] = {
    cls.kind: cls for cls in (Meter, Inverter, Battery, HeatPump, Relay, DcBus, SubMeter)
}


def device_class(device_map: DeviceMap) -> type[Device]:
    """The semantic class for a map's kind."""
    return _CLASSES[device_map.kind]
