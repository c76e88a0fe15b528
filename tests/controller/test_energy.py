"""分类分项 accounting: codes in the site file, window energy per code (hand-computed),
reconciliation with the main meter, durable and idempotent rows in the store."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from tests_support import site_from_text

from controller.energy import EnergyAccounting, EnergySettings, period_starts, reconcile
from controller.store import EnergyWindow, Store
from drivers.energycodes import ancestors, energy_codes
from drivers.schema import ConfigError

SITE = """
[site]
id = "t"
name = "t"
latitude = 36.67
longitude = 117.0
timezone = "Asia/Shanghai"

[[devices]]
name = "grid"
model = "sdm630"
transport = "tcp"
host = "127.0.0.1"
port = 1502
unit = 1
role = "grid"

[[devices]]
name = "lights"
model = "sdm630"
transport = "tcp"
host = "127.0.0.1"
port = 1502
unit = 2
role = "feeder"
energy_code = "{lights}"

[[devices]]
name = "lifts"
model = "sdm630"
transport = "tcp"
host = "127.0.0.1"
port = 1502
unit = 3
role = "feeder"
energy_code = "01C10"
"""


@dataclass
class _Series:
    name: str
    role: str
    device: str


SERIES = [_Series("grid", "grid", "grid"), _Series("lights", "consumer", "lights"),
          _Series("lifts", "consumer", "lifts")]


def test_codes_roll_up_their_levels() -> None:
    assert ancestors("01A10") == ("01A00", "01000")
    assert ancestors("01A00") == ("01000",)
    assert ancestors("02000") == ()
    codes = energy_codes()
    assert codes["01B10"].zh == "冷热站"
    assert codes["01B10"].unit == "kWh"
    assert codes["02000"].unit == "m3"


def test_an_unknown_code_names_file_key_and_choices() -> None:
    with pytest.raises(ConfigError) as error:
        site_from_text(SITE.replace("{lights}", "01A99"))
    message = str(error.value)
    assert "devices[1].energy_code" in message
    assert "01A99" in message
    assert "01A10" in message  # the codes of that energy type are offered


def test_a_code_on_the_grid_meter_is_refused() -> None:
    site = site_from_text(SITE.replace("{lights}", "01A10").replace(
        'role = "grid"', 'role = "grid"\nenergy_code = "01A00"'))
    with pytest.raises(ConfigError, match="main meter"):
        EnergyAccounting(site, SERIES)


def _accounting(settings: EnergySettings | None = None) -> EnergyAccounting:
    site = site_from_text(SITE.replace("{lights}", "01A10"))
    return EnergyAccounting(site, SERIES, settings or EnergySettings())


def test_window_energy_per_code_by_hand() -> None:
    accounting = _accounting()
    imp = np.array([10_000.0, 3_000.0, 1_000.0])  # Wh so far: grid, lights, lifts
    exp = np.array([500.0, 0.0, 0.0])
    assert accounting.window(0.0, imp, exp) is None  # the first totals are the baseline
    # 15 min later: grid +6 kWh import, +0.5 kWh export; lights +3.2; lifts +2.0 kWh.
    result = accounting.window(900.0, imp + np.array([6000.0, 3200.0, 2000.0]),
                               exp + np.array([500.0, 0.0, 0.0]))
    assert result is not None
    window, check = result
    codes = {k: v for k, v in window.energy.items() if ":" not in k}
    assert codes == pytest.approx({"01000": 5.2, "01A00": 3.2, "01A10": 3.2,
                                   "01C00": 2.0, "01C10": 2.0})
    site = {k: v for k, v in window.energy.items() if k.startswith("site:")}
    assert site == pytest.approx({"site:consumption": 5.5, "site:grid_import": 6.0,
                                  "site:grid_export": 0.5, "site:pv_generation": 0.0})
    # main meter 6.0 − 0.5 = 5.5 kWh; sub-meters 5.2; remainder 0.3 kWh = 5.45 % > 5 %
    assert check.main_kwh == pytest.approx(5.5)
    assert check.remainder_kwh == pytest.approx(0.3)
    assert check.alarm
    assert window.level == "900s"


def test_the_remainder_can_be_booked_to_a_code() -> None:
    accounting = _accounting(EnergySettings(remainder_code="01A10"))
    accounting.window(0.0, np.zeros(3), np.zeros(3))
    result = accounting.window(900.0, np.array([6000.0, 3200.0, 2000.0]), np.zeros(3))
    assert result is not None
    window, check = result
    # remainder 0.8 kWh booked to 01A10 and its ancestors; not an alarm (positive)
    assert window.energy["01A10"] == pytest.approx(4.0)
    assert window.energy["01000"] == pytest.approx(6.0)
    assert not check.alarm


def test_reconciliation_tolerance() -> None:
    settings = EnergySettings(tolerance_pct=5.0)
    assert not reconcile(100.0, 95.5, settings).alarm
    assert reconcile(100.0, 94.0, settings).alarm
    assert reconcile(100.0, 106.0, settings).alarm  # sub-meters above the main meter
    assert not reconcile(0.05, 0.0, settings).alarm  # too little to judge
    booked = EnergySettings(tolerance_pct=5.0, remainder_code="01A10")
    assert not reconcile(100.0, 50.0, booked).alarm
    assert reconcile(100.0, 106.0, booked).alarm


def test_the_alarm_is_an_event_on_changes_only() -> None:
    accounting = _accounting()
    raised = reconcile(10.0, 5.0, accounting.settings)
    fine = reconcile(10.0, 10.0, accounting.settings)
    assert accounting.alarm_event(0.0, raised, 1.0)["state"] == "raised"  # type: ignore[index]
    assert accounting.alarm_event(900.0, raised, 2.0) is None
    assert accounting.alarm_event(1800.0, fine, 3.0)["state"] == "cleared"  # type: ignore[index]


def test_a_period_reset_restarts_the_baseline() -> None:
    accounting = _accounting()
    accounting.window(0.0, np.array([9e6, 5e6, 1e6]), np.zeros(3))
    accounting.period_reset()
    result = accounting.window(900.0, np.array([1000.0, 400.0, 100.0]), np.zeros(3))
    assert result is not None
    assert result[0].energy["01000"] == pytest.approx(0.5)


def test_baseline_and_alarm_survive_a_restart() -> None:
    first = _accounting()
    first.window(0.0, np.array([1.0, 2.0, 3.0]), np.zeros(3))
    first.alarm = True
    second = _accounting()
    second.restore(first.state_json())
    assert second.alarm
    assert second.baseline is not None
    assert second.baseline.tolist() == first.baseline.tolist()  # type: ignore[union-attr]
    third = _accounting()
    third.restore('{"baseline": [[1, 2]], "alarm": true}')  # another layout: ignored
    assert third.baseline is None


def test_periods_are_local_hours_days_months_years() -> None:
    site = site_from_text(SITE.replace("{lights}", "01A10"))
    # 2026-06-22 11:15 in Jinan (UTC+8)
    levels = dict(period_starts(1_782_098_100.0, site.zone))
    assert levels["hour"] == 1_782_097_200.0  # 11:00
    assert levels["day"] == 1_782_057_600.0  # 00:00 local = 16:00 UTC the day before
    assert levels["month"] == 1_780_243_200.0  # 2026-06-01 00:00 local
    assert levels["year"] == 1_767_196_800.0  # 2026-01-01 00:00 local


def test_store_rolls_windows_up_once(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite")
    rollups = (("hour", 0.0), ("day", 0.0), ("month", 0.0), ("year", 0.0))
    first = EnergyWindow("900s", 0.0, {"01000": 1.5, "01A00": 1.0}, rollups)
    second = EnergyWindow("900s", 900.0, {"01000": 2.0}, rollups)
    assert store.record_energy_window(first, {"energy": "a"})
    assert not store.record_energy_window(first, {"energy": "b"})  # again: nothing added
    assert store.record_energy_window(second, {"energy": "c"})
    store.close()
    store = Store(tmp_path / "s.sqlite")  # durable
    assert store.energy_periods("hour", 0, 1) == [(0.0, "01000", 3.5), (0.0, "01A00", 1.0)]
    assert store.energy_periods("year", 0, 1)[0] == (0.0, "01000", 3.5)
    assert store.energy_periods("900s", 0, 1e9) == [(0.0, "01000", 1.5), (0.0, "01A00", 1.0),
                                                    (900.0, "01000", 2.0)]
    assert store.get_state("energy") == "c"
    assert store.last_energy_period("900s") == 900.0
    store.close()


FLOW_SITE = SITE.replace("{lights}", "01A10") + """
[[devices]]
name = "water"
model = "tuf2000m-water"
transport = "tcp"
host = "127.0.0.1"
port = 1502
unit = 4
energy_code = "02000"

