"""Small hand-checkable planning problems, and an executor that runs a solve at once."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from controller.planner.problem import BatteryInputs, PlanInputs, ThermalInputs, Weights


def inputs(n: int = 4, *, price: list[float] | None = None, load_kw: float = 10.0,
           pv_kw: float = 0.0, battery: BatteryInputs | None = None,
           thermal: ThermalInputs | None = None, demand_price: float = 0.0,
           month_peak_kw: float = 0.0, **changes: Any) -> PlanInputs:
    """An hourly problem of ``n`` steps without weights that would blur the arithmetic."""
    base = PlanInputs(
        start_s=0.0, step_s=3600.0,
        price_cny_per_kwh=np.array(price if price is not None else [1.0] * n, float),
        export_price_cny_per_kwh=np.zeros(n), carbon_kg_per_kwh=np.zeros(n),
        load_kw=np.full(n, load_kw), pv_kw=np.full(n, pv_kw), flexible_dc_kw=np.zeros(n),
        demand_price_cny_per_kw=demand_price, month_peak_kw=month_peak_kw,
        cap_kw=np.full(n, np.inf), setpoint_kw=np.full(n, np.nan), export_limit_kw=np.inf,
        battery=battery, thermal=thermal,
        weights=Weights(battery_wear_cny_per_kwh=0.0, curtail_cny_per_kwh=0.0,
                        peak_margin_share=0.0))
    return replace(base, **changes)


def battery(capacity_kwh: float = 10.0, soc_kwh: float = 0.0, power_kw: float = 10.0,
            **changes: Any) -> BatteryInputs:
    """A lossless battery with no SoC goals (reserve and floor at 0, ceiling full)."""
    return replace(BatteryInputs(capacity_kwh, soc_kwh, power_kw, power_kw, 0.0, 0.0,
                                 capacity_kwh, round_trip_efficiency=1.0), **changes)


class Parked(concurrent.futures.Executor):
    """Holds submitted solves until released: a solver that has not answered yet."""

    def __init__(self) -> None:
        self.waiting: list[tuple[concurrent.futures.Future[Any], Callable[[], Any]]] = []

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any
               ) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self.waiting.append((future, lambda: fn(*args, **kwargs)))
        return future

    def release(self) -> None:
        for future, call in self.waiting:
            future.set_result(call())
        self.waiting.clear()
