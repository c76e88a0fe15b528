"""Tariff files, bills (energy, 需量/容量, 力调) and carbon factors against hand-computed
examples: the shipped Shandong 2024 calendar, a month with holidays, a PF of 0.82."""

from __future__ import annotations

import datetime as dt
import math
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import fastcore
from controller.metering import MeteringSettings, metering_settings
from controller.tariffs import (
    BasicChargeBasis,
    BillSettings,
    carbon_factor,
    load_tariff,
    month_power_factor,
    monthly_bill,
    power_factor_tables,
)
from drivers.schema import ConfigError
from drivers.site import load_site

SHIPPED = Path(__file__).resolve().parents[2] / "controller" / "tariffs"
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "jinan-office.toml"
CST = dt.timezone(dt.timedelta(hours=8))


def segments(name: str, date: dt.date) -> list[str]:
    return [str(s) for s in load_tariff(name).calendar.segments(date)]


@pytest.mark.parametrize(("date", "expected"), [
    (dt.date(2024, 4, 10), ["00:00-10:00 flat (平段)", "10:00-11:00 valley (低谷)",
                            "11:00-14:00 deep_valley (深谷)", "14:00-15:00 valley (低谷)",
                            "15:00-17:00 flat (平段)", "17:00-20:00 sharp (尖峰)",
                            "20:00-22:00 peak (高峰)", "22:00-24:00 flat (平段)"]),
    (dt.date(2024, 7, 15), ["00:00-06:00 valley (低谷)", "06:00-16:00 flat (平段)",
                            "16:00-17:00 peak (高峰)", "17:00-22:00 sharp (尖峰)",
                            "22:00-24:00 flat (平段)"]),
    (dt.date(2024, 10, 15), ["00:00-10:00 flat (平段)", "10:00-11:00 valley (低谷)",
                             "11:00-14:00 deep_valley (深谷)", "14:00-15:00 valley (低谷)",
                             "15:00-16:00 flat (平段)", "16:00-17:00 peak (高峰)",
                             "17:00-19:00 sharp (尖峰)", "19:00-21:00 peak (高峰)",
                             "21:00-24:00 flat (平段)"]),
    (dt.date(2024, 12, 2), ["00:00-10:00 flat (平段)", "10:00-11:00 valley (低谷)",
                            "11:00-14:00 deep_valley (深谷)", "14:00-15:00 valley (低谷)",
                            "15:00-16:00 flat (平段)", "16:00-19:00 sharp (尖峰)",
                            "19:00-21:00 peak (高峰)", "21:00-24:00 flat (平段)"]),
])
def test_the_shipped_calendar_is_the_2024_shandong_table(date: dt.date,
                                                         expected: list[str]) -> None:
    assert segments("shandong-2024-commercial", date) == expected


def test_the_shipped_calendar_cites_its_source_and_says_prices_are_illustrative() -> None:
    tariff = load_tariff("shandong-2024-commercial")
    assert "m.shadafang.com" in tariff.source
    assert "illustrative" in tariff.prices_note
    calendar = tariff.calendar
    assert calendar.day_type(dt.date(2024, 10, 3)) == fastcore.HOLIDAY  # 国庆节
    assert calendar.day_type(dt.date(2024, 10, 12)) == fastcore.WORKDAY  # a Saturday worked
    assert calendar.day_type(dt.date(2024, 10, 13)) == fastcore.WEEKEND


# -- a month with holidays: a calendar of our own ------------------------------------------

HOLIDAY_CALENDAR = """\
# Test calendar: Shandong's autumn, and 深谷 10:00–15:00 on the National Day holidays.
name = "autumn with deep-valley holidays"
[[periods]]
name = "sharp"
[[periods]]
name = "peak"
[[periods]]
name = "flat"
[[periods]]
name = "valley"
[[periods]]
name = "deep_valley"
[prices_cny_per_kwh]
"尖峰" = 1.3
"高峰" = 1.105
"平段" = 0.65
"低谷" = 0.195
"深谷" = 0.065
[basic_charge]
demand_cny_per_kw_month = 38.0
capacity_cny_per_kva_month = 28.0
[[seasons]]
name = "all year"
months = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]
[seasons.layout]
"深谷" = "11:00-14:00"
"低谷" = ["10:00-11:00", "14:00-15:00"]
"高峰" = ["16:00-17:00", "19:00-21:00"]
"尖峰" = "17:00-19:00"
others = "flat"
[seasons.variants.deep_valley_holiday]
deep_valley = "10:00-15:00"
others = "flat"
[[holidays]]
name = "国庆节"
dates = ["2024-10-01..2024-10-07"]
day_type = "deep_valley_holiday"
"""

