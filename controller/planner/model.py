"""The plan as a linear programme, built once with HiGHS and updated between solves.

Per step t (kW, kWh; Δ = step in hours):

* balance: import − export − charge + discharge − heat pump − Σ deferrable + DC shed
  − curtailment = load − PV (the site's meter);
* battery: soc_t = soc_{t−1} + η·Δ·charge − Δ/η·discharge, 0 ≤ soc ≤ capacity (hard);
  the minimum and maximum SoC are soft (slack at a price per kWh·h); the reserve is
  soft too, priced on the plan's deepest shortfall below it (dip ≥ reserve − soc_t),
  once — like the month's peak, a shortfall the SoC already has is not paid again, so
  the plan does not buy it back at a dear price just to shorten it;
* building: one RC zone, exact over the step: T_t = a·T_{t−1} + (1 − a)·(T_out + (gains
  + mode·COP·hp)/UA), a = exp(−Δ·UA/C); the comfort band is soft;
* demand: peak ≥ import_t + margin (:func:`peak_margin_kw`), peak ≥ the month's running
  maximum; its price is the demand
  charge (the increase over the month's peak so far is what a plan can change);
* the SoC left at the horizon's end is worth the horizon's cheapest import price
  (:func:`terminal_value_cny_per_kwh`);
* DR: import ≤ cap (soft), import − export = setpoint (soft, both ways); export ≤ the
  export limit (soft, PV curtailment makes it reachable);
* deferrable loads: Σ Δ·p ≥ their energy within their window (soft).

Physical limits are bounds; every goal has a slack, so every solve is feasible. The
structure depends only on the number of steps and of deferrable loads: between solves
only costs, bounds and the heat pump's coefficients change (HiGHS keeps its basis and
starts from it)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import highspy
import numpy as np

from controller.planner.problem import (
    Plan,
    PlanInputs,
    PlanStatus,
    Series,
    ThermalMode,
)

INF = highspy.kHighsInf
#: Per-step columns, in order.
STEP_COLUMNS = ("imp", "exp", "ch", "dis", "soc", "hp", "tin", "cur", "dcs", "s_floor",
                "s_max", "s_lo", "s_hi", "s_exp", "s_dr", "s_up", "s_dn")
#: Per-step rows, in order.
STEP_ROWS = ("balance", "soc", "floor", "reserve", "ceiling", "thermal", "comfort_lo",
             "comfort_hi", "export", "cap", "setpoint", "peak", "horizon_peak")


@dataclass(frozen=True)
class Shape:
    """What the model's structure depends on: rebuilt only when it changes."""

    steps: int
    deferrable: int


