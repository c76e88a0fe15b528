"""Behaviour of the metering aggregator (run against the kernel and the twin)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
from datetime import UTC, datetime
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from calendars import DAY_TYPES, SHANDONG

from fastcore import (
    ANOMALY_KINDS,
    MAX_PERIODS,
    STANDARD_PERIODS,
    DayLayout,
    Holiday,
    Period,
    TariffCalendar,
    TariffSeason,
    Tier,
)
from fastcore._common import RING_WINDOWS

CST = 8 * 3600  # China Standard Time offset


def local_midnight_utc(year: int, month: int, day: int) -> float:
    """UNIX time of local (UTC+8) midnight."""
    return datetime(year, month, day, tzinfo=UTC).timestamp() - CST


def feed(agg: Any, load: int | list[int], times: Any, powers: Any) -> int:
    times = np.asarray(times, dtype=np.float64)
    powers = np.broadcast_to(np.asarray(powers, dtype=np.float64), times.shape).copy()
    loads = np.broadcast_to(np.asarray(load, dtype=np.int32), times.shape).copy()
    accepted: int = agg.add_samples(loads, times, powers)
    return accepted


def series(agg: Any, loads_powers: dict[int, float], start: float, stop: float,
           step: float) -> None:
    """Constant power per load, samples from start to stop inclusive, interleaved."""
    times = np.arange(start, stop + step / 2, step)
    for t in times:
        loads = np.array(list(loads_powers), dtype=np.int32)
        agg.add_samples(loads, np.full(len(loads), t), np.array(list(loads_powers.values())))


# ------------------------------------------------------------------ integration


def test_constant_power_integrates_to_energy(meter_impl: ModuleType) -> None:
    agg = meter_impl.MeterAggregator(1)
    t0 = local_midnight_utc(2024, 4, 10)
    assert feed(agg, 0, t0 + np.arange(0, 3601, 10.0), 1000.0) == 361
    totals = agg.totals()
    assert totals.import_wh[0] == pytest.approx(1000.0, rel=1e-12)
    assert totals.export_wh[0] == 0.0
    assert agg.accepted_samples == 361


def test_zero_crossing_splits_import_and_export(meter_impl: ModuleType) -> None:
    agg = meter_impl.MeterAggregator(1)
    t0 = local_midnight_utc(2024, 4, 10) + 60
    feed(agg, 0, [t0, t0 + 100], [1000.0, -1000.0])  # crosses zero at t0 + 50
    totals = agg.totals()
    assert totals.import_wh[0] == pytest.approx(1000 * 50 / 2 / 3600)
    assert totals.export_wh[0] == pytest.approx(1000 * 50 / 2 / 3600)


def test_gap_is_counted_not_integrated(meter_impl: ModuleType) -> None:
    agg = meter_impl.MeterAggregator(1, max_gap_s=60.0)
    t0 = local_midnight_utc(2024, 4, 10) + 60
    feed(agg, 0, [t0, t0 + 30, t0 + 30 + 600, t0 + 30 + 630], 1200.0)
    totals = agg.totals()
    assert totals.import_wh[0] == pytest.approx(1200 * 60 / 3600)
    assert totals.gap_s[0] == pytest.approx(600)
    assert agg.anomalies()["gap"] == 1


@pytest.mark.parametrize(
    ("times", "powers", "kind"),
    [
        ([0, 10, 10, 20], [100, 100, 999, 100], "duplicate"),
        ([0, 10, 5, 20], [100, 100, 999, 100], "out_of_order"),
        ([0, 10, 15, 20], [100, 100, math.nan, 100], "bad_power"),
        ([0, 10, 15, 20], [100, 100, math.inf, 100], "bad_power"),
        ([0, 10, 15, 20], [100, 100, -1e13, 100], "bad_power"),
        ([0, 10, math.nan, 20], [100, 100, 999, 100], "bad_time"),
        ([0, 10, -1e12, 20], [100, 100, 999, 100], "bad_time"),
    ],
)
def test_bad_samples_are_dropped_and_counted(meter_impl: ModuleType, times: list[float],
                                             powers: list[float], kind: str) -> None:
    agg = meter_impl.MeterAggregator(1)
    t0 = local_midnight_utc(2024, 4, 10) + 60
    t = [t0 + x if abs(x) < 1e9 else x for x in times]
    assert feed(agg, 0, t, powers) == 3
    assert agg.totals().import_wh[0] == pytest.approx(100 * 20 / 3600)
    counts = agg.anomalies()
    assert counts[kind] == 1
    assert sum(counts.values()) == 1


def test_unknown_load_index_is_counted_at_site_level(meter_impl: ModuleType) -> None:
    agg = meter_impl.MeterAggregator(2)
    t0 = local_midnight_utc(2024, 4, 10)
    idx = np.array([0, 2, -1, 1, 2**31 - 1], dtype=np.int32)
    assert agg.add_samples(idx, np.full(5, t0), np.full(5, 10.0)) == 2
    assert agg.anomalies()["unknown_load"] == 3
    assert agg.totals().anomalies.sum() == 0  # not attributable to a load


# ---------------------------------------------------------------- demand windows


def test_demand_windows_are_aligned_to_local_clock(meter_impl: ModuleType) -> None:
    agg = meter_impl.MeterAggregator(1, demand_window_s=900)
    w0 = local_midnight_utc(2024, 4, 10) + 9 * 3600  # 09:00 local
    series(agg, {0: 10_000.0}, w0, w0 + 900, 10.0)  # 10 kW in [09:00, 09:15]
    series(agg, {0: 20_000.0}, w0 + 905, w0 + 1800, 5.0)  # ramp to 20 kW from 09:15:05
    feed(agg, 0, [w0 + 1805.0], 20_000.0)  # closes the 09:15 window
    totals = agg.totals()
    # window 09:15-09:30: 10 kW->20 kW ramp over 5 s, then 20 kW
    expected = (15_000 * 5 + 20_000 * 895) / 900 / 1000
    assert totals.demand_kw[0] == pytest.approx(expected)
    assert totals.demand_window_start_s[0] == w0 + 900
    assert totals.max_demand_kw[0] == pytest.approx(expected)
    assert totals.max_demand_time_s[0] == w0 + 900
    assert totals.window_start_s[0] == w0 + 1800
    assert totals.window_kw[0] == pytest.approx(20_000 * 5 / 900 / 1000)


def test_demand_counts_full_window_length_even_with_gaps(meter_impl: ModuleType) -> None:
    agg = meter_impl.MeterAggregator(1, demand_window_s=900, max_gap_s=60)
    w0 = local_midnight_utc(2024, 4, 10) + 3600
    series(agg, {0: 6000.0}, w0, w0 + 450, 10.0)  # only half the window has data
    feed(agg, 0, [w0 + 1000.0], 6000.0)
    assert agg.totals().demand_kw[0] == pytest.approx(3.0)


# ------------------------------------------------------------------ time of use


def tou_hours(agg: Any, calendar: TariffCalendar) -> dict[str, float]:
    """Import per period (kWh) of load 0: hours at a constant 1 kW."""
    row = agg.totals().tou_import_wh[0]
    return {p.name: round(float(row[i]) / 1000.0, 9) for i, p in enumerate(calendar.periods)}


# Shandong 2024 (hand-counted from the notice's table; all other hours are 平段):
SPRING_WEDNESDAY = {"sharp": 3.0, "peak": 2.0, "flat": 14.0, "valley": 2.0, "deep_valley": 3.0}
SUMMER_MONDAY = {"sharp": 5.0, "peak": 1.0, "flat": 12.0, "valley": 6.0, "deep_valley": 0.0}
WINTER_MONDAY = {"sharp": 3.0, "peak": 2.0, "flat": 14.0, "valley": 2.0, "deep_valley": 3.0}


@pytest.mark.parametrize(("day", "hours"), [
    (dt.date(2024, 4, 10), SPRING_WEDNESDAY),  # 尖峰 17–20, 高峰 20–22, 深谷 11–14
    (dt.date(2024, 7, 15), SUMMER_MONDAY),  # 低谷 00–06, 高峰 16–17, 尖峰 17–22, no 深谷
    (dt.date(2024, 12, 2), WINTER_MONDAY),  # 深谷 11–14, 尖峰 16–19, 高峰 19–21
])
def test_tou_buckets_and_cost_of_a_shandong_day(meter_impl: ModuleType, day: dt.date,
                                                 hours: dict[str, float]) -> None:
    agg = meter_impl.MeterAggregator(1, tariff=SHANDONG)
    midnight = local_midnight_utc(day.year, day.month, day.day)
    feed(agg, 0, midnight + np.arange(0, 86400 + 1, 60.0), 1000.0)
    assert tou_hours(agg, SHANDONG) == hours
    prices = SHANDONG.season(day.month).prices
    expected = sum(h * prices[name] for name, h in hours.items() if h)
    assert agg.totals().cost_cny[0] == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(("day", "cost"), [
    # 2 December at 10 kW: 30 kWh 尖峰 × 1.30 + 20 × 1.105 + 140 × 0.65 + 20 × 0.195
    # + 30 深谷 × 0.065 = 39 + 22.1 + 91 + 3.9 + 1.95
    (dt.date(2024, 12, 2), 157.95),
    # 15 July at 10 kW: 50 kWh 尖峰 × 1.30 + 10 × 1.105 + 120 × 0.65 + 60 低谷 × 0.195
    # = 65 + 11.05 + 78 + 11.7 (no 深谷 in summer)
    (dt.date(2024, 7, 15), 165.75),
])
def test_day_cost_by_hand(meter_impl: ModuleType, day: dt.date, cost: float) -> None:
    """Illustrative prices of the shipped calendar: 1.30, 1.105, 0.65, 0.195, 0.065."""
    agg = meter_impl.MeterAggregator(1, tariff=SHANDONG)
    midnight = local_midnight_utc(day.year, day.month, day.day)
    feed(agg, 0, midnight + np.arange(0, 86400 + 1, 30.0), 10_000.0)
    assert agg.totals().cost_cny[0] == pytest.approx(cost, rel=1e-12)


def test_day_types_weekends_holidays_and_work_days(meter_impl: ModuleType) -> None:
    """DAY_TYPES: weekends all 平段; 2024-12-31 a holiday (falls back to the weekend
    layout); 2025-01-01..03 deep-valley holidays (深谷 10–15); Sunday 2025-01-05 a 调休
    work day (the season's layout)."""
    expected = {
        dt.date(2024, 12, 30): WINTER_MONDAY,
        dt.date(2024, 12, 31): {"flat": 24.0},
        dt.date(2025, 1, 1): {"flat": 19.0, "deep_valley": 5.0},
        dt.date(2025, 1, 4): {"flat": 24.0},  # Saturday
        dt.date(2025, 1, 5): WINTER_MONDAY,  # Sunday worked
    }
    for day, hours in expected.items():
        agg = meter_impl.MeterAggregator(1, tariff=DAY_TYPES)
        midnight = local_midnight_utc(day.year, day.month, day.day)
        feed(agg, 0, midnight + np.arange(0, 86400 + 1, 120.0), 1000.0)
        got = {name: h for name, h in tou_hours(agg, DAY_TYPES).items() if h}
        assert got == {name: h for name, h in hours.items() if h}, day


def test_sixteen_periods_are_booked_each_in_its_own_bucket(meter_impl: ModuleType) -> None:
    periods = tuple(Period(f"p{k}", f"时段{k}", Tier.FLAT) for k in range(MAX_PERIODS))
    layout = DayLayout.of({f"p{k}": f"{k:02d}:00-{k + 1:02d}:00" for k in range(15)},
                          others="p15")
    calendar = TariffCalendar("sixteen", seasons=(TariffSeason(
        "all", tuple(range(1, 13)), tuple((p.name, 0.1 * k) for k, p in enumerate(periods)),
        layout),), periods=periods)
    agg = meter_impl.MeterAggregator(1, tariff=calendar)
    midnight = local_midnight_utc(2024, 5, 6)
    feed(agg, 0, midnight + np.arange(0, 86400 + 1, 60.0), 1000.0)
    assert list(tou_hours(agg, calendar).values()) == [1.0] * 15 + [9.0]
    assert agg.totals().cost_cny[0] == pytest.approx(
        sum(0.1 * k for k in range(15)) + 9 * 1.5, rel=1e-12)
    state = json.loads(json.dumps(agg.state()))
    assert np.array_equal(meter_impl.MeterAggregator.from_state(state).totals().tou_import_wh,
                          agg.totals().tou_import_wh)


def test_interval_across_a_period_boundary_is_split(meter_impl: ModuleType) -> None:
    agg = meter_impl.MeterAggregator(1, tariff=SHANDONG)
    day = local_midnight_utc(2024, 4, 10)
    # 10:59:00 -> 11:01:00 ramps 0 -> 2 kW; 低谷 until 11:00, 深谷 after
    feed(agg, 0, [day + 11 * 3600 - 60, day + 11 * 3600 + 60], [0.0, 2000.0])
    tou = agg.totals().tou_import_wh[0]
    assert tou[SHANDONG.index("valley")] == pytest.approx(1000 * 60 / 2 / 3600)
    assert tou[SHANDONG.index("deep_valley")] == pytest.approx((1000 + 2000) * 60 / 2 / 3600)


def test_utc_offset_moves_periods(meter_impl: ModuleType) -> None:
    utc_time = datetime(2024, 4, 10, 3, tzinfo=UTC).timestamp()  # 11:00 in China
    china = meter_impl.MeterAggregator(1, tariff=SHANDONG)
    utc = meter_impl.MeterAggregator(1, tariff=SHANDONG, utc_offset_s=0)
    for agg in (china, utc):
        feed(agg, 0, [utc_time + 60, utc_time + 120], 1000.0)
    assert china.totals().tou_import_wh[0, SHANDONG.index("deep_valley")] > 0  # 11:01 local
    assert utc.totals().tou_import_wh[0, SHANDONG.index("flat")] > 0  # 03:01 local


# ------------------------------------------------------------------- carbon, site


def _site(meter_impl: ModuleType, **kwargs: Any) -> Any:
    return meter_impl.MeterAggregator(
        3, roles=["grid", "pv", "consumer"], emission_factor_kg_per_kwh=0.5, **kwargs)


def test_carbon_uses_the_grid_share_of_each_window(meter_impl: ModuleType) -> None:
    agg = _site(meter_impl, grid_renewable_fraction=0.25)
    w0 = local_midnight_utc(2024, 4, 10) + 12 * 3600
    series(agg, {0: 6000.0, 1: -4000.0, 2: 10_000.0}, w0, w0 + 900, 10.0)
    series(agg, {0: 6000.0, 1: -4000.0, 2: 10_000.0}, w0 + 910, w0 + 910, 10.0)
    totals = agg.totals()
    # last interval (900 -> 910 s) is in the next window, with the same grid share
    consumer_kwh = totals.import_wh[2] / 1000
    assert totals.carbon_kg[2] == pytest.approx(consumer_kwh * 0.6 * 0.5)
    assert totals.carbon_kg[1] == 0.0  # PV exported only: no carbon
    assert totals.carbon_kg[0] == pytest.approx(totals.import_wh[0] / 1000 * 0.5)
    site = agg.site_figures()
    assert site.grid_metered
    assert site.grid_import_wh == pytest.approx(6000 * 910 / 3600)
    assert site.carbon_kg == pytest.approx(site.grid_import_wh / 1000 * 0.5)
    assert site.pv_generation_wh == pytest.approx(4000 * 910 / 3600)
    assert site.self_consumption_ratio == pytest.approx(1.0)
    assert site.consumption_wh == pytest.approx(10_000 * 910 / 3600)
    assert site.self_sufficiency_ratio == pytest.approx(0.4)
    assert site.renewable_share == pytest.approx(0.4 + 0.25 * 0.6)
    assert site.peak_demand_kw == pytest.approx(6.0)
    assert site.peak_demand_time_s == w0


def test_export_reduces_self_consumption(meter_impl: ModuleType) -> None:
    agg = _site(meter_impl)
    w0 = local_midnight_utc(2024, 4, 10) + 12 * 3600
    series(agg, {0: -2000.0, 1: -6000.0, 2: 4000.0}, w0, w0 + 600, 10.0)
    site = agg.site_figures()
    assert site.grid_export_wh == pytest.approx(2000 * 600 / 3600)
    assert site.self_consumption_ratio == pytest.approx(4 / 6)
    assert site.self_sufficiency_ratio == pytest.approx(1.0)
    assert agg.totals().carbon_kg.sum() == 0.0


def test_unmetered_site_estimates_grid_per_window(meter_impl: ModuleType) -> None:
    agg = meter_impl.MeterAggregator(2, roles=["pv", "consumer"],
                                     emission_factor_kg_per_kwh=0.5)
    w0 = local_midnight_utc(2024, 4, 10) + 12 * 3600
    series(agg, {0: -1000.0, 1: 3000.0}, w0, w0 + 900, 10.0)
    site = agg.site_figures()
    assert not site.grid_metered
    assert site.grid_import_wh == pytest.approx(500.0)
    assert math.isnan(site.grid_cost_cny)
    assert agg.totals().carbon_kg[1] == pytest.approx(0.75 * (500 / 750) * 0.5)


def test_hourly_emission_factor(meter_impl: ModuleType) -> None:
    factors = [0.1 * (h % 10) for h in range(24)]
    agg = meter_impl.MeterAggregator(1, roles=["grid"], emission_factor_kg_per_kwh=factors)
    day = local_midnight_utc(2024, 4, 10)
    feed(agg, 0, day + 3 * 3600 + np.arange(0, 3601, 60.0), 1000.0)  # 03:00-04:00
    assert agg.totals().carbon_kg[0] == pytest.approx(0.3)


def test_late_load_gets_grid_share_one(meter_impl: ModuleType) -> None:
    agg = meter_impl.MeterAggregator(2, roles=["grid", "consumer"],
                                     emission_factor_kg_per_kwh=0.5)
    w0 = local_midnight_utc(2024, 4, 10) + 12 * 3600
    feed(agg, 1, [w0, w0 + 60], 1000.0)  # consumer, window w0
    feed(agg, 0, [w0 + 900 * (RING_WINDOWS + 2)], 0.0)  # grid meter far ahead
    feed(agg, 1, [w0 + 120, w0 + 960], 1000.0)  # consumer catches up: late
    assert agg.anomalies()["late_window"] >= 1
    totals = agg.totals()
    assert totals.carbon_kg[1] == pytest.approx(totals.import_wh[1] / 1000 * 0.5)


# ----------------------------------------------------------------------- counters


def test_counters_wrap_reset_jump_backstep(meter_impl: ModuleType) -> None:
    agg = meter_impl.MeterAggregator(1, counter_wrap_wh=1_000_000.0,
                                     counter_max_power_w=10_000.0, counter_jitter_wh=10.0)
    t0 = local_midnight_utc(2024, 4, 10)
    readings = [  # (t, import Wh, expected anomaly)
        (0, 990_000.0, None),  # baseline
        (3600, 995_000.0, None),  # +5000
        (3700, 994_995.0, "counter_backstep"),  # ignored
        (7200, 2_000.0, "counter_wrap"),  # +7000 through the wrap
        (7300, math.nan, "counter_bad_value"),
        (7200, 3_000.0, "counter_out_of_order"),
        (10800, 100.0, "counter_reset"),  # new baseline, nothing added
        (14400, 500_000.0, "counter_jump"),  # 500 kWh in an hour > 10 kW: rejected
        (18000, 504_000.0, None),  # +4000
    ]
    for t, value, _ in readings:
        agg.add_counters(np.array([0], np.int32), np.array([t0 + t]), np.array([value]))
    counts = agg.anomalies()
    for _, _, kind in readings:
        if kind:
            assert counts[kind] == 1, kind
    assert agg.totals().counter_import_wh[0] == pytest.approx(5000 + 7000 + 4000)


def test_counters_with_export_register(meter_impl: ModuleType) -> None:
    agg = meter_impl.MeterAggregator(2)
    t0 = local_midnight_utc(2024, 4, 10)
    idx = np.array([0, 1, 0, 1, 5], dtype=np.int32)
    ts = np.array([t0, t0, t0 + 60, t0 + 60, t0 + 60])
    imp = np.array([100.0, 10.0, 150.0, 10.0, 1.0])
    exp = np.array([0.0, 500.0, 0.0, 520.0, 1.0])
    assert agg.add_counters(idx, ts, imp, exp) == 4
    totals = agg.totals()
    assert totals.counter_import_wh.tolist() == [50.0, 0.0]
    assert totals.counter_export_wh.tolist() == [0.0, 20.0]
    assert agg.anomalies()["counter_unknown_load"] == 1


# --------------------------------------------------------------- state and period


def _stream(n: int, seed: int) -> list[tuple[Any, Any, Any]]:
    rng = np.random.default_rng(seed)
    t0 = local_midnight_utc(2024, 12, 31) + 22 * 3600  # crosses a year and a season
    batches = []
    for poll in range(300):
        idx = rng.permutation(n).astype(np.int32)
        ts = t0 + poll * 30.0 + rng.random(n)
        pw = rng.normal(500, 2000, n)
        batches.append((idx, ts, pw))
    return batches


def test_state_round_trip_is_json_and_lossless(meter_impl: ModuleType) -> None:
    roles = ["grid", "pv", "battery", "consumer", "consumer"]
    kwargs: dict[str, Any] = {"roles": roles, "tariff": DAY_TYPES}
    whole = meter_impl.MeterAggregator(5, **kwargs)
    first = meter_impl.MeterAggregator(5, **kwargs)
    stream = _stream(5, 1)
    for batch in stream:
        whole.add_samples(*batch)
    for batch in stream[:150]:
        first.add_samples(*batch)
    text = json.dumps(first.state(), allow_nan=False)  # strict JSON
    resumed = meter_impl.MeterAggregator.from_state(json.loads(text))
    for batch in stream[150:]:
        resumed.add_samples(*batch)
    assert json.dumps(resumed.state()) == json.dumps(whole.state())
    assert resumed.site_figures() == whole.site_figures()


def test_state_restores_across_implementations(meter_impl: ModuleType,
                                               meter_c: ModuleType) -> None:
    from fastcore import _meter_py

    source = meter_c.MeterAggregator(3, roles=["grid", "pv", "consumer"])
    for batch in _stream(3, 2)[:100]:
        source.add_samples(*batch)
    for target in (meter_c, _meter_py):
        restored = target.MeterAggregator.from_state(source.state())
        assert json.dumps(restored.state()) == json.dumps(source.state())


@pytest.mark.parametrize("bad", [
    {}, {"format": "something else", "version": 1}, [1, 2, 3], "text",
])
def test_from_state_rejects_foreign_input(meter_impl: ModuleType, bad: Any) -> None:
    with pytest.raises((TypeError, ValueError)):
        meter_impl.MeterAggregator.from_state(bad)


def test_from_state_rejects_truncated_arrays(meter_impl: ModuleType) -> None:
    state = meter_impl.MeterAggregator(3).state()
    state["loads"]["import_wh"] = [0.0]
    with pytest.raises(ValueError, match="import_wh"):
        meter_impl.MeterAggregator.from_state(state)


def test_reset_period_zeroes_totals_and_keeps_continuity(meter_impl: ModuleType) -> None:
    agg = meter_impl.MeterAggregator(2, roles=["grid", "consumer"])
    t0 = local_midnight_utc(2024, 4, 1)
    series(agg, {0: 1000.0, 1: 1000.0}, t0 - 3600, t0, 60.0)
    agg.add_counters(np.array([1], np.int32), np.array([t0 - 3600]), np.array([10.0]))
    agg.add_samples(np.array([5], np.int32), np.array([t0]), np.array([1.0]))
    before = agg.totals()
    assert before.import_wh[1] == pytest.approx(1000.0)
    agg.reset_period()
    after = agg.totals()
    assert after.import_wh.sum() == 0
    assert after.carbon_kg.sum() == 0
    assert np.isnan(after.max_demand_kw).all()
    assert sum(agg.anomalies().values()) == 0
    assert agg.accepted_samples == 0
    # continuity: the next sample integrates from the last one before the reset
    series(agg, {0: 1000.0, 1: 1000.0}, t0 + 60, t0 + 60, 60.0)
    assert agg.totals().import_wh[1] == pytest.approx(1000.0 * 60 / 3600)
    agg.add_counters(np.array([1], np.int32), np.array([t0 + 60]), np.array([20.0]))
    assert agg.totals().counter_import_wh[1] == pytest.approx(10.0)


# ------------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    ("idx", "ts", "pw", "error"),
    [
        ([0], np.zeros(1), np.zeros(1), TypeError),  # list, not ndarray
        (np.zeros(1, np.int64), np.zeros(1), np.zeros(1), TypeError),
        (np.zeros(1, np.int32), np.zeros(1, np.float32), np.zeros(1), TypeError),
        (np.zeros(1, np.int32), np.zeros(1), np.zeros(1, ">f8"), TypeError),
        (np.zeros((1, 1), np.int32), np.zeros((1, 1)), np.zeros((1, 1)), ValueError),
        (np.zeros(2, np.int32), np.zeros(1), np.zeros(1), ValueError),
    ],
)
def test_wrong_dtype_or_shape_raises(meter_impl: ModuleType, idx: Any, ts: Any, pw: Any,
                                     error: type[Exception]) -> None:
    agg = meter_impl.MeterAggregator(2)
    with pytest.raises(error):
        agg.add_samples(idx, ts, pw)
    with pytest.raises(error):
        agg.add_counters(idx, ts, pw)


