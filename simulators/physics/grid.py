"""The grid connection point: the meter's view of the site's energy balance, and the
electrical quantities (phase voltage, current, reactive power) derived from power.

A three-phase meter sees the site's power split over its phases with a small,
slowly varying unbalance (a few per cent, as single-phase loads come and go). The split
is exact: the phase powers add up to the total, and in every phase P = V·I·PF.
"""

from __future__ import annotations

import cmath
import math
from dataclasses import dataclass

#: Phase angles of the supply voltages L1, L2, L3 (radians; positive sequence).
PHASE_ANGLES = (0.0, -2.0 * math.pi / 3.0, 2.0 * math.pi / 3.0)


@dataclass(frozen=True, slots=True)
class PhaseValues:
    """One phase: voltage (V, to neutral), current (A, magnitude), active power (W, +
    import), reactive power (var), apparent power (VA) and power factor (signed like
    the active power: + forward current, − reverse)."""

    voltage_v: float
    current_a: float
    power_w: float
    reactive_var: float
    apparent_va: float
    power_factor: float

    def quantities(self, prefix: str) -> dict[str, float]:
        """This phase's values by capability name, each name prefixed (``"l1_"``,
        ``"ch2_"``)."""
        return {prefix + "voltage_v": self.voltage_v, prefix + "current_a": self.current_a,
                prefix + "power_w": self.power_w,
                prefix + "reactive_power_var": self.reactive_var,
                prefix + "apparent_power_va": self.apparent_va,
                prefix + "power_factor": self.power_factor}

    @property
    def phase_angle_deg(self) -> float:
        """Angle of the current behind the voltage (°): atan2(Q, P), 0 at unity power
        factor, ±180 for pure export."""
        if self.apparent_va == 0.0:
            return 0.0
        return math.degrees(math.atan2(self.reactive_var, self.power_w))


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
    return phase_from_pq(power_w, reactive, unix_s, phase)


def phase_from_pq(power_w: float, reactive_var: float, unix_s: float, phase: int
                  ) -> PhaseValues:
    """Electrical quantities of one phase carrying ``power_w`` (W) and ``reactive_var``
    (var): the voltage sags over the supply impedance with the current it carries, and
    P = V·I·PF holds exactly."""
    apparent = math.hypot(power_w, reactive_var)
    nominal = mains_voltage_v(unix_s, phase)
    voltage = mains_voltage_v(unix_s, phase, apparent / nominal)
    pf = abs(power_w) / apparent if apparent > 0 else 1.0
    signed_pf = pf if power_w >= 0 else -pf
    return PhaseValues(voltage, apparent / voltage, power_w, reactive_var, apparent,
                       signed_pf)


def phase_shares(unix_s: float, phase_bias: float = 0.0) -> tuple[float, float, float]:
    """How a three-phase meter's load divides over L1, L2, L3 at ``unix_s``: about a
    third each with a few per cent of slowly wandering unbalance (``phase_bias`` shifts
    the pattern, so active and reactive power unbalance differently). Sums to 1."""
    raw = [1.0 + 0.03 * math.sin(unix_s / 487.0 + 2.1 * k + phase_bias)
           + 0.015 * math.sin(unix_s / 131.0 + 1.3 * k) for k in range(3)]
    total = sum(raw)
    first, second = raw[0] / total, raw[1] / total
    return first, second, 1.0 - first - second


def split_phases(power_w: float, reactive_var: float, unix_s: float, wired: int = 3
                 ) -> tuple[PhaseValues, PhaseValues, PhaseValues]:
    """``power_w`` and ``reactive_var`` of a three-phase load, split over its phases
    (:func:`phase_shares`); the phase powers add up to the totals exactly. A
    single-phase meter (``wired`` = 1) carries everything on L1."""
    p_shares = phase_shares(unix_s) if wired == 3 else (1.0, 0.0, 0.0)
    q_shares = phase_shares(unix_s, 0.7) if wired == 3 else (1.0, 0.0, 0.0)
    powers = [power_w * share for share in p_shares[:2]]
    powers.append(power_w - sum(powers))
    reactive = [reactive_var * share for share in q_shares[:2]]
    reactive.append(reactive_var - sum(reactive))
    return (phase_from_pq(powers[0], reactive[0], unix_s, 1),
            phase_from_pq(powers[1], reactive[1], unix_s, 2),
            phase_from_pq(powers[2], reactive[2], unix_s, 3))


def line_voltage_v(first: PhaseValues, second: PhaseValues) -> float:
    """Line-to-line voltage between two phases 120° apart (V)."""
    a, b = first.voltage_v, second.voltage_v
    return math.sqrt(a * a + b * b + a * b)


def neutral_current_a(phases: tuple[PhaseValues, ...]) -> float:
    """The neutral current (A): the phasor sum of the phase currents, I = conj(S / V)."""
    total = 0j
    for phase, angle in zip(phases, PHASE_ANGLES, strict=True):
        if phase.voltage_v > 0:
            voltage = cmath.rect(phase.voltage_v, angle)
            total += (complex(phase.power_w, phase.reactive_var) / voltage).conjugate()
    return abs(total)


def voltage_thd_pct(unix_s: float, phase: int) -> float:
    """Illustrative voltage distortion of a low-voltage supply (%): 1.5–2.5 %."""
    return 2.0 + 0.5 * math.sin(unix_s / 613.0 + 1.7 * phase)


def current_thd_pct(unix_s: float, phase: int, current_a: float) -> float:
    """Illustrative current distortion of an office load (%): 6–12 % while current
    flows, 0 without current."""
    if current_a <= 0.0:
        return 0.0
    return 9.0 + 3.0 * math.sin(unix_s / 379.0 + 0.9 * phase)


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
