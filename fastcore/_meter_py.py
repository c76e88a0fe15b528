"""Pure-Python twin of the ``_meter`` kernel: per-load metering aggregation.

Identical API and results (same floating-point operations in the same order) as the
compiled :mod:`fastcore._meter`; used when the compiled module is unavailable and as the
reference the property tests compare the kernel against. The specification lives in
``docs/fastcore.md``; the shared parts (configuration, tariff calendar, read-out math,
state format) in :mod:`fastcore._common`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from fastcore._common import (
    A_BAD_POWER,
    A_BAD_TIME,
    A_COUNTER_BACKSTEP,
    A_COUNTER_BAD_VALUE,
    A_COUNTER_JUMP,
    A_COUNTER_OUT_OF_ORDER,
    A_COUNTER_RESET,
    A_COUNTER_UNKNOWN_LOAD,
    A_COUNTER_WRAP,
    A_DUPLICATE,
    A_GAP,
    A_LATE_WINDOW,
    A_OUT_OF_ORDER,
    A_UNKNOWN_LOAD,
    F64,
    LOAD_F64_FIELDS,
    LOAD_I64_FIELDS,
    MAX_COUNTER_WH,
    MAX_POWER_W,
    MAX_TIMESTAMP_S,
    NO_WINDOW,
    RING_F64_FIELDS,
    RING_WINDOWS,
    ROLE_GRID,
    SECONDS_PER_DAY,
    WH_PER_DOUBLED_WS,
    LoadTotals,
    MeterConfig,
    RawState,
    SiteFigures,
    anomaly_totals,
    check_counters,
    check_raw,
    check_samples,
    compile_tables,
    load_totals,
    month_of_day,
    new_raw_state,
    raw_from_json,
    raw_to_json,
    site_figures,
    window_grid,
)
from fastcore._tariff import TariffCalendar


class MeterAggregator:
    """Per-load energy, demand, time-of-use cost and carbon from power samples and counters.

    ``n_loads`` loads are addressed by index 0..n_loads-1. ``roles`` gives each load's
    role ("consumer", "pv", "grid" or "battery"; default all consumers) so site figures
    can be computed. Power is signed at each load's connection point: positive = import
    (drawn from the site bus, or from the grid for a grid meter), negative = export
    (PV generation, battery discharge, feed-in at the grid meter).

    ``utc_offset_s`` is the site's fixed offset from UTC (China: +28800, no DST) used for
    time-of-use periods and demand windows; ``demand_window_s`` (divides a day, default
    900) is the fixed demand window aligned to local midnight; intervals longer than
    ``max_gap_s`` are not integrated (counted as ``gap``). ``tariff`` is the time-of-use
    calendar (default: a flat zero price). ``emission_factor_kg_per_kwh`` is one value or
    24 local-hour values (kgCO2e/kWh). ``grid_renewable_fraction`` (0..1) is the renewable
    share credited to grid energy in ``renewable_share``. ``counter_wrap_wh`` (0 = the
    counter does not wrap), ``counter_max_power_w`` (plausibility bound) and
    ``counter_jitter_wh`` govern cumulative counter readings (per load or one value).

    Raises ``TypeError``/``ValueError`` for invalid configuration. Bad *data* never
    raises: it is counted by kind (see ``anomalies()``) and handled as documented.
    """

    # per-load state (lists indexed by load); names match the raw state fields
    _last_t: list[float]
    _last_p: list[float]
    _seg_end: list[float]
    _acc_imp: list[float]
    _acc_exp: list[float]
    _price: list[float]
    _import_wh: list[float]
    _export_wh: list[float]
    _win_imp_wh: list[float]
    _last_kw: list[float]
    _max_kw: list[float]
    _carbon_kg: list[float]
    _gap_s: list[float]
    _ci_last: list[float]
    _ci_t: list[float]
    _ce_last: list[float]
    _ce_t: list[float]
    _ci_wh: list[float]
    _ce_wh: list[float]
    _ctx_w: list[int]
    _period: list[int]
    _last_w: list[int]
    _max_w: list[int]
    _ring_gimp: list[float]
    _ring_gexp: list[float]
    _ring_nimp: list[float]
    _ring_nexp: list[float]

    def __init__(
        self,
        n_loads: int,
        *,
        roles: Iterable[str | int] | npt.NDArray[Any] | None = None,
        utc_offset_s: int = 28800,
        demand_window_s: int = 900,
        max_gap_s: float = 300.0,
        tariff: TariffCalendar | None = None,
        emission_factor_kg_per_kwh: float | Sequence[float] = 0.5306,
        grid_renewable_fraction: float = 0.0,
        counter_wrap_wh: float | Sequence[float] | F64 = 0.0,
        counter_max_power_w: float | Sequence[float] | F64 = 1.0e7,
        counter_jitter_wh: float = 10.0,
    ) -> None:
        config = MeterConfig.create(
            n_loads, roles=roles, utc_offset_s=utc_offset_s, demand_window_s=demand_window_s,
            max_gap_s=max_gap_s, tariff=tariff,
            emission_factor_kg_per_kwh=emission_factor_kg_per_kwh,
            grid_renewable_fraction=grid_renewable_fraction, counter_wrap_wh=counter_wrap_wh,
            counter_max_power_w=counter_max_power_w, counter_jitter_wh=counter_jitter_wh)
        self._setup(config, new_raw_state(config.n_loads, config.n_periods))

    # ------------------------------------------------------------------ set-up / state

    def _setup(self, config: MeterConfig, raw: RawState) -> None:
        check_raw(raw, config.n_loads, config.n_periods)
        self._config = config
        self._tables = tables = compile_tables(config)
        self._n = config.n_loads
        self._max_gap = config.max_gap_s
        self._off = float(config.utc_offset_s)
        self._window_s = config.demand_window_s
        self._window_f = float(config.demand_window_s)
        self._per_day = SECONDS_PER_DAY // config.demand_window_s
        self._metered = config.metered_grid
        self._jitter = config.counter_jitter_wh
        self._roles: list[int] = config.roles.tolist()
        self._wrap: list[float] = config.counter_wrap_wh.tolist()
        self._max_power: list[float] = config.counter_max_power_w.tolist()
        self._n_periods = tables.n_periods
        self._n_day_types = tables.n_day_types
        self._month_season: list[int] = tables.month_season.tolist()
        self._day_profile: list[int] = tables.day_profile.tolist()
        self._special_first = tables.special_first
        self._n_special = tables.n_special
        self._special: list[int] = tables.special.tolist()
        self._day_cached = NO_WINDOW  # one-entry cache of the day lookup
        self._season_cached = self._base_cached = 0
        self._minute_period: list[int] = tables.minute_period.tolist()
        self._next_change: list[int] = tables.next_change.tolist()
        self._prices: list[float] = tables.prices.tolist()
        self._window_ef: list[float] = tables.window_ef.tolist()
        for name in (*LOAD_F64_FIELDS, *LOAD_I64_FIELDS):
            setattr(self, "_" + name, raw[name].tolist())
        self._tou_wh: list[list[float]] = raw["tou_wh"].tolist()
        self._tou_cost: list[list[float]] = raw["tou_cost"].tolist()
        self._anom: list[list[int]] = raw["anomalies"].tolist()
        self._ring_w: list[int] = raw["ring_w"].tolist()
        for name in RING_F64_FIELDS:
            setattr(self, "_" + name, raw[name].tolist())
        self._ring_imp: list[list[float]] = raw["ring_imp"].tolist()
        self._site_carbon = float(raw["site_carbon"])
        self._est_import = float(raw["est_import"])
        self._est_export = float(raw["est_export"])
        self._site_max_kw = float(raw["site_max_kw"])
        self._newest = int(raw["newest"])
        self._site_max_w = int(raw["site_max_w"])
        self._accepted = int(raw["accepted"])
        self._site_anom: list[int] = raw["site_anomalies"].tolist()

    def _raw_state(self) -> RawState:
        """Copy of the raw state arrays (the layout shared with the compiled kernel)."""
        raw: RawState = {}
        for name in LOAD_F64_FIELDS:
            raw[name] = np.array(getattr(self, "_" + name), dtype=np.float64)
        for name in LOAD_I64_FIELDS:
            raw[name] = np.array(getattr(self, "_" + name), dtype=np.int64)
        raw["tou_wh"] = np.array(self._tou_wh, dtype=np.float64)
        raw["tou_cost"] = np.array(self._tou_cost, dtype=np.float64)
        raw["anomalies"] = np.array(self._anom, dtype=np.int64)
        raw["ring_w"] = np.array(self._ring_w, dtype=np.int64)
        for name in RING_F64_FIELDS:
            raw[name] = np.array(getattr(self, "_" + name), dtype=np.float64)
        raw["ring_imp"] = np.array(self._ring_imp, dtype=np.float64)
        raw.update(site_carbon=self._site_carbon, est_import=self._est_import,
                   est_export=self._est_export, site_max_kw=self._site_max_kw,
                   newest=self._newest, site_max_w=self._site_max_w, accepted=self._accepted,
                   site_anomalies=np.array(self._site_anom, dtype=np.int64))
        return raw

    @property
    def n_loads(self) -> int:
        """Number of loads (indices 0 .. n_loads-1)."""
        return self._n

    @property
    def config(self) -> MeterConfig:
        """The validated configuration."""
        return self._config

    @property
    def accepted_samples(self) -> int:
        """Samples accepted (integrated or starting a new chain) this period."""
        return self._accepted

    def state(self) -> dict[str, Any]:
        """Everything needed to resume after a restart, as a JSON-serialisable dict
        (NaN is written as None). Restores with :meth:`from_state` into either
        implementation."""
        return raw_to_json(self._config, self._raw_state())

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> MeterAggregator:
        """Rebuild an aggregator from :meth:`state` output. Raises ``ValueError`` (or
        ``TypeError``) when the dict is not a valid state of this format version."""
        config, raw = raw_from_json(state)
        self = cls.__new__(cls)
        self._setup(config, raw)
        return self

    # ------------------------------------------------------------------------ read-out

    def totals(self) -> LoadTotals:
        """Per-load figures of the current period (copies; see :class:`LoadTotals`)."""
        return load_totals(self._config, self._tables, self._raw_state())

    def site_figures(self) -> SiteFigures:
        """Site figures of the current period (see :class:`SiteFigures`)."""
        return site_figures(self._config, self._tables, self._raw_state())

    def anomalies(self) -> dict[str, int]:
        """Count of every anomaly kind this period, summed over loads."""
        return anomaly_totals(self._raw_state())

    # ---------------------------------------------------------------------- samples

    def add_samples(self, load_index: npt.NDArray[np.int32], timestamp_s: F64,
                    power_w: F64) -> int:
        """Add power samples: ``load_index`` (int32), ``timestamp_s`` (float64, UNIX s,
        UTC), ``power_w`` (float64, W, + import / - export), equal lengths, any
        interleaving across loads. Returns the number of samples accepted.

        Raises ``TypeError`` for a non-ndarray or wrong dtype, ``ValueError`` for a wrong
        shape or unequal lengths. Bad values are dropped and counted, never raised.
        """
        idx, ts, pw = check_samples(load_index, timestamp_s, power_w)
        n = self._n
        max_gap = self._max_gap
        last_t, last_p, seg_end = self._last_t, self._last_p, self._seg_end
        acc_imp, acc_exp = self._acc_imp, self._acc_exp
        accepted = 0
        for i, t, p in zip(idx.tolist(), ts.tolist(), pw.tolist(), strict=True):
            if 0 <= i < n:
                dt = t - last_t[i]
                if dt > 0.0 and dt <= max_gap and t <= seg_end[i] and abs(p) <= MAX_POWER_W:
                    p0 = last_p[i]
                    if (p0 < 0.0) == (p < 0.0):
                        if p < 0.0:
                            acc_exp[i] += (p0 + p) * dt
                        else:
                            acc_imp[i] += (p0 + p) * dt
                    else:
                        self._accumulate(i, p0, p, dt)
                    last_t[i] = t
                    last_p[i] = p
                    accepted += 1
                else:
                    accepted += self._slow_sample(i, t, p)
            else:
                self._site_anom[A_UNKNOWN_LOAD] += 1
        self._accepted += accepted
        return accepted

    def _accumulate(self, i: int, p0: float, p1: float, dt: float) -> None:
        """Add the trapezoid (p0 -> p1 over dt) to the open segment, split at a zero
        crossing so import and export are each exact for a linear ramp."""
        if (p0 < 0.0) == (p1 < 0.0):
            if p1 < 0.0:
                self._acc_exp[i] += (p0 + p1) * dt
            else:
                self._acc_imp[i] += (p0 + p1) * dt
        else:
            frac = p0 / (p0 - p1)
            if p0 >= 0.0:
                self._acc_imp[i] += p0 * (frac * dt)
                self._acc_exp[i] += p1 * ((1.0 - frac) * dt)
            else:
                self._acc_exp[i] += p0 * (frac * dt)
                self._acc_imp[i] += p1 * ((1.0 - frac) * dt)

    def _slow_sample(self, i: int, t: float, p: float) -> int:
        anom = self._anom[i]
        if not (t >= 0.0 and t <= MAX_TIMESTAMP_S):
            anom[A_BAD_TIME] += 1
            return 0
        if not abs(p) <= MAX_POWER_W:
            anom[A_BAD_POWER] += 1
            return 0
        t0 = self._last_t[i]
        if t0 != t0:  # first sample of this load: starts a chain
            self._set_context(i, t)
        else:
            dt = t - t0
            if dt == 0.0:
                anom[A_DUPLICATE] += 1
                return 0
            if dt < 0.0:
                anom[A_OUT_OF_ORDER] += 1
                return 0
            if dt > self._max_gap:
                anom[A_GAP] += 1
                self._gap_s[i] += dt
                if t > self._seg_end[i]:
                    self._set_context(i, t)
            else:
                self._integrate_split(i, t0, self._last_p[i], t, p)
        self._last_t[i] = t
        self._last_p[i] = p
        return 1

    def _integrate_split(self, i: int, t0: float, p0: float, t1: float, p1: float) -> None:
        """Integrate an interval that crosses segment boundaries (period or window
        changes), interpolating the power linearly at each boundary."""
        a, pa = t0, p0
        seg_end = self._seg_end
        while t1 > seg_end[i]:
            b = seg_end[i]
            pb = p0 + (p1 - p0) * ((b - t0) / (t1 - t0))
            self._accumulate(i, pa, pb, b - a)
            self._set_context(i, b)
            a, pa = b, pb
        self._accumulate(i, pa, p1, t1 - a)

    def _set_context(self, i: int, t: float) -> None:
        """Flush the open segment and classify time ``t``: demand window, TOU period,
        price and the time the segment ends (next period change or window boundary)."""
        self._flush(i)
        off = self._off
        local = t + off
        day = math.floor(local / 86400.0)
        sod = local - day * 86400.0
        minute = int(sod / 60.0)
        minute = 0 if minute < 0 else (1439 if minute > 1439 else minute)
        if day != self._day_cached:  # a new day: its season and profile (day type)
            season = self._month_season[month_of_day(day) - 1]
            kind = 0  # workday
            rel = day - self._special_first
            if 0 <= rel < self._n_special and self._special[rel] >= 0:
                kind = self._special[rel]  # holiday or 调休 work day
            elif (day + 3) % 7 >= 5:
                kind = 1  # weekend (1970-01-01 was a Thursday)
            self._day_cached = day
            self._season_cached = season
            self._base_cached = self._day_profile[season * self._n_day_types + kind] * 1440
        season = self._season_cached
        base = self._base_cached + minute
        period = self._minute_period[base]
        tou_end = day * 86400.0 + self._next_change[base] * 60.0 - off
        w = math.floor(local / self._window_f)
        win_end = float(w + 1) * self._window_f - off
        seg = tou_end if tou_end < win_end else win_end
        if seg > MAX_TIMESTAMP_S:
            seg = MAX_TIMESTAMP_S
        old = self._ctx_w[i]
        if old != NO_WINDOW and w != old:
            self._close_window(i, old)
        self._ctx_w[i] = w
        self._period[i] = period
        self._price[i] = self._prices[season * self._n_periods + period]
        self._seg_end[i] = seg
        newest = self._newest
        if newest == NO_WINDOW or w > newest:
            self._advance(w)
        elif w > newest - RING_WINDOWS:
            slot = w % RING_WINDOWS
            if self._ring_w[slot] == NO_WINDOW:
                self._ring_w[slot] = w

    def _flush(self, i: int) -> None:
        """Book the open segment's energy into totals, TOU bucket, window and ring."""
        ai = self._acc_imp[i]
        ae = self._acc_exp[i]
        if ai == 0.0 and ae == 0.0:
            return
        self._acc_imp[i] = 0.0
        self._acc_exp[i] = 0.0
        imp = ai * WH_PER_DOUBLED_WS
        exp = -ae * WH_PER_DOUBLED_WS
        self._import_wh[i] += imp
        self._export_wh[i] += exp
        period = self._period[i]
        self._tou_wh[i][period] += imp
        self._tou_cost[i][period] += imp * self._price[i] / 1000.0
        self._win_imp_wh[i] += imp
        w = self._ctx_w[i]
        slot = w % RING_WINDOWS
        grid = self._roles[i] == ROLE_GRID
        if self._ring_w[slot] == w:
            self._ring_imp[slot][i] += imp
            if grid:
                self._ring_gimp[slot] += imp
                self._ring_gexp[slot] += exp
            else:
                self._ring_nimp[slot] += imp
                self._ring_nexp[slot] += exp
        else:  # the site already finalised this window: book carbon at g = 1
            self._anom[i][A_LATE_WINDOW] += 1
            ef = self._window_ef[w % self._per_day]
            self._carbon_kg[i] += imp * ef / 1000.0
            if grid or not self._metered:
                self._site_carbon += imp * ef / 1000.0
                if not self._metered:
                    self._est_import += imp

    def _close_window(self, i: int, w: int) -> None:
        kw = self._win_imp_wh[i] * 3.6 / self._window_s
        self._last_kw[i] = kw
        self._last_w[i] = w
        if self._max_w[i] == NO_WINDOW or kw > self._max_kw[i]:
            self._max_kw[i] = kw
            self._max_w[i] = w
        self._win_imp_wh[i] = 0.0

    def _advance(self, w: int) -> None:
        newest = self._newest
        start = w if newest == NO_WINDOW else max(newest + 1, w - RING_WINDOWS + 1)
        for x in range(start, w + 1):
            slot = x % RING_WINDOWS
            if self._ring_w[slot] != NO_WINDOW:
                self._finalize(slot)
            self._ring_w[slot] = x
        self._newest = w

    def _finalize(self, slot: int) -> None:
        """Close a site demand window: allocate its carbon by the grid share, book the
        site's grid import/export estimate and peak demand, free the slot."""
        w = self._ring_w[slot]
        ctx_w, acc_imp, acc_exp = self._ctx_w, self._acc_imp, self._acc_exp
        for j in range(self._n):
            if ctx_w[j] == w and (acc_imp[j] != 0.0 or acc_exp[j] != 0.0):
                self._flush(j)
        gi, ge, g = window_grid(self._metered, self._ring_gimp[slot], self._ring_gexp[slot],
                                self._ring_nimp[slot], self._ring_nexp[slot])
        ef = self._window_ef[w % self._per_day]
        row = self._ring_imp[slot]
        carbon, roles = self._carbon_kg, self._roles
        for j in range(self._n):
            e = row[j]
            if e != 0.0:
                carbon[j] += e * (1.0 if roles[j] == ROLE_GRID else g) * ef / 1000.0
                row[j] = 0.0
        self._site_carbon += gi * ef / 1000.0
        self._est_import += gi
        self._est_export += ge
        demand = gi * 3.6 / self._window_s
        if self._site_max_w == NO_WINDOW or demand > self._site_max_kw:
            self._site_max_kw = demand
            self._site_max_w = w
        self._ring_w[slot] = NO_WINDOW
        self._ring_gimp[slot] = self._ring_gexp[slot] = 0.0
        self._ring_nimp[slot] = self._ring_nexp[slot] = 0.0

    # ---------------------------------------------------------------------- counters

    def add_counters(self, load_index: npt.NDArray[np.int32], timestamp_s: F64,
                     import_wh: F64, export_wh: F64 | None = None) -> int:
        """Add cumulative energy counter readings (Wh, float64) of import and optionally
        export registers. Returns the number of rows of which at least one register
        was used. Wrap-around, resets, jumps, back-steps and bad values are handled and
        counted as documented; the same dtype/shape errors as :meth:`add_samples`."""
        idx, ts, imp, exp = check_counters(load_index, timestamp_s, import_wh, export_wh)
        n = self._n
        exp_list: list[float] | None = None if exp is None else exp.tolist()
        accepted = 0
        for k, (i, t, value) in enumerate(zip(idx.tolist(), ts.tolist(), imp.tolist(),
                                              strict=True)):
            if not 0 <= i < n:
                self._site_anom[A_COUNTER_UNKNOWN_LOAD] += 1
                continue
            if not (t >= 0.0 and t <= MAX_TIMESTAMP_S):
                self._anom[i][A_COUNTER_BAD_VALUE] += 1
                continue
            used = self._register(i, 0, t, value)
            if exp_list is not None and self._register(i, 1, t, exp_list[k]):
                used = True
            accepted += used
        return accepted

    def _register(self, i: int, which: int, t: float, value: float) -> bool:
        anom = self._anom[i]
        if not (value >= 0.0 and value <= MAX_COUNTER_WH):
            anom[A_COUNTER_BAD_VALUE] += 1
            return False
        last_list, time_list, total_list = (
            (self._ci_last, self._ci_t, self._ci_wh) if which == 0
            else (self._ce_last, self._ce_t, self._ce_wh))
        t0 = time_list[i]
        if t0 != t0:  # first reading: baseline only
            last_list[i] = value
            time_list[i] = t
            return True
        if t <= t0:
            anom[A_COUNTER_OUT_OF_ORDER] += 1
            return False
        jitter = self._jitter
        delta = value - last_list[i]
        limit = self._max_power[i] * (t - t0) / 3600.0 + jitter
        if delta >= 0.0:
            if delta <= limit:
                total_list[i] += delta
            else:
                anom[A_COUNTER_JUMP] += 1
            last_list[i] = value
        elif delta >= -jitter:
            anom[A_COUNTER_BACKSTEP] += 1
        else:
            wrap = self._wrap[i]
            wrapped = delta + wrap
            if wrap > 0.0 and wrapped >= 0.0 and wrapped <= limit:
                total_list[i] += wrapped
                anom[A_COUNTER_WRAP] += 1
            else:
                anom[A_COUNTER_RESET] += 1
            last_list[i] = value
        time_list[i] = t
        return True

    # ------------------------------------------------------------------------ period

    def reset_period(self) -> None:
        """Start a new accounting period (call it at a window boundary, e.g. local
        midnight of the 1st, after adding the samples up to it).

        Flushes every open segment and finalises every open site window (so carbon and
        site peak demand use all data seen so far), then zeroes all period totals:
        energy, TOU energy and cost, carbon, counter energy, gap seconds, demand maxima,
        site figures and anomaly counts. Continuity is kept: last sample and open
        demand window of each load, counter baselines, last completed window.
        """
        for j in range(self._n):
            self._flush(j)
        for slot in sorted(range(RING_WINDOWS), key=lambda s: self._ring_w[s]):
            if self._ring_w[slot] != NO_WINDOW:
                self._finalize(slot)
        n = self._n
        for name in ("import_wh", "export_wh", "carbon_kg", "gap_s", "ci_wh", "ce_wh"):
            setattr(self, "_" + name, [0.0] * n)
        self._tou_wh = [[0.0] * self._n_periods for _ in range(n)]
        self._tou_cost = [[0.0] * self._n_periods for _ in range(n)]
        self._anom = [[0] * len(row) for row in self._anom]
        self._site_anom = [0] * len(self._site_anom)
        self._max_kw = [math.nan] * n
        self._max_w = [NO_WINDOW] * n
        self._site_carbon = self._est_import = self._est_export = 0.0
        self._site_max_kw = math.nan
        self._site_max_w = NO_WINDOW
        self._accepted = 0