class PlanModel:
    """One HiGHS model of ``shape``; :meth:`solve` updates it with ``inputs`` and solves.

    Not thread-safe: one solve at a time (the runner has one worker)."""

    def __init__(self, shape: Shape) -> None:
        self.shape = shape
        n, d = shape.steps, shape.deferrable
        self._col = {name: i * n for i, name in enumerate(STEP_COLUMNS)}
        base = len(STEP_COLUMNS) * n
        self._defer = [base + k * n for k in range(d)]
        base += d * n
        self._peak = base
        self._horizon_peak = base + 1
        self._reserve_dip = base + 2
        self._short = [base + 3 + k for k in range(d)]
        self.columns = base + 3 + d
        self._row = {name: i * n for i, name in enumerate(STEP_ROWS)}
        self._energy_row = [len(STEP_ROWS) * n + k for k in range(d)]
        self.rows = len(STEP_ROWS) * n + d
        # highspy's stubs cover part of its API: the model is held untyped.
        self.highs: Any = highspy.Highs()  # type: ignore[no-untyped-call]
        self.highs.setOptionValue("output_flag", False)
        self.highs.setOptionValue("threads", 1)
        self._build()

    def c(self, name: str, t: int) -> int:
        return self._col[name] + t

    def r(self, name: str, t: int) -> int:
        return self._row[name] + t

    def _build(self) -> None:
        n, d = self.shape.steps, self.shape.deferrable
        zeros = np.zeros(self.columns)
        lower = np.zeros(self.columns)
        upper = np.full(self.columns, INF)
        for t in range(n):
            lower[self.c("tin", t)] = -INF
        self.highs.addCols(self.columns, zeros, lower, upper, 0, np.zeros(0, np.int32),
                           np.zeros(0, np.int32), np.zeros(0))
        rows: list[dict[int, float]] = []
        for name in STEP_ROWS:
            for t in range(n):
                rows.append(self._entries(name, t))
        for k in range(d):
            rows.append({self._defer[k] + t: 1.0 for t in range(n)} | {self._short[k]: 1.0})
        starts: list[int] = []
        index: list[int] = []
        value: list[float] = []
        for entries in rows:
            starts.append(len(index))
            index.extend(entries)
            value.extend(entries.values())
        self.highs.addRows(len(rows), np.full(len(rows), -INF), np.full(len(rows), INF),
                           len(index), np.array(starts, np.int32), np.array(index, np.int32),
                           np.array(value, np.float64))

    def _entries(self, row: str, t: int) -> dict[int, float]:
        c = self.c
        if row == "balance":
            entries = {c("imp", t): 1.0, c("exp", t): -1.0, c("ch", t): -1.0,
                       c("dis", t): 1.0, c("hp", t): -1.0, c("dcs", t): 1.0,
                       c("cur", t): -1.0}
            entries.update({col + t: -1.0 for col in self._defer})
            return entries
        if row == "soc":  # coefficients of ch/dis set with the step and efficiency
            entries = {c("soc", t): 1.0, c("ch", t): -1.0, c("dis", t): 1.0}
            if t > 0:
                entries[c("soc", t - 1)] = -1.0
            return entries
        if row == "floor":
            return {c("soc", t): 1.0, c("s_floor", t): 1.0}
        if row == "reserve":
            return {c("soc", t): 1.0, self._reserve_dip: 1.0}
        if row == "ceiling":
            return {c("soc", t): 1.0, c("s_max", t): -1.0}
        if row == "thermal":  # a and the heat pump's coefficient set per solve
            entries = {c("tin", t): 1.0, c("hp", t): 0.0}
            if t > 0:
                entries[c("tin", t - 1)] = -1.0
            return entries
        if row == "comfort_lo":
            return {c("tin", t): 1.0, c("s_lo", t): 1.0}
        if row == "comfort_hi":
            return {c("tin", t): 1.0, c("s_hi", t): -1.0}
        if row == "export":
            return {c("exp", t): 1.0, c("s_exp", t): -1.0}
        if row == "cap":
            return {c("imp", t): 1.0, c("s_dr", t): -1.0}
        if row == "setpoint":
            return {c("imp", t): 1.0, c("exp", t): -1.0, c("s_up", t): -1.0,
                    c("s_dn", t): 1.0}
        if row == "peak":
            return {self._peak: 1.0, c("imp", t): -1.0}
        assert row == "horizon_peak"
        return {self._horizon_peak: 1.0, c("imp", t): -1.0}

    # -- one solve ---------------------------------------------------------------------

    def solve(self, inputs: PlanInputs, *, time_limit_s: float = 5.0) -> Plan:
        """Update the model with ``inputs`` and solve within ``time_limit_s``. A plan
        whose solve failed has status FAILED (never raises for the solver's sake; raises
        ValueError when ``inputs`` do not fit the shape)."""
        if inputs.steps != self.shape.steps or len(inputs.deferrable) != self.shape.deferrable:
            raise ValueError(f"inputs of {inputs.steps} steps, {len(inputs.deferrable)} "
                             f"deferrable loads for a model of {self.shape}")
        started = time.perf_counter()
        cost, lower, upper = self._columns(inputs)
        row_lower, row_upper = self._row_bounds(inputs)
        all_cols = np.arange(self.columns, dtype=np.int32)
        all_rows = np.arange(self.rows, dtype=np.int32)
        h = self.highs
        h.changeColsCost(self.columns, all_cols, cost)
        h.changeColsBounds(self.columns, all_cols, lower, upper)
        h.changeRowsBounds(self.rows, all_rows, row_lower, row_upper)
        self._coefficients(inputs)
        deadline = time.perf_counter() + max(0.001, float(time_limit_s))
        status = self._run(deadline)
        if status not in (highspy.HighsModelStatus.kOptimal,
                          highspy.HighsModelStatus.kTimeLimit) \
                and time.perf_counter() < deadline:
            # The warm start (the last solve's basis) can fail where a cold one does not
            # (the fuzz found one in 10,000): once more from scratch, within the deadline.
            h.clearSolver()
            status = self._run(deadline)
        solve_ms = (time.perf_counter() - started) * 1000.0
        if status == highspy.HighsModelStatus.kOptimal:
            return self._plan(inputs, PlanStatus.OPTIMAL, solve_ms)
        if status == highspy.HighsModelStatus.kTimeLimit and \
                h.getInfo().primal_solution_status == 2:  # feasible point
            return self._plan(inputs, PlanStatus.TIME_LIMIT, solve_ms)
        h.clearSolver()  # start afresh next time
        return failed_plan(inputs, solve_ms)

    def _run(self, deadline: float) -> Any:
        """Run HiGHS until ``deadline`` (perf_counter s); its model status, None if it
        raised."""
        h = self.highs
        remaining = max(0.001, deadline - time.perf_counter())
        # HiGHS counts its time limit against the run time of the object's life, over
        # every solve: the limit of this run is what has run so far plus what is left.
        h.setOptionValue("time_limit", h.getRunTime() + remaining)
        try:
            h.run()
            return h.getModelStatus()
        except Exception:
            return None

    def _columns(self, p: PlanInputs) -> tuple[Series, Series, Series]:
        n, dt, w = p.steps, p.step_h, p.weights
        cost = np.zeros(self.columns)
        lower = np.zeros(self.columns)
        upper = np.full(self.columns, INF)

        def put(name: str, c: Series | float, lo: Series | float = 0.0,
                hi: Series | float = INF) -> None:
            block = slice(self._col[name], self._col[name] + n)
            cost[block], lower[block], upper[block] = c, lo, hi

        import_cny = p.price_cny_per_kwh + w.carbon_cny_per_kg * p.carbon_kg_per_kwh
        put("imp", import_cny * dt)
        # Export never pays more than import costs in the same step: else importing and
        # exporting at once would earn without end (the meter nets them anyway).
        put("exp", -np.minimum(p.export_price_cny_per_kwh, import_cny) * dt)
        battery = p.battery
        if battery is not None and battery.available:
            put("ch", 0.0, 0.0, battery.max_charge_kw)
            put("dis", w.battery_wear_cny_per_kwh * dt, 0.0, battery.max_discharge_kw)
            put("soc", 0.0, 0.0, battery.capacity_kwh)
            cost[self.c("soc", n - 1)] = -terminal_value_cny_per_kwh(p)
        else:
            put("ch", 0.0, 0.0, 0.0)
            put("dis", 0.0, 0.0, 0.0)
            put("soc", 0.0, -INF, INF)
        thermal = p.thermal
        if thermal is not None and thermal.available:
            put("hp", 0.0, 0.0, np.where(thermal.mode != ThermalMode.OFF, thermal.rated_kw, 0.0))
        else:
            put("hp", 0.0, 0.0, 0.0)
        put("tin", 0.0, -INF, INF)
        put("cur", w.curtail_cny_per_kwh * dt, 0.0, np.maximum(p.pv_kw, 0.0))
        put("dcs", w.dc_shed_cny_per_kwh * dt, 0.0, np.maximum(p.flexible_dc_kw, 0.0))
        put("s_floor", w.floor_cny_per_kwh * dt)
        put("s_max", w.ceiling_cny_per_kwh * dt)
        put("s_lo", w.comfort_cny_per_kh * dt)
        put("s_hi", w.comfort_cny_per_kh * dt)
        put("s_exp", w.export_penalty_cny_per_kwh * dt)
        put("s_dr", w.dr_penalty_cny_per_kwh * dt)
        put("s_up", w.dr_penalty_cny_per_kwh * dt)
        put("s_dn", w.dr_penalty_cny_per_kwh * dt)
        ramp = np.arange(n) * 1e-5  # earlier rather than later, all else equal
        for k, load in enumerate(p.deferrable):
            block = slice(self._defer[k], self._defer[k] + n)
            cost[block] = ramp
            upper[block] = np.where(load.window, load.rated_kw, 0.0)
            cost[self._short[k]] = w.deferrable_shortfall_cny_per_kwh
        cost[self._reserve_dip] = w.reserve_cny_per_kwh
        cost[self._peak] = p.demand_price_cny_per_kw
        lower[self._peak] = max(0.0, p.month_peak_kw)
        # A hedge: the horizon's own peak costs a share of the demand price even below
        # the month's, so the plan keeps a margin for what the forecasts miss.
        cost[self._horizon_peak] = w.peak_hedge * p.demand_price_cny_per_kw
        return cost, lower, upper

    def _row_bounds(self, p: PlanInputs) -> tuple[Series, Series]:
        n = p.steps
        lower = np.full(self.rows, -INF)
        upper = np.full(self.rows, INF)

        def put(name: str, lo: Series | float, hi: Series | float) -> None:
            block = slice(self._row[name], self._row[name] + n)
            lower[block], upper[block] = lo, hi

        net = p.load_kw - p.pv_kw
        put("balance", net, net)
        battery = p.battery
        soc0 = 0.0
        if battery is not None:
            soc0 = min(max(battery.soc_kwh, 0.0), battery.capacity_kwh)
        first = np.zeros(n)
        first[0] = soc0
        put("soc", first, first)
        if battery is not None and battery.available:
            put("floor", battery.floor_kwh, INF)
            put("reserve", battery.reserve_kwh, INF)
            put("ceiling", -INF, battery.ceiling_kwh)
        thermal = p.thermal
        if thermal is not None:
            a = self._decay(p)
            drive = (1.0 - a) * (thermal.outdoor_c + thermal.gains_kw
                                 / thermal.ua_kw_per_k)
            drive[0] += a * thermal.indoor_c
            put("thermal", drive, drive)
            put("comfort_lo", thermal.comfort_min_c, INF)
            put("comfort_hi", -INF, thermal.comfort_max_c)
        else:
            put("thermal", 0.0, 0.0)
        if math.isfinite(p.export_limit_kw):
            put("export", -INF, p.export_limit_kw)
        put("cap", -INF, np.where(np.isfinite(p.cap_kw), p.cap_kw, INF))
        has_setpoint = ~np.isnan(p.setpoint_kw)
        setpoint = np.where(has_setpoint, p.setpoint_kw, 0.0)
        put("setpoint", np.where(has_setpoint, setpoint, -INF),
            np.where(has_setpoint, setpoint, INF))
        put("peak", peak_margin_kw(p), INF)
        put("horizon_peak", 0.0, INF)
        for k, load in enumerate(p.deferrable):
            lower[self._energy_row[k]] = max(0.0, load.energy_kwh)
        return lower, upper

    @staticmethod
    def _decay(p: PlanInputs) -> float:
        thermal = p.thermal
        assert thermal is not None
        return math.exp(-p.step_h * thermal.ua_kw_per_k / max(thermal.capacity_kwh_per_k, 1e-6))

    def _coefficients(self, p: PlanInputs) -> None:
        """The coefficients that depend on the inputs: the battery's efficiency and the
        step, the building's decay and the heat pump's COP and mode."""
        n, dt, h = p.steps, p.step_h, self.highs
        battery = p.battery
        eta = math.sqrt(battery.round_trip_efficiency) if battery is not None else 1.0
        for t in range(n):
            h.changeCoeff(self.r("soc", t), self.c("ch", t), -eta * dt)
            h.changeCoeff(self.r("soc", t), self.c("dis", t), dt / eta)
        thermal = p.thermal
        a = self._decay(p) if thermal is not None else 0.0
        for t in range(n):
            if t > 0:
                h.changeCoeff(self.r("thermal", t), self.c("tin", t - 1), -a)
            gain = 0.0
            if thermal is not None:
                gain = -(1.0 - a) * float(thermal.mode[t]) * float(thermal.cop[t]) \
                    / thermal.ua_kw_per_k
            h.changeCoeff(self.r("thermal", t), self.c("hp", t), gain)

    def _plan(self, p: PlanInputs, status: PlanStatus, solve_ms: float) -> Plan:
        x = np.asarray(self.highs.getSolution().col_value, dtype=np.float64)
        n, dt = p.steps, p.step_h

        def col(name: str) -> Series:
            return x[self._col[name]:self._col[name] + n].copy()

        imp, exp, ch, dis = col("imp"), col("exp"), col("ch"), col("dis")
        hp, tin = col("hp"), col("tin")
        weights = p.weights
        costs = {
            "energy": float(np.sum(p.price_cny_per_kwh * imp) * dt
                            - np.sum(p.export_price_cny_per_kwh * exp) * dt),
            "demand": float(p.demand_price_cny_per_kw * max(0.0, x[self._peak]
                                                             - p.month_peak_kw)),
            "wear": float(weights.battery_wear_cny_per_kwh * np.sum(dis) * dt),
            "comfort": float(weights.comfort_cny_per_kh * np.sum(col("s_lo") + col("s_hi"))
                             * dt),
            "dr": float(weights.dr_penalty_cny_per_kwh
                        * np.sum(col("s_dr") + col("s_up") + col("s_dn")) * dt),
            "terminal": float(-terminal_value_cny_per_kwh(p) * col("soc")[-1])
            if p.battery is not None and p.battery.available else 0.0,
        }
        return Plan(
            start_s=p.start_s, step_s=p.step_s, status=status,
            objective_cny=float(self.highs.getInfo().objective_function_value),
            solve_ms=solve_ms, grid_kw=imp - exp, battery_kw=dis - ch, soc_kwh=col("soc"),
            heat_pump_kw=hp, indoor_c=tin, sg_state=sg_states(p, hp),
            curtail_kw=col("cur"), dc_shed_kw=col("dcs"),
            deferrable_kw={load.name: x[self._defer[k]:self._defer[k] + n].copy()
                           for k, load in enumerate(p.deferrable)},
            price_cny_per_kwh=p.price_cny_per_kwh, pv_kw=p.pv_kw, load_kw=p.load_kw,
            costs_cny=costs, peak_kw=float(x[self._peak]))


