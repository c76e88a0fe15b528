"""What one plan is asked, and what it answers: plain data, powers in kW (+ import,
+ discharge, + consumption), energies in kWh, temperatures in °C, prices in CNY.

Arrays have one value per step of the horizon (15 min by default)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

Series = NDArray[np.float64]


class ThermalMode(enum.IntEnum):
    """What the heat pump does in a step (from the outdoor temperature forecast)."""

    COOLING = -1
    OFF = 0
    HEATING = 1


@dataclass(frozen=True)
class BatteryInputs:
    """The site's batteries as one (capacities and ratings add up). ``available``
    False: an outage — the plan leaves it idle."""

    capacity_kwh: float
    soc_kwh: float  # now
    max_charge_kw: float
    max_discharge_kw: float
    floor_kwh: float  # min_soc: below it only at a high penalty
    reserve_kwh: float  # site goals keep it above this (soft)
    ceiling_kwh: float  # max_soc (soft)
    round_trip_efficiency: float = 0.9
    available: bool = True


@dataclass(frozen=True)
class ThermalInputs:
    """The heat pump and the building as one RC zone: ``ua_kw_per_k`` (heat loss),
    ``capacity_kwh_per_k`` (thermal mass), electric ``rated_kw``, per step the COP and
    the mode, the comfort band, the internal gains (kW thermal)."""

    rated_kw: float
    indoor_c: float  # now
    ua_kw_per_k: float
    capacity_kwh_per_k: float
    setpoint_c: float  # what the heat pump holds in SG-Ready "normal"
    outdoor_c: Series
    cop: Series
    mode: NDArray[np.int8]
    comfort_min_c: Series
    comfort_max_c: Series
    gains_kw: Series
    available: bool = True


@dataclass(frozen=True)
class DeferrableInputs:
    """A load that needs ``energy_kwh`` within the steps where ``window`` is True, at up
    to ``rated_kw`` (an EV charger)."""

    name: str
    rated_kw: float
    energy_kwh: float
    window: NDArray[np.bool_]


@dataclass(frozen=True)
class Weights:
    """Prices of the soft goals and of wear (CNY), the knobs of the objective."""

    battery_wear_cny_per_kwh: float = 0.05  # per kWh discharged
    carbon_cny_per_kg: float = 0.0
    comfort_cny_per_kh: float = 20.0  # per K·h outside the band
    #: per kWh of the plan's deepest shortfall below the reserve SoC (paid once per plan,
    #: not per hour: a shortfall is not bought back at a dear price just to shorten it)
    reserve_cny_per_kwh: float = 0.5
    ceiling_cny_per_kwh: float = 0.5  # per kWh·h above the maximum SoC
    floor_cny_per_kwh: float = 20.0  # per kWh·h below the minimum SoC
    dr_penalty_cny_per_kwh: float = 10.0  # per kWh above a DR cap or off a setpoint
    export_penalty_cny_per_kwh: float = 10.0  # per kWh exported above the limit
    deferrable_shortfall_cny_per_kwh: float = 10.0  # per kWh a deferrable load misses
    dc_shed_cny_per_kwh: float = 1.5  # value of a flexible DC load's energy not served
    curtail_cny_per_kwh: float = 0.001  # a small preference for using PV
    #: The share of the demand price the horizon's own peak costs (below the month's
    #: peak too): a margin for forecast errors, since the month's peak is not undone.
    peak_hedge: float = 0.0
    #: The share of the month's peak the plan keeps its import below its demand target:
    #: room for the real-time error (the loop corrects once a cycle, the meter bills
    #: 15-min means, and every overshoot raises the month's peak for good). Import up to
    #: the month's peak × (1 − this) is free; the plan's peak is its highest import plus
    #: the margin, and the loop holds import under that.
    peak_margin_share: float = 0.05
    #: What a kWh left in the battery at the horizon's end is worth, as a share of the
    #: horizon's cheapest import price (1: what buying it back would cost at least; 0:
    #: nothing, so the plan empties the battery by its end whatever the price then).
    terminal_soc_share: float = 1.0


@dataclass(frozen=True)
class PlanInputs:
    """Everything one solve needs."""

    start_s: float
    step_s: float
    price_cny_per_kwh: Series
    export_price_cny_per_kwh: Series
    carbon_kg_per_kwh: Series
    load_kw: Series  # uncontrolled consumption (not heat pump, deferrable, flexible DC)
    pv_kw: Series  # available PV
    flexible_dc_kw: Series  # flexible DC load that may be shed
    demand_price_cny_per_kw: float  # the month's demand charge (0: none)
    month_peak_kw: float  # the running maximum so far this month
    cap_kw: Series  # DR caps on import (inf: none)
    setpoint_kw: Series  # DR grid setpoints (nan: none)
    export_limit_kw: float  # inf: none
    battery: BatteryInputs | None
    thermal: ThermalInputs | None
    deferrable: tuple[DeferrableInputs, ...] = ()
    weights: Weights = field(default_factory=Weights)

    @property
    def steps(self) -> int:
        return len(self.price_cny_per_kwh)

    @property
    def step_h(self) -> float:
        return self.step_s / 3600.0


class PlanStatus(enum.Enum):
    OPTIMAL = "optimal"
    TIME_LIMIT = "time_limit"  # stopped at the deadline with a feasible plan
    FAILED = "failed"


@dataclass(frozen=True)
class Plan:
    """A solved plan: per step what the site should do, and what it costs."""

    start_s: float
    step_s: float
    status: PlanStatus
    objective_cny: float
    solve_ms: float
    grid_kw: Series  # + import
    battery_kw: Series  # + discharge
    soc_kwh: Series  # at the end of each step
    heat_pump_kw: Series
    indoor_c: Series  # at the end of each step
    sg_state: NDArray[np.int8]  # SG-Ready state to set (1–4)
    curtail_kw: Series
    dc_shed_kw: Series
    deferrable_kw: dict[str, Series]
    price_cny_per_kwh: Series
    pv_kw: Series
    load_kw: Series
    costs_cny: dict[str, float]
    peak_kw: float = 0.0  # the plan's demand target: its highest import, ≥ the month's peak

    @property
    def steps(self) -> int:
        return len(self.grid_kw)

    @property
    def end_s(self) -> float:
        return self.start_s + self.steps * self.step_s

    def index_at(self, now_s: float) -> int | None:
        """The step ``now_s`` falls in, None outside the plan."""
        if now_s < self.start_s or now_s >= self.end_s:
            return None
        return int((now_s - self.start_s) // self.step_s)
