"""A 直柔 (flexible DC) building bus: every device follows the bus voltage by itself.

One bus node with capacitance ``C`` (the converters' DC-link capacitors and the cable
capacitance, lumped) fed by:

* the AC/DC **interface converter**, through the feeder's line resistance, in one of two
  modes: *droop* (it holds the bus on a voltage–power characteristic) or *grid limit*
  (it draws a set power from the grid whatever the bus does, and the voltage floats).
  In grid-limit mode the gateway must keep writing: when its watchdog expires, the
  converter falls back to droop. Near the edges of its protection band the converter
  overrides the limit (from 1 % of nominal inside the band, reaching its rating at the
  edge), so the bus stays in band whatever limit was written;
* **DC storage** on a P–V droop curve, within its SoC limits;
* **PV** through a DC/DC converter tracking the maximum power point, curtailing linearly
  above a threshold voltage;
* **flexible loads** of the four classes, each drawing its demand times the fraction its
  P–V curve gives at the bus voltage, and **fixed loads** (constant power).

The node's power balance ``C·V·dV/dt = Σ P_in(V)`` is stepped with a linearised implicit
Euler step (stable for any step, exact at equilibrium): 5 ms steps while the bus moves,
then steps of up to 1 s once it has settled, so hours of simulated time stay cheap while
transients are resolved at ≤ 10 ms.

Powers in W, + into the bus (storage + discharge); voltages in V; times in seconds.
Levels: T/CABEE 030-2022 names DC 375 V (and 750 V) for building distribution; the band
and curve shapes used by default are this toolkit's choice (see docs/control.md, 直柔).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field

from drivers.dc_curves import DcLoadClass, VoltageCurve

__all__ = ["ConverterMode", "DcGrid", "DcPv", "DcStorage", "FlexibleLoad", "InterfaceConverter",
           "default_load_curves", "default_storage_curve", "office_floor_bus", "settle_time_s"]

#: Integration step while the bus moves, s (≤ 10 ms of simulated time).
FINE_STEP_S = 0.005
#: Longest step once the bus has settled, s.
COARSE_STEP_S = 1.0
#: The bus counts as settled when it moves slower than this, V/s.
SETTLED_V_PER_S = 0.2


class ConverterMode(enum.IntEnum):
    DROOP = 0
    GRID_LIMIT = 1


def default_load_curves(nominal_v: float) -> dict[DcLoadClass, VoltageCurve]:
    """Default P–V curves per class, as fractions of nominal voltage: lighting gives way
    first (from 98 %), then fan coils (96 %), the DC heat pump (94 %), the EV charger
    last (92 %); each keeps a floor (comfort) at the band's bottom (90 %). The order and
    shapes follow the PEDF literature's principle (least comfort-critical first); the
    numbers are the toolkit's choice, not a standard's."""
    def curve(knee: float, floor_v: float, floor_pct: float) -> VoltageCurve:
        return VoltageCurve.of([nominal_v * floor_v, nominal_v * knee], [floor_pct, 100.0])
    return {DcLoadClass.LIGHTING: curve(0.98, 0.93, 50.0),
            DcLoadClass.FAN_COIL: curve(0.96, 0.92, 40.0),
            DcLoadClass.HEAT_PUMP: curve(0.94, 0.91, 30.0),
            DcLoadClass.EV_CHARGER: curve(0.92, 0.90, 0.0)}


def default_storage_curve(nominal_v: float) -> VoltageCurve:
    """Storage droop: full charge at 104 % of nominal, idle 99–101 %, full discharge at
    92 % (+ discharge)."""
    return VoltageCurve.of([nominal_v * 0.92, nominal_v * 0.99, nominal_v * 1.01,
                            nominal_v * 1.04], [100.0, 0.0, 0.0, -100.0])


@dataclass
class InterfaceConverter:
    """The bidirectional AC/DC converter between the grid and the bus.

    ``power_w`` + into the bus (import from the grid). Droop: ``P = P_rated · (V_set −
    V) / (V_set · droop/100)``; grid limit: ``P = grid_limit_w``. Both clamped to
    ±rated, with bus support at the edges of ``floor_pct``–``ceiling_pct``.
    """

    rated_power_w: float
    nominal_v: float
    droop_pct: float = 5.0
    efficiency: float = 0.97
    line_resistance_ohm: float = 0.02
    floor_pct: float = 90.0  # protection band, % of nominal
    ceiling_pct: float = 105.0
    voltage_setpoint_v: float = 0.0
    mode: ConverterMode = ConverterMode.DROOP
    grid_limit_w: float = 0.0
    watchdog_s: float = 0.0  # 0: no watchdog
    last_command_s: float = 0.0
    fallbacks: int = 0  # times the watchdog sent it back to droop
    power_w: float = 0.0

    def __post_init__(self) -> None:
        if not self.voltage_setpoint_v:
            self.voltage_setpoint_v = self.nominal_v

    @property
    def gain_w_per_v(self) -> float:
        return self.rated_power_w / (self.voltage_setpoint_v * self.droop_pct / 100.0)

    def command(self, t_s: float) -> None:
        """A write from the gateway arrived: the watchdog starts again."""
        self.last_command_s = t_s

    def check_watchdog(self, t_s: float) -> None:
        if self.mode is ConverterMode.GRID_LIMIT and self.watchdog_s > 0 and \
                t_s - self.last_command_s > self.watchdog_s:
            self.mode = ConverterMode.DROOP
            self.fallbacks += 1

    def terminal_power_w(self, terminal_v: float) -> float:
        gain = self.gain_w_per_v
        if self.mode is ConverterMode.DROOP:
            power = gain * (self.voltage_setpoint_v - terminal_v)
        else:
            # Bus support: from 1 % of nominal inside the band the converter overrides the
            # limit, reaching its rating at the band's edge.
            support = self.rated_power_w / (0.01 * self.nominal_v)
            floor = self.nominal_v * (self.floor_pct + 1.0) / 100.0
            ceiling = self.nominal_v * (self.ceiling_pct - 1.0) / 100.0
            power = max(self.grid_limit_w, support * (floor - terminal_v))
            power = min(power, -support * (terminal_v - ceiling))
        return max(-self.rated_power_w, min(self.rated_power_w, power))

    def bus_power_w(self, bus_v: float) -> float:
        """Power arriving at the bus node: the terminal power less the feeder's loss,
        the terminal voltage estimated from the bus voltage and the feeder current."""
        first = self.terminal_power_w(bus_v)
        current = first / max(bus_v, 1.0)
        power = self.terminal_power_w(bus_v + current * self.line_resistance_ohm)
        current = power / max(bus_v, 1.0)
        return power - current * current * self.line_resistance_ohm


@dataclass
class DcStorage:
    """A DC battery on a P–V droop: ``P = rated · curve(V)`` (+ discharge), none below
    ``soc_min_pct`` (discharge) or above ``soc_max_pct`` (charge)."""

    capacity_wh: float
    rated_power_w: float
    curve: VoltageCurve
    soc_pct: float = 50.0
    soc_min_pct: float = 10.0
    soc_max_pct: float = 95.0
    efficiency: float = 0.95
    power_w: float = 0.0

    def bus_power_w(self, bus_v: float) -> float:
        power = self.rated_power_w * self.curve.fraction_pct(bus_v) / 100.0
        if power > 0 and self.soc_pct <= self.soc_min_pct:
            return 0.0
        if power < 0 and self.soc_pct >= self.soc_max_pct:
            return 0.0
        return power

    def integrate(self, power_w: float, dt_s: float) -> None:
        energy = power_w * dt_s / 3600.0
        stored = energy / self.efficiency if energy > 0 else energy * self.efficiency
        self.soc_pct = max(0.0, min(100.0, self.soc_pct - stored / self.capacity_wh * 100.0))


@dataclass
class DcPv:
    """PV on the bus through an MPPT DC/DC converter: the array's maximum power, scaled
    down linearly from ``curtail_start_v`` to nothing at ``curtail_end_v``."""

    available_w: float
    curtail_start_v: float
    curtail_end_v: float
    source: Callable[[float], float] | None = None  # the array's maximum power at a time
    power_w: float = 0.0

    def bus_power_w(self, bus_v: float) -> float:
        if bus_v <= self.curtail_start_v:
            return self.available_w
        if bus_v >= self.curtail_end_v:
            return 0.0
        share = (self.curtail_end_v - bus_v) / (self.curtail_end_v - self.curtail_start_v)
        return self.available_w * share


@dataclass
class FlexibleLoad:
    """A class of flexible DC loads: ``rated_w × demand × curve(V)``; the demand (0–1)
    is what the occupants want now."""

    load_class: DcLoadClass
    rated_w: float
    curve: VoltageCurve
    demand: float = 1.0
    profile: Callable[[float], float] | None = None  # the demand (0–1) at a time
    power_w: float = 0.0

    def wanted_w(self) -> float:
        return self.rated_w * self.demand

    def draw_w(self, bus_v: float) -> float:
        return self.wanted_w() * self.curve.fraction_pct(bus_v) / 100.0


@dataclass
class DcGrid:
    """The bus and everything on it. :meth:`advance` moves it in time and returns the
    converter's AC-side energy (Wh, + import)."""

    converter: InterfaceConverter
    capacitance_f: float = 0.05
    storage: list[DcStorage] = field(default_factory=list)
    pv: list[DcPv] = field(default_factory=list)
    loads: dict[DcLoadClass, FlexibleLoad] = field(default_factory=dict)
    fixed_w: float = 0.0
    external_w: float = 0.0  # constant-power loads the site lists on this bus
    t_s: float = 0.0
    voltage_v: float = 0.0
    energy_in_wh: float = 0.0  # AC side, into the bus
    energy_out_wh: float = 0.0  # AC side, fed back to the grid
    #: (t, V) after every integration step when set to a list (benchmarks, tests).
    trace: list[tuple[float, float]] | None = None

    def __post_init__(self) -> None:
        if not self.voltage_v:
            self.voltage_v = self.converter.nominal_v

    @property
    def nominal_v(self) -> float:
        return self.converter.nominal_v

    def load_w(self) -> float:
        return sum(load.power_w for load in self.loads.values()) + self.fixed_w + \
            self.external_w

    def net_power_w(self, bus_v: float) -> float:
        """Σ power into the bus node at ``bus_v``, W."""
        total = self.converter.bus_power_w(bus_v) - self.fixed_w - self.external_w
        for storage in self.storage:
            total += storage.bus_power_w(bus_v)
        for pv in self.pv:
            total += pv.bus_power_w(bus_v)
        for load in self.loads.values():
            total -= load.draw_w(bus_v)
        return total

    def _rate_v_per_s(self, bus_v: float) -> float:
        return self.net_power_w(bus_v) / (self.capacitance_f * max(bus_v, 1.0))

    def _step(self, dt_s: float) -> None:
        voltage = self.voltage_v
        rate = self._rate_v_per_s(voltage)
        delta_v = 0.01
        slope = (self._rate_v_per_s(voltage + delta_v) - rate) / delta_v
        denominator = 1.0 - dt_s * slope
        change = dt_s * rate / denominator if denominator > 1e-9 else dt_s * rate
        self.voltage_v = max(1.0, voltage + change)
        self._settle_devices(dt_s)

    def _settle_devices(self, dt_s: float) -> None:
        voltage = self.voltage_v
        converter = self.converter
        converter.power_w = converter.bus_power_w(voltage)
        for storage in self.storage:
            storage.power_w = storage.bus_power_w(voltage)
            storage.integrate(storage.power_w, dt_s)
        for pv in self.pv:
            pv.power_w = pv.bus_power_w(voltage)
        for load in self.loads.values():
            load.power_w = load.draw_w(voltage)

    def advance(self, t_s: float, *, fine_s: float = 0.1) -> float:
        """Move to ``t_s``: 5 ms steps for at least ``fine_s`` and while the bus moves,
        then up to 1 s steps. Returns the converter's AC-side energy over the move, Wh
        (+ drawn from the grid, − fed back)."""
        if t_s <= self.t_s:
            return 0.0
        for pv in self.pv:
            if pv.source is not None:
                pv.available_w = pv.source(t_s)
        for load in self.loads.values():
            if load.profile is not None:
                load.demand = load.profile(t_s)
        converter = self.converter
        start, ac_ws = self.t_s, 0.0
        while self.t_s < t_s - 1e-9:
            converter.check_watchdog(self.t_s)
            moving = abs(self._rate_v_per_s(self.voltage_v)) > SETTLED_V_PER_S
            step = FINE_STEP_S if moving or self.t_s - start < fine_s else COARSE_STEP_S
            step = min(step, t_s - self.t_s)
            self._step(step)
            self.t_s += step
            power = converter.power_w
            ac_ws += power * step / converter.efficiency if power >= 0 else \
                power * step * converter.efficiency
            if self.trace is not None:
                self.trace.append((self.t_s, self.voltage_v))
        self.t_s = t_s
        energy_wh = ac_ws / 3600.0
        if energy_wh >= 0:
            self.energy_in_wh += energy_wh
        else:
            self.energy_out_wh -= energy_wh
        return energy_wh

    def equilibrium_v(self) -> float:
        """The bus voltage where the power balances now (bisection over 1 %–200 % of
        nominal), V; the nearest end if none balances."""
        low, high = self.nominal_v * 0.01, self.nominal_v * 2.0
        if self.net_power_w(low) <= 0:
            return low
        if self.net_power_w(high) >= 0:
            return high
        for _ in range(60):
            middle = 0.5 * (low + high)
            if self.net_power_w(middle) > 0:
                low = middle
            else:
                high = middle
        return 0.5 * (low + high)

    @property
    def ac_power_w(self) -> float:
        """The converter's power on its AC side now, W (+ import)."""
        power = self.converter.power_w
        return power / self.converter.efficiency if power >= 0 else \
            power * self.converter.efficiency

    def band_v(self) -> tuple[float, float]:
        """The converter's protection band, V."""
        return (self.nominal_v * self.converter.floor_pct / 100.0,
                self.nominal_v * self.converter.ceiling_pct / 100.0)


