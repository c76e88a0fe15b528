"""Demand-response baselines the way Chinese programmes compute them. Pure functions.

A baseline is what the site would have imported without the event (kW). Each method
says how much of its window it actually had — its **coverage** (0..1) — and gets a
quality verdict: ``good`` when the coverage reaches ``min_coverage`` (default 0.9),
``low`` otherwise.

* ``realtime_15min`` — the average import in the 15 minutes before control (real-time
  demand response);
* ``pre_event`` — today's average import over ``pre_event_s`` before the event (from the
  control loop's grid samples, else the stored demand windows);
* ``working_days`` — for each demand window of the event, the average of the same window
  on the last 5 normal working days (holidays and event days excluded, 调休 work days
  included): invitation DR, Jiangsu practice;
* ``top_days`` — the 5 days with the highest load in the event's windows among the last
  10 days of the same kind (working / non-working), starting two days back (D−2):
  Beijing practice;
* ``similar_days`` — the same windows on the last ``days`` days of the same kind.

Practice as reported at chinasmartgrid.com.cn (2015-10-19); the national 《电力需求响应
监测与评价导则》 standardises such rules (not consulted here).

:func:`choose_baseline` uses the configured method when it is covered; otherwise it
says so, takes the best covered method, and marks the baseline low-quality. When no
method is covered (a gateway started seconds ago) it falls back to ``just_before`` —
the newest grid reading before the event — never to an hour's average built from a few
seconds of start-up.
"""

from __future__ import annotations

import enum
import itertools
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, tzinfo

#: (series, since, until) -> [(window start, kW)], e.g. Store.windows.
WindowHistory = Callable[[str, float, float], list[tuple[float, float]]]
#: Local date -> whether it is a normal working day (tariff calendar: holidays, 调休).
WorkingDay = Callable[[date], bool]

REALTIME_S = 900.0  # real-time DR: the 15 minutes before control
JUST_BEFORE_S = 10.0  # the fallback: the import just before the event


class BaselineMethod(enum.Enum):
    REALTIME_15MIN = "realtime_15min"
    PRE_EVENT = "pre_event"
    WORKING_DAYS = "working_days"
    TOP_DAYS = "top_days"
    SIMILAR_DAYS = "similar_days"
    JUST_BEFORE = "just_before"  # fallback only, never configured

    @property
    def label(self) -> str:
        return _LABELS[self]


_LABELS = {
    BaselineMethod.REALTIME_15MIN: "15 min before control (real-time DR)",
    BaselineMethod.PRE_EVENT: "today's pre-event average",
    BaselineMethod.WORKING_DAYS: "last 5 normal working days (Jiangsu)",
    BaselineMethod.TOP_DAYS: "top 5 of the last 10 days (Beijing)",
    BaselineMethod.SIMILAR_DAYS: "similar days",
    BaselineMethod.JUST_BEFORE: "the load just before the event",
}


class BaselineQuality(enum.Enum):
    GOOD = "good"
    LOW = "low"


@dataclass(frozen=True)
class Baseline:
    """A baseline (kW, None when the method found nothing), its method, coverage (0..1)
    and quality; ``note`` explains a fallback."""

    method: BaselineMethod
    kw: float | None
    coverage: float
    quality: BaselineQuality
    note: str = ""

    def describe(self) -> str:
        value = "unknown" if self.kw is None else f"{self.kw:.1f} kW"
        text = (f"{value} ({self.method.value}: {self.method.label}; coverage "
                f"{100 * self.coverage:.0f} %, {self.quality.value} quality)")
        return f"{text} — {self.note}" if self.note else text


@dataclass(frozen=True)
class BaselineInputs:
    """Everything the methods read: grid samples ``(t, W)`` from the control loop, the
    stored demand-window history of ``series``, which days are working days, event days
    to leave out, and the event's start and duration (s)."""

    samples: Sequence[tuple[float, float]]
    history: WindowHistory
    series: str
    start_s: float
    duration_s: float
    zone: tzinfo
    working_day: WorkingDay
    window_s: float = 900.0
    max_gap_s: float = 60.0  # a sample gap longer than this is not covered
    event_days: frozenset[date] = frozenset()


# -- sample-based methods -----------------------------------------------------------------


