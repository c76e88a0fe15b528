"""The carbon-peaking plan's figures, by hand, and `pedf kpi` from a store."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from controller.energy import EnergySettings
from controller.kpi import (
    EnergyUse,
    eui_reference,
    factors,
    kpi_table,
    kpis,
    period_start,
    window_kpis,
)
from controller.store import EnergyWindow, Store

ZONE = ZoneInfo("Asia/Shanghai")


def test_factors_name_their_method() -> None:
    assert factors().electricity_kgce_per_kwh == 0.1229  # 当量值
    assert factors("primary").electricity_kgce_per_kwh == 0.3055  # 等价值
    reference = eui_reference("office", "cold", "A")
    assert reference is not None
    assert "51161" in reference.source


def test_kpis_by_hand() -> None:
    f = factors()  # electricity 0.1229 kgce/kWh, gas 1.2143 kgce/m³, heat 0.1228 kgce/kWh
    use = EnergyUse(electricity_kwh=1000.0, grid_import_kwh=800.0, grid_export_kwh=50.0,
                    pv_generation_kwh=250.0, gas_m3=10.0, heat_kwh=100.0)
    k = kpis(use, f, grid_kg_co2_per_kwh=0.6361, floor_area_m2=2000.0)
    # E_ce = 1000·0.1229 + 10·1.2143 + 100·0.1228 = 122.9 + 12.143 + 12.28 = 147.323 kgce
    assert k.total_kgce == pytest.approx(147.323)
    assert k.electricity_share == pytest.approx(122.9 / 147.323)  # 83.4 %
    assert k.renewable_rate == pytest.approx(250 * 0.1229 / 147.323)  # 30.725 / 147.323
    assert k.pv_self_consumption == pytest.approx(200 / 250)  # 80 %
    assert k.pv_export_kwh == 50.0
    assert k.eui_kwh_per_m2 == pytest.approx(0.5)
    # carbon = 800·0.6361 + 10·2.162 + 100·0.396 = 508.88 + 21.62 + 39.6 = 570.1 kg
    assert k.carbon_kg == pytest.approx(570.1)
    assert k.carbon_kg_per_m2 == pytest.approx(570.1 / 2000)


def test_ratios_without_a_denominator_are_none() -> None:
    k = kpis(EnergyUse(), factors(), 0.5306, None)
    assert k.total_kgce == 0.0
    assert (k.electricity_share, k.renewable_rate, k.pv_self_consumption) == (None, None, None)
    assert (k.eui_kwh_per_m2, k.carbon_kg_per_m2) == (None, None)


def test_period_starts_are_local() -> None:
    assert period_start("day", date(2026, 6, 22), ZONE) == 1_782_057_600.0
    assert period_start("year", date(2026, 6, 22), ZONE) == 1_767_196_800.0


def test_kpis_from_the_store(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite")
    day = period_start("day", date(2026, 6, 22), ZONE)
    month = period_start("month", date(2026, 6, 22), ZONE)
    year = period_start("year", date(2026, 6, 22), ZONE)
    rollups = (("hour", day), ("day", day), ("month", month), ("year", year))
    energy = {"01000": 90.0, "site:consumption": 100.0, "site:grid_import": 80.0,
              "site:grid_export": 0.0, "site:pv_generation": 20.0}
    store.record_energy_window(EnergyWindow("900s", day, energy, rollups), {})
    settings = EnergySettings(floor_area_m2=1000.0)
    table = kpi_table(store, settings, 0.6361, ZONE, date(2026, 6, 22))
    rows = {line.split()[0]: line.split() for line in table.splitlines()[2:5]}
    assert rows["2026-06-22"][1] == "12.3"  # 100 kWh · 0.1229
    assert rows["2026"][1] == "12.3"
    assert "20.0" in rows["2026-06"]  # renewable 20 %: 20/100
    assert "51161" in table
    # the uplink's figures include the window the store has not recorded yet
    later = EnergyWindow("900s", day + 900, energy, rollups)
    figures = window_kpis(store, later, settings, 0.6361)
    assert figures["day"]["total_kgce"] == pytest.approx(2 * 12.29)
    assert figures["year"]["carbon_kg"] == pytest.approx(2 * 80 * 0.6361)
    store.close()
