"""The planner beside the control loop: learns forecasts from every cycle's snapshot,
re-plans every ``replan_s`` (and at once on an event, a device change or a large
forecast error) in a worker thread with a deadline, and hands the loop the plan's
setpoints for now.

The loop never waits: :meth:`PlannerService.tick` only looks whether a solve has
finished and starts another when one is due. A solve that fails or misses its deadline
is dropped and counted; the last good plan stays in force until ``max_plan_age_s``, after
which the loop runs on the rule-based strategies alone (``tick`` returns None)."""

from __future__ import annotations

import concurrent.futures
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from controller.control.events import DrEvent
from controller.control.model import PlanSetpoints, SgReadyState, Snapshot
from controller.control.settings import ControlSettings
from controller.planner.forecast import (
    QUARTER_S,
    HeatLossEstimator,
    LoadForecaster,
    PvForecaster,
    read_forecast_file,
)
from controller.planner.inputs import Forecasters, build_inputs, cop, thermal_mode
from controller.planner.model import PlanModel, Shape
from controller.planner.problem import Plan, PlanInputs, PlanStatus
from controller.planner.settings import PlannerSettings
from controller.tariffs import Tariff
from drivers.site import SiteSpec

log = logging.getLogger("pedf.planner")

#: Replan at most this often for a forecast error, s.
ERROR_REPLAN_MIN_S = 300.0


