"""The planner in the control loop on the simulated building (accelerated time): the
loop follows the plan at the site-goals level, utility events still come first, and a
planner that breaks leaves the rules in charge."""

from __future__ import annotations

import statistics

from closed_loop import ClosedLoop, at

from controller.control.events import DrEvent, EventKind
from controller.control.model import ActuatorKind, Snapshot
from controller.control.settings import ControlSettings
from controller.planner.service import InlineExecutor, PlannerService
from controller.planner.settings import PlannerSettings
from controller.tariffs import BasicChargeBasis, BillSettings

SETTINGS = ControlSettings(cycle_s=60.0, battery_revert_s=300, inverter_revert_s=300,
                           relay_watchdog_s=600, battery_mode="tou_arbitrage")


def with_planner(start: str) -> tuple[ClosedLoop, PlannerService]:
    loop = ClosedLoop.build(start, SETTINGS, soc_pct=50.0)
    loop.loop.bill = BillSettings(basis=BasicChargeBasis.DEMAND)
    planner = PlannerService(loop.loop.site, PlannerSettings(enabled=True,
                                                             internal_gains_kw=40.0),
                             SETTINGS, loop.loop.tariff, executor=InlineExecutor())
    loop.loop.planner = planner
    return loop, planner


def owners(loop: ClosedLoop, kind: ActuatorKind) -> set[str]:
    decision = loop.loop.last_decision
    assert decision is not None
    return {p.owner for a, p in decision.claims.items() if a.kind is kind}


async def test_the_loop_follows_the_plan_and_a_dr_cap_still_comes_first() -> None:
    loop, planner = with_planner("2026-01-13T06:00:00")
    await loop.run(6 * 3600)  # to noon: the plan is in force
    assert planner.plan is not None
    assert planner.stats.solves >= 24  # every 15 min
    assert owners(loop, ActuatorKind.BATTERY) == {"planner"}
    step = planner.setpoints(loop.clock.now())
    assert step is not None
    soc = [loop.trace.soc[i] for i in loop.between(loop.clock.now() - 3600, loop.clock.now())]
    assert min(soc) >= SETTINGS.min_soc_pct - 1e-6
    # A cap from the utility: the planner replans for it, and the event level holds it.
    start = at("2026-01-13T14:00:00")
    loop.event(DrEvent("cap-1", EventKind.CAP, "site", start, 3600.0, 60.0))
    solves = planner.stats.solves
    await loop.run(60)
    assert planner.stats.solves == solves + 1  # the event set off a solve at once
    await loop.run(3 * 3600)
    during = loop.between(start + 120, start + 3600)
    assert statistics.fmean(loop.trace.grid_kw[i] for i in during) <= 60.0 * 1.05
    assert loop.loop.write_failures == 0
    hp = loop.simulated.model.heat_pumps["heat_pump"]
    assert SETTINGS.safety_min_c <= hp.indoor_c <= SETTINGS.safety_max_c


async def test_a_planner_that_breaks_leaves_the_rules_in_charge() -> None:
    loop, planner = with_planner("2026-01-13T10:00:00")

    def broken(snapshot: Snapshot, events: object) -> None:
        raise RuntimeError("planner bug")

    planner.tick = broken  # type: ignore[method-assign]
    await loop.run(600)
    assert owners(loop, ActuatorKind.BATTERY) == {"battery"}  # the rule-based goal
    assert loop.loop.write_failures == 0
