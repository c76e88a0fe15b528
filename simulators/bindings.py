"""Bindings: each simulated device's values by capability, and writes applied to physics.

A binding knows a device kind, not a register map: it speaks in capabilities
(``power_w``, ``soc_pct``…, see ``drivers/capabilities.py``), so every map of that kind is
simulated by the same binding. A few bindings also fill map-specific status points
(``extra_points``) when the map has them. Writes arrive as capability and engineering
value; an impossible value raises ``ValueError`` and the server answers Modbus exception
03 (illegal data value), changing nothing.

What a binding needs to know of its map is a :class:`MapView`: which capabilities the
map offers (a Huawei inverter has a derating but no enable switch) and the roles of
enumerated values, read from their labels (``"charge"``, ``"discharge"``, ``"stop"``,
``"forced"``, ``"enabled"``, ``"disabled"``): Sungrow's forced charge is 0xAA, Huawei's 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from typing import Protocol

from drivers.devices import SG_READY_CONTACTS
from drivers.points import AnyMap, Value
from simulators.physics.battery import BatteryModel
from simulators.physics.dcbus import DcBus
from simulators.physics.grid import (
    current_thd_pct,
    line_voltage_v,
    mains_frequency_hz,
    mains_voltage_v,
    neutral_current_a,
    phase_values,
    voltage_thd_pct,
)
from simulators.physics.heatpump import MODE_AUTO, MODE_COOLING, MODE_HEATING, MODE_OFF, HeatPump
from simulators.physics.loads import RelayModule
from simulators.physics.pv import PvInverter
from simulators.physics.site import MeterModel, SimLoad, SubMeterChannelModel
from simulators.physics.water import WaterDemand

#: Volumetric heat capacity of water, J/(m³·K).
WATER_J_PER_M3_K = 4.186e6


class Binding(Protocol):
    def values(self) -> dict[str, Value]:
        """Current values by capability name."""
        ...

    def extra_points(self) -> dict[str, Value]:
        """Current values of map-specific points, by point name (used if present)."""
        ...

    def write(self, capability: str, value: Value) -> None:
        """Apply a write; raises ValueError (or KeyError for a read-only capability)."""
        ...


def _number(value: Value) -> float:
    if value is None or isinstance(value, str):
        raise ValueError(f"expected a number, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class MapView:
    """What a binding needs to know of its device's map: the capabilities it offers
    (None: every one, as for the SunSpec maps) and, per capability, the labels of its
    enumerated values (lower case), which name their roles."""

    offered: frozenset[str] | None = None
    labels: Mapping[str, Mapping[int, str]] = field(default_factory=dict)

    @classmethod
    def of(cls, device_map: AnyMap) -> MapView:
        labels = {capability: {raw: label.lower() for raw, label in point.enum.items()}
                  for capability, name in device_map.capabilities.items()
                  if (point := device_map.points[name]).enum}
        return cls(frozenset(device_map.capabilities), labels)

    def offers(self, capability: str) -> bool:
        return self.offered is None or capability in self.offered

    def role(self, capability: str, raw: float) -> str | None:
        """The label of the value ``raw`` of ``capability`` (None: no label)."""
        return self.labels.get(capability, {}).get(int(raw))

    def raw(self, capability: str, *roles: str) -> int | None:
        """The value labelled with the first of ``roles`` that has one, or None."""
        for role in roles:
            for raw, label in self.labels.get(capability, {}).items():
                if label == role:
                    return raw
        return None


@dataclass
class MeterBinding:
    """A meter's quantities by capability name (drivers/capabilities.py, kind "meter"),
    primary side: per phase and in total, energies, demand, distortion, the transformer
    ratios and the meter's clock. A map serves what its registers carry; the protocol
    adapters turn points with ``ratios`` into secondary values."""

    meter: MeterModel
    clock: Callable[[], float]
    zone: tzinfo | None = None
    _cache: tuple[tuple[float, ...], dict[str, Value]] | None = field(
        default=None, init=False, repr=False)

    def values(self) -> dict[str, Value]:
        """Every quantity now; computed once per simulation instant and meter state (a
        poll reads many points of one meter at one instant)."""
        meter, counter = self.meter, self.meter.counter
        key = (self.clock(), counter.import_wh, counter.export_wh, counter.power_w,
               meter.reactive_var, meter.ct_ratio, meter.pt_ratio)
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, self._compute(key[0]))
        return dict(self._cache[1])

    def _compute(self, t: float) -> dict[str, Value]:
        meter, counter = self.meter, self.meter.counter
        phases = meter.phases(t)
        apparent = sum(p.apparent_va for p in phases)
        power_factor = abs(counter.power_w) / apparent if apparent > 0 else 1.0
        voltage_thd = [voltage_thd_pct(t, k) for k in (1, 2, 3)]
        values: dict[str, Value] = {
            "power_w": counter.power_w,
            "import_wh": counter.import_wh,
            "export_wh": counter.export_wh,
            "total_wh": counter.import_wh + counter.export_wh,
            "combined_wh": counter.import_wh + counter.export_wh,  # 正向 + 反向 (default)
            "net_import_wh": max(0.0, counter.import_wh - counter.export_wh),
            "net_export_wh": max(0.0, counter.export_wh - counter.import_wh),
            "reactive_power_var": meter.reactive_var,
            "apparent_power_va": apparent,
            "power_factor": power_factor if counter.power_w >= 0 else -power_factor,
            "phase_angle_deg": math.degrees(math.atan2(meter.reactive_var, counter.power_w))
            if apparent > 0 else 0.0,
            "frequency_hz": mains_frequency_hz(t),
            "voltage_v": sum(p.voltage_v for p in phases) / 3,
            "current_a": sum(p.current_a for p in phases) / 3,
            "current_sum_a": sum(p.current_a for p in phases),
            "neutral_current_a": neutral_current_a(tuple(phases)),
            "import_varh": meter.import_varh,
            "export_varh": meter.export_varh,
            "total_varh": meter.import_varh + meter.export_varh,
            "apparent_energy_vah": meter.apparent_vah,
            "charge_ah": meter.charge_ah,
            "demand_w": meter.demand_w,
            "max_demand_w": meter.max_demand_w,
            "apparent_demand_va": meter.apparent_demand_va,
            "max_apparent_demand_va": meter.max_apparent_demand_va,
            "neutral_current_demand_a": meter.current_demand_a[3],
            "max_neutral_current_demand_a": meter.max_current_demand_a[3],
            "voltage_thd_pct": sum(voltage_thd) / 3,
            "ct_ratio": meter.ct_ratio,
            "pt_ratio": meter.pt_ratio,
        }
        for quadrant, varh in enumerate(meter.quadrant_varh, start=1):
            values[f"q{quadrant}_varh"] = varh
        line_thd = []
        for index, phase in enumerate(phases):
            prefix = f"l{index + 1}_"
            counters = meter.phase_counters[index]
            values.update(phase.quantities(prefix))
            values.update({
                prefix + "phase_angle_deg": phase.phase_angle_deg,
                prefix + "import_wh": counters.import_wh,
                prefix + "export_wh": counters.export_wh,
                prefix + "total_wh": counters.import_wh + counters.export_wh,
                prefix + "import_varh": counters.import_varh,
                prefix + "export_varh": counters.export_varh,
                prefix + "total_varh": counters.import_varh + counters.export_varh,
                prefix + "current_demand_a": meter.current_demand_a[index],
                "max_" + prefix + "current_demand_a": meter.max_current_demand_a[index],
                prefix + "voltage_thd_pct": voltage_thd[index],
                prefix + "current_thd_pct": current_thd_pct(t, index + 1, phase.current_a),
            })
        for (a, b), name in zip(((0, 1), (1, 2), (2, 0)), ("l1_l2", "l2_l3", "l3_l1"),
                                strict=True):
            values[f"{name}_voltage_v"] = line_voltage_v(phases[a], phases[b])
            line_thd.append((voltage_thd[a] + voltage_thd[b]) / 2)
            values[f"{name}_voltage_thd_pct"] = line_thd[-1]
        values["line_voltage_v"] = sum(
            line_voltage_v(phases[a], phases[b]) for a, b in ((0, 1), (1, 2), (2, 0))) / 3
        values["line_voltage_thd_pct"] = sum(line_thd) / 3
        values["current_thd_pct"] = sum(current_thd_pct(t, k + 1, p.current_a)
                                        for k, p in enumerate(phases)) / 3
        for tariff in range(4):
            values[f"import_t{tariff + 1}_wh"] = meter.tariff_import_wh[tariff]
            values[f"export_t{tariff + 1}_wh"] = meter.tariff_export_wh[tariff]
        now = datetime.fromtimestamp(t, self.zone)
        values.update({"clock_year": now.year % 100, "clock_month": now.month,
                       "clock_day": now.day, "clock_hour": now.hour,
                       "clock_minute": now.minute, "clock_second": now.second})
        return values

    def extra_points(self) -> dict[str, Value]:
        at = self.meter.max_demand_at_s
        when = "" if at is None else \
            datetime.fromtimestamp(at, self.zone).strftime("%Y-%m-%dT%H:%M")
        return {"max_demand_time": when}  # DL/T 645 maps: when the maximum was set

    def write(self, capability: str, value: Value) -> None:
        raise KeyError(capability)


@dataclass
class InverterBinding:
    """A PV inverter. ``battery``: the battery on the same (hybrid) inverter, whose power
    its AC port also carries (``ac_power``)."""

    inverter: PvInverter
    view: MapView = field(default_factory=MapView)
    battery: BatteryModel | None = None

    def values(self) -> dict[str, Value]:
        inv, cfg = self.inverter, self.inverter.config
        t = inv.t_s
        per_mppt = inv.dc_power_w / cfg.mppt_count
        mppt_voltage = 620.0 if per_mppt > 0 else 0.0
        values: dict[str, Value] = {
            "power_w": inv.power_w,
            "energy_wh": inv.energy_wh,
            "dc_power_w": inv.dc_power_w,
            "rated_power_w": cfg.rated_ac_w,
            "power_limit_pct": inv.limit_pct,
            "power_limit_enabled": self._enabled_raw(inv.limit_enabled),
            "power_limit_revert_s": inv.revert_s,
            "power_limit_ramp_s": inv.ramp_s,
            "operating_state": self._state(),
            "frequency_hz": mains_frequency_hz(t),
            "reactive_power_var": 0.0,
            "temperature_c": inv.cell_temp_c - 5.0,
        }
        for phase in (1, 2, 3):
            values[f"l{phase}_voltage_v"] = mains_voltage_v(t, phase)
        for index in range(1, cfg.mppt_count + 1):
            values[f"mppt{index}_power_w"] = per_mppt
            values[f"mppt{index}_voltage_v"] = mppt_voltage
            values[f"mppt{index}_current_a"] = per_mppt / mppt_voltage if mppt_voltage else 0.0
        return values | self._ac_port(t)

    def _ac_port(self, t: float) -> dict[str, Value]:
        """The AC port's quantities: power (PV, and a hybrid's battery), per phase and in
        total, at unity power factor; the conversion and its energy on the DC side."""
        inv, cfg = self.inverter, self.inverter.config
        ac = self.ac_power_w
        values: dict[str, Value] = {
            "ac_power_w": ac,
            "apparent_power_va": abs(ac),
            "power_factor": 1.0,
            "efficiency_pct": 100.0 * cfg.inverter_efficiency if inv.dc_power_w > 0 else 0.0,
            "dc_energy_wh": inv.energy_wh / cfg.inverter_efficiency,
        }
        for phase in (1, 2, 3):
            values[f"l{phase}_power_w"] = ac / 3.0
            values[f"l{phase}_current_a"] = phase_values(ac / 3.0, 1.0, t, phase).current_a
            following = phase % 3 + 1
            values[f"l{phase}_l{following}_voltage_v"] = math.sqrt(3.0) * (
                mains_voltage_v(t, phase) + mains_voltage_v(t, following)) / 2.0
        return values

    def _state(self) -> int:
        # SunSpec model 103 St: 2 sleeping, 4 MPPT, 5 throttled.
        if self.inverter.available_w <= 0:
            return 2
        return 5 if self.inverter.limit_active else 4

    def _enabled_raw(self, enabled: bool) -> Value:
        raw = self.view.raw("power_limit_enabled", "enabled" if enabled else "disabled")
        return (1 if enabled else 0) if raw is None else raw

    @property
    def ac_power_w(self) -> float:
        """What the inverter's AC port carries: PV, and the battery of a hybrid."""
        return self.inverter.power_w + (self.battery.power_w if self.battery else 0.0)

    def extra_points(self) -> dict[str, Value]:
        inv, cfg = self.inverter, self.inverter.config
        phase = phase_values(inv.power_w / 3.0, 1.0, inv.t_s, 1)
        return {
            "inverter_three_phase.A": 3 * phase.current_a,
            "inverter_three_phase.AphA": phase.current_a,
            "inverter_three_phase.AphB": phase.current_a,
            "inverter_three_phase.AphC": phase.current_a,
            "inverter_three_phase.VA": inv.power_w,
            "inverter_three_phase.PF": 100.0,  # model 103 PF is in percent: unity is 100
            "inverter_three_phase.DCA": inv.dc_power_w / 620.0 if inv.dc_power_w else 0.0,
            "inverter_three_phase.DCV": 620.0 if inv.dc_power_w else 0.0,
            "nameplate.WRtg": cfg.rated_ac_w,
            "nameplate.VARtg": cfg.rated_ac_w,
            "settings.WMax": cfg.rated_ac_w,
            "status.PVConn": 0b111 if inv.available_w > 0 else 0b011,
            "status.ECPConn": 1,
            "status.ActWh": round(inv.energy_wh),
            "status.WAval": inv.available_w,
            "status.StActCtl": 1 if inv.limit_active else 0,
            "controls.Conn": 1,
            "mppt.module[0].ID": 1,
            "mppt.module[1].ID": 2,
            "mppt.module[0].DCWH": round(inv.energy_wh / cfg.mppt_count),
            "mppt.module[1].DCWH": round(inv.energy_wh / cfg.mppt_count),
            "mppt.module[0].DCSt": self._state(),
            "mppt.module[1].DCSt": self._state(),
        }

    def write(self, capability: str, value: Value) -> None:
        number = _number(value)
        if capability == "power_limit_pct":
            # A map without an enable switch (a Huawei derating) limits by the value alone.
            enable = None if self.view.offers("power_limit_enabled") else True
            self.inverter.set_limit(pct=number, enabled=enable)
        elif capability == "power_limit_enabled":
            role = self.view.role(capability, number)
            if role is None and number in (0, 1):
                role = "enabled" if number else "disabled"
            if role not in ("enabled", "disabled"):
                raise ValueError(f"{number:g} neither enables nor disables the limit")
            self.inverter.set_limit(enabled=role == "enabled")
        elif capability == "power_limit_revert_s":
            self.inverter.set_limit(revert_s=number)
        elif capability == "power_limit_ramp_s":
            self.inverter.set_limit(ramp_s=number)
        else:
            raise KeyError(capability)


