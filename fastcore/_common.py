"""Shared, implementation-independent parts of the fastcore kernels.

Both the compiled kernels (``_meter.pyx``, ``_shed.pyx``) and their pure-Python twins
(``_meter_py.py``, ``_shed_py.py``) import this module, so everything here is the single
definition of: constants (roles, anomaly kinds), the aggregator configuration, the raw
state layout, the result dataclasses, input validation (dtype/shape) and the vectorised
read-out math that turns raw state into totals and site figures. The tariff calendar
lives in :mod:`fastcore._tariff`. Only the per-sample / per-load loops differ between
the two implementations. See ``docs/fastcore.md`` for the full specification.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from fastcore._tariff import TariffCalendar, compile_calendar

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
I32 = npt.NDArray[np.int32]
I8 = npt.NDArray[np.int8]

# --------------------------------------------------------------------------- roles

ROLE_CONSUMER: Final = 0
ROLE_PV: Final = 1
ROLE_GRID: Final = 2
ROLE_BATTERY: Final = 3
ROLE_NAMES: Final = ("consumer", "pv", "grid", "battery")

# ---------------------------------------------------------------------- anomaly kinds

ANOMALY_KINDS: Final = (
    "unknown_load",  # sample: load index outside [0, n_loads)           -> dropped
    "bad_time",  # sample: timestamp NaN/inf or outside [0, MAX_TIMESTAMP_S]  -> dropped
    "bad_power",  # sample: power NaN, +-inf or |power| > MAX_POWER_W   -> dropped
    "duplicate",  # sample: same timestamp as the last accepted one      -> dropped
    "out_of_order",  # sample: older than the last accepted one (negative step) -> dropped
    "gap",  # sample accepted, but the interval before it exceeded max_gap_s -> not integrated
    "late_window",  # energy for a demand window the site already finalised
    "counter_unknown_load",  # counter reading: load index outside [0, n_loads) -> dropped
    "counter_bad_value",  # counter reading: bad time, value NaN/inf/<0/>1e15 Wh -> dropped
    "counter_out_of_order",  # counter reading not newer than the last one  -> dropped
    "counter_backstep",  # small decrease within counter_jitter_wh         -> ignored
    "counter_wrap",  # decrease explained by the configured wrap-around   -> counted as energy
    "counter_reset",  # decrease not explained by a wrap: new baseline, no energy
    "counter_jump",  # increase above counter_max_power_w * dt: new baseline, no energy
)
N_ANOMALY_KINDS: Final = len(ANOMALY_KINDS)
(
    A_UNKNOWN_LOAD,
    A_BAD_TIME,
    A_BAD_POWER,
    A_DUPLICATE,
    A_OUT_OF_ORDER,
    A_GAP,
    A_LATE_WINDOW,
    A_COUNTER_UNKNOWN_LOAD,
    A_COUNTER_BAD_VALUE,
    A_COUNTER_OUT_OF_ORDER,
    A_COUNTER_BACKSTEP,
    A_COUNTER_WRAP,
    A_COUNTER_RESET,
    A_COUNTER_JUMP,
) = range(N_ANOMALY_KINDS)

# ------------------------------------------------------------------------- limits

MAX_TIMESTAMP_S: Final = 1.0e10  # ~ year 2286; later (or negative) timestamps are bad_time
MAX_POWER_W: Final = 1.0e12  # |power| above this (or NaN/inf) is bad_power
MAX_COUNTER_WH: Final = 1.0e15  # counter readings above this (or < 0, NaN) are bad values
RING_WINDOWS: Final = 8  # site demand windows kept open for late loads (2 h at 15 min)
NO_WINDOW: Final = -(2**62)  # "no window" sentinel in int64 window fields
SECONDS_PER_DAY: Final = 86400
MAX_UTC_OFFSET_S: Final = 14 * 3600
STATE_FORMAT: Final = "pedf.fastcore.meter"
STATE_VERSION: Final = 2  # 2: any number of periods, day types, holidays (reads 1 too)

# Default grid emission factor: China's national average electricity CO2 emission factor
# for 2023 published by the Ministry of Ecology and Environment and the National Bureau of
# Statistics (MEE/NBS), kgCO2/kWh. The controller's carbon-factor data file
# (controller/tariffs/carbon-factors.toml) holds it with its source, next to the regional
# factors; a test checks the two agree.
CHINA_GRID_EMISSION_FACTOR_KG_PER_KWH: Final = 0.5306


# ============================================================================ config


def _role_codes(roles: Iterable[str | int] | npt.NDArray[Any] | None, n_loads: int) -> I8:
    if roles is None:
        return np.zeros(n_loads, dtype=np.int8)
    codes: list[int] = []
    for role in roles:
        if isinstance(role, str):
            if role not in ROLE_NAMES:
                raise ValueError(f"unknown role {role!r}; expected one of {ROLE_NAMES}")
            codes.append(ROLE_NAMES.index(role))
        else:
            code = int(role)
            if not 0 <= code < len(ROLE_NAMES):
                raise ValueError(f"role code {code} outside 0..{len(ROLE_NAMES) - 1}")
            codes.append(code)
    if len(codes) != n_loads:
        raise ValueError(f"roles has {len(codes)} entries for {n_loads} loads")
    return np.asarray(codes, dtype=np.int8)


def _per_load(value: float | Sequence[float] | F64, n_loads: int, name: str,
              *, allow_inf: bool) -> F64:
    array = np.array(value, dtype=np.float64)
    if array.ndim == 0:
        array = np.full(n_loads, float(array), dtype=np.float64)
    if array.shape != (n_loads,):
        raise ValueError(f"{name} must be a number or {n_loads} numbers, got {array.shape}")
    bad = np.isnan(array) | (array < 0) | (np.isinf(array) if not allow_inf else False)
    if bad.any():
        raise ValueError(f"{name} must be >= 0{'' if allow_inf else ' and finite'}")
    return array


@dataclass(frozen=True, eq=False)
class MeterConfig:
    """Validated, immutable configuration of a :class:`MeterAggregator` (see its docs)."""

    n_loads: int
    roles: I8
    utc_offset_s: int
    demand_window_s: int
    max_gap_s: float
    tariff: TariffCalendar
    emission_factor_kg_per_kwh: tuple[float, ...]  # 24 local hourly values
    grid_renewable_fraction: float
    counter_wrap_wh: F64
    counter_max_power_w: F64
    counter_jitter_wh: float
    metered_grid: bool = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "metered_grid", bool((self.roles == ROLE_GRID).any()))

    @property
    def n_periods(self) -> int:
        """Time-of-use periods of the tariff (columns of the TOU buckets)."""
        return self.tariff.n_periods

    @classmethod
    def create(
        cls,
        n_loads: int,
        *,
        roles: Iterable[str | int] | npt.NDArray[Any] | None = None,
        utc_offset_s: int = 8 * 3600,
        demand_window_s: int = 900,
        max_gap_s: float = 300.0,
        tariff: TariffCalendar | None = None,
        emission_factor_kg_per_kwh: float | Sequence[float] = (
            CHINA_GRID_EMISSION_FACTOR_KG_PER_KWH),
        grid_renewable_fraction: float = 0.0,
        counter_wrap_wh: float | Sequence[float] | F64 = 0.0,
        counter_max_power_w: float | Sequence[float] | F64 = 1.0e7,
        counter_jitter_wh: float = 10.0,
    ) -> MeterConfig:
        if isinstance(n_loads, bool) or not isinstance(n_loads, int | np.integer):
            raise TypeError(f"n_loads must be an int, got {type(n_loads).__name__}")
        n = int(n_loads)
        if not 1 <= n <= 2**31 - 1:
            raise ValueError(f"n_loads must be 1 .. 2**31-1, got {n}")
        if int(utc_offset_s) != utc_offset_s or abs(int(utc_offset_s)) > MAX_UTC_OFFSET_S:
            raise ValueError(f"utc_offset_s must be whole seconds within +-14 h, got "
                             f"{utc_offset_s}")
        if (int(demand_window_s) != demand_window_s or not 60 <= demand_window_s <= 86400
                or SECONDS_PER_DAY % int(demand_window_s)):
            raise ValueError("demand_window_s must be whole seconds, 60..86400, dividing a "
                             f"day (e.g. 300, 900, 1800, 3600), got {demand_window_s}")
        max_gap = float(max_gap_s)
        if not (math.isfinite(max_gap) and max_gap > 0):
            raise ValueError(f"max_gap_s must be finite and > 0, got {max_gap_s}")
        factors = ([float(emission_factor_kg_per_kwh)] * 24
                   if isinstance(emission_factor_kg_per_kwh, int | float)
                   else [float(f) for f in emission_factor_kg_per_kwh])
        if len(factors) == 1:
            factors *= 24
        if len(factors) != 24 or any(not (math.isfinite(f) and 0 <= f <= 10) for f in factors):
            raise ValueError("emission_factor_kg_per_kwh must be one value or 24 hourly values, "
                             "each 0..10 kgCO2e/kWh")
        fraction = float(grid_renewable_fraction)
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"grid_renewable_fraction must be 0..1, got {fraction}")
        jitter = float(counter_jitter_wh)
        if not (math.isfinite(jitter) and jitter >= 0):
            raise ValueError(f"counter_jitter_wh must be finite and >= 0, got {jitter}")
        if tariff is None:
            tariff = TariffCalendar.flat_rate(0.0)
        if not isinstance(tariff, TariffCalendar):
            raise TypeError(f"tariff must be a TariffCalendar, got {type(tariff).__name__}")
        return cls(
            n_loads=n, roles=_role_codes(roles, n), utc_offset_s=int(utc_offset_s),
            demand_window_s=int(demand_window_s), max_gap_s=max_gap, tariff=tariff,
            emission_factor_kg_per_kwh=tuple(factors), grid_renewable_fraction=fraction,
            counter_wrap_wh=_per_load(counter_wrap_wh, n, "counter_wrap_wh", allow_inf=False),
            counter_max_power_w=_per_load(counter_max_power_w, n, "counter_max_power_w",
                                          allow_inf=True),
            counter_jitter_wh=jitter,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_loads": self.n_loads,
            "roles": [ROLE_NAMES[int(r)] for r in self.roles],
            "utc_offset_s": self.utc_offset_s,
            "demand_window_s": self.demand_window_s,
            "max_gap_s": self.max_gap_s,
            "tariff": self.tariff.to_dict(),
            "emission_factor_kg_per_kwh": list(self.emission_factor_kg_per_kwh),
            "grid_renewable_fraction": self.grid_renewable_fraction,
            "counter_wrap_wh": _json_floats(self.counter_wrap_wh),
            "counter_max_power_w": _json_floats(self.counter_max_power_w),
            "counter_jitter_wh": self.counter_jitter_wh,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MeterConfig:
        return cls.create(
            int(data["n_loads"]), roles=data["roles"], utc_offset_s=data["utc_offset_s"],
            demand_window_s=data["demand_window_s"], max_gap_s=data["max_gap_s"],
            tariff=TariffCalendar.from_dict(data["tariff"]),
            emission_factor_kg_per_kwh=data["emission_factor_kg_per_kwh"],
            grid_renewable_fraction=data["grid_renewable_fraction"],
            counter_wrap_wh=_from_json_floats(data["counter_wrap_wh"]),
            counter_max_power_w=_from_json_floats(data["counter_max_power_w"], none=math.inf),
            counter_jitter_wh=data["counter_jitter_wh"],
        )


@dataclass(frozen=True, eq=False)
class CompiledTables:
    """Lookup tables the kernels use (derived from a MeterConfig; see
    :class:`fastcore._tariff.CalendarTables` for how a day's profile is found)."""

    n_periods: int
    n_day_types: int
    month_season: I32  # (12,) season index of months 1..12
    day_profile: I32  # (n_seasons * n_day_types,) profile of each season and day type
    minute_period: I32  # (n_profiles * 1440,) period of each local minute, per profile
    next_change: I32  # (n_profiles * 1440,) first later minute with another period, <= 1440
    prices: F64  # (n_seasons * n_periods,) CNY/kWh
    special_first: int  # day number of special[0]
    special: I32  # (>= 1,) day type of holidays / work days from special_first, -1 = none
    n_special: int  # valid entries of special (0: no holidays)
    window_ef: F64  # (86400 / demand_window_s,) mean kgCO2e/kWh over each window of a day


def compile_tables(config: MeterConfig) -> CompiledTables:
    calendar = compile_calendar(config.tariff)
    window_s = config.demand_window_s
    factors = config.emission_factor_kg_per_kwh
    window_ef: list[float] = []
    for start in range(0, SECONDS_PER_DAY, window_s):
        # time-weighted mean of the hourly factors over [start, start + window_s)
        total = 0.0
        second = start
        while second < start + window_s:
            hour_end = min((second // 3600 + 1) * 3600, start + window_s)
            total += factors[second // 3600] * (hour_end - second)
            second = hour_end
        window_ef.append(total / window_s)
    return CompiledTables(
        n_periods=calendar.n_periods,
        n_day_types=calendar.n_day_types,
        month_season=np.array(calendar.month_season, dtype=np.int32),
        day_profile=np.array(calendar.day_profile, dtype=np.int32),
        minute_period=np.array(calendar.minute_period, dtype=np.int32),
        next_change=np.array(calendar.next_change, dtype=np.int32),
        prices=np.array(calendar.prices, dtype=np.float64),
        special_first=calendar.special_first,
        special=np.array(calendar.special or [-1], dtype=np.int32),
        n_special=len(calendar.special),
        window_ef=np.array(window_ef, dtype=np.float64),
    )


def month_of_day(day: int) -> int:
    """Month (1..12) of a day number counted from 1970-01-01 (proleptic Gregorian).

    Same integer algorithm as the compiled kernel (H. Hinnant's ``civil_from_days``).
    """
    z = day + 719468  # >= 0 for every accepted timestamp
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    return mp + 3 if mp < 10 else mp - 9


# ============================================================================ raw state
#
# The raw state is what both implementations export/import: numpy arrays and scalars.
# ``state()`` turns it into plain JSON-serialisable lists (NaN -> None).

LOAD_F64_FIELDS: Final = (
    "last_t", "last_p", "seg_end", "acc_imp", "acc_exp", "price", "import_wh", "export_wh",
    "win_imp_wh", "last_kw", "max_kw", "carbon_kg", "gap_s",
    "ci_last", "ci_t", "ce_last", "ce_t", "ci_wh", "ce_wh",
)
LOAD_I64_FIELDS: Final = ("ctx_w", "period", "last_w", "max_w")
LOAD_2D_FIELDS: Final = ("tou_wh", "tou_cost")  # (n_loads, n_periods)
RING_F64_FIELDS: Final = ("ring_gimp", "ring_gexp", "ring_nimp", "ring_nexp")
SITE_F64_FIELDS: Final = ("site_carbon", "est_import", "est_export", "site_max_kw")
SITE_I64_FIELDS: Final = ("newest", "site_max_w", "accepted")

RawState = dict[str, Any]


def new_raw_state(n: int, n_periods: int) -> RawState:
    """Raw state of a fresh aggregator with ``n`` loads and ``n_periods`` TOU periods."""
    nan = math.nan
    raw: RawState = {name: np.zeros(n, dtype=np.float64) for name in LOAD_F64_FIELDS}
    for name in ("last_t", "last_p", "seg_end", "last_kw", "max_kw",
                 "ci_last", "ci_t", "ce_last", "ce_t"):
        raw[name][:] = nan
    for name in LOAD_I64_FIELDS:
        raw[name] = np.full(n, NO_WINDOW if name != "period" else 0, dtype=np.int64)
    for name in LOAD_2D_FIELDS:
        raw[name] = np.zeros((n, n_periods), dtype=np.float64)
    raw["anomalies"] = np.zeros((n, N_ANOMALY_KINDS), dtype=np.int64)
    raw["ring_w"] = np.full(RING_WINDOWS, NO_WINDOW, dtype=np.int64)
    for name in RING_F64_FIELDS:
        raw[name] = np.zeros(RING_WINDOWS, dtype=np.float64)
    raw["ring_imp"] = np.zeros((RING_WINDOWS, n), dtype=np.float64)
    for name in SITE_F64_FIELDS:
        raw[name] = nan if name == "site_max_kw" else 0.0
    raw["newest"] = NO_WINDOW
    raw["site_max_w"] = NO_WINDOW
    raw["accepted"] = 0
    raw["site_anomalies"] = np.zeros(N_ANOMALY_KINDS, dtype=np.int64)
    return raw


def _json_floats(array: npt.NDArray[Any]) -> list[Any]:
    return [None if not math.isfinite(v) else v for v in array.ravel().tolist()]


def _from_json_floats(values: Sequence[Any], none: float = math.nan) -> F64:
    return np.array([none if v is None else v for v in values], dtype=np.float64)


def raw_to_json(config: MeterConfig, raw: RawState) -> dict[str, Any]:
    """The JSON-serialisable ``state()`` dict (see docs/fastcore.md, "State format")."""
    loads: dict[str, Any] = {}
    for name in LOAD_F64_FIELDS:
        loads[name] = _json_floats(raw[name])
    for name in LOAD_I64_FIELDS:
        loads[name] = raw[name].tolist()
    for name in LOAD_2D_FIELDS:
        loads[name] = [_json_floats(row) for row in raw[name]]
    loads["anomalies"] = raw["anomalies"].tolist()
    ring: dict[str, Any] = {"ring_w": raw["ring_w"].tolist(),
                            "ring_imp": [_json_floats(r) for r in raw["ring_imp"]]}
    for name in RING_F64_FIELDS:
        ring[name] = _json_floats(raw[name])
    site: dict[str, Any] = {name: _json_floats(np.array([raw[name]]))[0]
                            for name in SITE_F64_FIELDS}
    site.update({name: int(raw[name]) for name in SITE_I64_FIELDS})
    site["site_anomalies"] = raw["site_anomalies"].tolist()
    return {"format": STATE_FORMAT, "version": STATE_VERSION, "config": config.to_dict(),
            "anomaly_kinds": list(ANOMALY_KINDS), "loads": loads, "ring": ring, "site": site}


def raw_from_json(state: Mapping[str, Any]) -> tuple[MeterConfig, RawState]:
    """Inverse of :func:`raw_to_json`; raises ``ValueError`` on a foreign or broken state."""
    if not isinstance(state, Mapping):
        raise TypeError(f"state must be a dict, got {type(state).__name__}")
    if state.get("format") != STATE_FORMAT or state.get("version") not in (1, STATE_VERSION):
        raise ValueError(f"not a {STATE_FORMAT} v{STATE_VERSION} state: "
                         f"format={state.get('format')!r} version={state.get('version')!r}")
    if list(state.get("anomaly_kinds", ())) != list(ANOMALY_KINDS):
        raise ValueError("state was written with different anomaly kinds")
    try:
        config = MeterConfig.from_dict(state["config"])
        n, width = config.n_loads, config.n_periods
        loads, ring, site = state["loads"], state["ring"], state["site"]
        raw: RawState = {}
        for name in LOAD_F64_FIELDS:
            raw[name] = _from_json_floats(loads[name])
        for name in LOAD_I64_FIELDS:
            raw[name] = np.array(loads[name], dtype=np.int64)
        for name in LOAD_2D_FIELDS:
            raw[name] = np.array(loads[name], dtype=np.float64).reshape(n, width)
        raw["anomalies"] = np.array(loads["anomalies"], dtype=np.int64).reshape(
            n, N_ANOMALY_KINDS)
        raw["ring_w"] = np.array(ring["ring_w"], dtype=np.int64)
        raw["ring_imp"] = np.array(ring["ring_imp"], dtype=np.float64).reshape(
            RING_WINDOWS, n)
        for name in RING_F64_FIELDS:
            raw[name] = _from_json_floats(ring[name])
        for name in SITE_F64_FIELDS:
            raw[name] = math.nan if site[name] is None else float(site[name])
        for name in SITE_I64_FIELDS:
            raw[name] = int(site[name])
        raw["site_anomalies"] = np.array(site["site_anomalies"], dtype=np.int64)
    except (KeyError, TypeError) as exc:
        raise ValueError(f"malformed {STATE_FORMAT} state: {exc!r}") from exc
    check_raw(raw, n, width)
    return config, raw


def check_raw(raw: RawState, n: int, n_periods: int) -> None:
    """Raise ``ValueError`` unless ``raw`` has the shapes of an ``n``-load state with
    ``n_periods`` time-of-use periods."""
    expected: dict[str, tuple[int, ...]] = dict.fromkeys(LOAD_F64_FIELDS, (n,))
    expected.update(dict.fromkeys(LOAD_I64_FIELDS, (n,)))
    expected.update(dict.fromkeys(LOAD_2D_FIELDS, (n, n_periods)))
    expected.update({"anomalies": (n, N_ANOMALY_KINDS), "ring_w": (RING_WINDOWS,),
                     "ring_imp": (RING_WINDOWS, n), "site_anomalies": (N_ANOMALY_KINDS,)})
    expected.update(dict.fromkeys(RING_F64_FIELDS, (RING_WINDOWS,)))
    for name, shape in expected.items():
        if np.shape(raw[name]) != shape:
            raise ValueError(f"state field {name!r} has shape {np.shape(raw[name])}, "
                             f"expected {shape}")
    if ((raw["period"] < 0) | (raw["period"] >= n_periods)).any():
        raise ValueError("state field 'period' out of range")


# ============================================================================ results


@dataclass(frozen=True, eq=False)
class LoadTotals:
    """Per-load figures of the current period (arrays of length n_loads; copies).

    Energy in Wh, power in kW, money in CNY, carbon in kgCO2e, times are UNIX seconds
    (UTC) of a demand window's start. NaN means "not available yet".
    """

    import_wh: F64  # trapezoidal integration of power > 0
    export_wh: F64  # trapezoidal integration of power < 0, as a positive number
    tou_import_wh: F64  # (n, n_periods) import energy per period, in tariff.periods order
    tou_cost_cny: F64  # (n, n_periods) import energy x period price
    cost_cny: F64  # sum of tou_cost_cny
    counter_import_wh: F64  # energy from cumulative import counters
    counter_export_wh: F64  # energy from cumulative export counters
    demand_kw: F64  # average import kW of the last completed demand window
    demand_window_start_s: F64  # start of that window
    window_kw: F64  # import energy so far in the open window / window length
    window_start_s: F64  # start of the open window
    max_demand_kw: F64  # highest completed-window demand this period
    max_demand_time_s: F64  # start of the window where it occurred (earliest on ties)
    carbon_kg: F64  # allocated grid carbon (see docs: per-window grid share)
    gap_s: F64  # seconds of intervals longer than max_gap_s (not integrated)
    anomalies: I64  # (n, len(ANOMALY_KINDS)) counts per load and kind


@dataclass(frozen=True)
class SiteFigures:
    """Site-level figures of the current period (see docs/fastcore.md for formulas).

    Ratios are 0..1 and NaN when undefined (no PV generation / no consumption yet).
    ``grid_metered`` says whether grid energy comes from grid-role loads (True) or is
    estimated per demand window from the balance of all other loads (False).
    """

    grid_metered: bool
    grid_import_wh: float
    grid_export_wh: float
    pv_generation_wh: float
    pv_self_consumed_wh: float
    battery_charge_wh: float
    battery_discharge_wh: float
    consumption_wh: float
    self_consumption_ratio: float
    self_sufficiency_ratio: float
    renewable_share: float
    peak_demand_kw: float
    peak_demand_time_s: float
    carbon_kg: float
    grid_cost_cny: float


# ====================================================================== validation


_DTYPES: dict[type[np.generic], np.dtype[Any]] = {}


def check_array(name: str, array: object, dtype: type[np.generic]) -> npt.NDArray[Any]:
    """Return ``array`` as a C-contiguous 1-D array of exactly ``dtype``.

    Raises ``TypeError`` when it is not a numpy array of that dtype (no silent casts) and
    ``ValueError`` when it is not one-dimensional.
    """
    wanted = _DTYPES.get(dtype)
    if wanted is None:
        wanted = _DTYPES[dtype] = np.dtype(dtype)
    if type(array) is not np.ndarray and not isinstance(array, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray of {wanted.name}, "
                        f"got {type(array).__name__}")
    if array.dtype is not wanted and array.dtype != wanted:
        raise TypeError(f"{name} must have dtype {wanted.name} (native byte order), "
                        f"got {array.dtype}; convert with .astype(np.{wanted.name})")
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {array.shape}")
    if array.flags.c_contiguous:
        return array
    return np.ascontiguousarray(array)


def check_same_length(**arrays: npt.NDArray[Any]) -> int:
    lengths = {name: a.shape[0] for name, a in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"arrays differ in length: {lengths}")
    return int(next(iter(lengths.values())))


def check_samples(load_index: object, timestamp_s: object,
                  power_w: object) -> tuple[I32, F64, F64]:
    idx = check_array("load_index", load_index, np.int32)
    ts = check_array("timestamp_s", timestamp_s, np.float64)
    pw = check_array("power_w", power_w, np.float64)
    check_same_length(load_index=idx, timestamp_s=ts, power_w=pw)
    return idx, ts, pw


def check_counters(load_index: object, timestamp_s: object, import_wh: object,
                   export_wh: object | None) -> tuple[I32, F64, F64, F64 | None]:
    idx = check_array("load_index", load_index, np.int32)
    ts = check_array("timestamp_s", timestamp_s, np.float64)
    imp = check_array("import_wh", import_wh, np.float64)
    exp = None if export_wh is None else check_array("export_wh", export_wh, np.float64)
    if exp is None:
        check_same_length(load_index=idx, timestamp_s=ts, import_wh=imp)
    else:
        check_same_length(load_index=idx, timestamp_s=ts, import_wh=imp, export_wh=exp)
    return idx, ts, imp, exp


# ======================================================================= read-out


WH_PER_DOUBLED_WS: Final = 0.5 / 3600.0  # accumulators hold 2 x watt-seconds


def _pending(raw: RawState) -> tuple[F64, F64, npt.NDArray[np.bool_]]:
    """Energy of the open segment of each load (Wh), exactly as a flush would book it."""
    pend_imp = raw["acc_imp"] * WH_PER_DOUBLED_WS
    pend_exp = -raw["acc_exp"] * WH_PER_DOUBLED_WS
    has_ctx = raw["ctx_w"] != NO_WINDOW
    return pend_imp, pend_exp, has_ctx


def _window_ef(config: MeterConfig, tables: CompiledTables, windows: I64) -> F64:
    per_day = SECONDS_PER_DAY // config.demand_window_s
    return tables.window_ef[np.mod(windows, per_day)]


@dataclass(frozen=True, eq=False)
class _Provisional:
    """Ring windows with the pending segments added (what a finalisation would see)."""

    slot_w: I64  # (R,) window of each slot or NO_WINDOW
    gimp: F64
    gexp: F64
    nimp: F64
    nexp: F64
    imp: F64  # (R, n)
    late_imp: F64  # (n,) pending import that belongs to windows no longer in the ring
    late_ef: F64  # (n,) emission factor for late_imp


def _provisional(config: MeterConfig, tables: CompiledTables, raw: RawState) -> _Provisional:
    pend_imp, pend_exp, has_ctx = _pending(raw)
    ring_w = raw["ring_w"]
    ctx_w = raw["ctx_w"]
    slots = np.mod(ctx_w, RING_WINDOWS)
    in_ring = has_ctx & (ring_w[slots] == ctx_w)
    imp = raw["ring_imp"].copy()
    loads = np.nonzero(in_ring)[0]
    imp[slots[loads], loads] += pend_imp[loads]
    grid = config.roles == ROLE_GRID
    gimp, gexp = raw["ring_gimp"].copy(), raw["ring_gexp"].copy()
    nimp, nexp = raw["ring_nimp"].copy(), raw["ring_nexp"].copy()
    for target, mask, values in ((gimp, grid, pend_imp), (gexp, grid, pend_exp),
                                 (nimp, ~grid, pend_imp), (nexp, ~grid, pend_exp)):
        chosen = loads[mask[loads]]
        np.add.at(target, slots[chosen], values[chosen])
    late = has_ctx & ~in_ring
    late_imp = np.where(late, pend_imp, 0.0)
    late_ef = np.where(late, _window_ef(config, tables, np.where(late, ctx_w, 0)), 0.0)
    return _Provisional(ring_w, gimp, gexp, nimp, nexp, imp, late_imp, late_ef)


def window_grid(metered: bool, gimp: float, gexp: float, nimp: float,
                nexp: float) -> tuple[float, float, float]:
    """(grid import Wh, grid export Wh, grid share g) of one demand window.

    g = grid import / (grid import + energy delivered by non-grid loads); 1 when the
    window saw no supply at all. Same formula as the kernels' window finalisation.
    """
    if metered:
        gi, ge = gimp, gexp
    else:
        net = nimp - nexp
        gi = net if net > 0.0 else 0.0
        ge = -net if net < 0.0 else 0.0
    supply = gi + nexp
    g = gi / supply if supply > 0.0 else 1.0
    return gi, ge, g


def load_totals(config: MeterConfig, tables: CompiledTables, raw: RawState) -> LoadTotals:
    """Per-load read-out, including the open segments and provisional carbon."""
    n = config.n_loads
    nan = math.nan
    window_s = config.demand_window_s
    off = config.utc_offset_s
    pend_imp, pend_exp, has_ctx = _pending(raw)
    rows = np.arange(n)
    period = raw["period"]
    tou = raw["tou_wh"].copy()
    tou[rows, period] += np.where(has_ctx, pend_imp, 0.0)
    tou_cost = raw["tou_cost"].copy()
    tou_cost[rows, period] += np.where(has_ctx, pend_imp * raw["price"] / 1000.0, 0.0)

    def window_start(windows: I64) -> F64:
        return np.where(windows != NO_WINDOW, windows.astype(np.float64) * window_s - off, nan)

    prov = _provisional(config, tables, raw)
    carbon = raw["carbon_kg"].copy()
    grid = config.roles == ROLE_GRID
    for slot in range(RING_WINDOWS):
        w = int(prov.slot_w[slot])
        if w == NO_WINDOW:
            continue
        _, _, g = window_grid(config.metered_grid, float(prov.gimp[slot]),
                              float(prov.gexp[slot]), float(prov.nimp[slot]),
                              float(prov.nexp[slot]))
        ef = float(_window_ef(config, tables, np.array([w]))[0])
        carbon += prov.imp[slot] * np.where(grid, 1.0, g) * ef / 1000.0
    carbon += prov.late_imp * prov.late_ef / 1000.0
    win_imp = raw["win_imp_wh"] + np.where(has_ctx, pend_imp, 0.0)
    return LoadTotals(
        import_wh=raw["import_wh"] + pend_imp,
        export_wh=raw["export_wh"] + pend_exp,
        tou_import_wh=tou,
        tou_cost_cny=tou_cost,
        cost_cny=tou_cost.sum(axis=1),
        counter_import_wh=raw["ci_wh"].copy(),
        counter_export_wh=raw["ce_wh"].copy(),
        demand_kw=np.where(raw["last_w"] != NO_WINDOW, raw["last_kw"], nan),
        demand_window_start_s=window_start(raw["last_w"]),
        window_kw=np.where(has_ctx, win_imp * 3.6 / window_s, nan),
        window_start_s=window_start(raw["ctx_w"]),
        max_demand_kw=np.where(raw["max_w"] != NO_WINDOW, raw["max_kw"], nan),
        max_demand_time_s=window_start(raw["max_w"]),
        carbon_kg=carbon,
        gap_s=raw["gap_s"].copy(),
        anomalies=raw["anomalies"].copy(),
    )


def site_figures(config: MeterConfig, tables: CompiledTables, raw: RawState) -> SiteFigures:
    """Site read-out: energy balance, PV ratios, peak demand, carbon, grid cost."""
    nan = math.nan
    totals = load_totals(config, tables, raw)
    roles = config.roles
    imp, exp = totals.import_wh, totals.export_wh
    prov = _provisional(config, tables, raw)
    metered = config.metered_grid
    window_s = config.demand_window_s
    carbon = float(raw["site_carbon"])
    est_import, est_export = float(raw["est_import"]), float(raw["est_export"])
    peak_kw, peak_w = float(raw["site_max_kw"]), int(raw["site_max_w"])
    newest = int(raw["newest"])
    for slot in np.argsort(prov.slot_w, kind="stable"):
        w = int(prov.slot_w[slot])
        if w == NO_WINDOW:
            continue
        gi, ge, _ = window_grid(metered, float(prov.gimp[slot]), float(prov.gexp[slot]),
                                float(prov.nimp[slot]), float(prov.nexp[slot]))
        ef = float(_window_ef(config, tables, np.array([w]))[0])
        carbon += gi * ef / 1000.0
        est_import += gi
        est_export += ge
        demand = gi * 3.6 / window_s
        if w < newest and (peak_w == NO_WINDOW or demand > peak_kw):
            peak_kw, peak_w = demand, w
    grid = roles == ROLE_GRID
    late_grid = prov.late_imp * (grid if metered else ~grid)
    carbon += float(np.sum(late_grid * prov.late_ef / 1000.0))
    if metered:
        grid_import = float(imp[grid].sum())
        grid_export = float(exp[grid].sum())
        grid_cost = float(totals.cost_cny[grid].sum())
    else:
        grid_import = est_import + float(late_grid.sum())
        grid_export = est_export
        grid_cost = nan
    pv = roles == ROLE_PV
    battery = roles == ROLE_BATTERY
    pv_generation = float(exp[pv].sum())
    charge, discharge = float(imp[battery].sum()), float(exp[battery].sum())
    consumption = max(0.0, grid_import - grid_export + pv_generation + discharge - charge)
    self_consumed = min(max(pv_generation - grid_export, 0.0), pv_generation)
    fraction = config.grid_renewable_fraction
    return SiteFigures(
        grid_metered=metered,
        grid_import_wh=grid_import,
        grid_export_wh=grid_export,
        pv_generation_wh=pv_generation,
        pv_self_consumed_wh=self_consumed,
        battery_charge_wh=charge,
        battery_discharge_wh=discharge,
        consumption_wh=consumption,
        self_consumption_ratio=self_consumed / pv_generation if pv_generation > 0 else nan,
        self_sufficiency_ratio=(min(1.0, max(0.0, 1.0 - grid_import / consumption))
                                if consumption > 0 else nan),
        renewable_share=(min(1.0, max(0.0, (self_consumed + fraction * grid_import)
                                      / consumption)) if consumption > 0 else nan),
        peak_demand_kw=peak_kw if peak_w != NO_WINDOW else nan,
        peak_demand_time_s=(float(peak_w * window_s - config.utc_offset_s)
                            if peak_w != NO_WINDOW else nan),
        carbon_kg=carbon,
        grid_cost_cny=grid_cost,
    )


def anomaly_totals(raw: RawState) -> dict[str, int]:
    counts = raw["anomalies"].sum(axis=0) + raw["site_anomalies"]
    return {kind: int(c) for kind, c in zip(ANOMALY_KINDS, counts.tolist(), strict=True)}
