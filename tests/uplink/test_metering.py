"""Metering over the simulated building: window summaries, history, restart."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path

import pytest
from tests_support import eventually, example_on_free_ports

from controller import streams
from controller.app import assemble
from controller.config import uplink_settings
from controller.metering import MeteringFeed, metered_series
from controller.store import Store
from drivers.site import load_site
from simulators.clock import ScaledClock
from simulators.runner import SiteRunner
from simulators.sitefile import build_site

START = 1_782_093_600.0 - 900 + 60  # a minute into a window, June, 09:46 in Jinan


def test_series_signs_and_roles() -> None:
    spec = load_site(Path(__file__).resolve().parents[2] / "examples" / "jinan-office.toml")
    series = {s.name: s for s in metered_series(spec)}
    assert (series["grid_meter"].role, series["grid_meter"].sign) == ("grid", 1.0)
    assert series["grid_meter"].import_counter == "import_energy"
    assert (series["pv_inverter"].role, series["pv_inverter"].sign) == ("pv", -1.0)
    assert (series["battery"].role, series["battery"].sign) == ("battery", -1.0)
    assert series["kitchen"].device == "submeter_1"  # named after the load it meters
    assert series["ev_charger_1"].point == "ch1_power"


async def test_windows_are_summarised_kept_and_survive_a_restart(tmp_path: Path) -> None:
    spec = load_site(example_on_free_ports(tmp_path))
    site = build_site(spec, start_s=START)
    clock = ScaledClock(start=START, speed=240.0)  # 240 s per poll: below the 300 s gap limit
    settings = dataclasses.replace(uplink_settings(spec), enabled=True, host="127.0.0.1",
                                   port=1, store_path=str(tmp_path / "state.sqlite"))
    async with SiteRunner(site, clock) as runner, \
            assemble(spec, serial_ports=runner.serial_ports, settings=settings,
                     wall_clock=clock.now) as app:
        stop = asyncio.Event()
        task = asyncio.create_task(app.gateway.run(stop, [
            (name, service) for name, service in app.services if name == "metering"]))
        assert app.store is not None
        store: Store = app.store

        def summaries_stored() -> int:
            return sum(m.stream == streams.metering("window") for m in store.pending(limit=1000))

        # A 15-minute window every 3.75 s: the first one is partial, the next ones whole.
        await eventually(lambda: summaries_stored() >= 3, timeout_s=60,
                         what="three window summaries")
        stop.set()
        await task
        assert app.store is not None
        assert app.metering is not None
        summaries = [json.loads(m.payload) for m in app.store.pending(limit=1000)
                     if m.stream == streams.metering("window")]
        history = app.store.windows("grid_meter", 0, 1e12)
        saved = app.store.get_state("metering")
    assert len(summaries) >= 2
    last = summaries[-1]
    grid = last["loads"]["grid_meter"]
    assert grid["role"] == "grid"
    assert 50 < grid["demand_kw"] < 400  # the office imports, mid-morning in June
    assert last["loads"]["pv_inverter"]["export_kwh"] > 0
    assert last["site"]["pv_generation_kwh"] > 0
    assert 0 < last["site"]["self_consumption_ratio"] <= 1
    assert last["site"]["carbon_kg"] > 0
    assert sum(last["loads"]["grid_meter"]["tou_import_kwh"].values()) == pytest.approx(
        grid["import_kwh"], rel=1e-6)
    assert [kw for _, kw in history][-1] == pytest.approx(grid["demand_kw"], rel=1e-6)
    # five tiers, the bill so far, and which tariff and carbon factor were used
    assert list(grid["tou_import_kwh"]) == ["sharp", "peak", "flat", "valley", "deep_valley"]
    assert last["tariff"].startswith("Shandong 2024")
    assert (last["carbon_factor"]["id"], last["carbon_factor"]["year"]) == ("north_china", 2023)
    bill = last["bill"]
    assert bill["energy_cny"] == pytest.approx(grid["cost_cny"], abs=0.01)
    assert bill["basic_charge"]["basis"] == "demand"
    assert bill["basic_charge"]["quantity"] == pytest.approx(last["site"]["peak_demand_kw"],
                                                             abs=1e-3)
    assert last["site"]["reactive_kvarh"] > 0  # the grid meter's reactive energy, for 力调
    assert 0.5 < bill["power_factor"] <= 1.0
    assert saved is not None
    store = Store(tmp_path / "state.sqlite")
    restored = MeteringFeed(spec, store, app.gateway.bus, streams.metering("window"))
    import_wh = restored.aggregator.totals().import_wh[0]
    assert import_wh == pytest.approx(grid["import_kwh"] * 1000, rel=0.2)  # totals kept