[[devices]]
name = "district_heat"
model = "tuf2000m-heat"
transport = "tcp"
host = "127.0.0.1"
port = 1502
unit = 5
energy_code = "{heat}"
"""


def test_non_electric_counters_by_hand() -> None:
    site = site_from_text(FLOW_SITE.replace("{heat}", "04000"))
    accounting = EnergyAccounting(site, SERIES)
    points = accounting.counter_points()
    water = points[("water", "positive_volume")]
    heat = points[("district_heat", "positive_heat")]
    accounting.reading(water, 3456.0)
    accounting.reading(heat, 2_000_000.0)  # Wh
    assert accounting.window(0.0, np.zeros(3), np.zeros(3)) is None
    accounting.reading(water, 3456.3)
    accounting.reading(heat, 2_025_000.0)
    result = accounting.window(900.0, np.zeros(3), np.zeros(3))
    assert result is not None
    assert result[0].energy["02000"] == pytest.approx(0.3)  # m³
    assert result[0].energy["04000"] == pytest.approx(25.0)  # kWh
    assert result[0].energy["01000"] == 0.0
    # a replaced meter (its counter went back) restarts: nothing negative is booked
    accounting.reading(water, 12.0)
    result = accounting.window(1800.0, np.zeros(3), np.zeros(3))
    assert result is not None
    assert result[0].energy["02000"] == 0.0
    # the counters' last readings survive a restart with the baseline
    again = EnergyAccounting(site, SERIES)
    again.restore(accounting.state_json())
    assert again.counter_base[water] == 12.0


def test_a_cold_meter_counts_cold_and_a_wrong_type_is_refused() -> None:
    cold = EnergyAccounting(site_from_text(FLOW_SITE.replace("{heat}", "05000")), SERIES)
    assert ("district_heat", "negative_heat") in cold.counter_points()
    with pytest.raises(ConfigError, match="04000 or 05000"):
        EnergyAccounting(site_from_text(FLOW_SITE.replace("{heat}", "02000")), SERIES)


PULSE_SITE = SITE.replace("{lights}", "01A10") + """
[[devices]]
name = "submeter"
model = "esp32-submeter"
transport = "tcp"
host = "127.0.0.1"
port = 1503
unit = 1
pulse_meters = [{ channel = 2, unit_per_pulse = 0.01, energy_code = "{code}" }]
"""


def test_a_gas_meter_on_a_pulse_input_by_hand() -> None:
    site = site_from_text(PULSE_SITE.replace("{code}", "03A00"))
    accounting = EnergyAccounting(site, SERIES)
    gas = accounting.counter_points()[("submeter", "pulse2_count")]
    accounting.reading(gas, 1200.0)
    accounting.window(0.0, np.zeros(3), np.zeros(3))
    accounting.reading(gas, 1450.0)  # 250 pulses of 0.01 m³
    result = accounting.window(900.0, np.zeros(3), np.zeros(3))
    assert result is not None
    assert result[0].energy["03A00"] == pytest.approx(2.5)
    assert result[0].energy["03000"] == pytest.approx(2.5)  # rolled up to 燃气


@pytest.mark.parametrize(("code", "reason"), [("01A10", "electricity is metered"),
                                              ("09000", "分类分项 code")])
def test_pulse_meters_are_validated(code: str, reason: str) -> None:
    with pytest.raises(ConfigError, match=reason) as error:
        site_from_text(PULSE_SITE.replace("{code}", code))
    assert "pulse_meters[0].energy_code" in str(error.value)
    with pytest.raises(ConfigError, match="no pulse inputs"):
        site_from_text(SITE.replace("{lights}", "01A10").replace(
            'energy_code = "01C10"',
            'energy_code = "01C10"\npulse_meters = [{ channel = 1, unit_per_pulse = 1.0, '
            'energy_code = "02000" }]'))
