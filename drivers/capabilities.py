"""Device kinds and the capabilities (semantic point roles) each kind offers.

A map's ``[capabilities]`` table names which of its points plays each role; the
semantic device classes in :mod:`drivers.devices` read values through these roles, so a
``Meter`` works the same on an SDM630 and a DTSU666. The unit is part of every name.

Sign conventions (all powers in W):

* meter ``power_w``: + import from the grid, − export;
* inverter ``power_w``: + AC production;
* battery ``power_w``: + discharge (battery supplies the building), − charge;
* heat pump, loads ``power_w``: + consumption;
* DC bus (its interface converter) ``power_w``: + into the DC bus from the feeding side.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class ControlSpec:
    """A control the gateway may set on devices of a kind: what ``value`` means (unit),
    and the capability whose writable point says the device could offer it."""

    meaning: str
    hint: str


@dataclass(frozen=True, slots=True)
class KindSpec:
    """Capabilities a kind requires, the patterns of those it may offer, and the controls
    a map of this kind may declare (``[controls.NAME]``, see :mod:`drivers.controls`)."""

    required: frozenset[str]
    optional: tuple[str, ...]  # regular expressions, matched whole
    controls: dict[str, ControlSpec] = field(default_factory=dict)

    def allows(self, capability: str) -> bool:
        return capability in self.required or any(
            re.fullmatch(pattern, capability) for pattern in self.optional
        )


_PHASES = r"(l[123]_)?"

KINDS: dict[str, KindSpec] = {
    "meter": KindSpec(
        required=frozenset({"power_w", "import_wh", "export_wh"}),
        optional=(
            # instantaneous, per phase and total (+ import / − export)
            rf"{_PHASES}(power_w|reactive_power_var|apparent_power_va|power_factor|"
            r"phase_angle_deg)",
            r"l[123]_voltage_v", r"(l1_l2|l2_l3|l3_l1)_voltage_v", r"voltage_v",
            r"line_voltage_v", r"l[123]_current_a", r"current_a", r"current_sum_a",
            r"neutral_current_a", r"frequency_hz",
            # energies: totals, per phase, four quadrants, tariffs
            rf"{_PHASES}(import|export|total)_(wh|varh)", r"q[1-4]_varh",
            r"apparent_energy_vah", r"charge_ah", r"(import|export)_t[1-4]_wh",
            r"combined_wh", r"net_(import|export)_wh",
            # demand (rolling windows) and its maxima
            r"(max_)?demand_w", r"(max_)?apparent_demand_va",
            r"(max_)?(l[123]|neutral)_current_demand_a",
            # harmonic distortion
            r"(l[123]|l1_l2|l2_l3|l3_l1)_voltage_thd_pct", r"l[123]_current_thd_pct",
            r"(line_)?voltage_thd_pct", r"current_thd_pct",
            # transformer ratios the meter applies (primary = secondary × ratio) and clock
            r"ct_ratio", r"pt_ratio", r"clock_(year|month|day|hour|minute|second)",
        ),
    ),
    "inverter": KindSpec(
        required=frozenset({"power_w", "energy_wh"}),
        optional=(
            r"rated_power_w", r"dc_power_w", r"mppt[0-9]_(power_w|voltage_v|current_a)",
            r"power_limit_pct", r"power_limit_enabled", r"power_limit_revert_s",
            r"power_limit_ramp_s", r"operating_state", r"frequency_hz", r"l[123]_voltage_v",
            r"reactive_power_var", r"temperature_c",
            # the AC port (a hybrid's carries its battery too), per phase and in total
            r"ac_power_w", r"apparent_power_va", r"power_factor", r"l[123]_(current_a|power_w)",
            r"(l1_l2|l2_l3|l3_l1)_voltage_v", r"efficiency_pct", r"dc_energy_wh",
        ),
        controls={"power_limit": ControlSpec("% of rated AC power", "power_limit_pct")},
    ),
    "battery": KindSpec(
        required=frozenset({"soc_pct", "power_w"}),
        optional=(
            r"capacity_wh", r"max_charge_w", r"max_discharge_w", r"control_mode",
            r"charge_limit_pct", r"discharge_limit_pct", r"control_revert_s",
            r"min_reserve_pct", r"charge_state", r"voltage_v", r"current_a",
            r"state_of_health_pct",
            # vendors' forced charge/discharge: command, EMS mode, power (one register or
            # one per direction), how it ends (duration or target SoC), what is in force
            r"forced_mode", r"ems_mode", r"forced_(power|charge|discharge|setpoint)_w",
            r"forced_duration_s", r"forced_by_soc", r"forced_target_soc_pct",
            r"(charge|discharge)_power_limit_w", r"(max|min)_soc_pct",
            r"(charge|discharge)_energy_wh", r"temperature_c",
        ),
        controls={"power_setpoint": ControlSpec("W, + discharge, − charge",
                                                "charge_limit_pct")},
    ),
    "heat_pump": KindSpec(
        # SG-Ready may be a register (sg_ready_state) or, physically, two contacts on
        # the terminal block driven by a relay module (the site file wires them).
        required=frozenset({"power_w"}),
        optional=(
            r"sg_ready_state", r"energy_wh", r"thermal_energy_wh", r"thermal_power_w",
            r"flow_setpoint_c", r"flow_temp_c", r"return_temp_c", r"outdoor_temp_c",
            r"indoor_temp_c", r"indoor_setpoint_c", r"operating_mode", r"cop", r"rated_power_w",
        ),
        controls={"sg_ready": ControlSpec("SG-Ready state 1–4", "sg_ready_state"),
                  "flow_setpoint": ControlSpec("°C", "flow_setpoint_c")},
    ),
    "relay": KindSpec(
        required=frozenset(),
        # channel_N_safe_on: the state channel N takes when the watchdog trips (True =
        # closed), on modules that let it be set per channel.
        optional=(r"channel_[0-9]+_on", r"channel_[0-9]+_safe_on", r"watchdog_s",
                  r"watchdog_tripped"),
    ),
    "dc_bus": KindSpec(
        required=frozenset({"bus_voltage_v", "power_w"}),
        optional=(
            r"voltage_setpoint_v", r"droop_pct", r"power_limit_w", r"power_setpoint_w",
            r"load_power_w", r"current_a", r"rated_power_w", r"nominal_voltage_v",
            r"operating_state", r"enabled",
            # 直柔 interface converters (dc-interface-converter): grid-limit mode
            r"ac_power_w", r"converter_mode", r"grid_limit_w", r"watchdog_s", r"active_mode",
            r"band_(low|high)_v", r"fallbacks",
        ),
        controls={"voltage_setpoint": ControlSpec("V", "voltage_setpoint_v"),
                  "droop": ControlSpec("% of rating per % of voltage", "droop_pct"),
                  "power_limit": ControlSpec("W", "power_limit_w"),
                  "grid_limit": ControlSpec("W drawn from the grid, + import",
                                            "grid_limit_w")},
    ),
    # 直柔 storage on a P–V droop curve (breakpoints: voltage → % of rated, + discharge)
    "dc_storage": KindSpec(
        required=frozenset({"soc_pct", "power_w"}),
        optional=(r"bus_voltage_v", r"capacity_wh", r"rated_power_w", r"soc_(min|max)_pct",
                  r"curve_v[1-4]", r"curve_pct[1-4]"),
    ),
    # 直柔 flexible DC loads by class, each on a P–V curve (voltage → % of demand)
    "dc_loads": KindSpec(
        required=frozenset({"power_w"}),
        optional=(r"bus_voltage_v", r"fixed_power_w",
                  r"(lighting|fan_coil|heat_pump|ev_charger)_"
                  r"(power_w|demand_w|rated_w|fraction_pct|curve_v[1-4]|curve_pct[1-4])"),
    ),
    # Non-electric meters (分类 02000 water, 04000/05000 heat and cold): counters in
    # base units (Wh of heat, m³ of water), flow in m³/h.
    "heat_meter": KindSpec(
        required=frozenset({"heat_energy_wh"}),
        optional=(r"cooling_energy_wh", r"thermal_power_w", r"flow_m3_h", r"volume_m3",
                  r"supply_temp_c", r"return_temp_c"),
    ),
    "water_meter": KindSpec(
        required=frozenset({"volume_m3"}),
        optional=(r"flow_m3_h",),
    ),
    "sub_meter": KindSpec(
        required=frozenset(),
        optional=(
            r"ch[0-9]_(voltage_v|current_a|power_w|power_factor|import_wh|export_wh|"
            r"reactive_power_var|apparent_power_va)",
            r"frequency_hz", r"uptime_s", r"demand_w",
            # pulse inputs: edges counted (a water or gas meter's pulse output)
            r"pulse[0-9]_count",
        ),
    ),
}


_CHANNEL = re.compile(r"channel_([0-9]+)_on")


def relay_channel_count(capabilities: Mapping[str, str] | Iterable[str]) -> int:
    """How many channels a relay map offers: its ``channel_N_on`` capabilities."""
    return sum(1 for name in capabilities if _CHANNEL.fullmatch(name))