def test_non_contiguous_arrays_are_accepted(meter_impl: ModuleType) -> None:
    agg = meter_impl.MeterAggregator(1)
    t0 = local_midnight_utc(2024, 4, 10)
    ts = (t0 + np.arange(0, 20, 1.0))[::2]
    assert agg.add_samples(np.zeros(10, np.int32), ts, np.full(20, 360.0)[::2]) == 10
    assert agg.totals().import_wh[0] == pytest.approx(360 * 18 / 3600)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"n_loads": 0}, ValueError),
        ({"n_loads": 2.0}, TypeError),
        ({"n_loads": 2, "demand_window_s": 420}, ValueError),
        ({"n_loads": 2, "demand_window_s": 30}, ValueError),
        ({"n_loads": 2, "max_gap_s": 0}, ValueError),
        ({"n_loads": 2, "utc_offset_s": 15 * 3600}, ValueError),
        ({"n_loads": 2, "roles": ["consumer"]}, ValueError),
        ({"n_loads": 2, "roles": ["consumer", "wind"]}, ValueError),
        ({"n_loads": 2, "emission_factor_kg_per_kwh": [0.5] * 23}, ValueError),
        ({"n_loads": 2, "tariff": "flat"}, TypeError),
        ({"n_loads": 2, "counter_wrap_wh": [1.0, -1.0]}, ValueError),
        ({"n_loads": 2, "grid_renewable_fraction": 2.0}, ValueError),
    ],
)
def test_invalid_configuration_raises(meter_impl: ModuleType, kwargs: dict[str, Any],
                                      error: type[Exception]) -> None:
    options = dict(kwargs)
    n = options.pop("n_loads")
    with pytest.raises(error):
        meter_impl.MeterAggregator(n, **options)