def office_floor_bus(*, soc_pct: float = 60.0, pv_w: float = 15_000.0, storage: bool = True,
                     curves: bool = True, storage_droop: bool = True) -> DcGrid:
    """The reference bus of the tests and the benchmark (the simulated floor of
    tests/control/sites/dc-bus.toml): 375 V, a 60 kW converter in droop, PV, 100 kWh /
    30 kW storage, 8 / 10 / 15 / 20 kW of lighting, fan coils, DC heat pump and EV
    chargers at full demand, 5 kW fixed; settled for 2 s. ``curves`` False: loads
    without curves (constant power); ``storage_droop`` False: storage that stays idle."""
    nominal = 375.0
    load_curves = default_load_curves(nominal)
    flat = VoltageCurve.of([nominal * 0.5, nominal], [100.0, 100.0])
    idle = VoltageCurve.of([nominal * 0.5, nominal], [0.0, 0.0])
    rated = {DcLoadClass.LIGHTING: 8000.0, DcLoadClass.FAN_COIL: 10000.0,
             DcLoadClass.HEAT_PUMP: 15000.0, DcLoadClass.EV_CHARGER: 20000.0}
    grid = DcGrid(
        InterfaceConverter(rated_power_w=60_000.0, nominal_v=nominal),
        storage=[DcStorage(100_000.0, 30_000.0,
                           default_storage_curve(nominal) if storage_droop else idle,
                           soc_pct=soc_pct)] if storage else [],
        pv=[DcPv(pv_w, nominal * 1.02, nominal * 1.05)],
        loads={cls: FlexibleLoad(cls, watts, load_curves[cls] if curves else flat)
               for cls, watts in rated.items()},
        fixed_w=5000.0, trace=[])
    grid.advance(2.0)
    return grid


def settle_time_s(trace: list[tuple[float, float]], since_s: float, final_v: float,
                  tolerance_v: float) -> float:
    """How long after ``since_s`` the voltage in ``trace`` last left ``final_v ±
    tolerance_v``, s (0 if it never did)."""
    last_out = since_s
    for t, voltage in trace:
        if t > since_s and abs(voltage - final_v) > tolerance_v:
            last_out = t
    return max(0.0, last_out - since_s)

