"""The whole building: every model advanced together, and the meters that see it.

Each step computes the energy of every component over the step (Wh, + consumption,
− generation): loads, the base load, heat pumps, DC-bus converters (AC side), PV
inverters and batteries. A meter adds up the components it measures — the grid meter all
of them — so the energy it counts is exactly the sum of what the devices report, and
``import − export`` at the grid equals consumption minus generation to rounding.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, tzinfo

from simulators.physics.battery import BatteryModel
from simulators.physics.dcbus import DcBus
from simulators.physics.dcgrid import DcGrid
from simulators.physics.grid import (
    EnergyCounter,
    PhaseValues,
    neutral_current_a,
    split_phases,
)
from simulators.physics.heatpump import HeatPump
from simulators.physics.loads import LoadConfig, RelayModule, profile_fraction
from simulators.physics.pv import PvInverter

#: Power factors of components the configuration does not set.
HEAT_PUMP_POWER_FACTOR = 0.93
CONVERTER_POWER_FACTOR = 0.99


@dataclass
class SimLoad:
    """A load, optionally switched by a relay channel and metered by a sub-meter."""

    config: LoadConfig
    relay: RelayModule | None = None
    channel: int = 0
    dc_bus: str | None = None
    power_w: float = 0.0
    energy_wh: float = 0.0

    @property
    def switched_on(self) -> bool:
        return self.relay is None or self.relay.states[self.channel - 1]

    def demand_w(self, unix_s: float, zone: tzinfo) -> float:
        if not self.switched_on:
            return 0.0
        local = datetime.fromtimestamp(unix_s, zone)
        hour = local.hour + local.minute / 60.0 + local.second / 3600.0
        return self.config.rated_w * profile_fraction(
            self.config.profile, hour, local.weekday(), self.config.name, unix_s)


@dataclass
class PhaseCounters:
    """One phase's energy registers (Wh, varh), fed with the phase's signed energies."""

    import_wh: float = 0.0
    export_wh: float = 0.0
    import_varh: float = 0.0
    export_varh: float = 0.0


@dataclass
class MeterModel:
    """A meter measuring ``measures`` (component names), or the whole site if None.

    Every step it splits the measured power over its three phases
    (:func:`~simulators.physics.grid.split_phases`) and integrates what it sees: active
    and reactive energy in total, per phase and per quadrant, apparent energy, ampere
    hours, and the block demand of active power, apparent power and the currents. The
    phase energies add up to the totals. ``ct_ratio``/``pt_ratio`` are the transformer
    ratios programmed into the meter (1 for a directly connected meter): its physics is
    the primary side, its registers report the secondary side.
    """

    measures: frozenset[str] | None
    counter: EnergyCounter = field(default_factory=EnergyCounter)
    reactive_var: float = 0.0
    demand_window_s: float = 900.0
    demand_w: float = 0.0
    max_demand_w: float = 0.0
    max_demand_at_s: float | None = None  # end of the window that set the maximum
    ct_ratio: float = 1.0
    pt_ratio: float = 1.0
    phases_wired: int = 3  # 1: a single-phase meter, everything on L1
    #: Per phase L1, L2, L3: energies since installation.
    phase_counters: tuple[PhaseCounters, PhaseCounters, PhaseCounters] = field(
        default_factory=lambda: (PhaseCounters(), PhaseCounters(), PhaseCounters()))
    #: Reactive energy per quadrant I–IV (varh): I import inductive, II export
    #: capacitive… (P, Q signs: I +,+  II −,+  III −,−  IV +,−).
    quadrant_varh: list[float] = field(default_factory=lambda: [0.0] * 4)
    apparent_vah: float = 0.0
    charge_ah: float = 0.0  # sum of the three phase currents, integrated
    #: Demand of the last complete window: apparent power (VA), phase and neutral
    #: currents (A); and their maxima since installation.
    apparent_demand_va: float = 0.0
    max_apparent_demand_va: float = 0.0
    current_demand_a: list[float] = field(default_factory=lambda: [0.0] * 4)
    max_current_demand_a: list[float] = field(default_factory=lambda: [0.0] * 4)
    _window_energy_wh: float = 0.0
    _window_vah: float = 0.0
    _window_ah: list[float] = field(default_factory=lambda: [0.0] * 4)
    _window_start_s: float | None = None

    #: The meter's own time-of-use table: tariff 1–4 (尖 峰 平 谷) at a UNIX time.
    tariff_of: Callable[[float], int] = lambda unix_s: 3
    #: Energy per tariff (index 0 = tariff 1), import and export, Wh; they sum to the
    #: counter's totals (seeded from them by :meth:`seed_history`).
    tariff_import_wh: list[float] = field(default_factory=lambda: [0.0] * 4)
    tariff_export_wh: list[float] = field(default_factory=lambda: [0.0] * 4)

    def seed_history(self, shares: tuple[float, float, float, float] = (0.1, 0.3, 0.35, 0.25)
                     ) -> None:
        """Split the counters' current totals (a meter installed with history) over the
        four tariffs, the three phases (a third each) and the reactive quadrants (a
        power factor of about 0.95: tan φ ≈ 0.33), so every register adds up to its
        total from the start."""
        for totals, total in ((self.tariff_import_wh, self.counter.import_wh),
                              (self.tariff_export_wh, self.counter.export_wh)):
            totals[:3] = [total * share for share in shares[:3]]
            totals[3] = total - sum(totals[:3])
        imported, exported = self.counter.import_wh, self.counter.export_wh
        for index, phase in enumerate(self.phase_counters):
            last = index == 2
            phase.import_wh = imported - 2 * (imported / 3) if last else imported / 3
            phase.export_wh = exported - 2 * (exported / 3) if last else exported / 3
        self.quadrant_varh[:] = [0.3 * imported, 0.3 * exported, 0.03 * exported,
                                 0.03 * imported]
        for index, phase in enumerate(self.phase_counters):
            third = 1 / 3 if index < 2 else 1 - 2 / 3
            phase.import_varh = (self.quadrant_varh[0] + self.quadrant_varh[1]) * third
            phase.export_varh = (self.quadrant_varh[2] + self.quadrant_varh[3]) * third
        self.apparent_vah = (imported + exported) / 0.95
        self.charge_ah = self.apparent_vah / 230.0

    def phases(self, unix_s: float) -> list[PhaseValues]:
        """The three phases at ``unix_s`` carrying the last step's power and reactive
        power (primary side)."""
        return list(split_phases(self.counter.power_w, self.reactive_var, unix_s,
                                 self.phases_wired))

    @property
    def import_varh(self) -> float:
        """Reactive energy while the reactive power is positive (quadrants I + II)."""
        return self.quadrant_varh[0] + self.quadrant_varh[1]

    @property
    def export_varh(self) -> float:
        """Reactive energy while the reactive power is negative (quadrants III + IV)."""
        return self.quadrant_varh[2] + self.quadrant_varh[3]

    def record(self, energy_wh: float, reactive_var: float, t_s: float, dt_s: float) -> None:
        """Count one step: ``energy_wh`` (+ import) and the reactive power
        ``reactive_var`` over ``dt_s`` seconds ending at ``t_s``."""
        self.counter.add(energy_wh, dt_s)
        tariff = self.tariff_of(t_s) - 1
        if energy_wh >= 0:
            self.tariff_import_wh[tariff] += energy_wh
        else:
            self.tariff_export_wh[tariff] -= energy_wh
        self.reactive_var = reactive_var
        hours = dt_s / 3600.0
        phases = self.phases(t_s) if dt_s > 0 else []
        for counters, phase in zip(self.phase_counters, phases, strict=False):
            share = phase.power_w * hours
            if share >= 0:
                counters.import_wh += share
            else:
                counters.export_wh -= share
            if phase.reactive_var >= 0:
                counters.import_varh += phase.reactive_var * hours
            else:
                counters.export_varh -= phase.reactive_var * hours
        varh = reactive_var * hours
        exporting = energy_wh < 0
        if varh >= 0:
            self.quadrant_varh[1 if exporting else 0] += varh
        else:
            self.quadrant_varh[2 if exporting else 3] -= varh
        apparent_vah = sum(p.apparent_va for p in phases) * hours
        currents = [p.current_a for p in phases]
        if phases:
            currents.append(neutral_current_a(tuple(phases)))
        self.apparent_vah += apparent_vah
        self.charge_ah += sum(currents[:3]) * hours
        self._roll_demand(t_s)
        self._window_energy_wh += energy_wh
        self._window_vah += apparent_vah
        for index, current in enumerate(currents):
            self._window_ah[index] += current * hours

    def _roll_demand(self, t_s: float) -> None:
        """Close the demand window when ``t_s`` is past its end: the averages over it
        become the present demand, and raise the maxima."""
        start = self._window_start_s
        window = self.demand_window_s
        if start is None:
            self._window_start_s = t_s - t_s % window
            return
        if t_s < start + window:
            return
        hours = window / 3600.0
        self.demand_w = self._window_energy_wh / hours
        if self.demand_w > self.max_demand_w:
            self.max_demand_w = self.demand_w
            self.max_demand_at_s = start + window
        self.apparent_demand_va = self._window_vah / hours
        self.max_apparent_demand_va = max(self.max_apparent_demand_va,
                                          self.apparent_demand_va)
        for index, charge in enumerate(self._window_ah):
            self.current_demand_a[index] = charge / hours
            self.max_current_demand_a[index] = max(self.max_current_demand_a[index],
                                                   self.current_demand_a[index])
        self._window_energy_wh = 0.0
        self._window_vah = 0.0
        self._window_ah = [0.0] * 4
        self._window_start_s = t_s - t_s % window


def meter_tariff(zone: tzinfo) -> Callable[[float], int]:
    """A typical four-tariff table a utility programs into a meter (illustrative): 尖 1
    19–21 h, 峰 2 8–11 h and 17–19 h, 谷 4 23–7 h, 平 3 otherwise."""
    def tariff(unix_s: float) -> int:
        hour = datetime.fromtimestamp(unix_s, zone).hour
        if 19 <= hour < 21:
            return 1
        if 8 <= hour < 11 or 17 <= hour < 19:
            return 2
        if hour >= 23 or hour < 7:
            return 4
        return 3
    return tariff


@dataclass
class SubMeterChannelModel:
    load: str
    counter: EnergyCounter = field(default_factory=EnergyCounter)


@dataclass
class SiteModel:
    """All physics of one building, advanced together by :meth:`advance`."""

    start_s: float
    zone: tzinfo
    pv: dict[str, PvInverter] = field(default_factory=dict)
    batteries: dict[str, BatteryModel] = field(default_factory=dict)
    heat_pumps: dict[str, HeatPump] = field(default_factory=dict)
    relays: dict[str, RelayModule] = field(default_factory=dict)
    dc_buses: dict[str, DcBus] = field(default_factory=dict)
    dc_grids: dict[str, DcGrid] = field(default_factory=dict)  # 直柔 buses
    loads: dict[str, SimLoad] = field(default_factory=dict)
    meters: dict[str, MeterModel] = field(default_factory=dict)
    sub_meters: dict[str, dict[int, SubMeterChannelModel]] = field(default_factory=dict)
    base_load: LoadConfig | None = None
    base_load_w: float = 0.0
    energy_wh: dict[str, float] = field(default_factory=dict)  # cumulative, per component
    t_s: float = 0.0
    #: Hook run after every step (fault injection, recorders).
    observers: list[Callable[[SiteModel], None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.t_s = self.start_s

    def component_names(self) -> Iterable[str]:
        yield from self.loads
        yield from self.pv
        yield from self.batteries
        yield from self.heat_pumps
        yield from self.dc_buses
        yield from self.dc_grids
        if self.base_load is not None:
            yield self.base_load.name

    def advance(self, t_s: float) -> None:
        """Advance every model to ``t_s`` (no-op for times not after the current one)."""
        if t_s <= self.t_s:
            return
        dt = t_s - self.t_s
        for relay in self.relays.values():
            relay.advance(t_s)
        step: dict[str, float] = {}
        reactive: dict[str, float] = {}
        dc_demand: dict[str, float] = dict.fromkeys([*self.dc_buses, *self.dc_grids], 0.0)
        for name, load in self.loads.items():
            power = load.demand_w(t_s, self.zone)
            if load.dc_bus is not None:
                dc_demand[load.dc_bus] += power
                load.power_w = power  # corrected below if the bus trips its loads
                continue
            load.power_w = power
            step[name] = power * dt / 3600.0
            reactive[name] = power * math.tan(math.acos(load.config.power_factor))
        if self.base_load is not None:
            base = SimLoad(self.base_load).demand_w(t_s, self.zone)
            self.base_load_w = base
            step[self.base_load.name] = base * dt / 3600.0
            reactive[self.base_load.name] = base * math.tan(
                math.acos(self.base_load.power_factor))
        for name, bus in self.dc_buses.items():
            step[name] = bus.advance(t_s, dc_demand[name])
            reactive[name] = abs(step[name]) * 3600.0 / dt * math.tan(
                math.acos(CONVERTER_POWER_FACTOR))
            for load in self.loads.values():
                if load.dc_bus == name:
                    if bus.loads_tripped:
                        load.power_w = 0.0
                    load.energy_wh += load.power_w * dt / 3600.0
        for name, grid in self.dc_grids.items():
            grid.external_w = dc_demand[name]  # the site's own loads on the bus
            step[name] = grid.advance(t_s)
            reactive[name] = abs(step[name]) * 3600.0 / dt * math.tan(
                math.acos(CONVERTER_POWER_FACTOR))
            for load in self.loads.values():
                if load.dc_bus == name:
                    load.energy_wh += load.power_w * dt / 3600.0
        for name, heat_pump in self.heat_pumps.items():
            step[name] = heat_pump.advance(t_s)
            reactive[name] = heat_pump.electric_w * math.tan(math.acos(HEAT_PUMP_POWER_FACTOR))
        for name, inverter in self.pv.items():
            step[name] = -inverter.advance(t_s)
        for name, battery in self.batteries.items():
            charged, discharged = battery.advance(t_s)
            step[name] = charged - discharged
        for name, energy in step.items():
            self.energy_wh[name] = self.energy_wh.get(name, 0.0) + energy
            if name in self.loads:
                self.loads[name].energy_wh += energy
        for meter in self.meters.values():
            names = step.keys() if meter.measures is None else meter.measures & step.keys()
            meter.record(sum(step[n] for n in names), sum(reactive.get(n, 0.0) for n in names),
                         t_s, dt)
        for channels in self.sub_meters.values():
            for channel in channels.values():
                load = self.loads[channel.load]
                channel.counter.add(load.power_w * dt / 3600.0, dt)
        self.t_s = t_s
        for observer in self.observers:
            observer(self)

    def site_power_w(self) -> float:
        """Net site power at the grid connection in the last step (+ import)."""
        grid = [m for m in self.meters.values() if m.measures is None]
        return grid[0].counter.power_w if grid else 0.0

    def totals_wh(self) -> Mapping[str, float]:
        return dict(self.energy_wh)