@dataclass
class BatteryBinding:
    """A battery. Besides SunSpec model 124's limits it takes the vendors' forced
    charge and discharge: a command (``forced_mode``: values labelled "charge",
    "discharge", anything else hands back to the battery's own logic), the power (one
    ``forced_power_w`` for both directions, or ``forced_charge_w`` and
    ``forced_discharge_w``), optionally an EMS mode that must be the one labelled
    "forced" (Sungrow), a duration (``forced_duration_s``, Huawei's period: the device
    ends the command by itself) or a target SoC instead (``forced_by_soc``,
    ``forced_target_soc_pct``). The registers keep what was written; the battery holds a
    forced setpoint until it is released, and reads "stop" again when the device ended
    it by itself."""

    battery: BatteryModel
    view: MapView = field(default_factory=MapView)
    command: float = 0.0
    ems_mode: float = 0.0
    forced_power_w: float = 0.0
    forced_charge_w: float = 0.0
    forced_discharge_w: float = 0.0
    forced_duration_s: float = 0.0
    forced_by_soc: float = 0.0
    forced_target_soc_pct: float = 0.0

    def __post_init__(self) -> None:
        self.command = float(self.view.raw("forced_mode", "stop", "auto") or 0)
        self.ems_mode = float(self.view.raw("ems_mode", "self_consumption") or 0)

    def _forced_values(self) -> dict[str, Value]:
        bat = self.battery
        command = self.command
        if bat.forced_w is None and self.view.role("forced_mode", command) in (
                "charge", "discharge"):  # the device ended it (duration, target SoC)
            command = float(self.view.raw("forced_mode", "stop", "auto") or 0)
        return {
            "forced_mode": command,
            "ems_mode": self.ems_mode,
            "forced_power_w": self.forced_power_w,
            "forced_charge_w": self.forced_charge_w,
            "forced_discharge_w": self.forced_discharge_w,
            "forced_duration_s": self.forced_duration_s,
            "forced_by_soc": self.forced_by_soc,
            "forced_target_soc_pct": self.forced_target_soc_pct,
            "forced_setpoint_w": bat.forced_w or 0.0,
            "charge_power_limit_w": bat.charge_cap_w,
            "discharge_power_limit_w": bat.discharge_cap_w,
            "max_soc_pct": bat.max_soc_pct,
            "min_soc_pct": bat.min_soc_pct,
            "charge_energy_wh": bat.charged_wh,
            "discharge_energy_wh": bat.discharged_wh,
            "temperature_c": 25.0,
        }

    def _apply_forced(self) -> None:
        """Put the forced-command registers into effect on the physics."""
        view, bat = self.view, self.battery
        role = view.role("forced_mode", self.command)
        ems_forced = not view.offers("ems_mode") or view.role("ems_mode", self.ems_mode) \
            == "forced"
        if not ems_forced or role not in ("charge", "discharge"):
            bat.set_forced(None)
            return
        charging = role == "charge"
        if view.offers("forced_charge_w" if charging else "forced_discharge_w"):
            magnitude = self.forced_charge_w if charging else self.forced_discharge_w
        else:
            magnitude = self.forced_power_w
        by_soc = view.offers("forced_by_soc") and self.forced_by_soc == 1
        bat.set_forced(-magnitude if charging else magnitude,
                       duration_s=self.forced_duration_s if view.offers("forced_duration_s")
                       and not by_soc else None,
                       soc_target_pct=self.forced_target_soc_pct if by_soc else None)

    def _write_forced(self, capability: str, number: float) -> bool:
        """Apply a write to a forced-command register; False if it is not one."""
        if capability in ("forced_power_w", "forced_charge_w", "forced_discharge_w",
                          "forced_duration_s", "forced_target_soc_pct") and number < 0:
            raise ValueError(f"{capability} cannot be negative")
        if capability == "forced_by_soc" and number not in (0, 1):
            raise ValueError("the forced command ends by duration (0) or by SoC (1)")
        if capability == "forced_mode":
            self.command = number
        elif capability in ("ems_mode", "forced_power_w", "forced_charge_w",
                            "forced_discharge_w", "forced_duration_s", "forced_by_soc",
                            "forced_target_soc_pct"):
            setattr(self, capability, number)
        else:
            return False
        self._apply_forced()
        return True

    def values(self) -> dict[str, Value]:
        bat, cfg = self.battery, self.battery.config
        mode = (1 if bat.charge_limited else 0) | (2 if bat.discharge_limited else 0)
        return self._forced_values() | {
            "soc_pct": bat.soc_pct,
            "power_w": bat.power_w,
            "capacity_wh": cfg.capacity_wh,
            "max_charge_w": cfg.max_charge_w,
            "max_discharge_w": cfg.max_discharge_w,
            "control_mode": mode,
            "charge_limit_pct": bat.charge_limit_pct,
            "discharge_limit_pct": bat.discharge_limit_pct,
            "control_revert_s": bat.revert_s,
            "min_reserve_pct": bat.min_reserve_pct,
            "charge_state": self._charge_state(),
            "voltage_v": cfg.nominal_voltage_v * (0.93 + 0.14 * bat.soc_pct / 100.0),
            "current_a": bat.power_w / cfg.nominal_voltage_v,
            "state_of_health_pct": 98.5,
        }

    def _charge_state(self) -> int:
        bat = self.battery
        if "charge_state" in self.view.labels:  # a vendor's states, by their labels
            role = "discharge" if bat.power_w > 1 else "charge" if bat.power_w < -1 \
                else "standby"
            return self.view.raw("charge_state", role) or 0
        # SunSpec ChaSt: 2 empty, 3 discharging, 4 charging, 5 full, 6 holding.
        if bat.power_w > 1:
            return 3
        if bat.power_w < -1:
            return 4
        if bat.soc_pct >= bat.config.soc_max_pct - 0.05:
            return 5
        if bat.soc_pct <= bat.config.soc_min_pct + 0.05:
            return 2
        return 6

    def extra_points(self) -> dict[str, Value]:
        bat, cfg = self.battery, self.battery.config
        return {
            "battery.AHRtg": cfg.capacity_wh / cfg.nominal_voltage_v,
            "battery.WChaRteMax": cfg.max_charge_w,
            "battery.SoCMax": cfg.soc_max_pct,
            "battery.SoCMin": cfg.soc_min_pct,
            "battery.State": 3,
            "battery.NCyc": int(bat.cycles),
            "battery.Hb": int(bat.t_s) & 0xFFFF,
            "storage_basic.ChaState": bat.soc_pct,
            "storage_basic.InBatV": cfg.nominal_voltage_v,
            "storage_basic.ChaSt": self._charge_state(),
            "storage_basic.StorAval": bat.stored_wh / cfg.nominal_voltage_v,
        }

    def write(self, capability: str, value: Value) -> None:
        number = _number(value)
        if self._write_forced(capability, number):
            return
        if capability in ("charge_power_limit_w", "discharge_power_limit_w"):
            if number < 0:
                raise ValueError(f"{capability} cannot be negative")
            if capability == "charge_power_limit_w":
                self.battery.charge_cap_w = number
            else:
                self.battery.discharge_cap_w = number
        elif capability in ("max_soc_pct", "min_soc_pct"):
            if not 0 <= number <= 100:
                raise ValueError(f"{capability} must be 0–100 %")
            setattr(self.battery, capability, number)
        elif capability == "control_mode":
            bits = int(number)
            if bits & ~0b11:
                raise ValueError("StorCtl_Mod has only bits 0 and 1")
            self.battery.set_control(charge_limited=bool(bits & 1),
                                     discharge_limited=bool(bits & 2))
        elif capability == "charge_limit_pct":
            self.battery.set_control(charge_limit_pct=number)
        elif capability == "discharge_limit_pct":
            self.battery.set_control(discharge_limit_pct=number)
        elif capability == "control_revert_s":
            self.battery.set_control(revert_s=number)
        elif capability == "min_reserve_pct":
            if not 0 <= number <= 100:
                raise ValueError("reserve must be 0–100 %")
            self.battery.min_reserve_pct = number
        elif capability == "max_charge_w":
            if number != self.battery.config.max_charge_w:
                raise ValueError("this simulated battery keeps WChaMax at its rating")
        else:
            raise KeyError(capability)


