"""The control loop's data: what the strategies see (a snapshot) and what they ask for
(proposals for actuators). Plain immutable data; no I/O.

Powers in W with the toolkit's signs: grid + import; PV + production; battery + discharge;
loads + consumption. Times are UNIX seconds on the control clock.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from fastcore import Period


class ActuatorKind(enum.StrEnum):
    """What kind of thing an actuator sets (one handler each in
    :mod:`controller.control.actuators`). A StrEnum: ``Actuator("battery", …)`` and
    ``Actuator(ActuatorKind.BATTERY, …)`` are the same actuator."""

    LOAD = "load"  # a relay channel switching a load: on/off
    BATTERY = "battery"  # a battery's power setpoint, W (+ discharge)
    SG_READY = "sg_ready"  # a heat pump's SG-Ready state
    INVERTER_LIMIT = "inverter_limit"  # a PV inverter's active-power limit, % of rating
    WATCHDOG = "watchdog"  # a relay module's watchdog (refreshed by the loop, no strategy)


class SgReadyState(enum.IntEnum):
    """The four SG-Ready operating states (BWP SG-Ready label): an int on the wire."""

    BLOCKED = 1  # utility lock: no compressor (at most two hours at a time)
    NORMAL = 2
    BOOST = 3  # run recommended: store heat (or cold)
    FORCED = 4  # run at full power


#: A battery power setpoint, W (+ discharge, − charge).
BatteryPowerW = float
#: An inverter's active-power limit, % of its rating.
LimitPct = float
#: What a proposal asks of its actuator: a load on (True) or off; a battery power; an
#: SG-Ready state; an inverter limit; None hands the actuator back to the device.
ActuatorValue = bool | BatteryPowerW | SgReadyState | LimitPct | int | None


class Level(enum.IntEnum):
    """Precedence: a lower value wins an actuator."""

    SAFETY = 0  # hard limits: export limit, DC-bus voltage, indoor temperature extremes
    EVENT = 1  # utility events and commands: DR events, VPP dispatch, overrides
    SITE = 2  # site goals: peak shaving, self-consumption, TOU arbitrage, thermal storage
    COMFORT = 3  # defaults: normal heat-pump operation


class Actuator:
    """One thing the controller sets: ``kind`` on ``name`` (a device or a load).
    Immutable and hashable; ``kind`` may be given as its string value."""

    __slots__ = ("kind", "name")
    kind: ActuatorKind
    name: str  # the load or device name

    def __init__(self, kind: ActuatorKind | str, name: str) -> None:
        """Raises ValueError for an unknown kind."""
        object.__setattr__(self, "kind", ActuatorKind(kind))
        object.__setattr__(self, "name", name)

    def __setattr__(self, key: str, value: object) -> None:
        raise AttributeError("an Actuator is immutable")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Actuator):
            return NotImplemented
        return (self.kind, self.name) == (other.kind, other.name)

    def __hash__(self) -> int:
        return hash((self.kind, self.name))

    def __repr__(self) -> str:
        return f"Actuator({self.kind.value!r}, {self.name!r})"

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}"


@dataclass(frozen=True, slots=True)
class Proposal:
    """A strategy's wish for an actuator. ``value``: a load's on/off (bool), a battery
    power in W (+ discharge; None = hand back to the battery's own logic), an SG-Ready
    state (1–4), an inverter limit in % (None = no limit)."""

    actuator: Actuator
    value: ActuatorValue
    level: Level
    owner: str
    reason: str = ""


@dataclass(frozen=True, slots=True)
class LoadState:
    name: str
    rated_w: float
    priority: int
    sheddable: bool
    on: bool | None  # relay state as read (None: unknown)
    power_w: float | None  # metered power, if a sub-meter channel meters it
    min_on_s: float
    min_off_s: float
    max_shed_s: float
    group: str | None
    dc_bus: str | None  # name of the DC bus it hangs on, if any
    switched_s: float | None  # when we last switched it (control clock)
    shed_since_s: float | None  # when we shed it, if it is shed by us

    @property
    def expected_w(self) -> float:
        """What it draws when on: metered if known and on, else its rating."""
        if self.power_w is not None and self.on:
            return max(0.0, self.power_w)
        return self.rated_w


@dataclass(frozen=True, slots=True)
class BatteryState:
    name: str
    soc_pct: float | None
    power_w: float | None  # + discharge
    max_charge_w: float | None
    max_discharge_w: float | None
    capacity_wh: float | None

    @property
    def ok(self) -> bool:
        return None not in (self.soc_pct, self.power_w, self.max_charge_w)


@dataclass(frozen=True, slots=True)
class HeatPumpState:
    name: str
    sg_ready_state: int | None
    power_w: float | None
    indoor_c: float | None
    outdoor_c: float | None
    rated_w: float | None
    running_w: float | None = None  # its draw when last seen running (before a block)
    #: The SG-Ready state the gateway set holds until then (its minimum dwell): no
    #: strategy can change it before (None: free now).
    held_until_s: float | None = None
    #: A block the gateway holds must end by then (the SG-Ready label's limit).
    block_until_s: float | None = None
    setpoint_c: float | None = None  # the indoor setpoint it holds in normal operation

    @property
    def blocked_draw_w(self) -> float:
        """What it would draw if we had not blocked it: its draw when last seen running,
        else half its rating (a compressor's usual part load), else 0."""
        if self.running_w is not None:
            return self.running_w
        return (self.rated_w or 0.0) * 0.5


@dataclass(frozen=True, slots=True)
class InverterState:
    name: str
    power_w: float | None
    rated_w: float | None
    limit_pct: float | None  # None: no limit active


@dataclass(frozen=True, slots=True)
class DcBusState:
    name: str
    voltage_v: float | None
    nominal_v: float | None
    power_w: float | None


@dataclass(frozen=True, slots=True)
class TariffStretch:
    """A stretch of time in one time-of-use period (UNIX s, CNY/kWh)."""

    start_s: float
    end_s: float
    period: Period
    price_cny_per_kwh: float

    @property
    def hours(self) -> float:
        return (self.end_s - self.start_s) / 3600.0


@dataclass(frozen=True, slots=True)
class DemandState:
    """The demand (需量) picture: the open 15-min window's import so far, the month's
    highest completed-window demand, and whether the site's basic charge is on it."""

    window_start_s: float
    window_s: float
    window_kwh: float  # import in the open window so far
    month_peak_kw: float | None  # highest completed window this month
    billed: bool  # basic charge on demand (需量电费)

    def allowed_w(self, limit_kw: float, now_s: float) -> float:
        """The import (W) that keeps this window's average at ``limit_kw`` if held for
        the rest of the window (≥ 0)."""
        remaining_s = self.window_start_s + self.window_s - now_s
        if remaining_s <= 1.0:
            return limit_kw * 1000.0
        budget_kwh = limit_kw * self.window_s / 3600.0 - self.window_kwh
        return max(0.0, budget_kwh * 3.6e6 / remaining_s)


@dataclass(frozen=True, slots=True)
class PlanSetpoints:
    """What the plan in force asks for now (the planner's step for this moment), for the
    strategies at the site-goals level to follow and correct in real time."""

    grid_w: float  # the planned site grid power (+ import)
    battery_w: float  # the planned battery power (+ discharge), all batteries together
    peak_w: float  # the highest import the plan allows itself (the demand target)
    tracking_w: float  # how far the battery may move off its plan to hold the grid plan
    sg_states: Mapping[str, SgReadyState] = field(default_factory=dict)  # by heat pump
    loads_on: Mapping[str, bool] = field(default_factory=dict)  # deferrable loads


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything a strategy may look at, for one cycle."""

    now_s: float
    local_hour: float
    weekday: int
    period: Period  # the time-of-use period in force (its tier: 尖峰 … 深谷)
    grid_w: float | None  # site import (+) / export (−) at the grid meter
    pv_w: float  # total PV production
    batteries: tuple[BatteryState, ...] = ()
    heat_pumps: tuple[HeatPumpState, ...] = ()
    inverters: tuple[InverterState, ...] = ()
    dc_buses: tuple[DcBusState, ...] = ()
    loads: tuple[LoadState, ...] = ()
    #: What the controller currently commands, by actuator (from the last cycle).
    commanded: Mapping[Actuator, ActuatorValue] = field(default_factory=dict)
    #: The tariff from now on, about a day ahead, in time order.
    tariff_ahead: tuple[TariffStretch, ...] = ()
    demand: DemandState | None = None

    def load(self, name: str) -> LoadState:
        for load in self.loads:
            if load.name == name:
                return load
        raise KeyError(name)
