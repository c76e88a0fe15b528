# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False, binding=True
"""Compiled kernel: per-load metering aggregation.

Same API and results as :mod:`fastcore._meter_py` (the pure-Python twin, which is the
readable reference: every function here mirrors one there, with the same floating-point
operations in the same order). The per-sample fast path touches one 40-byte record per
load; everything that changes less often than once per demand window or TOU period
(totals, TOU buckets, demand, ring) is booked when a segment is flushed.
"""

from libc.math cimport NAN, fabs, floor
from libc.stdint cimport int8_t, int32_t, int64_t, uint32_t
from libc.string cimport memset

import numpy as np

from fastcore._common import (
    LOAD_F64_FIELDS,
    LOAD_I64_FIELDS,
    RING_F64_FIELDS,
    MeterConfig,
    anomaly_totals,
    check_counters,
    check_raw,
    check_samples,
    compile_tables,
    load_totals,
    new_raw_state,
    raw_from_json,
    raw_to_json,
    site_figures,
)
from fastcore import _common

cdef enum:
    RING = 8
    NK = 14
    A_UNKNOWN_LOAD = 0
    A_BAD_TIME = 1
    A_BAD_POWER = 2
    A_DUPLICATE = 3
    A_OUT_OF_ORDER = 4
    A_GAP = 5
    A_LATE_WINDOW = 6
    A_COUNTER_UNKNOWN_LOAD = 7
    A_COUNTER_BAD_VALUE = 8
    A_COUNTER_OUT_OF_ORDER = 9
    A_COUNTER_BACKSTEP = 10
    A_COUNTER_WRAP = 11
    A_COUNTER_RESET = 12
    A_COUNTER_JUMP = 13
    ROLE_GRID = 2

cdef int64_t NO_WINDOW = -(2 ** 62)
cdef double MAX_T = 1.0e10
cdef double MAX_P = 1.0e12
cdef double MAX_COUNTER = 1.0e15
cdef double WH = 0.5 / 3600.0

assert RING == _common.RING_WINDOWS and NK == _common.N_ANOMALY_KINDS
assert ROLE_GRID == _common.ROLE_GRID and NO_WINDOW == _common.NO_WINDOW
assert MAX_P == _common.MAX_POWER_W and MAX_COUNTER == _common.MAX_COUNTER_WH
assert MAX_T == _common.MAX_TIMESTAMP_S and WH == _common.WH_PER_DOUBLED_WS
assert (A_LATE_WINDOW == _common.A_LATE_WINDOW and A_COUNTER_JUMP == _common.A_COUNTER_JUMP)


cdef struct Hot:
    # the only per-load record the per-sample fast path touches
    double last_t  # time of the last accepted sample (NaN before the first)
    double last_p  # its power, W
    double seg_end  # the open segment (same window, period, price) ends here
    double acc[2]  # open segment: 2 x watt-seconds of import [0] and export [1] (<= 0)


cdef struct Meter:
    Py_ssize_t n
    Hot* hot
    double* price
    double* import_wh
    double* export_wh
    double* win_imp
    double* last_kw
    double* max_kw
    double* carbon
    double* gap_s
    double* ci_last
    double* ci_t
    double* ce_last
    double* ce_t
    double* ci_wh
    double* ce_wh
    int64_t* ctx_w
    int64_t* period
    int64_t* last_w
    int64_t* max_w
    double* tou_wh
    double* tou_cost
    int64_t* anom
    int64_t* ring_w
    double* gimp
    double* gexp
    double* nimp
    double* nexp
    double* ring_imp
    int64_t* site_anom
    double site_carbon
    double est_import
    double est_export
    double site_max_kw
    int64_t newest
    int64_t site_max_w
    int64_t accepted
    # configuration
    double max_gap
    double off
    double window_f
    double jitter
    int64_t per_day
    bint metered
    int8_t* role
    double* wrap
    double* max_power
    int32_t* month_season
    int32_t* day_profile
    int64_t n_day_types
    int64_t n_periods
    int64_t special_first
    int64_t n_special
    int32_t* special
    int64_t day_cached  # one-entry cache of the day lookup (NO_WINDOW: empty)
    int64_t season_cached
    int64_t base_cached  # profile * 1440 of day_cached
    int32_t* minute_period
    int32_t* next_change
    double* prices
    double* window_ef


