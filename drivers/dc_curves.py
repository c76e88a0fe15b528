"""Power–voltage curves of a 直柔 (flexible DC) building: the local rule each DC device
follows from the bus voltage it measures, with no communication.

A curve is a list of breakpoints (bus voltage in V → power as a fraction of what the
device wants, in %), linear between breakpoints and flat beyond the first and last.
Flexible loads use fractions 0–100 (100: full demand; a curve falls as the voltage
falls); DC storage uses −100–100 (+ discharge into the bus, − charge from it).

Pure data and arithmetic, shared by the simulated devices (which follow curves) and the
gateway (which writes them, reads them back and counts the flexibility they give).
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["BREAKPOINTS", "DcLoadClass", "VoltageCurve"]

#: Breakpoints a device holds per curve (the maps' registers): four.
BREAKPOINTS = 4


class DcLoadClass(enum.Enum):
    """The flexible DC load classes of a PEDF building; the value is the name used in
    site files and in map point names."""

    LIGHTING = "lighting"  # LED lighting dims
    FAN_COIL = "fan_coil"  # fan coils slow down
    HEAT_PUMP = "heat_pump"  # a DC heat pump lowers its compressor speed
    EV_CHARGER = "ev_charger"  # a DC EV charger lowers its current


@dataclass(frozen=True, slots=True)
class VoltageCurve:
    """Breakpoints ``(voltage_v, fraction_pct)``, voltages strictly increasing.

    Raises ``ValueError`` from the constructor when the voltages do not increase or a
    fraction is outside −100–100.
    """

    points: tuple[tuple[float, float], ...]

    def __post_init__(self) -> None:
        if len(self.points) < 2:
            raise ValueError("a curve needs at least two breakpoints")
        for (v0, _), (v1, _) in zip(self.points, self.points[1:], strict=False):
            if v1 <= v0:
                raise ValueError(f"breakpoint voltages must increase ({v0:g} V, then {v1:g} V)")
        for voltage, fraction in self.points:
            if voltage <= 0:
                raise ValueError(f"a breakpoint voltage must be > 0 V, not {voltage:g}")
            if not -100.0 <= fraction <= 100.0:
                raise ValueError(f"a fraction must be within −100–100 %, not {fraction:g}")

    @classmethod
    def of(cls, voltages_v: Sequence[float], fractions_pct: Sequence[float]) -> VoltageCurve:
        if len(voltages_v) != len(fractions_pct):
            raise ValueError("as many fractions as voltages are needed")
        return cls(tuple(zip((float(v) for v in voltages_v),
                             (float(f) for f in fractions_pct), strict=True)))

    @property
    def voltages_v(self) -> tuple[float, ...]:
        return tuple(v for v, _ in self.points)

    @property
    def fractions_pct(self) -> tuple[float, ...]:
        return tuple(f for _, f in self.points)

    def fraction_pct(self, voltage_v: float) -> float:
        """The fraction at ``voltage_v``, %: linear between breakpoints, flat outside."""
        points = self.points
        if voltage_v <= points[0][0]:
            return points[0][1]
        for (v0, f0), (v1, f1) in itertools.pairwise(points):
            if voltage_v <= v1:
                return f0 + (f1 - f0) * (voltage_v - v0) / (v1 - v0)
        return points[-1][1]

    def slope_pct_per_v(self, voltage_v: float) -> float:
        """d fraction / d voltage at ``voltage_v``, % per V (0 outside the breakpoints)."""
        points = self.points
        for (v0, f0), (v1, f1) in itertools.pairwise(points):
            if v0 <= voltage_v < v1:
                return (f1 - f0) / (v1 - v0)
        return 0.0

    @property
    def knee_v(self) -> float | None:
        """The highest voltage below which a load gives way (its fraction falls below
        its maximum), or None for a flat curve."""
        top = max(self.fractions_pct)
        points = self.points
        for index in range(len(points) - 1, 0, -1):
            if points[index - 1][1] < top <= points[index][1]:
                return points[index][0]
        return None

    @property
    def floor_pct(self) -> float:
        """The lowest fraction the curve ever asks for, %."""
        return min(self.fractions_pct)

    def padded(self, count: int = BREAKPOINTS) -> VoltageCurve:
        """The same curve with exactly ``count`` breakpoints (a device's registers):
        the last breakpoint repeated a hair higher where the curve has fewer. Raises
        ``ValueError`` if it has more."""
        if len(self.points) > count:
            raise ValueError(f"a device holds {count} breakpoints, not {len(self.points)}")
        points = list(self.points)
        while len(points) < count:
            voltage, fraction = points[-1]
            points.append((voltage + 0.1, fraction))
        return VoltageCurve(tuple(points))