@dataclass
class HeatPumpBinding:
    heat_pump: HeatPump

    def values(self) -> dict[str, Value]:
        hp = self.heat_pump
        outdoor = hp.outdoor_c(hp.t_s)
        return {
            "sg_ready_state": hp.sg_ready_state,
            "power_w": hp.electric_w,
            "energy_wh": hp.energy_wh,
            "thermal_power_w": abs(hp.thermal_w),
            "thermal_energy_wh": hp.thermal_energy_wh,
            "flow_setpoint_c": hp.flow_setpoint_c,
            "flow_temp_c": hp.flow_c,
            "return_temp_c": hp.return_c,
            "outdoor_temp_c": outdoor,
            "indoor_temp_c": hp.indoor_c,
            "indoor_setpoint_c": hp.indoor_setpoint_c,
            "operating_mode": hp.mode,
            "cop": hp.cop,
            "rated_power_w": hp.config.rated_electric_w,
        }

    def extra_points(self) -> dict[str, Value]:
        hp, cfg = self.heat_pump, self.heat_pump.config
        running = hp.electric_w > 0
        heating, cooling = hp.thermal_w > 0, hp.thermal_w < 0
        status = (running * 1) | (heating * 2) | (cooling * 4) | (
            (hp.sg_ready_state == 1) * 8)
        sg_signal, evu_signal = SG_READY_CONTACTS[hp.sg_ready_state]
        return {
            "status": status,  # the reference profile (sg-ready-heatpump)
            # Midea M-Thermal (midea-mthermal-r290): its table's codes
            "mode_setting": {MODE_AUTO: 1, MODE_HEATING: 3, MODE_COOLING: 2}.get(hp.mode, 1),
            "power_zone1": 0 if hp.mode == MODE_OFF else 1,
            # modelled: an inverter compressor between 20 and 90 Hz with the load
            "compressor_frequency": 20 + 70 * hp.electric_w / cfg.rated_electric_w
            if running else 0,
            "operating_state": 3 if heating else 2 if cooling else 0,
            "t1_total_outlet": hp.flow_c,
            "compressor_hours": hp.compressor_s,
            # the nameplate's heating capacity in whole kW, taken as 3 × the electric rating
            "unit_capacity": round(cfg.rated_electric_w * 3.0 / 1000.0) * 1000.0,
            "current_error": 0,
            "status_1": (sg_signal << 10) | (evu_signal << 11),
            "status_2": 1 << 7,  # 3-phase supply; temperatures in whole °C (bit 8 = 0)
        }

    def write(self, capability: str, value: Value) -> None:
        number = _number(value)
        if capability == "sg_ready_state":
            if number not in (1, 2, 3, 4):
                raise ValueError("SG-Ready state must be 1–4")
            self.heat_pump.sg_ready_state = int(number)  # ValueError when wired to contacts
        elif capability == "flow_setpoint_c":
            self.heat_pump.flow_setpoint_c = number
        elif capability == "indoor_setpoint_c":
            self.heat_pump.indoor_setpoint_c = number
        elif capability == "operating_mode":
            self.heat_pump.mode = int(number)
        else:
            raise KeyError(capability)