cdef inline int64_t pymod(int64_t a, int64_t b) noexcept nogil:
    cdef int64_t r = a % b
    if r < 0:
        r += b
    return r


cdef inline int64_t month_of_day(int64_t day) noexcept nogil:
    # H. Hinnant's civil_from_days; day >= -1 for every accepted timestamp
    cdef int64_t z = day + 719468
    cdef int64_t era = z // 146097
    cdef int64_t doe = z - era * 146097
    cdef int64_t yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    cdef int64_t doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    cdef int64_t mp = (5 * doy + 2) // 153
    return mp + 3 if mp < 10 else mp - 9


cdef inline void accumulate(Hot* h, double p0, double p1, double dt) noexcept nogil:
    cdef double frac
    if (p0 < 0.0) == (p1 < 0.0):
        if p1 < 0.0:
            h.acc[1] += (p0 + p1) * dt
        else:
            h.acc[0] += (p0 + p1) * dt
    else:
        frac = p0 / (p0 - p1)
        if p0 >= 0.0:
            h.acc[0] += p0 * (frac * dt)
            h.acc[1] += p1 * ((1.0 - frac) * dt)
        else:
            h.acc[1] += p0 * (frac * dt)
            h.acc[0] += p1 * ((1.0 - frac) * dt)


cdef void flush(Meter* m, Py_ssize_t i) noexcept nogil:
    cdef Hot* h = &m.hot[i]
    cdef double ai = h.acc[0], ae = h.acc[1], imp, exp, ef
    cdef int64_t w, slot, period
    cdef bint grid
    if ai == 0.0 and ae == 0.0:
        return
    h.acc[0] = 0.0
    h.acc[1] = 0.0
    imp = ai * WH
    exp = -ae * WH
    m.import_wh[i] += imp
    m.export_wh[i] += exp
    period = m.period[i]
    m.tou_wh[i * m.n_periods + period] += imp
    m.tou_cost[i * m.n_periods + period] += imp * m.price[i] / 1000.0
    m.win_imp[i] += imp
    w = m.ctx_w[i]
    slot = pymod(w, RING)
    grid = m.role[i] == ROLE_GRID
    if m.ring_w[slot] == w:
        m.ring_imp[slot * m.n + i] += imp
        if grid:
            m.gimp[slot] += imp
            m.gexp[slot] += exp
        else:
            m.nimp[slot] += imp
            m.nexp[slot] += exp
    else:
        m.anom[i * NK + A_LATE_WINDOW] += 1
        ef = m.window_ef[pymod(w, m.per_day)]
        m.carbon[i] += imp * ef / 1000.0
        if grid or not m.metered:
            m.site_carbon += imp * ef / 1000.0
            if not m.metered:
                m.est_import += imp


cdef void close_window(Meter* m, Py_ssize_t i, int64_t w) noexcept nogil:
    cdef double kw = m.win_imp[i] * 3.6 / m.window_f
    m.last_kw[i] = kw
    m.last_w[i] = w
    if m.max_w[i] == NO_WINDOW or kw > m.max_kw[i]:
        m.max_kw[i] = kw
        m.max_w[i] = w
    m.win_imp[i] = 0.0


cdef void finalize(Meter* m, int64_t slot) noexcept nogil:
    cdef int64_t w = m.ring_w[slot]
    cdef Py_ssize_t j, n = m.n
    cdef double gi, ge, g, net, supply, ef, e, demand
    cdef double* row = &m.ring_imp[slot * n]
    for j in range(n):
        if m.ctx_w[j] == w and (m.hot[j].acc[0] != 0.0 or m.hot[j].acc[1] != 0.0):
            flush(m, j)
    if m.metered:
        gi = m.gimp[slot]
        ge = m.gexp[slot]
    else:
        net = m.nimp[slot] - m.nexp[slot]
        gi = net if net > 0.0 else 0.0
        ge = -net if net < 0.0 else 0.0
    supply = gi + m.nexp[slot]
    g = gi / supply if supply > 0.0 else 1.0
    ef = m.window_ef[pymod(w, m.per_day)]
    for j in range(n):
        e = row[j]
        if e != 0.0:
            m.carbon[j] += e * (1.0 if m.role[j] == ROLE_GRID else g) * ef / 1000.0
            row[j] = 0.0
    m.site_carbon += gi * ef / 1000.0
    m.est_import += gi
    m.est_export += ge
    demand = gi * 3.6 / m.window_f
    if m.site_max_w == NO_WINDOW or demand > m.site_max_kw:
        m.site_max_kw = demand
        m.site_max_w = w
    m.ring_w[slot] = NO_WINDOW
    m.gimp[slot] = 0.0
    m.gexp[slot] = 0.0
    m.nimp[slot] = 0.0
    m.nexp[slot] = 0.0