# October 2024 at a constant 100 kW, by hand: 24 ordinary days of 尖峰 2 h, 高峰 3 h,
# 平段 14 h, 低谷 2 h, 深谷 3 h; 7 holidays of 深谷 5 h, 平段 19 h.
OCTOBER_KWH = {"sharp": 24 * 200, "peak": 24 * 300, "flat": 24 * 1400 + 7 * 1900,
               "valley": 24 * 200, "deep_valley": 24 * 300 + 7 * 500}
# 4800 × 1.3 + 7200 × 1.105 + 46900 × 0.65 + 4800 × 0.195 + 10700 × 0.065
OCTOBER_ENERGY_CNY = 6240 + 7956 + 30485 + 936 + 695.5  # = 46312.5


def october_import(path: Path) -> tuple[list[float], float]:
    """Feed the metering kernel a month at 100 kW: kWh per period and the peak demand."""
    calendar = load_tariff(str(path)).calendar
    agg = fastcore.MeterAggregator(1, roles=["grid"], tariff=calendar)
    start = dt.datetime(2024, 10, 1, tzinfo=CST).timestamp()
    times = start + np.arange(0, 31 * 86400 + 1, 300.0)
    agg.add_samples(np.zeros(len(times), np.int32), times, np.full(len(times), 100_000.0))
    totals = agg.totals()
    return (totals.tou_import_wh[0] / 1000.0).tolist(), float(totals.max_demand_kw[0])


def test_a_month_with_holidays_is_billed_by_hand(tmp_path: Path) -> None:
    path = tmp_path / "holidays.toml"
    path.write_text(HOLIDAY_CALENDAR, encoding="utf-8")
    tariff = load_tariff(str(path))
    kwh, demand_kw = october_import(path)
    assert dict(zip((p.name for p in tariff.calendar.periods), kwh, strict=True)) == (
        pytest.approx(OCTOBER_KWH, rel=1e-9))
    assert demand_kw == pytest.approx(100.0)
    # PF 0.82 from the month's energy: kvarh = kWh × tan(acos 0.82)
    pf = month_power_factor(sum(kwh), sum(kwh) * math.tan(math.acos(0.82)))
    assert pf == 0.82
    bill = monthly_bill(tariff, 2024, 10, kwh, max_demand_kw=demand_kw, power_factor=pf,
                        settings=BillSettings(BasicChargeBasis.DEMAND,
                                              power_factor_standard=0.90),
                        power_factor_tables=power_factor_tables())
    assert bill.energy_cny == pytest.approx(46312.5)
    assert bill.basic_cny == pytest.approx(3800.0)  # 100 kW × 38 CNY/kW·month
    assert bill.power_factor_adjustment_pct == 4.0  # 0.82 under the 0.90 standard: +4 %
    assert bill.power_factor_adjustment_cny == pytest.approx(0.04 * (46312.5 + 3800.0))
    assert bill.total_cny == pytest.approx(52117.0)
    capacity = monthly_bill(tariff, 2024, 10, kwh,
                            settings=BillSettings(BasicChargeBasis.CAPACITY, 630.0))
    assert capacity.basic_cny == pytest.approx(630 * 28.0)
    assert capacity.total_cny == pytest.approx(46312.5 + 17640.0)


