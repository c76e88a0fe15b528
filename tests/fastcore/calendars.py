"""Calendars for the fastcore tests: the shipped Shandong 2024 calendar, and a variant
that uses every day-type branch of the kernels (weekend layout, a custom holiday type,
plain holidays, a 调休 work day) around the turn of 2024/2025."""

from __future__ import annotations

import dataclasses
import datetime as dt

from controller.tariffs import load_tariff
from fastcore import DayLayout, Holiday, TariffCalendar

SHANDONG = load_tariff("shandong-2024-commercial").calendar

WEEKEND_FLAT = DayLayout.of({"flat": "00:00-24:00"})
DEEP_VALLEY_HOLIDAY = DayLayout.of({"deep_valley": "10:00-15:00"}, others="flat")


def _with_variants(calendar: TariffCalendar) -> TariffCalendar:
    seasons = tuple(dataclasses.replace(season, variants=(
        ("weekend", WEEKEND_FLAT), ("deep_valley_holiday", DEEP_VALLEY_HOLIDAY)))
        for season in calendar.seasons)
    holidays = (Holiday(dt.date(2024, 12, 31)),
                *(Holiday(dt.date(2025, 1, 1) + dt.timedelta(days=k), "deep_valley_holiday")
                  for k in range(3)))
    return dataclasses.replace(calendar, name="Shandong with day types", seasons=seasons,
                               holidays=holidays, workdays=(dt.date(2025, 1, 5),))


DAY_TYPES = _with_variants(SHANDONG)
