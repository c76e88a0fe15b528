"""Settlement estimates by hand, the demand tracker, and the [control.settlement] keys."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from closed_loop import EXAMPLE

from controller.control.demand import DemandTracker
from controller.control.settings import control_settings
from controller.control.settlement import SettlementRules, settle
from drivers.schema import ConfigError
from drivers.site import load_site

ZONE = ZoneInfo("Asia/Shanghai")
RULES = SettlementRules(clearing_price_cny_per_kwh=2.0)  # the example rule, 2 CNY/kWh


def records(delivered_kw: list[float], interval_s: float = 900.0) -> list[dict[str, float]]:
    return [{"delivered_kw": kw, "duration_s": interval_s} for kw in delivered_kw]


@pytest.mark.parametrize(("delivered", "ratio", "payment", "penalty"), [
    # 100 kW cleared for 1 h (4 × 15 min)
    ([80.0] * 4, 0.8, 80 * 2.0, 0.0),  # paid for 80 kWh
    ([150.0] * 4, 1.5, 120 * 2.0, 0.0),  # paid up to 120 % of the cleared capacity
    ([40.0] * 4, 0.4, 0.0, 0.5 * 2.0 * 60),  # below 50 %: 60 missing kWh at 0.5 × price
    ([60.0, 60.0, 20.0, 20.0], 0.4, 0.0, 60.0),  # the mean counts
    ([-10.0] * 4, -0.1, 0.0, 0.5 * 2.0 * 100),  # imported more: all 100 kWh missing
])
def test_settlement_by_hand(delivered: list[float], ratio: float, payment: float,
                            penalty: float) -> None:
    result = settle("e", 100.0, records(delivered), RULES, interval_s=900.0,
                    baseline={"kw": 300.0, "method": "realtime_15min", "coverage": 1.0,
                              "quality": "good"})
    assert result is not None
    assert result.response_ratio == pytest.approx(ratio)
    assert result.duration_h == pytest.approx(1.0)
    assert result.payment_cny == pytest.approx(payment)
    assert result.penalty_cny == pytest.approx(penalty)
    assert result.net_cny == pytest.approx(payment - penalty)
    assert "below 50 %, 0.5 × the clearing price" in result.rules


def test_a_short_last_interval_weighs_by_its_duration() -> None:
    rows = [{"delivered_kw": 100.0, "duration_s": 900.0},
            {"delivered_kw": 10.0, "duration_s": 100.0}]
    result = settle("e", 100.0, rows, RULES, interval_s=900.0, baseline={})
    assert result is not None
    assert result.delivered_kw == pytest.approx((100 * 900 + 10 * 100) / 1000)
    assert result.duration_h == pytest.approx(1000 / 3600)


def test_no_baseline_no_settlement() -> None:
    assert settle("e", 100.0, [{"actual_kw": 50.0}], RULES, interval_s=60.0,
                  baseline={}) is None


def test_settlement_rules_from_the_site_file(tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_text(EXAMPLE.read_text(encoding="utf-8") + "\n[control.settlement]\n"
                    "clearing_price_cny_per_kwh = 3.5\nmin_ratio = 0.8\n", encoding="utf-8")
    rules = control_settings(load_site(path)).settlement
    assert (rules.clearing_price_cny_per_kwh, rules.min_ratio, rules.penalty_factor) == (
        3.5, 0.8, 0.5)
    path.write_text(EXAMPLE.read_text(encoding="utf-8") + "\n[control.settlement]\n"
                    "min_ratio = 2\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"control\.settlement\.min_ratio"):
        control_settings(load_site(path))


def test_demand_tracker_windows_and_the_months_peak() -> None:
    tracker = DemandTracker(ZONE)
    start = datetime(2024, 12, 31, 23, 30, tzinfo=ZONE).timestamp()
    for k in range(900):  # 23:30–23:45 at 100 kW
        tracker.add(start + k, 100_000.0)
    for k in range(451):  # 23:45–23:52:30 at 40 kW
        tracker.add(start + 900 + k, 40_000.0)
    # the 23:30 window: 899 s at 100 kW and the last second ramping to 40 kW
    assert tracker.month_peak_kw == pytest.approx((899 * 100 + 70) / 900)
    state = tracker.state(start + 1350, billed=True)
    assert state is not None
    assert state.window_kwh == pytest.approx(40 * 450 / 3600)
    assert state.month_peak_kw == tracker.month_peak_kw
    # the rest of the window may run at 160 kW and still average 100 kW
    assert state.allowed_w(100.0, start + 1350) == pytest.approx(160_000.0)
    for k in range(1, 1801):  # into January: a new month, a new peak
        tracker.add(start + 1350 + k, 30_000.0)
    january = tracker.state(start + 3150, billed=True)
    assert january is not None
    assert january.month_peak_kw == pytest.approx(30.0)
