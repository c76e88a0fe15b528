"""The plan's LP on small problems whose optimum can be worked out by hand."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from planner_support import battery, inputs

from controller.planner.model import PlanModel, Shape
from controller.planner.problem import (
    DeferrableInputs,
    PlanInputs,
    PlanStatus,
    ThermalInputs,
    ThermalMode,
)


def test_without_flexibility_the_grid_carries_the_load_and_the_cost_is_its_energy() -> None:
    plan = PlanModel(Shape(4, 0)).solve(inputs(price=[1.0, 2.0, 1.0, 2.0], load_kw=10.0))
    assert plan.status is PlanStatus.OPTIMAL
    np.testing.assert_allclose(plan.grid_kw, [10.0] * 4, atol=1e-6)
    assert plan.costs_cny["energy"] == pytest.approx(10 * (1 + 2 + 1 + 2))


def test_a_lossless_battery_moves_energy_from_the_cheap_hour_to_the_dear_one() -> None:
    # 10 kWh bought at 1 CNY instead of at 3 CNY: 20 CNY saved, nothing else changes.
    problem = inputs(n=2, price=[1.0, 3.0], load_kw=10.0, battery=battery(10.0, 0.0, 10.0))
    plan = PlanModel(Shape(2, 0)).solve(problem)
    np.testing.assert_allclose(plan.battery_kw, [-10.0, 10.0], atol=1e-6)
    np.testing.assert_allclose(plan.grid_kw, [20.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(plan.soc_kwh, [10.0, 0.0], atol=1e-6)
    assert plan.objective_cny == pytest.approx(20.0)


def test_losses_make_a_small_spread_not_worth_cycling() -> None:
    # 81 % round trip: 1 kWh out costs 1/0.81 kWh in; at prices 1 and 1.2 it loses money.
    problem = inputs(n=2, price=[1.0, 1.2], battery=battery(
        10.0, 0.0, 10.0, round_trip_efficiency=0.81))
    plan = PlanModel(Shape(2, 0)).solve(problem)
    np.testing.assert_allclose(plan.battery_kw, [0.0, 0.0], atol=1e-6)


def test_the_demand_charge_flattens_import_to_the_average() -> None:
    # Load 10, 30 kW; an empty 20 kWh battery, 38 CNY/kW: it charges 10 kWh in the first
    # hour and gives them back in the second: import 20 kW both hours (peak 20).
    problem = inputs(n=2, price=[1.0, 1.0], battery=battery(20.0, 0.0, 20.0),
                     demand_price=38.0, load_kw=0.0)
    problem = problem.__class__(**{**problem.__dict__, "load_kw": np.array([10.0, 30.0])})
    plan = PlanModel(Shape(2, 0)).solve(problem)
    assert max(plan.grid_kw) == pytest.approx(20.0, abs=1e-6)
    assert plan.costs_cny["demand"] == pytest.approx(38.0 * 20.0)


def test_a_peak_already_set_this_month_costs_nothing_more_to_reach() -> None:
    problem = inputs(n=2, load_kw=50.0, demand_price=38.0, month_peak_kw=80.0)
    plan = PlanModel(Shape(2, 0)).solve(problem)
    assert plan.costs_cny["demand"] == pytest.approx(0.0)


def test_a_peak_margin_keeps_planned_import_that_far_below_the_month_s_peak() -> None:
    # Month's peak 25 kW, load 10 kW, hours at 1, 3, 3 CNY, an empty lossless battery:
    # charging is free up to the peak (15 kW), or up to the peak less a 20 % margin (5 kW).
    def problem(share: float) -> PlanInputs:
        base = inputs(n=3, price=[1.0, 3.0, 3.0], battery=battery(30.0, 0.0, 30.0),
                      demand_price=38.0, month_peak_kw=25.0)
        return replace(base, weights=replace(base.weights, peak_margin_share=share))

    plan = PlanModel(Shape(3, 0)).solve(problem(0.0))
    assert plan.grid_kw[0] == pytest.approx(25.0, abs=1e-6)
    plan = PlanModel(Shape(3, 0)).solve(problem(0.2))
    assert plan.grid_kw[0] == pytest.approx(20.0, abs=1e-6)
    assert plan.peak_kw == pytest.approx(25.0, abs=1e-6)  # the loop's ceiling: 20 + 5
    assert plan.costs_cny["demand"] == pytest.approx(0.0, abs=1e-6)


def test_a_dr_cap_is_held_by_the_battery_and_its_penalty_paid_only_beyond() -> None:
    # Cap of 5 kW in hour 2 of a 10 kW load: the battery (5 kWh) covers 5 kW.
    problem = inputs(n=2, load_kw=10.0, battery=battery(5.0, 5.0, 10.0),
                     cap_kw=np.array([np.inf, 5.0]))
    plan = PlanModel(Shape(2, 0)).solve(problem)
    assert plan.grid_kw[1] == pytest.approx(5.0, abs=1e-6)
    assert plan.costs_cny["dr"] == pytest.approx(0.0, abs=1e-6)
    # Without a battery the cap cannot be met: the plan is still a plan, and pays.
    plan = PlanModel(Shape(2, 0)).solve(inputs(n=2, load_kw=10.0,
                                               cap_kw=np.array([np.inf, 5.0])))
    assert plan.status is PlanStatus.OPTIMAL
    assert plan.costs_cny["dr"] == pytest.approx(5.0 * 10.0)


def test_an_export_limit_curtails_pv() -> None:
    # Export earns 0.1 CNY/kWh, so the plan exports what it may and curtails the rest.
    plan = PlanModel(Shape(2, 0)).solve(inputs(n=2, load_kw=10.0, pv_kw=50.0,
                                               export_limit_kw=5.0,
                                               export_price_cny_per_kwh=np.full(2, 0.1)))
    np.testing.assert_allclose(plan.grid_kw, [-5.0, -5.0], atol=1e-6)
    np.testing.assert_allclose(plan.curtail_kw, [35.0, 35.0], atol=1e-6)


def test_a_state_of_charge_outside_the_limits_still_gives_a_plan() -> None:
    problem = inputs(n=3, battery=battery(10.0, 14.0, 1.0, floor_kwh=2.0, reserve_kwh=3.0,
                                          ceiling_kwh=9.0))
    plan = PlanModel(Shape(3, 0)).solve(problem)
    assert plan.status is PlanStatus.OPTIMAL
    assert np.all(plan.soc_kwh <= 10.0 + 1e-6)  # measured above capacity: taken as full


def test_the_charge_left_at_the_end_is_worth_the_cheapest_price_so_it_is_not_sold_off(
) -> None:
    # One hour at 1 CNY, 10 kWh stored, 81 % round trip (90 % each way). Discharging
    # d kW saves d CNY but takes d / 0.9 kWh worth 1 CNY each at the end: kept.
    lossy = battery(10.0, 10.0, 10.0, round_trip_efficiency=0.81)
    plan = PlanModel(Shape(1, 0)).solve(inputs(n=1, battery=lossy))
    np.testing.assert_allclose(plan.battery_kw, [0.0], atol=1e-6)
    assert plan.costs_cny["terminal"] == pytest.approx(-10.0)
    assert plan.objective_cny == pytest.approx(10.0 - 10.0)
    # Valued at nothing (the model before the terminal value), it sells all 9 kWh off.
    worthless = inputs(n=1, battery=lossy)
    worthless = replace(worthless, weights=replace(worthless.weights, terminal_soc_share=0.0))
    plan = PlanModel(Shape(1, 0)).solve(worthless)
    np.testing.assert_allclose(plan.battery_kw, [9.0], atol=1e-6)


def test_the_charge_goes_where_it_saves_more_than_the_cheapest_price_over_the_losses(
) -> None:
    # Hours at 1 and 2 CNY: a kWh of charge delivers 0.9 kWh, worth 1.8 CNY in the dear
    # hour against 1 CNY kept: all 9 kWh go there, none in the cheap hour.
    lossy = battery(10.0, 10.0, 10.0, round_trip_efficiency=0.81)
    plan = PlanModel(Shape(2, 0)).solve(inputs(n=2, price=[1.0, 2.0], battery=lossy))
    np.testing.assert_allclose(plan.battery_kw, [0.0, 9.0], atol=1e-6)
    assert plan.soc_kwh[-1] == pytest.approx(0.0, abs=1e-6)
    assert plan.costs_cny["terminal"] == pytest.approx(0.0, abs=1e-6)
    # No charge is bought in the cheap hour just to be left at the end (losses).
    empty = battery(10.0, 0.0, 10.0, round_trip_efficiency=0.81)
    plan = PlanModel(Shape(2, 0)).solve(inputs(n=2, price=[1.0, 1.0], battery=empty))
    np.testing.assert_allclose(plan.battery_kw, [0.0, 0.0], atol=1e-6)


def test_a_shortfall_below_the_reserve_is_paid_once_not_bought_back_at_a_dear_price(
) -> None:
    # Empty battery, reserve 5 kWh at 1 CNY per kWh of shortfall: three dear hours (2 CNY)
    # then a cheap one. Charging 5 kWh at once would cost 10 CNY to save 5: it waits.
    # (Priced per hour below the reserve, 4 h × 5 kWh × 1 CNY = 20 CNY, it charged at once.)
    problem = inputs(n=4, price=[2.0, 2.0, 2.0, 0.5], battery=battery(
        10.0, 0.0, 10.0, reserve_kwh=5.0))
    problem = replace(problem, weights=replace(problem.weights, reserve_cny_per_kwh=1.0))
    plan = PlanModel(Shape(4, 0)).solve(problem)
    np.testing.assert_allclose(plan.battery_kw[:3], [0.0, 0.0, 0.0], atol=1e-6)
    assert plan.objective_cny == pytest.approx(10 * (2 + 2 + 2 + 0.5) + 5.0 * 1.0)


def test_the_reserve_is_spent_only_where_it_earns_more_than_its_price() -> None:
    # Full 10 kWh, reserve 5 kWh at 1 CNY/kWh, hours at 1 and 1.4 CNY (lossless). Above
    # the reserve a kWh earns 1.4 − 1 (the cheapest price it is worth at the end); below
    # it 1 CNY more is due: 5 kWh go in the dear hour, the reserve stays.
    problem = inputs(n=2, price=[1.0, 1.4], battery=battery(10.0, 10.0, 10.0,
                                                            reserve_kwh=5.0))
    problem = replace(problem, weights=replace(problem.weights, reserve_cny_per_kwh=1.0))
    plan = PlanModel(Shape(2, 0)).solve(problem)
    np.testing.assert_allclose(plan.battery_kw, [0.0, 5.0], atol=1e-6)
    assert plan.soc_kwh[-1] == pytest.approx(5.0, abs=1e-6)


def thermal(n: int, *, indoor_c: float, outdoor_c: float, rated_kw: float = 10.0,
            comfort: tuple[float, float] = (20.0, 24.0)) -> ThermalInputs:
    return ThermalInputs(
        rated_kw=rated_kw, indoor_c=indoor_c, ua_kw_per_k=1.0, capacity_kwh_per_k=10.0,
        setpoint_c=21.0, outdoor_c=np.full(n, outdoor_c), cop=np.full(n, 3.0),
        mode=np.full(n, ThermalMode.HEATING, np.int8), comfort_min_c=np.full(n, comfort[0]),
        comfort_max_c=np.full(n, comfort[1]), gains_kw=np.zeros(n))


def test_the_rc_zone_follows_its_exact_solution() -> None:
    # Heat pump held at 0 (rated 0): the room decays towards 0 °C with a = exp(-0.1).
    n = 3
    problem = inputs(n=n, load_kw=0.0, thermal=thermal(n, indoor_c=20.0, outdoor_c=0.0,
                                                       rated_kw=0.0))
    plan = PlanModel(Shape(n, 0)).solve(problem)
    a = math.exp(-0.1)
    np.testing.assert_allclose(plan.indoor_c, [20 * a, 20 * a**2, 20 * a**3], atol=1e-6)
    # ... and the comfort shortfall is priced in K·h.
    assert plan.costs_cny["comfort"] == pytest.approx(
        20.0 * sum(20 - 20 * a**k for k in (1, 2, 3)), rel=1e-6)


def test_heating_just_holds_the_bottom_of_the_band_when_energy_costs() -> None:
    # Loss 1 kW/K at 20 K difference: 20 kW thermal, COP 3 -> 6.67 kW electric to hold 20 °C.
    n = 4
    problem = inputs(n=n, load_kw=0.0, thermal=thermal(n, indoor_c=20.0, outdoor_c=0.0))
    plan = PlanModel(Shape(n, 0)).solve(problem)
    np.testing.assert_allclose(plan.indoor_c, [20.0] * n, atol=1e-6)
    np.testing.assert_allclose(plan.heat_pump_kw, [20.0 / 3.0] * n, atol=1e-5)


def test_preheating_stores_heat_before_the_dear_hours() -> None:
    n = 4
    problem = inputs(n=n, load_kw=0.0, price=[0.2, 0.2, 2.0, 2.0],
                     thermal=thermal(n, indoor_c=20.0, outdoor_c=0.0))
    plan = PlanModel(Shape(n, 0)).solve(problem)
    assert plan.indoor_c[1] > 20.5  # stored in the cheap hours
    assert plan.heat_pump_kw[2:].sum() < 2 * 20.0 / 3.0  # less bought at 2 CNY
    assert plan.sg_state[2] == 1 or plan.sg_state[0] == 3  # blocked later or boosted now


def test_a_deferrable_load_takes_its_energy_in_the_cheapest_hours_of_its_window() -> None:
    n = 4
    window = np.array([True, True, True, False])
    problem = inputs(n=n, load_kw=0.0, price=[3.0, 1.0, 2.0, 0.1],
                     deferrable=(DeferrableInputs("ev", 7.0, 10.0, window),))
    plan = PlanModel(Shape(n, 1)).solve(problem)
    np.testing.assert_allclose(plan.deferrable_kw["ev"], [0.0, 7.0, 3.0, 0.0], atol=1e-6)


def test_the_model_is_updated_not_rebuilt_and_gives_the_same_answers() -> None:
    model = PlanModel(Shape(2, 0))
    first = inputs(n=2, price=[1.0, 3.0], battery=battery(10.0, 0.0, 10.0))
    second = inputs(n=2, price=[3.0, 1.0], battery=battery(10.0, 10.0, 10.0))
    highs = model.highs
    for _ in range(2):
        np.testing.assert_allclose(model.solve(first).battery_kw, [-10.0, 10.0], atol=1e-6)
        np.testing.assert_allclose(model.solve(second).battery_kw, [10.0, 0.0], atol=1e-6)
    assert model.highs is highs


def test_inputs_of_another_shape_are_refused() -> None:
    with pytest.raises(ValueError, match="steps"):
        PlanModel(Shape(3, 0)).solve(inputs(n=2))


def test_the_time_limit_holds_for_each_solve_not_for_the_model_s_life() -> None:
    # HiGHS measures its time limit against the object's whole run time: a model solved
    # many times must still get each solve's own allowance.
    model = PlanModel(Shape(2, 0))
    problem = inputs(n=2, price=[1.0, 3.0], battery=battery(10.0, 0.0, 10.0))
    model.solve(problem)
    spent = model.highs.getRunTime()
    assert spent > 0
    plan = model.solve(problem, time_limit_s=spent / 2)  # less than the life so far
    assert plan.status is PlanStatus.OPTIMAL


def test_the_console_shows_the_plan_in_force_step_by_step() -> None:
    """The console's plan page (controller.console.views.schedule) lists every step of
    the planner's plan with its start and powers, and says when there is none."""
    from types import SimpleNamespace
    from typing import cast

    from controller.app import App
    from controller.console.views import schedule

    problem = inputs(n=2, price=[1.0, 3.0], load_kw=10.0, battery=battery(10.0, 0.0, 10.0))
    plan = PlanModel(Shape(2, 0)).solve(problem)
    app = cast(App, SimpleNamespace(control=SimpleNamespace(planner=SimpleNamespace(plan=plan))))
    shown = schedule(app)
    assert shown is not None
    assert shown["status"] == "optimal"
    assert [s["start_s"] for s in shown["steps"]] == [plan.start_s, plan.start_s + plan.step_s]
    assert [s["battery_kw"] for s in shown["steps"]] == pytest.approx([-10.0, 10.0], abs=1e-4)
    assert [s["grid_kw"] for s in shown["steps"]] == pytest.approx([20.0, 0.0], abs=1e-4)
    assert [s["price_cny_per_kwh"] for s in shown["steps"]] == [1.0, 3.0]
    no_plan = cast(App, SimpleNamespace(control=SimpleNamespace(planner=SimpleNamespace(
        plan=None))))
    assert schedule(no_plan) is None
    assert schedule(cast(App, SimpleNamespace(control=None))) is None


def test_a_failed_warm_solve_is_tried_once_more_from_scratch() -> None:
    # The fuzz found a warm start (the previous solve's basis) that HiGHS failed on
    # while a fresh model solved the same inputs: the first run here fails, as it did.
    model = PlanModel(Shape(2, 0))
    problem = inputs(n=2, price=[1.0, 3.0], load_kw=10.0, battery=battery(10.0, 0.0, 10.0))
    real_run = model._run
    runs: list[float] = []

    def failing_once(deadline: float) -> Any:
        runs.append(deadline)
        return None if len(runs) == 1 else real_run(deadline)

    model._run = failing_once  # type: ignore[method-assign]
    plan = model.solve(problem)
    assert plan.status is PlanStatus.OPTIMAL
    assert len(runs) == 2
    np.testing.assert_allclose(plan.battery_kw, [-10.0, 10.0], atol=1e-6)