def peak_margin_kw(p: PlanInputs) -> float:
    """How far below its demand target the plan keeps its import (kW, ≥ 0): a share of
    the month's peak, so import up to the month's peak less it costs nothing more."""
    return max(0.0, p.weights.peak_margin_share * max(0.0, p.month_peak_kw))


def terminal_value_cny_per_kwh(p: PlanInputs) -> float:
    """What a kWh left in the battery at the horizon's end is worth (CNY, ≥ 0): the
    horizon's cheapest import price × ``terminal_soc_share``. Without it the plan sells
    the battery off by its end, at whatever price the last hours have, and a rolling
    horizon then starts each day short of the charge the next one needs. At the cheapest
    price no charge is bought just to be left over (the losses make that a loss), and a
    kWh is sold off at the end only above that price ÷ √η."""
    if p.steps == 0:
        return 0.0
    cheapest = float(np.min(p.price_cny_per_kwh + p.weights.carbon_cny_per_kg
                            * p.carbon_kg_per_kwh))
    return max(0.0, cheapest) * max(0.0, p.weights.terminal_soc_share)


def failed_plan(p: PlanInputs, solve_ms: float) -> Plan:
    """An empty plan that says the solve failed (the runner keeps its last good one)."""
    n = p.steps
    zeros = np.zeros(n)
    return Plan(p.start_s, p.step_s, PlanStatus.FAILED, math.nan, solve_ms, zeros, zeros,
                zeros, zeros, zeros, np.full(n, 2, np.int8), zeros, zeros, {},
                p.price_cny_per_kwh, p.pv_kw, p.load_kw, {})


