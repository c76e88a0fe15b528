"""The planner beside the loop: it never makes a cycle wait, keeps the last good plan
when a solve fails or is late, replans on events, and gives up its plan when too old."""

from __future__ import annotations

import concurrent.futures
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from planner_support import Parked

from controller.control.events import DrEvent, EventKind
from controller.control.model import BatteryState, DemandState, HeatPumpState, Snapshot
from controller.control.settings import ControlSettings
from controller.planner.model import PlanModel
from controller.planner.problem import PlanStatus
from controller.planner.service import InlineExecutor, PlannerService
from controller.planner.settings import PlannerSettings
from controller.tariffs import DEFAULT_TARIFF, load_tariff
from drivers.site import load_site

NOW = 1_784_000_000.0  # 2026-07-14, a Tuesday
SITE = load_site(Path(__file__).resolve().parents[2] / "examples" / "jinan-office.toml")


def snapshot(now_s: float = NOW, *, soc_pct: float = 50.0, grid_w: float = 80_000.0
             ) -> Snapshot:
    tariff = load_tariff(DEFAULT_TARIFF)
    return Snapshot(
        now_s=now_s, local_hour=12.0, weekday=1, period=tariff.calendar.periods[0],
        grid_w=grid_w, pv_w=30_000.0,
        batteries=(BatteryState("battery", soc_pct, 0.0, 100_000.0, 100_000.0, 200_000.0),),
        heat_pumps=(HeatPumpState("heat_pump", 2, 10_000.0, 22.0, 30.0, 45_000.0,
                                  setpoint_c=21.0),),
        demand=DemandState(now_s - now_s % 900, 900.0, 0.0, 120.0, True))


def service(executor: concurrent.futures.Executor, **changes: Any) -> PlannerService:
    settings = replace(PlannerSettings(enabled=True), **changes)
    return PlannerService(SITE, settings, ControlSettings(), load_tariff(DEFAULT_TARIFF),
                          executor=executor)


def test_a_solve_that_has_not_answered_never_holds_up_the_cycle() -> None:
    parked = Parked()
    planner = service(parked)
    unread = replace(snapshot(NOW - 5), grid_w=None)
    assert planner.tick(unread, []) is None
    assert not parked.waiting  # nothing planned before the grid meter has been read
    assert planner.tick(snapshot(), []) is None  # started, not waited for (no plan yet)
    assert len(parked.waiting) == 1
    assert planner.tick(snapshot(NOW + 1), []) is None  # still running: no second one
    assert len(parked.waiting) == 1
    parked.release()
    setpoints = planner.tick(snapshot(NOW + 2), [])
    assert setpoints is not None
    assert planner.plan is not None
    assert planner.plan.status is PlanStatus.OPTIMAL
    assert setpoints.battery_w == pytest.approx(planner.plan.battery_kw[0] * 1000.0)


def test_a_failed_solve_keeps_the_last_good_plan(monkeypatch: pytest.MonkeyPatch) -> None:
    planner = service(InlineExecutor())
    planner.tick(snapshot(), [])
    planner.tick(snapshot(NOW + 1), [])
    good = planner.plan
    assert good is not None

    def broken(self: PlanModel, *args: object, **kwargs: object) -> object:
        raise RuntimeError("solver crashed")

    monkeypatch.setattr(PlanModel, "solve", broken)
    later = NOW + 900
    planner.tick(snapshot(later), [])  # due: fails inside the worker
    assert planner.tick(snapshot(later + 1), []) is not None
    assert planner.plan is good
    assert planner.stats.failed == 1


def test_a_late_solve_is_dropped_and_the_last_plan_stays() -> None:
    clock = [0.0]
    parked = Parked()
    planner = PlannerService(SITE, PlannerSettings(enabled=True, deadline_s=1.0),
                             ControlSettings(), load_tariff(DEFAULT_TARIFF), executor=parked,
                             monotonic=lambda: clock[0])
    planner.tick(snapshot(), [])
    clock[0] = 5.0  # the solver answers 5 s later: past its 1 s deadline
    parked.release()
    assert planner.tick(snapshot(NOW + 1), []) is None
    assert planner.plan is None
    assert planner.stats.late == 1


def test_an_old_plan_is_given_up_for_the_rules() -> None:
    planner = service(InlineExecutor(), max_plan_age_s=3600.0, replan_s=86400.0)
    planner.tick(snapshot(), [])
    assert planner.setpoints(NOW + 1800) is not None
    assert planner.setpoints(NOW + 2 * 3600 + 1000) is None


def test_a_new_event_starts_a_solve_at_once_and_the_plan_holds_its_cap() -> None:
    planner = service(InlineExecutor(), replan_s=86400.0)
    planner.tick(snapshot(), [])
    solves = planner.stats.solves
    cap = DrEvent("cap-1", EventKind.CAP, "site", NOW + 3600, 3600.0, 20.0)
    planner.tick(snapshot(NOW + 60), [cap])
    assert planner.stats.solves == solves + 1
    plan = planner.plan
    assert plan is not None
    during = [i for i in range(plan.steps)
              if cap.begin_s <= plan.start_s + i * plan.step_s < cap.end_s]
    assert during
    assert np.all(plan.grid_kw[during] <= 20.0 + 1e-6)


def test_a_battery_outage_starts_a_solve_and_the_plan_leaves_it_idle() -> None:
    planner = service(InlineExecutor(), replan_s=86400.0)
    planner.tick(snapshot(), [])
    gone = replace(snapshot(NOW + 60), batteries=(BatteryState(
        "battery", None, None, None, None, None),))
    planner.tick(gone, [])
    assert planner.plan is not None
    np.testing.assert_allclose(planner.plan.battery_kw, 0.0, atol=1e-9)