@dataclass
class HeatMeterBinding:
    """A heat/cold meter on a heat pump's hydraulic side: heat and cold delivered, the
    flow that carries the thermal power at the supply–return difference (water,
    4.186 MJ/(m³·K)), the volume that flow adds up to, and both temperatures."""

    heat_pump: HeatPump
    volume_m3: float = 0.0
    _last: tuple[float, float] | None = None  # (time, flow m³/h) of the previous read

    def values(self) -> dict[str, Value]:
        hp = self.heat_pump
        delta_k = abs(hp.flow_c - hp.return_c)
        flow = abs(hp.thermal_w) / (WATER_J_PER_M3_K * delta_k) * 3600.0 if delta_k > 0.05 \
            else 0.0
        if self._last is not None and hp.t_s > self._last[0]:
            self.volume_m3 += 0.5 * (self._last[1] + flow) * (hp.t_s - self._last[0]) / 3600.0
        self._last = (hp.t_s, flow)
        return {"heat_energy_wh": hp.heating_energy_wh,
                "cooling_energy_wh": hp.cooling_energy_wh,
                "thermal_power_w": abs(hp.thermal_w), "flow_m3_h": flow,
                "volume_m3": self.volume_m3, "supply_temp_c": hp.flow_c,
                "return_temp_c": hp.return_c}

    def extra_points(self) -> dict[str, Value]:
        return {}

    def write(self, capability: str, value: Value) -> None:
        raise KeyError(capability)