def hold_kw(p: PlanInputs) -> Series:
    """What the heat pump draws in SG-Ready "normal" per step: what holds its own
    setpoint against the losses and gains (kW electric, within its rating)."""
    thermal = p.thermal
    if thermal is None:
        return np.zeros(p.steps)
    mode = thermal.mode.astype(np.float64)
    loss_kw = thermal.ua_kw_per_k * (thermal.setpoint_c - thermal.outdoor_c)
    need = mode * (loss_kw - thermal.gains_kw)
    return np.clip(need / np.maximum(thermal.cop, 0.5), 0.0, thermal.rated_kw)


def sg_states(p: PlanInputs, heat_pump_kw: Series) -> np.typing.NDArray[np.int8]:
    """The SG-Ready state that carries out the planned heat-pump power: blocked where
    the plan runs it well below what "normal" would draw, boost well above, else normal."""
    states = np.full(p.steps, 2, np.int8)
    thermal = p.thermal
    if thermal is None or not thermal.available:
        return states
    normal = hold_kw(p)
    band = 0.15 * thermal.rated_kw
    states[(heat_pump_kw < normal - band) & (heat_pump_kw < band)] = 1
    states[heat_pump_kw > normal + band] = 3
    states[thermal.mode == ThermalMode.OFF] = 2
    return states
