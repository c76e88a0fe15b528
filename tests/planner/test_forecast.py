"""Forecasts: what each learner learns from history it can be checked against."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from controller.planner.forecast import (
    HeatLossEstimator,
    LoadForecaster,
    PvForecaster,
    backtest_day_ahead,
    clear_sky_w_m2,
    nmae,
    read_forecast_file,
)

ZONE = ZoneInfo("Asia/Shanghai")
JINAN = (36.67, 117.0)


def midnight(day: str) -> float:
    return datetime.fromisoformat(day).replace(tzinfo=ZONE).timestamp()


def test_clear_sky_peaks_near_solar_noon_and_is_dark_at_night() -> None:
    day = midnight("2026-06-21")
    values = [clear_sky_w_m2(*JINAN, day + q * 900) for q in range(96)]
    noon = int(np.argmax(values))
    # Jinan at 117° E keeps Beijing time (120° E): solar noon about 12:12 local.
    assert 11.75 <= noon / 4 <= 12.5
    assert 850 < max(values) < 1100  # Haurwitz, summer solstice at 36.7° N
    assert values[0] == 0.0
    assert values[4 * 22] == 0.0


def test_pv_scale_is_learned_from_the_inverter_history() -> None:
    pv = PvForecaster(*JINAN)
    day = midnight("2026-06-20")
    for q in range(96 * 2):  # two days at 70 kW per 1000 W/m² of clear sky
        t = day + q * 900
        pv.observe(t, 0.07 * clear_sky_w_m2(*JINAN, t + 450))
    assert pv.scale_kw_per_w_m2 == pytest.approx(0.07, rel=1e-6)
    tomorrow = [midnight("2026-06-22") + q * 900 for q in range(96)]
    forecast = pv.forecast(tomorrow)
    assert forecast.max() == pytest.approx(0.07 * max(
        clear_sky_w_m2(*JINAN, t + 450) for t in tomorrow), rel=1e-6)


def test_an_external_forecast_wins_where_it_covers(tmp_path: Path) -> None:
    path = tmp_path / "pv.csv"
    t = midnight("2026-06-22") + 12 * 3600
    path.write_text(f"time,pv_kw\n{t:.0f},42.5\n2026-06-22T12:15:00+08:00,40\n")
    pv = PvForecaster(*JINAN, external=read_forecast_file(path))
    assert list(pv.forecast([t, t + 900])) == [42.5, 40.0]
    path.write_text("time,pv_kw\nsoon,1\n")
    with pytest.raises(ValueError, match="line 2"):
        read_forecast_file(path)


def day_type(day: date) -> str:
    return "weekend" if day.weekday() >= 5 else "workday"


def test_load_is_forecast_from_similar_days() -> None:
    load = LoadForecaster(ZONE, day_type)
    start = midnight("2026-06-01")  # a Monday
    for q in range(96 * 14):
        t = start + q * 900
        weekend = datetime.fromtimestamp(t, ZONE).weekday() >= 5
        load.observe(t, 20.0 if weekend else 100.0 + (q % 96))
    monday = [midnight("2026-06-15") + q * 900 for q in range(96)]
    saturday = [midnight("2026-06-20") + q * 900 for q in range(96)]
    np.testing.assert_allclose(load.forecast(monday), 100.0 + np.arange(96))
    np.testing.assert_allclose(load.forecast(saturday), 20.0)
    # A day-ahead backtest of a perfectly periodic history has no error.
    history = dict(load.history)
    error = backtest_day_ahead(history, lambda slots, cut: load.forecast(slots, before_s=cut),
                               ZONE)
    assert error == pytest.approx(0.0)


def test_heat_loss_is_learned_once_a_day_of_heating_is_seen() -> None:
    estimate = HeatLossEstimator(default_kw_per_k=4.5)
    for k in range(50):
        estimate.observe(3.0 * (20 + k % 5), 20 + k % 5)
    assert estimate.kw_per_k == 4.5  # not enough yet
    for k in range(96):
        estimate.observe(3.0 * (20 + k % 5), 20 + k % 5)
    assert estimate.kw_per_k == pytest.approx(3.0)


def test_nmae() -> None:
    assert nmae([1.0, 3.0], [2.0, 2.0]) == pytest.approx(0.5)
    assert nmae([1.0], [0.0]) is None


def test_the_backtest_scores_the_store_s_history(tmp_path: Path) -> None:
    from controller.planner.backtest import backtest_store
    from controller.store import Store
    from controller.tariffs import DEFAULT_TARIFF, load_tariff
    from drivers.site import load_site

    site = load_site(Path(__file__).resolve().parents[2] / "examples" / "jinan-office.toml")
    store = Store(tmp_path / "s.sqlite")
    start = midnight("2026-06-01")
    rows = []
    for q in range(96 * 10):  # ten days: a load that repeats, PV at 0.1 kW per W/m²
        t = start + q * 900
        rows.append((t, "grid_meter", 100.0 + q % 96))
        rows.append((t, "pv_inverter", -0.1 * clear_sky_w_m2(*JINAN, t + 450)))
    store.record_windows(rows)
    scores = backtest_store(site, store, load_tariff(DEFAULT_TARIFF), start + 11 * 86400)
    store.close()
    assert scores["load: grid_meter"] == pytest.approx(0.0, abs=1e-9)
    assert scores["pv: pv_inverter"] == pytest.approx(0.0, abs=1e-6)
