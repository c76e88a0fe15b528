"""Behaviour of the metering aggregator (run against the kernel and the twin)."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from fastcore import (
    ANOMALY_KINDS,
    PERIOD_FLAT,
    PERIOD_PEAK,
    PERIOD_SHARP,
    PERIOD_VALLEY,
    SHANDONG_COMMERCIAL_EXAMPLE,
    TariffCalendar,
    TariffSeason,
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


def test_tou_buckets_of_a_spring_day(meter_impl: ModuleType) -> None:
    agg = meter_impl.MeterAggregator(1, tariff=SHANDONG_COMMERCIAL_EXAMPLE)
    day = local_midnight_utc(2024, 4, 10)
    feed(agg, 0, day + np.arange(0, 86400 + 1, 60.0), 1000.0)
    totals = agg.totals()
    hours = {PERIOD_SHARP: 0.0, PERIOD_PEAK: 6.0, PERIOD_FLAT: 6.0, PERIOD_VALLEY: 12.0}
    prices = SHANDONG_COMMERCIAL_EXAMPLE.seasons[2].prices_cny_per_kwh
    for period, h in hours.items():
        assert totals.tou_import_wh[0, period] == pytest.approx(1000 * h)
        assert totals.tou_cost_cny[0, period] == pytest.approx(h * prices[period])
    assert totals.tou_import_wh[0].sum() == pytest.approx(totals.import_wh[0])
    assert totals.cost_cny[0] == pytest.approx(sum(h * prices[p] for p, h in hours.items()))


def test_tou_seasonal_variant(meter_impl: ModuleType) -> None:
    agg = meter_impl.MeterAggregator(1, tariff=SHANDONG_COMMERCIAL_EXAMPLE)
    day = local_midnight_utc(2024, 7, 15)  # summer: sharp 18:00-20:00
    feed(agg, 0, day + np.arange(0, 86400 + 1, 120.0), 500.0)
    tou = agg.totals().tou_import_wh[0]
    assert tou[PERIOD_SHARP] == pytest.approx(1000.0)
    assert tou[PERIOD_PEAK] == pytest.approx(2000.0)
    assert tou[PERIOD_VALLEY] == pytest.approx(4000.0)


def test_interval_across_a_period_boundary_is_split(meter_impl: ModuleType) -> None:
    agg = meter_impl.MeterAggregator(1, tariff=SHANDONG_COMMERCIAL_EXAMPLE)
    day = local_midnight_utc(2024, 4, 10)
    # 06:59:00 -> 07:01:00 ramps 0 -> 2 kW; valley until 07:00, flat after
    feed(agg, 0, [day + 7 * 3600 - 60, day + 7 * 3600 + 60], [0.0, 2000.0])
    tou = agg.totals().tou_import_wh[0]
    assert tou[PERIOD_VALLEY] == pytest.approx(1000 * 60 / 2 / 3600)
    assert tou[PERIOD_FLAT] == pytest.approx((1000 + 2000) * 60 / 2 / 3600)


def test_utc_offset_moves_periods(meter_impl: ModuleType) -> None:
    utc_day = datetime(2024, 4, 10, tzinfo=UTC).timestamp()  # 08:00 in China
    china = meter_impl.MeterAggregator(1, tariff=SHANDONG_COMMERCIAL_EXAMPLE)
    utc = meter_impl.MeterAggregator(1, tariff=SHANDONG_COMMERCIAL_EXAMPLE, utc_offset_s=0)
    for agg in (china, utc):
        feed(agg, 0, [utc_day + 60, utc_day + 120], 1000.0)
    assert china.totals().tou_import_wh[0, PERIOD_FLAT] > 0  # 08:01 local
    assert utc.totals().tou_import_wh[0, PERIOD_VALLEY] > 0  # 00:01 local


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
    kwargs: dict[str, Any] = {"roles": roles, "tariff": SHANDONG_COMMERCIAL_EXAMPLE}
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


def test_tariff_calendar_validation() -> None:
    prices = (1.0, 0.8, 0.5, 0.2)
    with pytest.raises(ValueError, match="both"):
        TariffSeason("x", (1,), prices, peak=("08:00-12:00",), flat=("11:00-24:00",),
                     valley=("00:00-08:00",))
    with pytest.raises(ValueError, match="no period"):
        TariffSeason("x", (1,), prices, peak=("08:00-12:00",), valley=("00:00-08:00",))
    with pytest.raises(ValueError, match="HH:MM"):
        TariffSeason("x", (1,), prices, flat=("0800-2400",))
    season = TariffSeason("all", tuple(range(1, 12)), prices, flat=("00:00-24:00",))
    with pytest.raises(ValueError, match=r"months \[12\]"):
        TariffCalendar(seasons=(season,))


def test_tariff_calendar_dict_round_trip_and_chinese_names() -> None:
    data = SHANDONG_COMMERCIAL_EXAMPLE.to_dict()
    assert TariffCalendar.from_dict(json.loads(json.dumps(data))) == (
        SHANDONG_COMMERCIAL_EXAMPLE)
    zh = TariffCalendar.from_dict({"seasons": [{
        "months": list(range(1, 13)),
        "prices_cny_per_kwh": {"尖峰": 1.2, "高峰": 1.0, "平段": 0.6, "低谷": 0.3},
        "高峰": ["08:00-22:00"], "低谷": "22:00-08:00"}]})
    assert zh.period_at(5, 8 * 60) == PERIOD_PEAK
    assert zh.period_at(5, 23 * 60) == PERIOD_VALLEY
    assert zh.price_cny_per_kwh(5, PERIOD_SHARP) == 1.2


def test_example_calendar_is_labelled_illustrative() -> None:
    assert "illustrative" in SHANDONG_COMMERCIAL_EXAMPLE.name


def test_anomaly_kinds_are_stable() -> None:
    assert len(set(ANOMALY_KINDS)) == len(ANOMALY_KINDS)
    assert ANOMALY_KINDS[:5] == ("unknown_load", "bad_time", "bad_power", "duplicate",
                                 "out_of_order")
