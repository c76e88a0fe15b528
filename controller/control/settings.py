"""``[control]``: how the control loop runs and what the site's goals are."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from controller.control.baseline import BaselineMethod
from controller.control.settlement import SettlementRules
from drivers.schema import Node
from drivers.site import SiteSpec

#: DC-bus voltage bands per nominal voltage: (shed below %, restore above %, raise above %).
DEFAULT_DC_BANDS = {48.0: (94.0, 97.0, 103.0), 375.0: (95.0, 98.0, 102.0),
                    750.0: (95.0, 98.0, 102.0)}


@dataclass(frozen=True, slots=True)
class ControlSettings:
    enabled: bool = True
    cycle_s: float = 1.0
    battery_mode: str = "self_consumption"  # self_consumption, tou_arbitrage, idle
    reserve_soc_pct: float = 20.0  # site goals do not discharge below this
    min_soc_pct: float = 5.0  # events may use the battery down to this
    max_soc_pct: float = 95.0
    import_cap_kw: float | None = None  # peak shaving
    export_limit_kw: float | None = None  # 0: zero export
    inverter_revert_s: int = 60
    battery_revert_s: int = 30
    relay_watchdog_s: int = 120
    restore_step_kw: float = 20.0
    restore_step_s: float = 10.0
    comfort_min_c: float = 20.0
    comfort_max_c: float = 24.0
    safety_min_c: float = 16.0
    safety_max_c: float = 28.0
    heat_pump_priority: int = 3  # as a sheddable resource
    thermal_surplus_kw: float = 15.0  # PV surplus that starts pre-heating/cooling
    preheat_s: float = 3600.0  # boost this long before a known event
    thermal_hours_per_k: float = 1.0  # building inertia estimate for flexibility reports
    baseline_method: BaselineMethod = BaselineMethod.REALTIME_15MIN
    baseline_pre_event_s: float = 3600.0
    baseline_days: int = 10
    baseline_min_coverage: float = 0.9  # a baseline covering less of its window is low-quality
    settlement: SettlementRules = field(default_factory=SettlementRules)
    performance_interval_s: float = 60.0
    flexibility_interval_s: float = 60.0
    dc_bands: dict[float, tuple[float, float, float]] = field(
        default_factory=lambda: dict(DEFAULT_DC_BANDS))

    def __post_init__(self) -> None:
        # The loop refreshes what reverts by itself; it can only do so if the timeouts
        # leave room for a few cycles.
        for name in ("battery_revert_s", "inverter_revert_s"):
            if getattr(self, name) < 3 * self.cycle_s:
                raise ValueError(f"{name} must be at least 3 × cycle_s ({3 * self.cycle_s:g} s)")
        if 0 < self.relay_watchdog_s < 3 * self.cycle_s:
            raise ValueError("relay_watchdog_s must be 0 or at least 3 × cycle_s")

    def dc_band(self, nominal_v: float) -> tuple[float, float, float]:
        nearest = min(self.dc_bands, key=lambda v: abs(v - nominal_v))
        return self.dc_bands[nearest]


_KEYS: dict[str, Any] = {
    "enabled": "bool", "cycle_s": (0.1, 60.0), "battery_mode": ("self_consumption",
                                                               "tou_arbitrage", "idle"),
    "reserve_soc_pct": (0.0, 100.0), "min_soc_pct": (0.0, 100.0), "max_soc_pct": (0.0, 100.0),
    "import_cap_kw": (0.0, 1e6), "export_limit_kw": (0.0, 1e6),
    "inverter_revert_s": (10, 3600), "battery_revert_s": (10, 3600),
    "relay_watchdog_s": (0, 3600), "restore_step_kw": (0.1, 1e6),
    "restore_step_s": (1.0, 3600.0), "comfort_min_c": (5.0, 35.0),
    "comfort_max_c": (5.0, 35.0), "safety_min_c": (0.0, 40.0), "safety_max_c": (0.0, 40.0),
    "heat_pump_priority": (1, 10), "thermal_surplus_kw": (0.0, 1e6),
    "preheat_s": (0.0, 86400.0), "thermal_hours_per_k": (0.01, 100.0),
    "baseline_method": tuple(m.value for m in BaselineMethod
                             if m is not BaselineMethod.JUST_BEFORE),
    "baseline_pre_event_s": (300.0, 86400.0), "baseline_days": (1, 30),
    "baseline_min_coverage": (0.1, 1.0), "performance_interval_s": (10.0, 3600.0),
    "flexibility_interval_s": (5.0, 3600.0),
}


def control_settings(site: SiteSpec) -> ControlSettings:
    """The ``[control]`` section (absent: defaults). Raises ConfigError naming the key."""
    node = site.section("control")
    if node is None:
        return ControlSettings()
    node.only((*_KEYS, "dc_bands", "settlement"))
    values: dict[str, object] = {}
    for key, rule in _KEYS.items():
        child = node.get(key)
        if child is None:
            continue
        if rule == "bool":
            values[key] = child.bool()
        elif isinstance(rule[0], str):
            values[key] = child.str(choices=rule)
            if key == "baseline_method":
                values[key] = BaselineMethod(values[key])
        elif isinstance(rule[0], int) and isinstance(rule[1], int):
            values[key] = child.int(min=rule[0], max=rule[1])
        else:
            values[key] = child.float(min=float(rule[0]), max=float(rule[1]))
    try:
        settings = ControlSettings(**values)  # type: ignore[arg-type]
    except ValueError as exc:
        raise node.error(str(exc)) from None
    _check_order(node, "min_soc_pct", settings.min_soc_pct, "reserve_soc_pct",
                 settings.reserve_soc_pct)
    _check_order(node, "reserve_soc_pct", settings.reserve_soc_pct, "max_soc_pct",
                 settings.max_soc_pct)
    _check_order(node, "comfort_min_c", settings.comfort_min_c, "comfort_max_c",
                 settings.comfort_max_c)
    _check_order(node, "safety_min_c", settings.safety_min_c, "comfort_min_c",
                 settings.comfort_min_c)
    _check_order(node, "comfort_max_c", settings.comfort_max_c, "safety_max_c",
                 settings.safety_max_c)
    settlement = node.get("settlement")
    if settlement is not None:
        values["settlement"] = _settlement(settlement)
        settings = ControlSettings(**values)  # type: ignore[arg-type]
    bands = node.get("dc_bands")
    if bands is not None:
        parsed = dict(settings.dc_bands)
        for key, child in bands.items():
            try:
                nominal = float(key)
            except ValueError:
                raise child.error('keys that are nominal voltages, e.g. "375"') from None
            triple = child.list()
            if len(triple) != 3:
                raise child.error("[shed below %, restore above %, raise above %]")
            low, restore, high = (item.float(min=50, max=150) for item in triple)
            if not low < restore <= 100 <= high:
                raise child.error("shed < restore <= 100 <= raise (percent of nominal)")
            parsed[nominal] = (low, restore, high)
        settings = ControlSettings(**{**values, "dc_bands": parsed})  # type: ignore[arg-type]
    return settings


def _settlement(node: Node) -> SettlementRules:
    """``[control.settlement]``: the programme's payment and penalty rules."""
    node.only(("clearing_price_cny_per_kwh", "min_ratio", "max_paid_ratio", "penalty_factor"))
    default = SettlementRules()

    def number(key: str, low: float, high: float) -> float:
        child = node.get(key)
        return float(getattr(default, key)) if child is None else child.float(min=low, max=high)

    return SettlementRules(number("clearing_price_cny_per_kwh", 0.0, 1000.0),
                           number("min_ratio", 0.0, 1.0), number("max_paid_ratio", 1.0, 10.0),
                           number("penalty_factor", 0.0, 100.0))


def _check_order(node: Node, low_key: str, low: float, high_key: str, high: float) -> None:
    if low > high:
        raise node.req(high_key if node.has(high_key) else low_key).error(
            f"{low_key} <= {high_key}")
