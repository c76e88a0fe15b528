"""Semantic device classes: the values of a poll, by capability, with units in the names.

A device object wraps a map and the values decoded from one poll; it never does I/O.
Setters return :class:`Write` objects — range-checked, protocol-neutral writes of
engineering values — for the controller to encode (through the device's protocol),
execute and verify. How a control is set is the map's recipe (:mod:`drivers.controls`),
so the same :class:`Inverter` drives a SunSpec inverter and a Huawei one. Capabilities a
map does not offer read as None; writing one raises
:class:`~drivers.points.WriteRangeError`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

from drivers.capabilities import relay_channel_count
from drivers.controls import ExpressionError, Step, evaluate_steps
from drivers.points import AnyMap, Value, WriteRangeError

__all__ = [
    "SG_READY_CONTACTS",
    "Battery",
    "DcBus",
    "DcLoads",
    "DcStorage",
    "Device",
    "HeatPump",
    "Inverter",
    "Meter",
    "Relay",
    "SubMeter",
    "SubMeterChannel",
    "Write",
    "device_class",
    "sg_ready_contact_writes",
    "sg_ready_from_contacts",
]


@dataclass(frozen=True, slots=True)
class Write:
    """One write: ``value`` (engineering units) to ``point``. Protocol-neutral: the
    device's protocol encodes it when it is executed. A failed ``optional`` write (a
    recipe's optional step) does not stop the writes after it."""

    point: str
    value: Value
    optional: bool = False


class Device:
    """Base of the semantic classes: capability lookup, writes and control recipes."""

    kind: ClassVar[str] = ""

    def __init__(self, device_map: AnyMap, values: Mapping[str, Value]) -> None:
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
        """A checked write of ``value`` to the point behind ``capability``.

        Raises :class:`WriteRangeError` if the map does not offer the capability, the
        point is read-only, or the value is outside its limits.
        """
        point = self.map.capability_point(capability)
        if point is None:
            raise WriteRangeError(f"{self.map.model} has no writable {capability}")
        point.check_write(value)
        return Write(point.name, value)

    # -- control recipes ----------------------------------------------------------------

    def offers(self, control: str) -> bool:
        """Whether the map says how to set ``control``."""
        return control in self.map.controls

    def set_control(self, control: str, value: float, *, revert_s: float | None = None
                    ) -> list[Write]:
        """The writes that set ``control`` to ``value`` (in the control's unit), by the
        map's recipe. ``revert_s``: the timeout the gateway programs where the recipe
        writes one. Raises :class:`WriteRangeError` when the map offers no such control,
        a value the recipe needs has not been read yet, or a write is out of range."""
        recipe = self.map.control(control)
        if recipe is None:
            raise WriteRangeError(f"{self.map.model} offers no {control} control")
        if revert_s is None:
            revert_s = recipe.revert_s
        return self._writes(recipe.set, {"value": value, "revert_s": revert_s})

    def release_control(self, control: str) -> list[Write]:
        """The writes that hand ``control`` back to the device's own logic."""
        recipe = self.map.control(control)
        if recipe is None:
            raise WriteRangeError(f"{self.map.model} offers no {control} control")
        return self._writes(recipe.release, {})

    def arm_watchdog(self, timeout_s: float | None = None) -> list[Write]:
        """The writes that arm (or refresh) the device's communication watchdog."""
        watchdog = self.map.watchdog
        if watchdog is None:
            raise WriteRangeError(f"{self.map.model} has no watchdog")
        return self._writes(watchdog.set, {
            "timeout_s": watchdog.timeout_s if timeout_s is None else timeout_s})

    def _writes(self, steps: tuple[Step, ...], arguments: Mapping[str, float | None]
                ) -> list[Write]:
        env: dict[str, float | None] = {
            name: _as_number(known) for name, known in self.values.items()}
        for capability, name in self.map.capabilities.items():
            env[capability] = env.get(name)
        env.update(arguments)
        try:
            planned = evaluate_steps(steps, env)
        except ExpressionError as exc:
            raise WriteRangeError(f"{self.map.model}: {exc}") from None
        writes = []
        for name, number, optional in planned:
            point = self.map.point(name)
            value: Value = round(number) if not point.is_numeric else number
            point.check_write(value)
            writes.append(Write(name, value, optional))
        return writes


def _as_number(value: Value) -> float | None:
    if value is None or isinstance(value, str):
        return None
    return float(value)


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

    def limit_power(self, pct: float, *, revert_s: float | None = None) -> list[Write]:
        """Writes that cap AC output at ``pct`` % of rated power (the map's
        ``power_limit`` recipe; ``revert_s`` is programmed where the device reverts)."""
        return self.set_control("power_limit", pct, revert_s=revert_s)

    def release_power_limit(self) -> list[Write]:
        return self.release_control("power_limit")