cdef void advance(Meter* m, int64_t w) noexcept nogil:
    cdef int64_t x, slot, start
    if m.newest == NO_WINDOW:
        start = w
    else:
        start = m.newest + 1
        if w - RING + 1 > start:
            start = w - RING + 1
    for x in range(start, w + 1):
        slot = pymod(x, RING)
        if m.ring_w[slot] != NO_WINDOW:
            finalize(m, slot)
        m.ring_w[slot] = x
    m.newest = w


cdef void set_context(Meter* m, Py_ssize_t i, double t) noexcept nogil:
    cdef double off = m.off, local, sod, tou_end, win_end, seg
    cdef int64_t day, minute, season, base, period, w, old, slot, kind, rel
    flush(m, i)
    local = t + off
    day = <int64_t>floor(local / 86400.0)
    sod = local - <double>day * 86400.0
    minute = <int64_t>(sod / 60.0)
    if minute < 0:
        minute = 0
    elif minute > 1439:
        minute = 1439
    if day != m.day_cached:  # a new day: its season and profile (day type)
        season = m.month_season[month_of_day(day) - 1]
        kind = 0  # workday
        rel = day - m.special_first
        if rel >= 0 and rel < m.n_special and m.special[rel] >= 0:
            kind = m.special[rel]  # holiday or 调休 work day
        elif pymod(day + 3, 7) >= 5:
            kind = 1  # weekend (1970-01-01 was a Thursday)
        m.day_cached = day
        m.season_cached = season
        m.base_cached = <int64_t>m.day_profile[season * m.n_day_types + kind] * 1440
    season = m.season_cached
    base = m.base_cached + minute
    period = m.minute_period[base]
    tou_end = <double>day * 86400.0 + <double>m.next_change[base] * 60.0 - off
    w = <int64_t>floor(local / m.window_f)
    win_end = <double>(w + 1) * m.window_f - off
    seg = tou_end if tou_end < win_end else win_end
    if seg > MAX_T:
        seg = MAX_T
    old = m.ctx_w[i]
    if old != NO_WINDOW and w != old:
        close_window(m, i, old)
    m.ctx_w[i] = w
    m.period[i] = period
    m.price[i] = m.prices[season * m.n_periods + period]
    m.hot[i].seg_end = seg
    if m.newest == NO_WINDOW or w > m.newest:
        advance(m, w)
    elif w > m.newest - RING:
        slot = pymod(w, RING)
        if m.ring_w[slot] == NO_WINDOW:
            m.ring_w[slot] = w


cdef void integrate_split(Meter* m, Py_ssize_t i, double t0, double p0, double t1,
                          double p1) noexcept nogil:
    cdef double a = t0, pa = p0, b, pb
    cdef Hot* h = &m.hot[i]
    while t1 > h.seg_end:
        b = h.seg_end
        pb = p0 + (p1 - p0) * ((b - t0) / (t1 - t0))
        accumulate(h, pa, pb, b - a)
        set_context(m, i, b)
        a = b
        pa = pb
    accumulate(h, pa, p1, t1 - a)


cdef Py_ssize_t slow_sample(Meter* m, Py_ssize_t i, double t, double p) noexcept nogil:
    cdef Hot* h = &m.hot[i]
    cdef double t0, dt
    if not (t >= 0.0 and t <= MAX_T):
        m.anom[i * NK + A_BAD_TIME] += 1
        return 0
    if not fabs(p) <= MAX_P:
        m.anom[i * NK + A_BAD_POWER] += 1
        return 0
    t0 = h.last_t
    if t0 != t0:
        set_context(m, i, t)
    else:
        dt = t - t0
        if dt == 0.0:
            m.anom[i * NK + A_DUPLICATE] += 1
            return 0
        if dt < 0.0:
            m.anom[i * NK + A_OUT_OF_ORDER] += 1
            return 0
        if dt > m.max_gap:
            m.anom[i * NK + A_GAP] += 1
            m.gap_s[i] += dt
            if t > h.seg_end:
                set_context(m, i, t)
        else:
            integrate_split(m, i, t0, h.last_p, t, p)
    h.last_t = t
    h.last_p = p
    return 1