def sample_average(samples: Sequence[tuple[float, float]], start_s: float, span_s: float,
                   max_gap_s: float) -> tuple[float | None, float]:
    """Time-weighted average (kW) of samples ``(t, W)`` in ``[start − span, start)`` and
    the share of the span covered by intervals no longer than ``max_gap_s``."""
    window = [(t, w) for t, w in samples if start_s - span_s <= t < start_s]
    total = covered = 0.0
    for (t0, w0), (t1, w1) in itertools.pairwise(window):
        dt = t1 - t0
        if dt <= max_gap_s:
            total += 0.5 * (w0 + w1) * dt
            covered += dt
    if covered <= 0:
        if window:  # a single sample (or only gaps): its value, with no coverage
            return statistics.fmean(w for _, w in window) / 1000.0, 0.0
        return None, 0.0
    return total / covered / 1000.0, min(1.0, covered / span_s)


def realtime_15min(inputs: BaselineInputs) -> tuple[float | None, float]:
    return sample_average(inputs.samples, inputs.start_s, REALTIME_S, inputs.max_gap_s)


def pre_event(inputs: BaselineInputs, span_s: float) -> tuple[float | None, float]:
    """Samples first; the stored windows when they cover more of the span."""
    kw, coverage = sample_average(inputs.samples, inputs.start_s, span_s, inputs.max_gap_s)
    windows = inputs.history(inputs.series, inputs.start_s - span_s,
                             inputs.start_s - inputs.window_s + 1e-6)
    window_cover = min(1.0, len(windows) * inputs.window_s / span_s)
    if windows and window_cover > coverage:
        return statistics.fmean(v for _, v in windows), window_cover
    return kw, coverage


# -- day-based methods --------------------------------------------------------------------