@pytest.mark.parametrize(("standard", "pf", "pct"), [
    (0.90, 0.82, 4.0), (0.85, 0.82, 1.5), (0.80, 0.82, -0.2),  # the PF, 3 tables
    (0.90, 0.90, 0.0), (0.90, 0.95, -0.75), (0.90, 1.00, -0.75), (0.90, 0.94, -0.60),
    (0.90, 0.70, 10.0), (0.90, 0.65, 15.0), (0.90, 0.63, 19.0),  # 0.64 and below: +2 %/0.01
    (0.85, 0.94, -1.10), (0.85, 0.60, 15.0), (0.80, 0.92, -1.30), (0.80, 0.54, 17.0),
])
def test_the_1983_power_factor_table(standard: float, pf: float, pct: float) -> None:
    assert power_factor_tables()[standard].adjustment_pct(pf) == pytest.approx(pct)


def test_month_power_factor_rounds_half_up_to_hundredths() -> None:
    assert month_power_factor(1000.0, 0.0) == 1.0
    assert month_power_factor(0.0, 10.0) is None
    assert month_power_factor(815.0, 1000.0 * math.sin(math.acos(0.815))) == 0.82


@pytest.mark.parametrize(("snippet", "where", "expected"), [
    ('[seasons.layout]\n"深谷" = "11:00-14:00"\n"低谷" = "10:00-11:30"\nothers = "flat"\n',
     "seasons[0].layout", "11:00 is in both"),
    ('[seasons.layout]\nlunch = "11:00-13:00"\nothers = "flat"\n',
     "seasons[0].layout.lunch", "periods declared in [[periods]]"),
    ('[seasons.layout]\nvalley = "00:00-08:00"\n', "seasons[0].layout", "08:00 is in no period"),
])
def test_calendar_errors_name_file_key_and_expectation(tmp_path: Path, snippet: str,
                                                       where: str, expected: str) -> None:
    head = HOLIDAY_CALENDAR[:HOLIDAY_CALENDAR.index("[seasons.layout]")]
    path = tmp_path / "bad.toml"
    path.write_text(head + snippet, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_tariff(str(path))
    assert caught.value.file == str(path)
    assert caught.value.path == where
    assert expected in caught.value.expected


def test_a_custom_period_needs_a_tier(tmp_path: Path) -> None:
    path = tmp_path / "custom.toml"
    path.write_text(HOLIDAY_CALENDAR.replace('name = "deep_valley"\n',
                                             'name = "solar_noon"\nzh = "午间"\n', 1),
                    encoding="utf-8")
    with pytest.raises(ConfigError, match=r"periods\[4\]\.tier: expected the tier"):
        load_tariff(str(path))


# -- carbon -------------------------------------------------------------------------------


def test_carbon_factors_have_year_and_source() -> None:
    latest = carbon_factor("national")
    assert (latest.year, latest.kg_per_kwh) == (2023, (0.5306,))
    assert latest.kg_per_kwh[0] == fastcore.CHINA_GRID_EMISSION_FACTOR_KG_PER_KWH
    assert carbon_factor("north_china").kg_per_kwh == (0.6361,)
    assert carbon_factor("north_china", 2022).kg_per_kwh == (0.6776,)
    assert carbon_factor("national", 2022).kg_per_kwh == (0.5366,)
    assert "MEE/NBS" in carbon_factor("north_china").source
    with pytest.raises(KeyError, match="north_china 2023"):
        carbon_factor("south", 2023)


def test_carbon_of_a_day_by_hand() -> None:
    """100 kWh from the grid at the 2023 North China factor: 63.61 kg CO2."""
    agg = fastcore.MeterAggregator(1, roles=["grid"], emission_factor_kg_per_kwh=(
        carbon_factor("north_china").kg_per_kwh))
    start = dt.datetime(2024, 12, 2, tzinfo=CST).timestamp()
    times = start + np.arange(0, 86400 + 1, 60.0)
    agg.add_samples(np.zeros(len(times), np.int32), times, np.full(len(times), 100_000 / 24))
    assert agg.site_figures().carbon_kg == pytest.approx(63.61, rel=1e-9)


def with_metering(tmp_path: Path, metering: str) -> Path:
    text = EXAMPLE.read_text(encoding="utf-8")
    start = text.index("[metering]")
    end = text.index("[[lines]]")
    path = tmp_path / "site.toml"
    path.write_text(text[:start] + metering + "\n" + text[end:], encoding="utf-8")
    return path


def test_the_demo_site_uses_the_regional_factor_and_the_shandong_calendar() -> None:
    settings = metering_settings(load_site(EXAMPLE))
    assert (settings.carbon.id, settings.carbon.year) == ("north_china", 2023)
    assert settings.tariff.name.startswith("Shandong 2024")
    assert settings.bill == BillSettings(BasicChargeBasis.DEMAND, None, 0.90)


@pytest.mark.parametrize(("metering", "check"), [
    ('[metering]\ncarbon = "national"\ncarbon_year = 2022\n',
     lambda s: s.carbon.kg_per_kwh == (0.5366,)),
    ("[metering]\ncarbon = 0.58\n",
     lambda s: (s.carbon.id, s.carbon.year, s.carbon.kg_per_kwh) == ("site", None, (0.58,))),
    ("[metering]\ncarbon = [" + ", ".join(["0.5"] * 12 + ["0.6"] * 12) + "]\n",
     lambda s: s.carbon.hourly and s.carbon.kg_per_kwh[12] == 0.6),
    ('[metering]\ntariff = "holidays.toml"\n',
     lambda s: s.tariff.name == "autumn with deep-valley holidays"),
])
def test_metering_chooses_calendar_and_carbon(
        tmp_path: Path, metering: str, check: Callable[[MeteringSettings], bool]) -> None:
    (tmp_path / "holidays.toml").write_text(HOLIDAY_CALENDAR, encoding="utf-8")
    assert check(metering_settings(load_site(with_metering(tmp_path, metering))))


@pytest.mark.parametrize(("metering", "where"), [
    ('[metering]\ncarbon = "mars"\n', "metering.carbon"),
    ('[metering]\ncarbon = "national"\ncarbon_year = 1999\n', "metering.carbon_year"),
    ('[metering]\ntariff = "no-such-calendar"\n', "metering.tariff"),
    ('[metering]\ntariff = "missing.toml"\n', "metering.tariff"),
    ('[metering.bill]\nbasic_charge = "capacity"\n', "metering.bill.transformer_kva"),
    ("[metering.bill]\npower_factor_standard = 0.95\n", "metering.bill.power_factor_standard"),
])
def test_metering_errors_name_the_key(tmp_path: Path, metering: str, where: str) -> None:
    with pytest.raises(ConfigError) as caught:
        metering_settings(load_site(with_metering(tmp_path, metering)))
    assert caught.value.path == where


# -- pedf tariff ------------------------------------------------------------------------


def pedf_tariff(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "controller.cli", "tariff", *args],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "COLUMNS": "140"})