cdef extern from *:
    """
    #if defined(__GNUC__)
    #define FC_LIKELY(x) __builtin_expect(!!(x), 1)
    #else
    #define FC_LIKELY(x) (x)
    #endif
    """
    bint FC_LIKELY(bint) noexcept nogil


cdef Py_ssize_t add_samples_c(Meter* m, const int32_t* idx, const double* ts,
                              const double* pw, Py_ssize_t count) noexcept nogil:
    # Fast path: a known load, a finite power, a step within max_gap_s that stays in the
    # open segment, no zero crossing -> one multiply-add into the load's 40-byte record.
    # The tests are combined without short-circuiting so there is one predictable branch.
    cdef Py_ssize_t k, rejected = 0
    cdef Hot* hot = m.hot
    cdef Hot* h
    cdef uint32_t n = <uint32_t>m.n
    cdef double max_gap = m.max_gap, t, p, dt, p0
    cdef int32_t i
    cdef bint in_segment
    for k in range(count):
        i = idx[k]
        t = ts[k]
        p = pw[k]
        if FC_LIKELY(<uint32_t>i < n):
            h = &hot[i]
            dt = t - h.last_t
            p0 = h.last_p
            in_segment = ((dt > 0.0) & (dt <= max_gap) & (t <= h.seg_end)
                          & (fabs(p) <= MAX_P))
            if FC_LIKELY(in_segment & ((p0 < 0.0) == (p < 0.0))):
                h.acc[p < 0.0] += (p0 + p) * dt
                h.last_t = t
                h.last_p = p
            elif in_segment:
                accumulate(h, p0, p, dt)
                h.last_t = t
                h.last_p = p
            else:
                rejected += 1 - slow_sample(m, i, t, p)
        else:
            m.site_anom[A_UNKNOWN_LOAD] += 1
            rejected += 1
    m.accepted += count - rejected
    return count - rejected


cdef bint register_c(Meter* m, Py_ssize_t i, int which, double t, double value) noexcept nogil:
    cdef double* last
    cdef double* times
    cdef double* total
    cdef double t0, delta, limit, wrap, wrapped, jitter = m.jitter
    if not (value >= 0.0 and value <= MAX_COUNTER):
        m.anom[i * NK + A_COUNTER_BAD_VALUE] += 1
        return False
    if which == 0:
        last, times, total = m.ci_last, m.ci_t, m.ci_wh
    else:
        last, times, total = m.ce_last, m.ce_t, m.ce_wh
    t0 = times[i]
    if t0 != t0:
        last[i] = value
        times[i] = t
        return True
    if t <= t0:
        m.anom[i * NK + A_COUNTER_OUT_OF_ORDER] += 1
        return False
    delta = value - last[i]
    limit = m.max_power[i] * (t - t0) / 3600.0 + jitter
    if delta >= 0.0:
        if delta <= limit:
            total[i] += delta
        else:
            m.anom[i * NK + A_COUNTER_JUMP] += 1
        last[i] = value
    elif delta >= -jitter:
        m.anom[i * NK + A_COUNTER_BACKSTEP] += 1
    else:
        wrap = m.wrap[i]
        wrapped = delta + wrap
        if wrap > 0.0 and wrapped >= 0.0 and wrapped <= limit:
            total[i] += wrapped
            m.anom[i * NK + A_COUNTER_WRAP] += 1
        else:
            m.anom[i * NK + A_COUNTER_RESET] += 1
        last[i] = value
    times[i] = t
    return True