def event_windows(inputs: BaselineInputs) -> list[float]:
    """Start times of the demand windows the event covers."""
    first = inputs.start_s - inputs.start_s % inputs.window_s
    count = max(1, int(-(-(inputs.start_s + inputs.duration_s - first) // inputs.window_s)))
    return [first + k * inputs.window_s for k in range(count)]


def _same_time(window_s: float, day: date, zone: tzinfo) -> float:
    """The UNIX time of the same local wall-clock time as ``window_s`` on ``day``."""
    local = datetime.fromtimestamp(window_s, zone)
    return datetime.combine(day, local.timetz().replace(tzinfo=None)).replace(
        tzinfo=zone).timestamp()


def _day_values(inputs: BaselineInputs, day: date, windows: list[float]) -> list[float | None]:
    values: list[float | None] = []
    for window in windows:
        moment = _same_time(window, day, inputs.zone)
        found = inputs.history(inputs.series, moment, moment + 1.0)
        values.append(found[0][1] if found else None)
    return values


def _candidate_days(inputs: BaselineInputs, *, working: bool, count: int, skip: int,
                    look_back: int = 60) -> list[date]:
    today = datetime.fromtimestamp(inputs.start_s, inputs.zone).date()
    days: list[date] = []
    for back in range(1 + skip, look_back + 1):
        day = today - timedelta(days=back)
        if inputs.working_day(day) == working and day not in inputs.event_days:
            days.append(day)
            if len(days) == count:
                break
    return days


def average_of_days(inputs: BaselineInputs, days: list[date], expected_days: int
                    ) -> tuple[float | None, float]:
    """Mean over the event's windows of each window's mean over ``days``; coverage =
    values found / (expected days × windows)."""
    windows = event_windows(inputs)
    per_day = [_day_values(inputs, day, windows) for day in days]
    found = 0
    per_window: list[float] = []
    for k in range(len(windows)):
        column = [row[k] for row in per_day if row[k] is not None]
        found += len(column)
        if column:
            per_window.append(statistics.fmean(v for v in column if v is not None))
    coverage = found / (expected_days * len(windows))
    return (statistics.fmean(per_window) if per_window else None), coverage


def working_days(inputs: BaselineInputs, days: int = 5) -> tuple[float | None, float]:
    """Jiangsu: the same windows on the last ``days`` normal working days."""
    chosen = _candidate_days(inputs, working=True, count=days, skip=0)
    return average_of_days(inputs, chosen, days)


def top_days(inputs: BaselineInputs, pool: int = 10, top: int = 5
             ) -> tuple[float | None, float]:
    """Beijing: among the last ``pool`` days of the event day's kind from D−2 back, the
    ``top`` days with the highest load over the event's windows."""
    today = datetime.fromtimestamp(inputs.start_s, inputs.zone).date()
    candidates = _candidate_days(inputs, working=inputs.working_day(today), count=pool, skip=1)
    windows = event_windows(inputs)
    complete = []
    found = 0
    for day in candidates:
        values = _day_values(inputs, day, windows)
        found += sum(v is not None for v in values)
        if all(v is not None for v in values):
            complete.append((statistics.fmean(v for v in values if v is not None), day))
    coverage = found / (pool * len(windows))
    best = [day for _, day in sorted(complete, reverse=True)[:top]]
    kw, _ = average_of_days(inputs, best, top)
    return kw, coverage


def similar_days(inputs: BaselineInputs, days: int) -> tuple[float | None, float]:
    """The same windows on the last ``days`` days of the event day's kind."""
    today = datetime.fromtimestamp(inputs.start_s, inputs.zone).date()
    chosen = _candidate_days(inputs, working=inputs.working_day(today), count=days, skip=0)
    return average_of_days(inputs, chosen, days)


# -- choosing ------------------------------------------------------------------------------


def just_before(inputs: BaselineInputs) -> tuple[float | None, float]:
    """The newest grid reading before the event (kW) — the load just before it — and how
    much of the 10 s before the event the readings cover (its coverage)."""
    earlier = [(t, w) for t, w in inputs.samples if t < inputs.start_s]
    if not earlier:
        return None, 0.0
    _, coverage = sample_average(earlier, inputs.start_s, JUST_BEFORE_S, inputs.max_gap_s)
    return earlier[-1][1] / 1000.0, coverage


def compute(method: BaselineMethod, inputs: BaselineInputs, *, pre_event_s: float,
            days: int) -> tuple[float | None, float]:
    """(kW, coverage) of one method."""
    if method is BaselineMethod.REALTIME_15MIN:
        return realtime_15min(inputs)
    if method is BaselineMethod.PRE_EVENT:
        return pre_event(inputs, pre_event_s)
    if method is BaselineMethod.WORKING_DAYS:
        return working_days(inputs)
    if method is BaselineMethod.TOP_DAYS:
        return top_days(inputs)
    if method is BaselineMethod.SIMILAR_DAYS:
        return similar_days(inputs, days)
    return just_before(inputs)


#: Order in which other methods are tried when the configured one is not covered.
FALLBACK_ORDER = (BaselineMethod.REALTIME_15MIN, BaselineMethod.PRE_EVENT,
                  BaselineMethod.WORKING_DAYS, BaselineMethod.SIMILAR_DAYS,
                  BaselineMethod.TOP_DAYS)


def choose_baseline(method: BaselineMethod, inputs: BaselineInputs, *, pre_event_s: float,
                    days: int, min_coverage: float = 0.9) -> Baseline:
    """The configured method if its coverage reaches ``min_coverage``; else the covered
    method with the highest coverage (low quality); else the import just before the
    event (low quality). ``note`` says why."""
    kw, coverage = compute(method, inputs, pre_event_s=pre_event_s, days=days)
    if kw is not None and coverage >= min_coverage:
        return Baseline(method, kw, coverage, BaselineQuality.GOOD)
    shortfall = (f"too little history for {method.value} (coverage {100 * coverage:.0f} %, "
                 f"needs {100 * min_coverage:.0f} %)")
    best: tuple[float, BaselineMethod, float] | None = None
    for other in FALLBACK_ORDER:
        if other is method:
            continue
        other_kw, other_cov = compute(other, inputs, pre_event_s=pre_event_s, days=days)
        if other_kw is not None and other_cov >= min_coverage and (
                best is None or other_cov > best[2]):
            best = (other_kw, other, other_cov)
    if best is not None:
        return Baseline(best[1], best[0], best[2], BaselineQuality.LOW,
                        f"{shortfall}: used {best[1].value}")
    kw, coverage = just_before(inputs)
    return Baseline(BaselineMethod.JUST_BEFORE, kw, coverage, BaselineQuality.LOW,
                    f"{shortfall} and no other method covered: used the load just before "
                    "the event")
