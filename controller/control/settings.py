"""``[control]``: how the control loop runs and what the site's goals are."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from controller.control.baseline import BaselineMethod
from controller.control.settlement import SettlementRules
from controller.sections import Context, Key, Spec, apply, choice, flag, integer, number, read
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
        for problem in problems(lambda name: float(getattr(self, name))):
            raise ValueError(f"{problem.field} must be {problem.expected}")

    def dc_band(self, nominal_v: float) -> tuple[float, float, float]:
        nearest = min(self.dc_bands, key=lambda v: abs(v - nominal_v))
        return self.dc_bands[nearest]


def _dc_bands(node: Node, _: Context) -> dict[float, tuple[float, float, float]]:
    bands = dict(DEFAULT_DC_BANDS)
    for key, child in node.items():
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
        bands[nominal] = (low, restore, high)
    return bands


def _baseline_method(node: Node, context: Context) -> BaselineMethod:
    """A baseline method a site may choose (``just_before`` is the loop's own fallback)."""
    choices = [m.value for m in BaselineMethod if m is not BaselineMethod.JUST_BEFORE]
    return BaselineMethod(choice(*choices)(node, context))


#: ``[control.settlement]``: the programme's payment and penalty rules.
SETTLEMENT: Spec = {
    "clearing_price_cny_per_kwh": Key(number(0.0, 1000.0)), "min_ratio": Key(number(0.0, 1.0)),
    "max_paid_ratio": Key(number(1.0, 10.0)), "penalty_factor": Key(number(0.0, 100.0)),
}


def _settlement(node: Node, context: Context) -> SettlementRules:
    return apply(SettlementRules(), read(node, SETTLEMENT, context).values)


#: ``[control]``, one rule per key (docs/configuration.md, docs/control.md).
CONTROL: Spec = {
    "enabled": Key(flag()), "cycle_s": Key(number(0.1, 60.0)),
    "battery_mode": Key(choice("self_consumption", "tou_arbitrage", "idle")),
    "reserve_soc_pct": Key(number(0.0, 100.0)), "min_soc_pct": Key(number(0.0, 100.0)),
    "max_soc_pct": Key(number(0.0, 100.0)),
    "import_cap_kw": Key(number(0.0, 1e6)), "export_limit_kw": Key(number(0.0, 1e6)),
    "inverter_revert_s": Key(integer(10, 3600)), "battery_revert_s": Key(integer(10, 3600)),
    "relay_watchdog_s": Key(integer(0, 3600)), "restore_step_kw": Key(number(0.1, 1e6)),
    "restore_step_s": Key(number(1.0, 3600.0)), "comfort_min_c": Key(number(5.0, 35.0)),
    "comfort_max_c": Key(number(5.0, 35.0)), "safety_min_c": Key(number(0.0, 40.0)),
    "safety_max_c": Key(number(0.0, 40.0)), "heat_pump_priority": Key(integer(1, 10)),
    "thermal_surplus_kw": Key(number(0.0, 1e6)), "preheat_s": Key(number(0.0, 86400.0)),
    "thermal_hours_per_k": Key(number(0.01, 100.0)),
    "baseline_method": Key(_baseline_method),
    "baseline_pre_event_s": Key(number(300.0, 86400.0)), "baseline_days": Key(integer(1, 30)),
    "baseline_min_coverage": Key(number(0.1, 1.0)), "settlement": Key(_settlement),
    "performance_interval_s": Key(number(10.0, 3600.0)),
    "flexibility_interval_s": Key(number(5.0, 3600.0)),
    "dc_bands": Key(_dc_bands),
}


def control_settings(site: SiteSpec) -> ControlSettings:
    """The ``[control]`` section (absent: defaults). Raises ConfigError naming the key;
    for fields that do not fit together, the one the file gave."""
    node = site.section("control")
    if node is None:
        return ControlSettings()
    given = read(node, CONTROL, Context.of(site))
    defaults = ControlSettings()

    def value(name: str) -> float:
        item = given.values.get(name, getattr(defaults, name))
        assert isinstance(item, int | float)
        return float(item)

    for problem in problems(value):
        if problem.field in given.nodes or problem.other not in given.nodes:
            raise given.error(problem.expected, problem.field)
        raise given.error(problem.expected_other, problem.other)
    return apply(defaults, given.values)


@dataclass(frozen=True, slots=True)
class Problem:
    """Two fields that do not fit together, and what each should be given the other."""

    field: str
    expected: str
    other: str
    expected_other: str


def problems(value: Callable[[str], float]) -> list[Problem]:
    """What does not fit together among the numeric fields (``value`` reads one)."""
    found = []
    # The loop refreshes what reverts by itself; it can only do so if the timeouts
    # leave room for a few cycles.
    cycle = value("cycle_s")
    for name in ("battery_revert_s", "inverter_revert_s"):
        if value(name) < 3 * cycle:
            found.append(Problem(name, f"at least 3 × cycle_s ({3 * cycle:g} s)", "cycle_s",
                                 f"at most {name} / 3 ({value(name) / 3:g} s)"))
    watchdog = value("relay_watchdog_s")
    if 0 < watchdog < 3 * cycle:
        found.append(Problem("relay_watchdog_s",
                             f"0 (off) or at least 3 × cycle_s ({3 * cycle:g} s)", "cycle_s",
                             f"at most relay_watchdog_s / 3 ({watchdog / 3:g} s)"))
    for low, high in (("min_soc_pct", "reserve_soc_pct"), ("reserve_soc_pct", "max_soc_pct"),
                      ("comfort_min_c", "comfort_max_c"), ("safety_min_c", "comfort_min_c"),
                      ("comfort_max_c", "safety_max_c")):
        if value(low) > value(high):
            found.append(Problem(high, f"at least {low} ({value(low):g})", low,
                                 f"at most {high} ({value(high):g})"))
    return found