@dataclass
class WaterMeterBinding:
    demand: WaterDemand
    now: Callable[[], float]

    def values(self) -> dict[str, Value]:
        t = self.now()
        return {"volume_m3": self.demand.volume_at(t), "flow_m3_h": self.demand.flow_m3_h_at(t)}

    def extra_points(self) -> dict[str, Value]:
        return {}

    def write(self, capability: str, value: Value) -> None:
        raise KeyError(capability)


@dataclass
class RelayBinding:
    relay: RelayModule

    def values(self) -> dict[str, Value]:
        values: dict[str, Value] = {
            f"channel_{i}_on": on for i, on in enumerate(self.relay.states, start=1)
        }
        for i, closed in enumerate(self.relay.safe_states, start=1):
            values[f"channel_{i}_safe_on"] = 1 if closed else 0
        values["watchdog_s"] = self.relay.watchdog_s
        values["watchdog_tripped"] = self.relay.trips
        return values

    def extra_points(self) -> dict[str, Value]:
        return {}

    def write(self, capability: str, value: Value) -> None:
        if capability.startswith("channel_") and capability.endswith("_safe_on"):
            number = _number(value)
            if number not in (0, 1):
                raise ValueError("a safe state is 0 (open) or 1 (closed)")
            self.relay.set_safe_state(int(capability[8:-8]), bool(number))
        elif capability.startswith("channel_") and capability.endswith("_on"):
            self.relay.write_channel(int(capability[8:-3]), bool(value))
        elif capability == "watchdog_s":
            self.relay.set_watchdog(_number(value))
        else:
            raise KeyError(capability)


