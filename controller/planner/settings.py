"""``[planner]``: the optimising scheduler (off unless ``enabled = true``).

Every key is optional; docs/configuration.md lists them and docs/control.md says how to
tune the objective. Malformed values raise ConfigError naming the file and key."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from controller.planner.problem import Weights
from controller.sections import (
    Context,
    Key,
    Spec,
    apply,
    existing_file,
    flag,
    number,
    read,
)
from drivers.schema import ConfigError, Node
from drivers.site import SiteSpec

_CLOCK = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


@dataclass(frozen=True, slots=True)
class Deferrable:
    """A load the planner may move: it needs ``energy_kwh`` between ``earliest_h`` and
    ``deadline_h`` (local hours; a deadline before the start means the next day)."""

    load: str
    energy_kwh: float
    earliest_h: float
    deadline_h: float


@dataclass(frozen=True, slots=True)
class PlannerSettings:
    enabled: bool = False
    horizon_h: float = 24.0  # 24 or up to 48 where prices are known (the calendar is)
    step_s: float = 900.0
    replan_s: float = 900.0  # solve this often, and on events, errors, device changes
    deadline_s: float = 10.0  # a solve later than this is dropped (the last plan stays)
    max_plan_age_s: float = 3600.0  # older than this, the loop falls back to the rules
    replan_error_kw: float = 30.0  # grid off the plan by this much for a while: replan
    tracking_kw: float | None = None  # battery correction around the plan (None: rating)
    export_price_cny_per_kwh: float = 0.0
    #: Building thermal model (the heat-loss coefficient is learned when history allows).
    heat_loss_kw_per_k: float = 4.5
    heat_capacity_kwh_per_k: float = 55.0
    internal_gains_kw: float = 0.0  # occupied hours (weekdays 08–18)
    carnot_efficiency: float = 0.45
    flow_temp_c: float = 40.0
    battery_efficiency: float = 0.9
    forecast_file: Path | None = None  # CSV: unix_s or ISO time, pv_kw
    weights: Weights = field(default_factory=Weights)
    deferrable: tuple[Deferrable, ...] = ()


#: ``[planner.weights]``: the prices of the objective's soft goals (CNY).
WEIGHTS: Spec = {name: Key(number(0.0, 1e6)) for name in Weights.__dataclass_fields__}


def _weights(node: Node, context: Context) -> Weights:
    return apply(Weights(), read(node, WEIGHTS, context).values)


def _clock_h(node: Node) -> float:
    text = node.str()
    match = _CLOCK.match(text)
    if match is None:
        raise node.error('a local time "HH:MM"')
    return int(match.group(1)) + int(match.group(2)) / 60.0


def _deferrable(node: Node, context: Context) -> tuple[Deferrable, ...]:
    out = []
    for item in node.list():
        item.only(("load", "energy_kwh", "earliest", "deadline"))
        out.append(Deferrable(item.req("load").str(),
                              item.req("energy_kwh").float(min=0.0, max=1e5),
                              _clock_h(item.req("earliest")), _clock_h(item.req("deadline"))))
    return tuple(out)


def _forecast_file(node: Node, context: Context) -> Path:
    return Path(str(existing_file()(node, context)))


#: ``[planner]``, one rule per key.
PLANNER: Spec = {
    "enabled": Key(flag()), "horizon_h": Key(number(1.0, 48.0)),
    "step_s": Key(number(300.0, 3600.0)), "replan_s": Key(number(60.0, 86400.0)),
    "deadline_s": Key(number(0.05, 600.0)), "max_plan_age_s": Key(number(60.0, 86400.0)),
    "replan_error_kw": Key(number(0.1, 1e6)), "tracking_kw": Key(number(0.0, 1e6)),
    "export_price_cny_per_kwh": Key(number(-10.0, 100.0)),
    "heat_loss_kw_per_k": Key(number(0.01, 1e4)),
    "heat_capacity_kwh_per_k": Key(number(0.1, 1e6)),
    "internal_gains_kw": Key(number(0.0, 1e5)), "carnot_efficiency": Key(number(0.1, 0.9)),
    "flow_temp_c": Key(number(20.0, 80.0)), "battery_efficiency": Key(number(0.5, 1.0)),
    "forecast_file": Key(_forecast_file), "weights": Key(_weights),
    "deferrable": Key(_deferrable),
}


def planner_settings(site: SiteSpec) -> PlannerSettings:
    """The ``[planner]`` section (absent: defaults, disabled). Raises ConfigError naming
    the key: unknown keys, values out of range, a deferrable load the site lacks or
    one without a relay channel."""
    node = site.section("planner")
    if node is None:
        return PlannerSettings()
    given = read(node, PLANNER, Context.of(site))
    settings = apply(PlannerSettings(), given.values)
    for index, item in enumerate(settings.deferrable):
        load = site.loads.get(item.load)
        if load is None or load.device is None or load.channel is None:
            where = given.nodes["deferrable"].list()[index].req("load")
            raise where.error("the name of a load of this site on a relay channel")
    if settings.step_s > settings.replan_s:
        raise given.error(f"at least step_s ({settings.step_s:g} s)", "replan_s")
    return settings


__all__ = ["ConfigError", "Deferrable", "PlannerSettings", "planner_settings"]