# ------------------------------------------------------------------ tariff calendar


def _season(layout: DayLayout, months: tuple[int, ...] = tuple(range(1, 13))) -> TariffSeason:
    prices = tuple((p.name, 1.0 - 0.2 * k) for k, p in enumerate(STANDARD_PERIODS))
    return TariffSeason("x", months, prices, layout)


@pytest.mark.parametrize(("make", "message"), [
    (lambda: _season(DayLayout.of({"peak": "08:00-12:00", "flat": "11:00-24:00",
                                   "valley": "00:00-08:00"})), "11:00 is in both peak and flat"),
    (lambda: _season(DayLayout.of({"peak": "08:00-12:00", "valley": "00:00-08:00"})),
     "12:00 is in no period"),
    (lambda: _season(DayLayout.of({"flat": "0800-2400"})), "HH:MM"),
    (lambda: _season(DayLayout.of({"flat": "00:00-24:00"}), tuple(range(1, 12))),
     r"months \[12\]"),
    (lambda: _season(DayLayout.of({"lunch": "11:00-13:00"}, others="flat")),
     "unknown period 'lunch'"),
    (lambda: dataclasses.replace(SHANDONG, holidays=(Holiday(dt.date(2024, 5, 1), "x"),)),
     "day type 'x' has no layout"),
    (lambda: dataclasses.replace(SHANDONG, holidays=(Holiday(dt.date(2024, 5, 1)),),
                                 workdays=(dt.date(2024, 5, 1),)), "both a holiday and"),
])
def test_tariff_calendar_validation(make: Any, message: str) -> None:
    def build() -> None:
        made = make()
        if isinstance(made, TariffSeason):
            TariffCalendar("t", seasons=(made,))

    with pytest.raises(ValueError, match=message):
        build()