class Battery(Device):
    """A battery storage system. ``power_w``: + discharge, − charge. Held at a setpoint
    by the map's ``power_setpoint`` recipe."""

    kind = "battery"

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

    def set_power_w(self, power_w: float, *, revert_s: float | None = None) -> list[Write]:
        """Writes that hold the battery at ``power_w`` (+ discharge, − charge) until
        released or, where the device reverts, ``revert_s`` after the last refresh.

        Raises :class:`WriteRangeError` when a rating the recipe needs has not been read,
        or the setpoint is beyond what the device accepts.
        """
        return self.set_control("power_setpoint", power_w, revert_s=revert_s)

    def release(self) -> list[Write]:
        """Writes that hand control back to the battery's own logic."""
        return self.release_control("power_setpoint")


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

    def set_sg_ready_state(self, state: int) -> list[Write]:
        if state not in self.SG_READY_STATES:
            raise WriteRangeError(f"SG-Ready state must be 1–4, got {state}")
        return self.set_control("sg_ready", state)

    def set_flow_setpoint_c(self, celsius: float) -> list[Write]:
        return self.set_control("flow_setpoint", celsius)


#: The SG-Ready label's truth table: state → (contact 1 closed, contact 2 closed).
#: 1 blocked = 1:0, 2 normal = 0:0, 3 boost recommended = 0:1, 4 forced on = 1:1
#: (Bundesverband Wärmepumpe SG-Ready label; the same table as OpenEMS' SG-Ready
#: controller, ``Status.java``: LOCK (true, false), REGULAR (false, false),
#: RECOMMENDATION (false, true), FORCE_ON (true, true); evcc's ``sgready-relay`` drives
#: the "dim" relay for 1 and the "boost" relay for 3).
SG_READY_CONTACTS: Mapping[int, tuple[bool, bool]] = {
    1: (True, False), 2: (False, False), 3: (False, True), 4: (True, True),
}


def sg_ready_from_contacts(contact_1: bool | None, contact_2: bool | None) -> int | None:
    """The SG-Ready state two contacts encode (None while either is unknown)."""
    if contact_1 is None or contact_2 is None:
        return None
    return next(state for state, pair in SG_READY_CONTACTS.items()
                if pair == (contact_1, contact_2))


def sg_ready_contact_writes(relay: Relay, contacts: tuple[int, int], state: int
                            ) -> list[Write]:
    """The relay writes that put the contacts on channels ``contacts`` (contact 1,
    contact 2) into SG-Ready ``state``: both channels, each read back.

    Two coils cannot change at once, so the order keeps every intermediate state
    harmless: contacts that open go first (contact 1 before 2), then those that close
    (contact 2 before 1). A change never passes through a state worse than both ends:
    3 → 1 goes through 2 (normal), not 4 (forced on); 4 → 2 through 3, not 1; 2 → 4
    through 3. Raises :class:`WriteRangeError` for a state outside 1–4."""
    if state not in SG_READY_CONTACTS:
        raise WriteRangeError(f"SG-Ready state must be 1–4, got {state}")
    closed = dict(zip(contacts, SG_READY_CONTACTS[state], strict=True))
    first, second = contacts
    opening = [c for c in (first, second) if not closed[c]]
    closing = [c for c in (second, first) if closed[c]]
    return [relay.set_channel(channel, closed[channel]) for channel in opening + closing]


class Relay(Device):
    """A relay module: channels numbered from 1, True = closed (load on)."""

    kind = "relay"

    @property
    def channel_count(self) -> int:
        return relay_channel_count(self.map.capabilities)

    def channel_on(self, channel: int) -> bool | None:
        value = self.value(f"channel_{channel}_on")
        return None if value is None else bool(value)

    @property
    def watchdog_s(self) -> float | None:
        return self.number("watchdog_s")

    def set_channel(self, channel: int, on: bool) -> Write:
        return self.write(f"channel_{channel}_on", on)

    def set_watchdog_s(self, seconds: float) -> list[Write]:
        return self.arm_watchdog(seconds)

    def safe_on(self, channel: int) -> bool | None:
        """The state channel ``channel`` takes when the watchdog trips (True = closed),
        as read; None where the module does not say."""
        value = self.value(f"channel_{channel}_safe_on")
        return None if value is None else bool(value)

    def set_safe_state(self, channel: int, closed: bool) -> Write:
        """A write that sets the state channel ``channel`` falls to when the watchdog
        trips. Raises :class:`WriteRangeError` on modules without per-channel states."""
        return self.write(f"channel_{channel}_safe_on", 1 if closed else 0)


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

    def set_voltage_setpoint_v(self, volts: float) -> list[Write]:
        return self.set_control("voltage_setpoint", volts)

    def set_droop_pct(self, pct: float) -> list[Write]:
        return self.set_control("droop", pct)

    def set_power_limit_w(self, watts: float) -> list[Write]:
        return self.set_control("power_limit", watts)


class DcStorage(Device):
    """DC storage on a 直柔 bus: ``power_w`` + discharge into the bus; its P–V curve in
    ``curve_v1..4`` / ``curve_pct1..4``."""

    kind = "dc_storage"


class DcLoads(Device):
    """The flexible DC loads of a 直柔 bus by class (``lighting_power_w``,
    ``lighting_curve_v1`` …), and in total (``power_w``)."""

    kind = "dc_loads"


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
    cls.kind: cls for cls in (Meter, Inverter, Battery, HeatPump, Relay, DcBus, DcStorage,
                               DcLoads, SubMeter)
}


def device_class(device_map: AnyMap) -> type[Device]:
    """The semantic class for a map's kind."""
    return _CLASSES[device_map.kind]