class InlineExecutor(concurrent.futures.Executor):
    """Runs a submitted solve at once in the caller's thread: for accelerated
    simulations (benchmarks, tests), where the plan must be there before simulated time
    moves on. A gateway uses the service's own worker thread."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any
               ) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except Exception as exc:  # handed to the caller through the future
            future.set_exception(exc)
        return future


@dataclass
class _Slot:
    """Sums over the open 15-min slot of what the forecasters learn from."""

    start_s: float
    sums: dict[str, float] = field(default_factory=dict)
    count: int = 0

    def add(self, **values: float | None) -> None:
        self.count += 1
        for key, value in values.items():
            if value is not None and math.isfinite(value):
                self.sums[key] = self.sums.get(key, 0.0) + value

    def mean(self, key: str) -> float | None:
        return None if key not in self.sums or not self.count else self.sums[key] / self.count


@dataclass
class SolveStats:
    solves: int = 0
    late: int = 0
    failed: int = 0
    solve_ms: list[float] = field(default_factory=list)


class PlannerService:
    """One site's planner. ``executor`` None: a private single worker thread."""

    def __init__(self, site: SiteSpec, settings: PlannerSettings, control: ControlSettings,
                 tariff: Tariff, *, demand_price_cny_per_kw: float | None = None,
                 carbon_kg_per_kwh: float = 0.0,
                 executor: concurrent.futures.Executor | None = None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.site = site
        self.settings = settings
        self.control = control
        self.tariff = tariff
        self.demand_price = (tariff.basic.demand_cny_per_kw_month or 0.0) \
            if demand_price_cny_per_kw is None else demand_price_cny_per_kw
        self.carbon_kg_per_kwh = carbon_kg_per_kwh
        self._executor = executor
        self._monotonic = monotonic
        calendar = tariff.calendar
        self.forecasters = Forecasters(
            pv=PvForecaster(site.latitude_deg, site.longitude_deg),
            load=LoadForecaster(site.zone, lambda day: str(calendar.day_type(day))),
            outdoor=LoadForecaster(site.zone, lambda day: "any", days=2),
            heat_loss=HeatLossEstimator(settings.heat_loss_kw_per_k))
        if settings.forecast_file is not None:
            self.forecasters.pv.external = read_forecast_file(settings.forecast_file)
        self.plan: Plan | None = None
        self.stats = SolveStats()
        self._model: PlanModel | None = None
        self._future: concurrent.futures.Future[Plan] | None = None
        self._started_mono = 0.0
        self._last_solve_s = -math.inf
        self._last_error_replan_s = -math.inf
        self._signature: tuple[object, ...] | None = None
        self._slot: _Slot | None = None
        self._error_kw = 0.0
        self._delivered_kwh: dict[str, float] = {}
        self._delivered_day: dict[str, float] = {}

    # -- the loop's side -----------------------------------------------------------------

    def tick(self, snapshot: Snapshot, events: Iterable[DrEvent]) -> PlanSetpoints | None:
        """Learn from ``snapshot``, collect a finished solve, start one when due; the
        setpoints of the plan in force now (None: no plan fit to follow). Never blocks,
        never raises for the solver's sake."""
        now = snapshot.now_s
        events = list(events)
        self._learn(snapshot)
        self._collect()
        setpoints = self.setpoints(now)
        self._track_error(snapshot, setpoints)
        ready = snapshot.grid_w is not None  # no plan from a site not read yet
        if self._future is None and ready and self._due(snapshot, events, now):
            self._start(snapshot, events)
            self._collect()  # an executor that ran it at once (tests, benchmarks)
            setpoints = self.setpoints(now)
        return setpoints

    def setpoints(self, now_s: float) -> PlanSetpoints | None:
        """The plan's step for ``now_s``, if a plan young enough covers it."""
        plan = self.plan
        if plan is None or now_s - plan.start_s > self.settings.max_plan_age_s + plan.step_s:
            return None
        i = plan.index_at(now_s)
        if i is None:
            return None
        tracking_w = math.inf if self.settings.tracking_kw is None else \
            self.settings.tracking_kw * 1000.0
        peak_kw = max(plan.peak_kw, 0.0)
        states = {name: SgReadyState(int(plan.sg_state[i])) for name in self._heat_pumps()}
        loads_on = {name: bool(kw[i] > 0.5 * self._rated_kw(name))
                    for name, kw in plan.deferrable_kw.items()}
        return PlanSetpoints(grid_w=float(plan.grid_kw[i]) * 1000.0,
                             battery_w=float(plan.battery_kw[i]) * 1000.0,
                             peak_w=peak_kw * 1000.0, tracking_w=tracking_w,
                             sg_states=states, loads_on=loads_on)

    def close(self) -> None:
        """Stop the private worker (a solve running finishes by its time limit)."""
        if self._executor is not None and self._owns_executor:
            self._executor.shutdown(wait=False, cancel_futures=True)

    _owns_executor = False

    # -- solving -----------------------------------------------------------------------

    def inputs(self, snapshot: Snapshot, events: Iterable[DrEvent]) -> PlanInputs:
        """What a solve at ``snapshot.now_s`` is given."""
        pv = self.forecasters.pv
        if not pv.history:  # before any history: the inverters' rating under a clear sky
            pv.default_kw_per_w_m2 = 0.8 * sum(i.rated_w or 0.0 for i in snapshot.inverters) \
                / 1e6
        grid_w = snapshot.grid_w or 0.0
        battery_w = sum(b.power_w or 0.0 for b in snapshot.batteries)
        heat_pump_w = sum(h.power_w or 0.0 for h in snapshot.heat_pumps)
        deferrable_w = sum(load.power_w or 0.0 for load in snapshot.loads
                           if load.name in self._deferrable_names() and load.on)
        flexible_w = sum(load.expected_w for load in snapshot.loads
                         if load.dc_bus is not None and load.sheddable and load.on
                         and load.name not in self._deferrable_names())
        uncontrolled_kw = (grid_w + snapshot.pv_w + battery_w - heat_pump_w - deferrable_w
                           - flexible_w) / 1000.0
        rated = {load.name: load.rated_w / 1000.0 for load in snapshot.loads}
        return build_inputs(
            snapshot, events, self.forecasters, settings=self.settings, control=self.control,
            tariff=self.tariff, zone=self.site.zone,
            demand_price_cny_per_kw=self.demand_price,
            carbon_kg_per_kwh=self.carbon_kg_per_kwh, uncontrolled_kw=max(0.0, uncontrolled_kw),
            flexible_dc_kw=flexible_w / 1000.0, delivered_kwh=self._delivered_kwh,
            rated_kw=rated)

    def solve_now(self, snapshot: Snapshot, events: Iterable[DrEvent]) -> Plan:
        """Solve in this thread (``pedf plan``, tests); a good plan becomes the plan in
        force."""
        inputs = self.inputs(snapshot, events)
        plan = self._model_for(inputs).solve(inputs, time_limit_s=self.settings.deadline_s)
        self._accept(plan, late=False)
        self._last_solve_s = snapshot.now_s
        return plan

    def _model_for(self, inputs: PlanInputs) -> PlanModel:
        shape = Shape(inputs.steps, len(inputs.deferrable))
        if self._model is None or self._model.shape != shape:
            self._model = PlanModel(shape)
        return self._model

    def _start(self, snapshot: Snapshot, events: list[DrEvent]) -> None:
        try:
            inputs = self.inputs(snapshot, events)
            model = self._model_for(inputs)
        except Exception:
            log.exception("planner: could not set up a solve; the last plan stays")
            self.stats.failed += 1
            self._last_solve_s = snapshot.now_s
            return
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="pedf-planner")
            self._owns_executor = True
        self._future = self._executor.submit(model.solve, inputs,
                                             time_limit_s=self.settings.deadline_s)
        self._started_mono = self._monotonic()
        self._last_solve_s = snapshot.now_s
        self._signature = self._signature_of(snapshot, events)

    def _collect(self) -> None:
        future = self._future
        if future is None or not future.done():
            return
        self._future = None
        late = self._monotonic() - self._started_mono > self.settings.deadline_s
        try:
            plan = future.result()
        except Exception:
            log.exception("planner: the solve failed; the last plan stays")
            self.stats.failed += 1
            return
        self._accept(plan, late=late)

    def _accept(self, plan: Plan, *, late: bool) -> None:
        self.stats.solves += 1
        self.stats.solve_ms.append(plan.solve_ms)
        del self.stats.solve_ms[:-1000]
        if late:
            self.stats.late += 1
            log.warning("planner: a solve took %.0f ms, past its deadline: dropped",
                        plan.solve_ms)
        elif plan.status is PlanStatus.FAILED:
            self.stats.failed += 1
            log.warning("planner: the solve failed; the last plan stays")
        else:
            self.plan = plan
            log.info("planner: new plan (%s) for %.0f h, objective %.0f CNY, peak %.0f kW, "
                     "solved in %.0f ms", plan.status.value, plan.steps * plan.step_s / 3600,
                     plan.objective_cny, plan.peak_kw, plan.solve_ms)

    # -- when to solve -----------------------------------------------------------------

    def _due(self, snapshot: Snapshot, events: list[DrEvent], now_s: float) -> bool:
        if now_s - self._last_solve_s >= self.settings.replan_s:
            return True
        if self._signature != self._signature_of(snapshot, events):
            return True  # an event came, changed or went; a device came or went
        if self._error_kw > self.settings.replan_error_kw and \
                now_s - self._last_error_replan_s >= ERROR_REPLAN_MIN_S:
            self._last_error_replan_s = now_s
            self._error_kw = 0.0
            return True
        return False

    @staticmethod
    def _signature_of(snapshot: Snapshot, events: list[DrEvent]) -> tuple[object, ...]:
        return (tuple(sorted((e.id, e.status, e.value, e.modification, e.start_s,
                              e.duration_s) for e in events
                             if e.status in ("scheduled", "active"))),
                tuple(b.ok for b in snapshot.batteries),
                tuple(h.power_w is not None for h in snapshot.heat_pumps))

    def _track_error(self, snapshot: Snapshot, setpoints: PlanSetpoints | None) -> None:
        """A slow average of how far the grid is off the plan, kW."""
        if setpoints is None or snapshot.grid_w is None:
            return
        battery_w = sum(b.power_w or 0.0 for b in snapshot.batteries)
        off_kw = abs(snapshot.grid_w + battery_w - setpoints.grid_w - setpoints.battery_w)
        self._error_kw += (off_kw / 1000.0 - self._error_kw) * 0.02

    # -- learning ----------------------------------------------------------------------

    def _learn(self, snapshot: Snapshot) -> None:
        now = snapshot.now_s
        start = now - now % QUARTER_S
        slot = self._slot
        if slot is not None and slot.start_s != start:
            self._close_slot(slot)
            slot = None
        if slot is None:
            slot = self._slot = _Slot(start)
        heat_pumps = snapshot.heat_pumps
        outdoor = next((h.outdoor_c for h in heat_pumps if h.outdoor_c is not None), None)
        indoor = next((h.indoor_c for h in heat_pumps if h.indoor_c is not None), None)
        hp_w = sum(h.power_w or 0.0 for h in heat_pumps)
        names = self._deferrable_names()
        deferrable_w = sum(load.power_w or 0.0 for load in snapshot.loads
                           if load.name in names and load.on)
        battery_w = sum(b.power_w or 0.0 for b in snapshot.batteries)
        load_w = None if snapshot.grid_w is None else (
            snapshot.grid_w + snapshot.pv_w + battery_w - hp_w - deferrable_w)
        slot.add(pv=snapshot.pv_w / 1000.0, load=None if load_w is None else load_w / 1000.0,
                 outdoor=outdoor, indoor=indoor, hp=hp_w / 1000.0)
        self._count_delivered(snapshot)

    def _close_slot(self, slot: _Slot) -> None:
        pv, load, outdoor = slot.mean("pv"), slot.mean("load"), slot.mean("outdoor")
        indoor, hp = slot.mean("indoor"), slot.mean("hp")
        f = self.forecasters
        if pv is not None:
            f.pv.observe(slot.start_s, pv)
        if load is not None:
            f.load.observe(slot.start_s, max(0.0, load))
        if outdoor is not None:
            f.outdoor.observe(slot.start_s, outdoor)
            if indoor is not None and hp is not None and hp > 0.5:
                mode = thermal_mode(outdoor)
                if mode != 0:
                    f.heat_loss.observe(hp * cop(int(mode), outdoor, self.settings) * mode,
                                        indoor - outdoor)

    def _count_delivered(self, snapshot: Snapshot) -> None:
        """Energy each deferrable load took in its window today (kWh), by cycle."""
        if not self.settings.deferrable:
            return
        day = snapshot.now_s - (snapshot.now_s + self._utc_offset_s(snapshot.now_s)) % 86400.0
        for item in self.settings.deferrable:
            if self._delivered_day.get(item.load) != day:
                self._delivered_day[item.load] = day
                self._delivered_kwh[item.load] = 0.0
            load = next((x for x in snapshot.loads if x.name == item.load), None)
            if load is not None and load.on and load.power_w is not None:
                step_h = self.control.cycle_s / 3600.0
                self._delivered_kwh[item.load] += max(0.0, load.power_w) / 1000.0 * step_h

    def _utc_offset_s(self, now_s: float) -> float:
        offset = datetime.fromtimestamp(now_s, self.site.zone).utcoffset()
        return 0.0 if offset is None else offset.total_seconds()

    def _deferrable_names(self) -> set[str]:
        return {item.load for item in self.settings.deferrable}

    def _heat_pumps(self) -> list[str]:
        return [d.name for d in self.site.devices.values() if d.device_map.kind == "heat_pump"]

    def _rated_kw(self, load: str) -> float:
        spec = self.site.loads.get(load)
        return 0.0 if spec is None else spec.rated_w / 1000.0


__all__ = ["InlineExecutor", "PlannerService", "SolveStats"]
