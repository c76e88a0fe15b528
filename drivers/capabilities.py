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
            rf"{_PHASES}power_w", r"l[123]_voltage_v", r"l[123]_current_a",
            r"reactive_power_var", r"apparent_power_va", r"power_factor", r"frequency_hz",
            r"import_varh", r"export_varh", r"demand_w", r"max_demand_w",
            r"(import|export)_t[1-4]_wh", r"combined_wh", r"l[123]_power_factor",
        ),
    ),
    "inverter": KindSpec(
        required=frozenset({"power_w", "energy_wh"}),
        optional=(
            r"rated_power_w", r"dc_power_w", r"mppt[0-9]_(power_w|voltage_v|current_a)",
            r"power_limit_pct", r"power_limit_enabled", r"power_limit_revert_s",
            r"power_limit_ramp_s", r"operating_state", r"frequency_hz", r"l[123]_voltage_v",
            r"reactive_power_var", r"temperature_c",
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
        required=frozenset({"sg_ready_state", "power_w"}),
        optional=(
            r"energy_wh", r"thermal_energy_wh", r"thermal_power_w", r"flow_setpoint_c",
            r"flow_temp_c", r"return_temp_c", r"outdoor_temp_c", r"indoor_temp_c",
            r"indoor_setpoint_c", r"operating_mode", r"cop", r"rated_power_w",
        ),
        controls={"sg_ready": ControlSpec("SG-Ready state 1–4", "sg_ready_state"),
                  "flow_setpoint": ControlSpec("°C", "flow_setpoint_c")},
    ),
    "relay": KindSpec(
        required=frozenset(),
        optional=(r"channel_[0-9]+_on", r"watchdog_s", r"watchdog_tripped"),
    ),
    "dc_bus": KindSpec(
        required=frozenset({"bus_voltage_v", "power_w"}),
        optional=(
            r"voltage_setpoint_v", r"droop_pct", r"power_limit_w", r"power_setpoint_w",
            r"load_power_w", r"current_a", r"rated_power_w", r"nominal_voltage_v",
            r"operating_state", r"enabled",
        ),
        controls={"voltage_setpoint": ControlSpec("V", "voltage_setpoint_v"),
                  "droop": ControlSpec("% of rating per % of voltage", "droop_pct"),
                  "power_limit": ControlSpec("W", "power_limit_w")},
    ),
    "sub_meter": KindSpec(
        required=frozenset(),
        optional=(
            r"ch[0-9]_(voltage_v|current_a|power_w|power_factor|import_wh|export_wh|"
            r"reactive_power_var|apparent_power_va)",
            r"frequency_hz", r"uptime_s", r"demand_w",
        ),
    ),
}