cdef Py_ssize_t add_counters_c(Meter* m, const int32_t* idx, const double* ts,
                               const double* imp, const double* exp,
                               Py_ssize_t count) noexcept nogil:
    cdef Py_ssize_t k, accepted = 0
    cdef int32_t i
    cdef double t
    cdef bint used
    for k in range(count):
        i = idx[k]
        if not (0 <= i < m.n):
            m.site_anom[A_COUNTER_UNKNOWN_LOAD] += 1
            continue
        t = ts[k]
        if not (t >= 0.0 and t <= MAX_T):
            m.anom[i * NK + A_COUNTER_BAD_VALUE] += 1
            continue
        used = register_c(m, i, 0, t, imp[k])
        if exp != NULL and register_c(m, i, 1, t, exp[k]):
            used = True
        accepted += used
    return accepted


cdef void reset_period_c(Meter* m) noexcept nogil:
    cdef Py_ssize_t j, n = m.n
    cdef int64_t slot, best
    for j in range(n):
        flush(m, j)
    while True:  # finalise open windows, oldest first
        best = -1
        for slot in range(RING):
            if m.ring_w[slot] != NO_WINDOW and (best < 0 or m.ring_w[slot] < m.ring_w[best]):
                best = slot
        if best < 0:
            break
        finalize(m, best)
    memset(m.import_wh, 0, n * sizeof(double))
    memset(m.export_wh, 0, n * sizeof(double))
    memset(m.carbon, 0, n * sizeof(double))
    memset(m.gap_s, 0, n * sizeof(double))
    memset(m.ci_wh, 0, n * sizeof(double))
    memset(m.ce_wh, 0, n * sizeof(double))
    memset(m.tou_wh, 0, n * m.n_periods * sizeof(double))
    memset(m.tou_cost, 0, n * m.n_periods * sizeof(double))
    memset(m.anom, 0, n * NK * sizeof(int64_t))
    memset(m.site_anom, 0, NK * sizeof(int64_t))
    for j in range(n):
        m.max_kw[j] = NAN
        m.max_w[j] = NO_WINDOW
    m.site_carbon = 0.0
    m.est_import = 0.0
    m.est_export = 0.0
    m.site_max_kw = NAN
    m.site_max_w = NO_WINDOW
    m.accepted = 0


cdef double* _f64(object array) except NULL:
    cdef double[::1] view = array.reshape(-1)
    return &view[0]


cdef int64_t* _i64(object array) except NULL:
    cdef int64_t[::1] view = array.reshape(-1)
    return &view[0]


cdef int32_t* _i32(object array) except NULL:
    cdef int32_t[::1] view = array.reshape(-1)
    return &view[0]


cdef int8_t* _i8(object array) except NULL:
    cdef int8_t[::1] view = array.reshape(-1)
    return &view[0]