def test_pedf_tariff_at_a_moment_and_as_tables(tmp_path: Path) -> None:
    at = pedf_tariff(str(EXAMPLE), "--at", "2024-12-02T11:30")
    assert at.returncode == 0, at.stderr
    assert "2024-12-02T11:30+08:00 (workday, winter): 深谷 deep_valley — 0.0650 CNY/kWh" in (
        at.stdout)
    assert "华北区域电网 North China grid 2023: 0.6361 kg/kWh" in at.stdout
    assert "illustrative" in at.stdout
    month = pedf_tariff(str(EXAMPLE), "--month", "2024-10")
    assert re.search(r"2024-10-01 │ Tue │ holiday\s+│\s+2 │\s+3 │\s+14 │\s+2 │\s+3 │",
                     month.stdout), month.stdout
    assert re.search(r"2024-10-12 │ Sat │ workday", month.stdout)  # 调休
    png = tmp_path / "day.png"
    day = pedf_tariff(str(EXAMPLE), "--date", "2024-07-15", "--png", str(png))
    assert re.search(r"17:00–22:00 │ sharp\s+│ 尖峰 │ sharp\s+│\s+1\.3000", day.stdout)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bad = pedf_tariff(str(EXAMPLE), "--at", "yesterday")
    assert bad.returncode == 2
    assert "Invalid isoformat" in bad.stderr