@dataclass
class DcBusBinding:
    bus: DcBus

    def values(self) -> dict[str, Value]:
        bus, cfg = self.bus, self.bus.config
        if not bus.enabled:
            state = 0
        elif bus.saturated:
            state = 2
        else:
            state = 1
        return {
            "bus_voltage_v": bus.voltage_v,
            "power_w": bus.converter_w,
            "load_power_w": bus.load_w,
            "current_a": bus.converter_w / bus.voltage_v if bus.voltage_v > 1 else 0.0,
            "voltage_setpoint_v": bus.voltage_setpoint_v,
            "droop_pct": bus.droop_pct,
            "power_setpoint_w": bus.power_setpoint_w,
            "power_limit_w": bus.power_limit_w,
            "nominal_voltage_v": cfg.nominal_voltage_v,
            "rated_power_w": cfg.rated_power_w,
            "operating_state": state,
            "enabled": 1 if bus.enabled else 0,
        }

    def extra_points(self) -> dict[str, Value]:
        return {
            "energy_in": self.bus.energy_in_wh,
            "energy_out": self.bus.energy_out_wh,
        }

    def write(self, capability: str, value: Value) -> None:
        number = _number(value)
        if capability == "voltage_setpoint_v":
            self.bus.voltage_setpoint_v = number
        elif capability == "droop_pct":
            if number <= 0:
                raise ValueError("droop must be > 0 %")
            self.bus.droop_pct = number
        elif capability == "power_setpoint_w":
            self.bus.power_setpoint_w = number
        elif capability == "power_limit_w":
            self.bus.power_limit_w = number
        elif capability == "enabled":
            self.bus.enabled = bool(number)
        else:
            raise KeyError(capability)


@dataclass
class SubMeterBinding:
    channels: Mapping[int, SubMeterChannelModel]
    loads: Mapping[str, SimLoad]
    clock: Callable[[], float]

    def values(self) -> dict[str, Value]:
        t = self.clock()
        values: dict[str, Value] = {"frequency_hz": mains_frequency_hz(t), "uptime_s": 0,
                                    # no pulse meters wired to the simulated sub-meter
                                    "pulse1_count": 0, "pulse2_count": 0}
        total = 0.0
        for number, channel in self.channels.items():
            load = self.loads[channel.load]
            phase = phase_values(load.power_w, load.config.power_factor, t, 1)
            total += load.power_w
            prefix = f"ch{number}_"
            values.update(phase.quantities(prefix))
            values.update({
                prefix + "import_wh": channel.counter.import_wh,
                prefix + "export_wh": channel.counter.export_wh,
            })
        values["demand_w"] = total
        return values

    def extra_points(self) -> dict[str, Value]:
        return {"firmware_version": 0x0100, "status": 0b1}

    def write(self, capability: str, value: Value) -> None:
        raise KeyError(capability)