def test_a_calendar_takes_at_most_sixteen_periods() -> None:
    periods = tuple(Period(f"p{k}", f"时段{k}", Tier.FLAT) for k in range(MAX_PERIODS + 1))
    with pytest.raises(ValueError, match=r"1\.\.16 periods"):
        TariffCalendar("t", seasons=(), periods=periods)


def test_a_price_is_needed_for_every_period_a_season_uses() -> None:
    season = TariffSeason("x", tuple(range(1, 13)), (("flat", 0.5),),
                          DayLayout.of({"valley": "00:00-06:00"}, others="flat"))
    with pytest.raises(ValueError, match="no price for period 'valley'"):
        TariffCalendar("t", seasons=(season,))


def test_tariff_calendar_dict_round_trip_and_lookups() -> None:
    assert TariffCalendar.from_dict(json.loads(json.dumps(DAY_TYPES.to_dict()))) == DAY_TYPES
    local = datetime(2024, 12, 2, 11, 30)
    assert SHANDONG.period_at(local) == SHANDONG.period("深谷")
    assert SHANDONG.period_at(local).tier is Tier.DEEP_VALLEY
    assert SHANDONG.price_at(local) == SHANDONG.price(12, "deep_valley")
    assert SHANDONG.period("尖峰").name == "sharp"


