"""Heat pump with SG-Ready behaviour, heating or cooling a building modelled as one
resistance–capacitance (RC) thermal zone."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

SG_BLOCKED, SG_NORMAL, SG_BOOST, SG_FORCED = 1, 2, 3, 4
MODE_OFF, MODE_HEATING, MODE_COOLING, MODE_AUTO = 0, 1, 2, 3


@dataclass(frozen=True, slots=True)
class BuildingConfig:
    heat_loss_w_per_k: float = 4_500.0  # UA: envelope and ventilation losses
    heat_capacity_j_per_k: float = 2.0e8  # effective thermal mass
    initial_indoor_c: float = 20.0


@dataclass(frozen=True, slots=True)
class HeatPumpConfig:
    rated_electric_w: float = 45_000.0
    carnot_efficiency: float = 0.45  # fraction of the Carnot COP reached
    cop_min: float = 1.5
    cop_max: float = 6.0
    heating_below_c: float = 15.0  # auto mode: heat below this outdoor temperature
    cooling_above_c: float = 24.0  # auto mode: cool above this outdoor temperature
    boost_k: float = 2.0  # SG-Ready 3: setpoint raised (heating) / lowered (cooling)
    forced_k: float = 4.0  # SG-Ready 4: runs at full power until this far past setpoint
    controller_gain_w_per_k: float = 30_000.0  # thermal W per K of indoor error
    flow_design_delta_k: float = 5.0  # flow − return at full thermal power
    flow_time_constant_s: float = 300.0


class HeatPump:
    """SG-Ready states: 1 blocked (no compressor), 2 normal (hold the indoor setpoint),
    3 boost recommended (setpoint moved by ``boost_k`` in the direction that stores
    heat or cold), 4 forced on (full power until ``forced_k`` past the setpoint).

    COP = carnot_efficiency × T_hot / (T_hot − T_cold), clamped to [cop_min, cop_max],
    with the flow temperature as the hot side when heating. Electric power is what the
    compressor needs for the thermal power the indoor controller asks for.
    """

    def __init__(self, config: HeatPumpConfig, building: BuildingConfig,
                 outdoor_c: Callable[[float], float], gains_w: Callable[[float], float],
                 start_s: float, energy_wh: float = 500_000.0) -> None:
        self.config = config
        self.building = building
        self.outdoor_c = outdoor_c
        self.gains_w = gains_w
        self.t_s = start_s
        self.indoor_c = building.initial_indoor_c
        self._sg_register = SG_NORMAL
        #: The SG-Ready terminals when they are wired to a relay module: the state the
        #: two contacts encode. None: the state is the heat pump's own register.
        self.sg_input: Callable[[], int] | None = None
        self.mode = MODE_AUTO
        self.indoor_setpoint_c = 21.0
        self.flow_setpoint_c = 40.0
        self.flow_c = self.indoor_c
        self.return_c = self.indoor_c
        self.electric_w = 0.0
        self.thermal_w = 0.0  # + heat delivered, − heat removed
        self.cop = 0.0
        self.energy_wh = energy_wh
        self.thermal_energy_wh = energy_wh * 3.0
        # what a heat/cold meter on the hydraulic side counts: heat delivered (heating)
        # and cold delivered (cooling), Wh
        self.heating_energy_wh = self.thermal_energy_wh
        self.cooling_energy_wh = 0.0
        self.compressor_s = 0.0  # compressor running time

    @property
    def sg_ready_state(self) -> int:
        """The SG-Ready state the heat pump follows: its terminals' when wired, else the
        register's."""
        return self._sg_register if self.sg_input is None else self.sg_input()

    @sg_ready_state.setter
    def sg_ready_state(self, state: int) -> None:
        """Set the register. Raises ValueError when the terminals decide the state."""
        if self.sg_input is not None:
            raise ValueError("SG-Ready is wired to the terminal contacts; the register is "
                             "not in use")
        if state not in (SG_BLOCKED, SG_NORMAL, SG_BOOST, SG_FORCED):
            raise ValueError("SG-Ready state must be 1–4")
        self._sg_register = state

    def active_mode(self, outdoor_c: float) -> int:
        if self.mode != MODE_AUTO:
            return self.mode
        if outdoor_c < self.config.heating_below_c:
            return MODE_HEATING
        if outdoor_c > self.config.cooling_above_c:
            return MODE_COOLING
        return MODE_OFF

    def _cop(self, mode: int, outdoor_c: float) -> float:
        cfg = self.config
        if mode == MODE_HEATING:
            hot, cold = self.flow_setpoint_c + 273.15, outdoor_c + 273.15
        else:
            hot, cold = outdoor_c + 273.15, 7.0 + 273.15  # chilled water at 7 °C
            hot = max(hot, cold + 1.0)
        lift = max(hot - cold, 1.0)
        base = hot if mode == MODE_HEATING else cold
        return max(cfg.cop_min, min(cfg.cop_max, cfg.carnot_efficiency * base / lift))

    def _thermal_demand_w(self, mode: int, outdoor_c: float, cop: float) -> float:
        """Heat (+) or cold (−) the controller asks for, bounded by the rating."""
        cfg, b = self.config, self.building
        sign = 1.0 if mode == MODE_HEATING else -1.0
        capacity = cfg.rated_electric_w * cop
        if self.sg_ready_state == SG_BLOCKED or mode == MODE_OFF:
            return 0.0
        setpoint = self.indoor_setpoint_c
        if self.sg_ready_state == SG_BOOST:
            setpoint += sign * cfg.boost_k
        if self.sg_ready_state == SG_FORCED:
            beyond = sign * (self.indoor_c - (setpoint + sign * cfg.forced_k))
            return sign * capacity if beyond < 0 else 0.0
        # Feed-forward: what holds the setpoint against losses and gains; plus a
        # proportional correction of the indoor error.
        hold_w = sign * (b.heat_loss_w_per_k * (setpoint - outdoor_c) - self.gains_w(self.t_s))
        demand = hold_w + cfg.controller_gain_w_per_k * sign * (setpoint - self.indoor_c)
        return sign * max(0.0, min(capacity, demand))

    def advance(self, t_s: float) -> float:
        """Move to ``t_s`` (sub-steps of at most 30 s); returns electric energy used, Wh."""
        used = 0.0
        while self.t_s < t_s:
            dt = min(30.0, t_s - self.t_s)
            used += self._step(dt)
        return used

    def _step(self, dt: float) -> float:
        cfg, b = self.config, self.building
        self.t_s += dt
        outdoor = self.outdoor_c(self.t_s)
        mode = self.active_mode(outdoor)
        if mode == MODE_OFF:
            self.thermal_w = self.electric_w = self.cop = 0.0
        else:
            cop = self._cop(mode, outdoor)
            self.thermal_w = self._thermal_demand_w(mode, outdoor, cop)
            self.cop = cop if self.thermal_w else 0.0
            self.electric_w = abs(self.thermal_w) / cop
        # Indoor temperature: exact solution of the linear RC zone over the sub-step.
        gains = self.gains_w(self.t_s) + self.thermal_w
        equilibrium = outdoor + gains / b.heat_loss_w_per_k
        decay = math.exp(-dt * b.heat_loss_w_per_k / b.heat_capacity_j_per_k)
        self.indoor_c = equilibrium + (self.indoor_c - equilibrium) * decay
        # Flow water: approaches the setpoint while the compressor runs, else the room.
        running = self.electric_w > 0
        if running:
            target = self.flow_setpoint_c if mode == MODE_HEATING else 7.0
        else:
            target = self.indoor_c
        alpha = 1.0 - math.exp(-dt / cfg.flow_time_constant_s)
        self.flow_c += (target - self.flow_c) * alpha
        capacity = max(cfg.rated_electric_w * max(self.cop, cfg.cop_min), 1.0)
        delta = cfg.flow_design_delta_k * abs(self.thermal_w) / capacity
        self.return_c = self.flow_c - delta if mode == MODE_HEATING else self.flow_c + delta
        used = self.electric_w * dt / 3600.0
        if running:
            self.compressor_s += dt
        self.energy_wh += used
        self.thermal_energy_wh += abs(self.thermal_w) * dt / 3600.0
        if self.thermal_w > 0:
            self.heating_energy_wh += self.thermal_w * dt / 3600.0
        else:
            self.cooling_energy_wh -= self.thermal_w * dt / 3600.0
        return used
