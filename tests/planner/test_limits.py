"""Property: whatever the scenario — SoC outside its limits, negative prices, caps no
battery can meet, outages — the solve gives a plan, and the plan keeps the physical
limits and the site's power balance."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchmarks.bench_planner import limit_violations, random_inputs
from controller.planner.model import PlanModel, Shape
from controller.planner.problem import PlanStatus

MODEL = PlanModel(Shape(96, 1))  # one model, updated for every example (as in service)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(min_value=0, max_value=2**32 - 1))
def test_every_scenario_gives_a_plan_within_the_physical_limits(seed: int) -> None:
    problem = random_inputs(np.random.default_rng(seed), 96)
    plan = MODEL.solve(problem)
    assert plan.status is PlanStatus.OPTIMAL
    assert limit_violations(problem, plan) == []
