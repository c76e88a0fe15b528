"""A building DC bus: capacitance, a droop-controlled interface converter, DC loads."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class DcBusConfig:
    nominal_voltage_v: float = 375.0
    rated_power_w: float = 30_000.0
    capacitance_f: float = 0.05
    converter_efficiency: float = 0.97
    droop_pct: float = 5.0
    undervoltage_pct: float = 80.0  # DC loads' protection trips below this
    reconnect_s: float = 10.0  # and reconnect after the bus has recovered this long


class DcBus:
    """Bus voltage from the energy balance ``C·V·dV/dt = P_converter − P_loads``.

    The converter follows ``P = P_set + P_rated·(V_set − V)/(V_set·droop/100)``, clamped
    to ±min(power_limit, rating). In the droop range the bus settles within
    milliseconds, so each step uses the exact linearised solution; when the converter
    saturates, the stored energy ½CV² is integrated in 10 ms steps. Loads trip below
    ``undervoltage_pct`` of nominal and reconnect after ``reconnect_s`` of healthy bus.
    """

    def __init__(self, config: DcBusConfig, start_s: float) -> None:
        self.config = config
        self.t_s = start_s
        self.voltage_setpoint_v = config.nominal_voltage_v
        self.droop_pct = config.droop_pct
        self.power_setpoint_w = 0.0
        self.power_limit_w = config.rated_power_w
        self.enabled = True
        self.voltage_v = config.nominal_voltage_v
        self.converter_w = 0.0
        self.load_w = 0.0
        self.loads_tripped = False
        self._healthy_since_s = start_s
        self.energy_in_wh = 0.0
        self.energy_out_wh = 0.0

    def converter_power_w(self, voltage_v: float) -> float:
        if not self.enabled:
            return 0.0
        cfg = self.config
        gain = cfg.rated_power_w / (self.voltage_setpoint_v * self.droop_pct / 100.0)
        power = self.power_setpoint_w + gain * (self.voltage_setpoint_v - voltage_v)
        cap = min(self.power_limit_w, cfg.rated_power_w)
        return max(-cap, min(cap, power))

    @property
    def saturated(self) -> bool:
        cap = min(self.power_limit_w, self.config.rated_power_w)
        return abs(self.converter_w) >= cap - 1e-6

    def advance(self, t_s: float, demand_w: float) -> float:
        """Move to ``t_s`` with DC loads asking for ``demand_w``; returns the energy the
        converter drew from its AC side in the step, Wh (negative when feeding back)."""
        dt = max(0.0, t_s - self.t_s)
        self.t_s = max(self.t_s, t_s)
        if dt == 0.0:
            return 0.0
        cfg = self.config
        load = 0.0 if self.loads_tripped else demand_w
        elapsed, converter_ws = 0.0, 0.0
        while elapsed < dt:
            step = min(dt - elapsed, 1.0)
            equilibrium = self._equilibrium_v(load)
            if equilibrium is not None and self.enabled:
                gain = cfg.rated_power_w / (self.voltage_setpoint_v * self.droop_pct / 100.0)
                tau = cfg.capacitance_f * max(self.voltage_v, 1.0) / gain
                self.voltage_v = equilibrium + (self.voltage_v - equilibrium) * math.exp(
                    -step / tau)
                power = self.converter_power_w(self.voltage_v)
            else:
                step = min(step, 0.01)
                power = self.converter_power_w(self.voltage_v)
                energy = 0.5 * cfg.capacitance_f * self.voltage_v**2 + (power - load) * step
                self.voltage_v = math.sqrt(max(0.0, 2.0 * energy / cfg.capacitance_f))
            converter_ws += power * step
            elapsed += step
            load = self._protect(load, demand_w)
        self.converter_w = converter_ws / dt
        self.load_w = load
        if converter_ws >= 0:
            self.energy_in_wh += converter_ws / 3600.0
            return converter_ws / 3600.0 / cfg.converter_efficiency
        self.energy_out_wh -= converter_ws / 3600.0
        return converter_ws / 3600.0 * cfg.converter_efficiency

    def _equilibrium_v(self, load_w: float) -> float | None:
        """Voltage where the converter's droop power equals the load, if unsaturated."""
        cfg = self.config
        gain = cfg.rated_power_w / (self.voltage_setpoint_v * self.droop_pct / 100.0)
        voltage = self.voltage_setpoint_v - (load_w - self.power_setpoint_w) / gain
        cap = min(self.power_limit_w, cfg.rated_power_w)
        power = self.power_setpoint_w + gain * (self.voltage_setpoint_v - voltage)
        return voltage if abs(power) <= cap and voltage > 0 else None

    def _protect(self, load_w: float, demand_w: float) -> float:
        cfg = self.config
        floor = cfg.nominal_voltage_v * cfg.undervoltage_pct / 100.0
        if not self.loads_tripped and self.voltage_v < floor:
            self.loads_tripped = True
            self._healthy_since_s = self.t_s
            return 0.0
        if self.loads_tripped:
            if self.voltage_v < 0.95 * cfg.nominal_voltage_v:
                self._healthy_since_s = self.t_s
            elif self.t_s - self._healthy_since_s >= cfg.reconnect_s:
                self.loads_tripped = False
                return demand_w
            return 0.0
        return load_w