cdef class MeterAggregator:
    """MeterAggregator(n_loads, *, roles=None, utc_offset_s=28800, demand_window_s=900,
    max_gap_s=300.0, tariff=None, emission_factor_kg_per_kwh=0.5306,
    grid_renewable_fraction=0.0, counter_wrap_wh=0.0, counter_max_power_w=1e7,
    counter_jitter_wh=10.0)

    Per-load energy, demand, time-of-use cost and carbon from power samples and counters.

    Compiled implementation; see :class:`fastcore._meter_py.MeterAggregator` (identical
    API and results) and docs/fastcore.md for the full specification.
    """

    cdef Meter m
    cdef object _config
    cdef object _tables
    cdef dict _arrays
    cdef object _hot
    cdef object __weakref__

    def __init__(self, n_loads, *, roles=None, utc_offset_s=28800, demand_window_s=900,
                 max_gap_s=300.0, tariff=None, emission_factor_kg_per_kwh=0.5306,
                 grid_renewable_fraction=0.0, counter_wrap_wh=0.0, counter_max_power_w=1.0e7,
                 counter_jitter_wh=10.0):
        config = MeterConfig.create(
            n_loads, roles=roles, utc_offset_s=utc_offset_s, demand_window_s=demand_window_s,
            max_gap_s=max_gap_s, tariff=tariff,
            emission_factor_kg_per_kwh=emission_factor_kg_per_kwh,
            grid_renewable_fraction=grid_renewable_fraction, counter_wrap_wh=counter_wrap_wh,
            counter_max_power_w=counter_max_power_w, counter_jitter_wh=counter_jitter_wh)
        self._setup(config, new_raw_state(config.n_loads, config.n_periods))

    cdef _setup(self, config, dict raw):
        cdef Meter* m = &self.m
        check_raw(raw, config.n_loads, config.n_periods)
        n = config.n_loads
        self._config = config
        self._tables = tables = compile_tables(config)
        arrays = {}
        for name in LOAD_F64_FIELDS + RING_F64_FIELDS + ("tou_wh", "tou_cost", "ring_imp"):
            arrays[name] = np.array(raw[name], dtype=np.float64, order="C", copy=True)
        for name in LOAD_I64_FIELDS + ("anomalies", "ring_w", "site_anomalies"):
            arrays[name] = np.array(raw[name], dtype=np.int64, order="C", copy=True)
        hot = np.empty((n, 5), dtype=np.float64)
        hot[:, 0] = raw["last_t"]
        hot[:, 1] = raw["last_p"]
        hot[:, 2] = raw["seg_end"]
        hot[:, 3] = raw["acc_imp"]
        hot[:, 4] = raw["acc_exp"]
        arrays["roles"] = np.array(config.roles, dtype=np.int8, order="C", copy=True)
        arrays["wrap"] = np.array(config.counter_wrap_wh, dtype=np.float64, copy=True)
        arrays["max_power"] = np.array(config.counter_max_power_w, dtype=np.float64, copy=True)
        arrays["month_season"] = np.array(tables.month_season, dtype=np.int32, copy=True)
        arrays["day_profile"] = np.array(tables.day_profile, dtype=np.int32, copy=True)
        arrays["special"] = np.array(tables.special, dtype=np.int32, copy=True)
        arrays["minute_period"] = np.array(tables.minute_period, dtype=np.int32, copy=True)
        arrays["next_change"] = np.array(tables.next_change, dtype=np.int32, copy=True)
        arrays["prices"] = np.array(tables.prices, dtype=np.float64, copy=True)
        arrays["window_ef"] = np.array(tables.window_ef, dtype=np.float64, copy=True)
        self._arrays = arrays
        self._hot = hot
        m.n = n
        m.hot = <Hot*>_f64(hot)
        m.price = _f64(arrays["price"])
        m.import_wh = _f64(arrays["import_wh"])
        m.export_wh = _f64(arrays["export_wh"])
        m.win_imp = _f64(arrays["win_imp_wh"])
        m.last_kw = _f64(arrays["last_kw"])
        m.max_kw = _f64(arrays["max_kw"])
        m.carbon = _f64(arrays["carbon_kg"])
        m.gap_s = _f64(arrays["gap_s"])
        m.ci_last = _f64(arrays["ci_last"])
        m.ci_t = _f64(arrays["ci_t"])
        m.ce_last = _f64(arrays["ce_last"])
        m.ce_t = _f64(arrays["ce_t"])
        m.ci_wh = _f64(arrays["ci_wh"])
        m.ce_wh = _f64(arrays["ce_wh"])
        m.ctx_w = _i64(arrays["ctx_w"])
        m.period = _i64(arrays["period"])
        m.last_w = _i64(arrays["last_w"])
        m.max_w = _i64(arrays["max_w"])
        m.tou_wh = _f64(arrays["tou_wh"])
        m.tou_cost = _f64(arrays["tou_cost"])
        m.anom = _i64(arrays["anomalies"])
        m.ring_w = _i64(arrays["ring_w"])
        m.gimp = _f64(arrays["ring_gimp"])
        m.gexp = _f64(arrays["ring_gexp"])
        m.nimp = _f64(arrays["ring_nimp"])
        m.nexp = _f64(arrays["ring_nexp"])
        m.ring_imp = _f64(arrays["ring_imp"])
        m.site_anom = _i64(arrays["site_anomalies"])
        m.site_carbon = raw["site_carbon"]
        m.est_import = raw["est_import"]
        m.est_export = raw["est_export"]
        m.site_max_kw = raw["site_max_kw"]
        m.newest = raw["newest"]
        m.site_max_w = raw["site_max_w"]
        m.accepted = raw["accepted"]
        m.max_gap = config.max_gap_s
        m.off = float(config.utc_offset_s)
        m.window_f = float(config.demand_window_s)
        m.jitter = config.counter_jitter_wh
        m.per_day = 86400 // config.demand_window_s
        m.metered = config.metered_grid
        m.role = _i8(arrays["roles"])
        m.wrap = _f64(arrays["wrap"])
        m.max_power = _f64(arrays["max_power"])
        m.month_season = _i32(arrays["month_season"])
        m.day_profile = _i32(arrays["day_profile"])
        m.n_day_types = tables.n_day_types
        m.n_periods = tables.n_periods
        m.special_first = tables.special_first
        m.n_special = tables.n_special
        m.special = _i32(arrays["special"])
        m.day_cached = NO_WINDOW
        m.minute_period = _i32(arrays["minute_period"])
        m.next_change = _i32(arrays["next_change"])
        m.prices = _f64(arrays["prices"])
        m.window_ef = _f64(arrays["window_ef"])

    def _raw_state(self):
        """Copy of the raw state arrays (the layout shared with the twin)."""
        raw = {name: array.copy() for name, array in self._arrays.items()
               if name not in ("roles", "wrap", "max_power", "month_season", "day_profile",
                               "special", "minute_period", "next_change", "prices",
                               "window_ef")}
        hot = self._hot
        raw["last_t"] = hot[:, 0].copy()
        raw["last_p"] = hot[:, 1].copy()
        raw["seg_end"] = hot[:, 2].copy()
        raw["acc_imp"] = hot[:, 3].copy()
        raw["acc_exp"] = hot[:, 4].copy()
        raw.update(site_carbon=self.m.site_carbon, est_import=self.m.est_import,
                   est_export=self.m.est_export, site_max_kw=self.m.site_max_kw,
                   newest=self.m.newest, site_max_w=self.m.site_max_w,
                   accepted=self.m.accepted)
        return raw

    @property
    def n_loads(self):
        """Number of loads (indices 0 .. n_loads-1)."""
        return self.m.n

    @property
    def config(self):
        """The validated configuration."""
        return self._config

    @property
    def accepted_samples(self):
        """Samples accepted (integrated or starting a new chain) this period."""
        return self.m.accepted

    def state(self):
        """Everything needed to resume after a restart, as a JSON-serialisable dict."""
        return raw_to_json(self._config, self._raw_state())

    @classmethod
    def from_state(cls, state):
        """Rebuild an aggregator from :meth:`state` output (ValueError if invalid)."""
        config, raw = raw_from_json(state)
        cdef MeterAggregator self = cls.__new__(cls)
        self._setup(config, raw)
        return self

    def totals(self):
        """Per-load figures of the current period (copies; see LoadTotals)."""
        return load_totals(self._config, self._tables, self._raw_state())

    def site_figures(self):
        """Site figures of the current period (see SiteFigures)."""
        return site_figures(self._config, self._tables, self._raw_state())

    def anomalies(self):
        """Count of every anomaly kind this period, summed over loads."""
        return anomaly_totals(self._raw_state())

    def add_samples(self, load_index, timestamp_s, power_w):
        """Add power samples (int32 load index, float64 UNIX s, float64 W); returns the
        number accepted. TypeError/ValueError for wrong dtype/shape; bad values are
        dropped and counted."""
        idx, ts, pw = check_samples(load_index, timestamp_s, power_w)
        cdef const int32_t[::1] vi = idx
        cdef const double[::1] vt = ts
        cdef const double[::1] vp = pw
        cdef Py_ssize_t count = vi.shape[0], accepted
        if count == 0:
            return 0
        with nogil:
            accepted = add_samples_c(&self.m, &vi[0], &vt[0], &vp[0], count)
        return accepted

    def add_counters(self, load_index, timestamp_s, import_wh, export_wh=None):
        """Add cumulative counter readings (Wh); returns rows of which at least one
        register was used."""
        idx, ts, imp, exp = check_counters(load_index, timestamp_s, import_wh, export_wh)
        cdef const int32_t[::1] vi = idx
        cdef const double[::1] vt = ts
        cdef const double[::1] vimp = imp
        cdef const double[::1] vexp
        cdef const double* pexp = NULL
        cdef Py_ssize_t count = vi.shape[0], accepted
        if count == 0:
            return 0
        if exp is not None:
            vexp = exp
            pexp = &vexp[0]
        with nogil:
            accepted = add_counters_c(&self.m, &vi[0], &vt[0], &vimp[0], pexp, count)
        return accepted

    def reset_period(self):
        """Start a new accounting period (see the twin's docstring for the rules)."""
        with nogil:
            reset_period_c(&self.m)
