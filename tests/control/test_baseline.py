"""DR baselines on hand-made histories: each method's value, coverage and quality, and
the fallback when history is short (never an hour's average from seconds of start-up)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from controller.control.baseline import (
    BaselineInputs,
    BaselineMethod,
    BaselineQuality,
    choose_baseline,
    compute,
)
from controller.tariffs import load_tariff
from fastcore import WORKDAY

ZONE = ZoneInfo("Asia/Shanghai")
CALENDAR = load_tariff("shandong-2024-commercial").calendar
EVENT = dt.datetime(2024, 12, 10, 14, 0, tzinfo=ZONE).timestamp()  # a Tuesday, 30 min


def at(day: dt.date, hour: int, minute: int) -> float:
    return dt.datetime(day.year, day.month, day.day, hour, minute, tzinfo=ZONE).timestamp()


def history_of(per_day: dict[dt.date, float]) -> dict[float, float]:
    """Window history: on each day, 14:00 at the day's value and 14:15 at value + 10."""
    windows = {}
    for day, kw in per_day.items():
        windows[at(day, 14, 0)] = kw
        windows[at(day, 14, 15)] = kw + 10.0
    return windows


def inputs(windows: dict[float, float], samples: list[tuple[float, float]] | None = None,
           **changes: object) -> BaselineInputs:
    def history(series: str, since: float, until: float) -> list[tuple[float, float]]:
        return sorted((t, kw) for t, kw in windows.items() if since <= t < until)

    base = BaselineInputs(samples=samples or [], history=history, series="grid",
                          start_s=EVENT, duration_s=1800.0, zone=ZONE,
                          working_day=lambda day: CALENDAR.day_type(day) == WORKDAY)
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


DEC = {day: 100.0 + day for day in range(2, 10)}  # Dec 2..9 at 102..109 kW
WEEKEND_KW = 500.0  # Dec 7, 8 (Saturday, Sunday): must never count


def december() -> dict[dt.date, float]:
    days = {dt.date(2024, 12, d): kw for d, kw in DEC.items()}
    days[dt.date(2024, 12, 7)] = days[dt.date(2024, 12, 8)] = WEEKEND_KW
    return days


def test_jiangsu_last_five_working_days() -> None:
    # Dec 9, 6, 5, 4, 3: (109 + 106 + 105 + 104 + 103) / 5 = 105.4 at 14:00, 115.4 at 14:15
    kw, coverage = compute(BaselineMethod.WORKING_DAYS, inputs(history_of(december())),
                           pre_event_s=3600, days=10)
    assert kw == pytest.approx(110.4)
    assert coverage == 1.0


def test_event_days_are_not_normal_working_days() -> None:
    # Dec 5 had an event: Dec 9, 6, 4, 3, 2 -> (109 + 106 + 104 + 103 + 102) / 5 + 5
    kw, _ = compute(BaselineMethod.WORKING_DAYS,
                    inputs(history_of(december()), event_days=frozenset({dt.date(2024, 12, 5)})),
                    pre_event_s=3600, days=10)
    assert kw == pytest.approx(109.8)


def test_beijing_top_five_of_ten_from_two_days_back() -> None:
    days = december()
    days[dt.date(2024, 12, 9)] = 1000.0  # D-1: not in the pool
    november = {29: 150.0, 28: 90.0, 27: 140.0, 26: 80.0, 25: 130.0}
    days.update({dt.date(2024, 11, d): kw for d, kw in november.items()})
    # pool: Dec 6, 5, 4, 3, 2 and Nov 29, 28, 27, 26, 25; top five by the event's mean:
    # 150, 140, 130, 106, 105 -> 126.2 at 14:00, 136.2 at 14:15
    kw, coverage = compute(BaselineMethod.TOP_DAYS, inputs(history_of(days)),
                           pre_event_s=3600, days=10)
    assert kw == pytest.approx(131.2)
    assert coverage == 1.0


def test_realtime_15_minutes_before_control() -> None:
    samples = [(EVENT - 900 + k, 90_000.0) for k in range(900)]
    baseline = choose_baseline(BaselineMethod.REALTIME_15MIN, inputs({}, samples),
                               pre_event_s=3600, days=10)
    assert baseline.method is BaselineMethod.REALTIME_15MIN
    assert baseline.kw == pytest.approx(90.0)
    assert baseline.coverage == pytest.approx(899 / 900)
    assert baseline.quality is BaselineQuality.GOOD


def test_pre_event_from_stored_windows() -> None:
    windows = {at(dt.date(2024, 12, 10), 13, 15 * k): 80.0 + k for k in range(4)}
    kw, coverage = compute(BaselineMethod.PRE_EVENT, inputs(windows), pre_event_s=3600,
                           days=10)
    assert kw == pytest.approx(81.5)
    assert coverage == 1.0


def test_seconds_of_start_up_never_make_an_hour_average() -> None:
    """25 s of samples, a start-up transient at 95 kW settling to 85 kW."""
    samples = [(EVENT - 25 + k, (95_000.0 if k < 10 else 85_000.0)) for k in range(25)]
    baseline = choose_baseline(BaselineMethod.PRE_EVENT, inputs({}, samples),
                               pre_event_s=3600, days=10)
    assert baseline.method is BaselineMethod.JUST_BEFORE
    assert baseline.kw == pytest.approx(85.0)  # the load just before, not the mean
    assert baseline.quality is BaselineQuality.LOW
    assert "too little history for pre_event (coverage 1 %" in baseline.note


def test_an_uncovered_method_falls_back_to_the_best_covered_one() -> None:
    three_days = {dt.date(2024, 12, d): 100.0 for d in (9, 6, 5)}
    samples = [(EVENT - 900 + k, 90_000.0) for k in range(900)]
    baseline = choose_baseline(BaselineMethod.WORKING_DAYS,
                               inputs(history_of(three_days), samples),
                               pre_event_s=3600, days=10)
    assert baseline.method is BaselineMethod.REALTIME_15MIN
    assert baseline.quality is BaselineQuality.LOW
    assert baseline.note.startswith("too little history for working_days (coverage 60 %")
