"""The grid connection point: the meter's view of the site's energy balance, and the
electrical quantities (phase voltage, current, reactive power) derived from power."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PhaseValues:
    voltage_v: float
    current_a: float
    power_w: float
    reactive_var: float
    apparent_va: float
    power_factor: float


def mains_voltage_v(unix_s: float, phase: int, current_a: float = 0.0,
                    nominal_v: float = 230.0, source_ohm: float = 0.02) -> float:
    """Phase-to-neutral voltage: a slow deterministic wander of ±1 % around nominal plus
    the drop over the supply impedance."""
    wander = 0.006 * math.sin(unix_s / 731.0 + phase * 2.1) + 0.004 * math.sin(unix_s / 97.0)
    return nominal_v * (1.0 + wander) - source_ohm * current_a


def mains_frequency_hz(unix_s: float) -> float:
    return 50.0 + 0.02 * math.sin(unix_s / 173.0) + 0.01 * math.sin(unix_s / 31.0)


def phase_values(power_w: float, power_factor: float, unix_s: float, phase: int) -> PhaseValues:
    """Electrical quantities of one phase carrying ``power_w`` at ``power_factor``
    (inductive, reactive power positive when importing)."""
    pf = max(0.05, min(1.0, power_factor))
    apparent = abs(power_w) / pf
    reactive = math.copysign(math.sqrt(max(0.0, apparent**2 - power_w**2)), power_w or 1.0)
    nominal = mains_voltage_v(unix_s, phase)
    current = apparent / nominal
    voltage = mains_voltage_v(unix_s, phase, current)
    signed_pf = pf if power_w >= 0 else -pf
    return PhaseValues(voltage, apparent / voltage, power_w, reactive, apparent, signed_pf)


class EnergyCounter:
    """Import/export counters fed with signed energies (Wh, + import)."""

    def __init__(self, import_wh: float = 0.0, export_wh: float = 0.0) -> None:
        self.import_wh = import_wh
        self.export_wh = export_wh
        self.power_w = 0.0

    def add(self, energy_wh: float, dt_s: float) -> None:
        if energy_wh >= 0:
            self.import_wh += energy_wh
        else:
            self.export_wh -= energy_wh
        if dt_s > 0:
            self.power_w = energy_wh * 3600.0 / dt_s