def test_state_version_1_is_read(meter_impl: ModuleType) -> None:
    """A state saved by version 1 (four periods, the old calendar format) restores."""
    old_calendar = {"name": "old", "seasons": [{
        "name": "all", "months": list(range(1, 13)),
        "prices_cny_per_kwh": [1.2, 1.0, 0.6, 0.3], "sharp": [], "peak": ["08:00-22:00"],
        "flat": [], "valley": ["22:00-08:00"]}]}
    legacy = TariffCalendar.from_dict(old_calendar)
    assert [p.name for p in legacy.periods] == ["sharp", "peak", "flat", "valley"]
    assert legacy.period_at(datetime(2024, 5, 1, 23)).name == "valley"
    agg = meter_impl.MeterAggregator(1, tariff=legacy)
    feed(agg, 0, local_midnight_utc(2024, 5, 1) + np.arange(0, 7201, 60.0), 1000.0)
    state = agg.state()
    state.update(version=1)
    state["config"]["tariff"] = old_calendar
    restored = meter_impl.MeterAggregator.from_state(state)
    assert restored.totals().tou_import_wh[0].tolist() == [0.0, 0.0, 0.0, 2000.0]
    assert restored.totals().cost_cny[0] == pytest.approx(0.6)


def test_anomaly_kinds_are_stable() -> None:
    assert len(set(ANOMALY_KINDS)) == len(ANOMALY_KINDS)
    assert ANOMALY_KINDS[:5] == ("unknown_load", "bad_time", "bad_power", "duplicate",
                                 "out_of_order")
