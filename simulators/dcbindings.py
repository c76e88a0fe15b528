"""Bindings of the 直柔 devices (:mod:`simulators.physics.dcgrid`): the interface
converter, DC storage and the DC load controller, by capability (see
:mod:`simulators.bindings` for the protocol).

Curves are written one breakpoint register at a time: the device holds what was
written and takes the curve into force as soon as the four breakpoints form a valid
curve (voltages increasing), as a real controller validates a parameter set; until then
the previous curve stays in force. Every write to the converter restarts its watchdog.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

from drivers.dc_curves import BREAKPOINTS, DcLoadClass, VoltageCurve
from drivers.points import Value
from simulators.bindings import _number
from simulators.physics.dcgrid import ConverterMode, DcGrid, DcStorage

__all__ = ["DcLoadsBinding", "DcStorageBinding", "InterfaceConverterBinding"]


@dataclass
class CurveRegisters:
    """The breakpoint registers of one curve: what was written, and the curve in force."""

    curve: VoltageCurve
    voltages_v: list[float] = field(default_factory=list)
    fractions_pct: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        padded = self.curve.padded(BREAKPOINTS)
        self.voltages_v = list(padded.voltages_v)
        self.fractions_pct = list(padded.fractions_pct)

    def values(self, prefix_v: str, prefix_pct: str) -> dict[str, Value]:
        values: dict[str, Value] = {}
        for index in range(BREAKPOINTS):
            values[f"{prefix_v}{index + 1}"] = self.voltages_v[index]
            values[f"{prefix_pct}{index + 1}"] = self.fractions_pct[index]
        return values

    def write(self, voltage: bool, index: int, value: float) -> VoltageCurve:
        """Store one register (``index`` 1–4); the curve now in force."""
        if not 1 <= index <= BREAKPOINTS:
            raise KeyError(index)
        (self.voltages_v if voltage else self.fractions_pct)[index - 1] = value
        with contextlib.suppress(ValueError):  # not valid yet: the previous one stays
            self.curve = VoltageCurve.of(self.voltages_v, self.fractions_pct)
        return self.curve


def _breakpoint(capability: str, prefix_v: str, prefix_pct: str) -> tuple[bool, int] | None:
    """(is a voltage, index) for a breakpoint capability, else None."""
    for prefix, voltage in ((prefix_v, True), (prefix_pct, False)):
        if capability.startswith(prefix) and capability[len(prefix):].isdigit():
            return voltage, int(capability[len(prefix):])
    return None


@dataclass
class InterfaceConverterBinding:
    grid: DcGrid

    def values(self) -> dict[str, Value]:
        grid, converter = self.grid, self.grid.converter
        low, high = grid.band_v()
        if abs(converter.power_w) >= converter.rated_power_w - 1e-6:
            state = 3
        else:
            state = 2 if converter.mode is ConverterMode.GRID_LIMIT else 1
        return {
            "bus_voltage_v": grid.voltage_v,
            "power_w": converter.power_w,
            "ac_power_w": grid.ac_power_w,
            "load_power_w": grid.load_w(),
            "current_a": converter.power_w / max(grid.voltage_v, 1.0),
            "voltage_setpoint_v": converter.voltage_setpoint_v,
            "droop_pct": converter.droop_pct,
            "converter_mode": int(converter.mode),
            "active_mode": int(converter.mode),
            "grid_limit_w": converter.grid_limit_w,
            "watchdog_s": converter.watchdog_s,
            "nominal_voltage_v": converter.nominal_v,
            "rated_power_w": converter.rated_power_w,
            "band_low_v": low,
            "band_high_v": high,
            "fallbacks": converter.fallbacks,
            "operating_state": state,
        }

    def extra_points(self) -> dict[str, Value]:
        return {"energy_in": self.grid.energy_in_wh, "energy_out": self.grid.energy_out_wh}

    def write(self, capability: str, value: Value) -> None:
        number = _number(value)
        converter = self.grid.converter
        if capability == "voltage_setpoint_v":
            converter.voltage_setpoint_v = number
        elif capability == "droop_pct":
            if number <= 0:
                raise ValueError("droop must be > 0 %")
            converter.droop_pct = number
        elif capability == "converter_mode":
            converter.mode = ConverterMode(int(number))
        elif capability == "grid_limit_w":
            if abs(number) > converter.rated_power_w:
                raise ValueError(f"beyond the rating of {converter.rated_power_w:g} W")
            converter.grid_limit_w = number
        elif capability == "watchdog_s":
            converter.watchdog_s = number
        else:
            raise KeyError(capability)
        converter.command(self.grid.t_s)


@dataclass
class DcStorageBinding:
    grid: DcGrid
    storage: DcStorage
    registers: CurveRegisters = field(init=False)

    def __post_init__(self) -> None:
        self.registers = CurveRegisters(self.storage.curve)

    def values(self) -> dict[str, Value]:
        storage = self.storage
        values: dict[str, Value] = {
            "bus_voltage_v": self.grid.voltage_v, "power_w": storage.power_w,
            "soc_pct": storage.soc_pct, "capacity_wh": storage.capacity_wh,
            "rated_power_w": storage.rated_power_w, "soc_min_pct": storage.soc_min_pct,
            "soc_max_pct": storage.soc_max_pct}
        values.update(self.registers.values("curve_v", "curve_pct"))
        return values

    def extra_points(self) -> dict[str, Value]:
        return {}

    def write(self, capability: str, value: Value) -> None:
        number = _number(value)
        storage = self.storage
        if capability == "soc_min_pct":
            storage.soc_min_pct = number
        elif capability == "soc_max_pct":
            storage.soc_max_pct = number
        else:
            where = _breakpoint(capability, "curve_v", "curve_pct")
            if where is None:
                raise KeyError(capability)
            storage.curve = self.registers.write(*where, number)


@dataclass
class DcLoadsBinding:
    grid: DcGrid
    registers: dict[DcLoadClass, CurveRegisters] = field(init=False)

    def __post_init__(self) -> None:
        self.registers = {cls: CurveRegisters(load.curve)
                          for cls, load in self.grid.loads.items()}

    def values(self) -> dict[str, Value]:
        grid = self.grid
        values: dict[str, Value] = {
            "bus_voltage_v": grid.voltage_v, "power_w": grid.load_w(),
            "fixed_power_w": grid.fixed_w}
        for cls, load in grid.loads.items():
            name = cls.value
            values[f"{name}_power_w"] = load.power_w
            values[f"{name}_demand_w"] = load.wanted_w()
            values[f"{name}_rated_w"] = load.rated_w
            values[f"{name}_fraction_pct"] = load.curve.fraction_pct(grid.voltage_v)
            values.update(self.registers[cls].values(f"{name}_curve_v", f"{name}_curve_pct"))
        return values

    def extra_points(self) -> dict[str, Value]:
        return {}

    def write(self, capability: str, value: Value) -> None:
        number = _number(value)
        for cls, load in self.grid.loads.items():
            where = _breakpoint(capability, f"{cls.value}_curve_v", f"{cls.value}_curve_pct")
            if where is not None:
                load.curve = self.registers[cls].write(*where, number)
                return
        raise KeyError(capability)
