"""``pedf tariff``: the period and price at a moment, a day or a month as a table, a day
as a PNG strip."""

from __future__ import annotations

import calendar as monthcal
import datetime as dt
from pathlib import Path
from typing import Any

from rich.table import Table

from controller.report import pyplot, save_png
from controller.tariffs import CarbonFactor, Tariff
from fastcore import Segment, Tier
from fastcore._tariff import hhmm

#: Colours of the tiers in plots (dear = warm, cheap = cool).
TIER_COLOURS = {Tier.SHARP: "#b2182b", Tier.PEAK: "#ef8a62", Tier.FLAT: "#d9d9d9",
                Tier.VALLEY: "#67a9cf", Tier.DEEP_VALLEY: "#2166ac"}


def moment(tariff: Tariff, local: dt.datetime) -> str:
    """One line: the period (English and Chinese) and price in force at ``local``."""
    calendar = tariff.calendar
    period = calendar.period_at(local)
    season = calendar.season(local.month)
    day_type = calendar.day_type(local.date())
    return (f"{local.isoformat(timespec='minutes')} ({day_type}, {season.name}): "
            f"{period.zh} {period.name} — {calendar.price_at(local):.4f} CNY/kWh")


def header(tariff: Tariff, carbon: CarbonFactor | None = None) -> str:
    lines = [f"tariff: {tariff.name} ({Path(tariff.file).name})"]
    if tariff.prices_note:
        lines.append(f"prices: {tariff.prices_note}")
    basic = tariff.basic
    if basic.demand_cny_per_kw_month is not None or basic.capacity_cny_per_kva_month is not None:
        lines.append(f"basic charge: 需量 {basic.demand_cny_per_kw_month} CNY/kW·month, "
                     f"容量 {basic.capacity_cny_per_kva_month} CNY/kVA·month")
    if carbon is not None:
        lines.append(f"carbon factor: {carbon.describe()}")
    return "\n".join(lines)


def day_table(tariff: Tariff, date: dt.date) -> Table:
    calendar = tariff.calendar
    table = Table(title=f"{date.isoformat()} {date.strftime('%A')} — "
                        f"{calendar.day_type(date)}, {calendar.season(date.month).name}")
    for column in ("time", "period", "时段", "tier", "CNY/kWh"):
        table.add_column(column, justify="right" if column == "CNY/kWh" else "left")
    for segment in calendar.segments(date):
        table.add_row(f"{hhmm(segment.start_min)}–{hhmm(segment.end_min)}",
                      segment.period.name, segment.period.zh, segment.period.tier.value,
                      f"{segment.price_cny_per_kwh:.4f}")
    return table


def month_table(tariff: Tariff, year: int, month: int) -> Table:
    """A row per day: weekday, day type, hours in each period."""
    calendar = tariff.calendar
    table = Table(title=f"{year:04d}-{month:02d} — {calendar.season(month).name}; hours per "
                        "period")
    table.add_column("date")
    table.add_column("day")
    table.add_column("day type")
    for period in calendar.periods:
        table.add_column(f"{period.zh}\n{period.name}", justify="right")
    for day in range(1, monthcal.monthrange(year, month)[1] + 1):
        date = dt.date(year, month, day)
        hours = dict.fromkeys(calendar.periods, 0.0)
        for segment in calendar.segments(date):
            hours[segment.period] += (segment.end_min - segment.start_min) / 60.0
        table.add_row(date.isoformat(), date.strftime("%a"), calendar.day_type(date),
                      *(f"{h:g}" if h else "·" for h in hours.values()))
    return table


def strip(tariff: Tariff, date: dt.date, path: Path) -> Path:
    """A PNG of the day: one coloured bar per period stretch, labelled, with prices."""
    plt = pyplot()
    segments: list[Segment] = tariff.calendar.segments(date)
    figure, axes = plt.subplots(figsize=(10, 1.9), dpi=110)
    for segment in segments:
        start, width = segment.start_min / 60.0, (segment.end_min - segment.start_min) / 60.0
        axes.barh(0, width, left=start, height=0.8, color=TIER_COLOURS[segment.period.tier],
                  edgecolor="white")
        label: Any = f"{segment.period.name}\n{segment.price_cny_per_kwh:.3f}"
        if width >= 1.0:
            axes.text(start + width / 2, 0, label, ha="center", va="center",
                      fontsize=8 if width >= 2 else 6.5)
    axes.set_xlim(0, 24)
    axes.set_xticks(range(0, 25, 2))
    axes.set_yticks([])
    axes.set_xlabel("local time, h")
    axes.set_title(f"{Path(tariff.file).stem}: {date.isoformat()} "
                   f"({tariff.calendar.day_type(date)}), CNY/kWh", fontsize=9)
    return save_png(figure, path)
