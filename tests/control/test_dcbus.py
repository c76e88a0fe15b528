"""直柔 control, closed loop on the simulated DC bus (tests/control/sites/dc-bus.toml) in
accelerated time: curves written and read back, supervision, a VPP setpoint served by
the converter's grid limit alone, the fail-safe when the gateway stops or dies, the
flexibility report; and the ``[dcbus]`` section's errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from closed_loop import ClosedLoop
from rich.console import Console

from controller import streams
from controller.bus import LatestValues
from controller.control.dcbus import DcBusControl
from controller.control.dcbus_config import dcbus_settings
from controller.control.events import DrEvent, EventKind
from controller.control.settings import ControlSettings
from controller.dcview import dc_bus_table
from controller.streams import Stream
from drivers.dc_curves import DcLoadClass
from drivers.reading import Reading
from drivers.schema import ConfigError
from drivers.site import load_site
from simulators.physics.dcgrid import ConverterMode, DcGrid

SITE = Path(__file__).parent / "sites" / "dc-bus.toml"
START = "2026-06-17T10:00:00"
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "jinan-office.toml"


def build() -> ClosedLoop:
    return ClosedLoop.build(START, ControlSettings(), site=load_site(SITE))


def dc_of(closed: ClosedLoop) -> DcBusControl:
    assert closed.loop.dc is not None
    return closed.loop.dc


def mode(grid: DcGrid) -> ConverterMode:
    """The converter's mode now (a function, so checks before and after an action are
    not narrowed away)."""
    return grid.converter.mode


def grid_of(closed: ClosedLoop) -> DcGrid:
    grid: DcGrid = closed.simulated.model.dc_grids["dc_converter"]
    return grid


async def limited(reduction_w: float, event_id: str) -> tuple[ClosedLoop, DcGrid]:
    """A settled loop serving a VPP setpoint ``reduction_w`` below the grid draw, with
    the converter in grid-limit mode."""
    closed = build()
    await cycle_for(closed, 5.0)
    closed.event(DrEvent(event_id, EventKind.SETPOINT, "site", closed.clock.now(), 3600.0,
                         (closed.simulated.model.site_power_w() - reduction_w) / 1000.0))
    await cycle_for(closed, 5.0)
    grid = grid_of(closed)
    assert mode(grid) is ConverterMode.GRID_LIMIT
    return closed, grid


async def cycle_for(closed: ClosedLoop, seconds: float, step_s: float = 1.0) -> None:
    end = closed.clock.now() + seconds
    while closed.clock.now() < end - 1e-9:
        closed.clock.advance(step_s)
        closed.simulated.model.advance(closed.clock.now())
        await closed.loop.cycle()


async def test_curves_are_written_and_read_back_and_rewritten_after_a_reset() -> None:
    closed = build()
    settings = dcbus_settings(closed.plant.site)
    assert settings is not None
    grid = grid_of(closed)
    lighting = settings.classes[DcLoadClass.LIGHTING].curve
    assert grid.loads[DcLoadClass.LIGHTING].curve != lighting  # factory curve first
    await cycle_for(closed, 3.0)
    dc = dc_of(closed)
    assert dc.verified == dict.fromkeys(
        ["lighting", "fan_coil", "heat_pump", "ev_charger", "storage"], True)
    for cls, spec in settings.classes.items():  # the devices follow the site's curves
        assert grid.loads[cls].curve.points[:len(spec.curve.points)] == spec.curve.points
    assert grid.storage[0].curve == settings.storage_curve
    writes = closed.plant.writes
    await cycle_for(closed, 10.0)
    assert closed.plant.writes == writes  # verified: nothing written again
    # a foreign write (or a device reset) changes the lighting curve on the device
    closed.plant.devices["dc_loads"].write_value("lighting_v2", 372.0)
    await cycle_for(closed, 2.0)
    assert dc.verified["lighting"] is False
    await cycle_for(closed, 40.0)
    assert dc.verified["lighting"] is True
    assert grid.loads[DcLoadClass.LIGHTING].curve.points[:2] == lighting.points
    assert any("lighting curve" in alarm for alarm in dc.alarms)


async def test_vpp_setpoint_is_served_by_the_converter_limit_alone() -> None:
    closed = build()
    await cycle_for(closed, 5.0)
    model = closed.simulated.model
    before_w = model.site_power_w()
    executed: list[str] = []
    execute = closed.plant.execute

    async def counting(device: str, writes: list[object]) -> object:
        executed.append(device)
        return await execute(device, writes)  # type: ignore[arg-type]

    closed.plant.execute = counting  # type: ignore[assignment, method-assign]
    target_w = before_w - 15_000.0
    closed.event(DrEvent("vpp1", EventKind.SETPOINT, "site", closed.clock.now(), 600.0,
                         target_w / 1000.0))
    await cycle_for(closed, 10.0)
    assert model.site_power_w() == pytest.approx(target_w, abs=0.05 * 15_000.0)
    grid = grid_of(closed)
    assert mode(grid) is ConverterMode.GRID_LIMIT
    assert grid.voltage_v < grid.nominal_v  # the bus carried the request …
    fractions = dc_of(closed).readings()["classes"]
    assert fractions["lighting"]["fraction_pct"] < 100.0  # … and the lighting gave way
    assert set(executed) == {"dc_converter"}  # no per-load writes
    readings = dc_of(closed).readings()
    assert readings["mode"] == "grid_limit"
    assert readings["state"] == "ok"
    # the event ends: the converter goes back to droop
    closed.loop.book.cancel("vpp1")
    await cycle_for(closed, 2.0)
    assert mode(grid) is ConverterMode.DROOP


async def test_gateway_dies_converter_falls_back_to_droop_bus_in_band() -> None:
    closed, grid = await limited(20_000.0, "vpp2")
    curves = {cls: load.curve for cls, load in grid.loads.items()}
    grid.trace = []
    closed.advance_without_controller(60.0, step_s=1.0)  # nobody refreshes the limit
    assert mode(grid) is ConverterMode.DROOP
    assert grid.converter.fallbacks == 1
    low, high = grid.nominal_v * 0.90, grid.nominal_v * 1.05
    voltages = [v for _, v in grid.trace]
    assert low <= min(voltages)
    assert max(voltages) <= high
    assert {cls: load.curve for cls, load in grid.loads.items()} == curves  # kept locally


async def test_gateway_stops_cleanly_and_hands_the_converter_back() -> None:
    closed, grid = await limited(10_000.0, "vpp3")
    await closed.stop_running()
    assert mode(grid) is ConverterMode.DROOP  # released at once, no waiting
    assert grid.converter.fallbacks == 0


async def test_converter_lost_is_an_alarm_and_the_bus_holds(
        monkeypatch: pytest.MonkeyPatch) -> None:
    closed, grid = await limited(10_000.0, "vpp4")
    converter = closed.plant.devices["dc_converter"]
    monkeypatch.setattr(converter, "point_values", dict)  # it stops answering
    monkeypatch.setattr(converter, "write_value", lambda point, value: "no response")
    await cycle_for(closed, 30.0)
    dc = dc_of(closed)
    assert dc.state == "unknown"
    assert any("not answering" in alarm for alarm in dc.alarms)
    assert mode(grid) is ConverterMode.DROOP
    assert grid.nominal_v * 0.90 <= grid.voltage_v <= grid.nominal_v * 1.05


async def test_bus_readings_and_alarms_go_out_on_the_dcbus_topic() -> None:
    closed = build()
    sent: list[tuple[Stream, dict[str, object]]] = []
    closed.loop.publish = lambda messages: sent.extend(
        (m.stream, m.body) for m in messages)
    await cycle_for(closed, 3.0)
    bus = [body["bus"] for topic, body in sent if topic == streams.DCBUS and "bus" in body]
    assert bus
    first = bus[0]
    assert isinstance(first, dict)
    assert first["band_v"] == [337.5, 393.8]
    assert first["state"] == "ok"
    # the converter stops answering: an alarm goes out at once
    converter = closed.plant.devices["dc_converter"]
    converter.point_values = dict  # type: ignore[method-assign]
    await cycle_for(closed, 2.0)
    assert any("not answering" in str(body.get("alarm")) for topic, body in sent
               if topic == streams.DCBUS)


async def test_flexibility_counts_curves_and_storage() -> None:
    closed = build()
    await cycle_for(closed, 5.0)
    down, up = dc_of(closed).flexibility()
    names = {item["name"] for item in down}
    assert {"lighting", "fan_coil", "heat_pump", "ev_charger", "dc_storage"} <= names
    ev = next(item for item in down if item["name"] == "ev_charger")
    assert ev["kw"] == pytest.approx(20.0, abs=0.1)  # its curve goes to 0 %: all of it
    lighting = next(item for item in down if item["name"] == "lighting")
    assert lighting["kw"] <= 8.0 * (1 - 0.40) + 0.01  # not below its comfort limit (40 %)
    assert any(item["name"] == "dc_storage" for item in up)
    body = dc_of(closed).extend_flexibility({"down": [], "up": [], "down_kw": 0, "up_kw": 0})
    assert body["down_kw"] == pytest.approx(sum(item["kw"] for item in down), abs=0.01)


# -- the [dcbus] section's errors --------------------------------------------------------


def site_with(tmp_path: Path, old: str, new: str) -> Path:
    text = SITE.read_text(encoding="utf-8")
    assert old in text
    path = tmp_path / "site.toml"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return path


@pytest.mark.parametrize(("old", "new", "key", "expected"), [
    ('converter = "dc_converter"', 'converter = "grid_meter"', "dcbus.converter",
     "dc_bus device"),
    ("[dcbus.classes.lighting]", "[dcbus.classes.lamps]", "dcbus.classes.lamps",
     "a load class"),
    ("curve = [[348.0, 40.0], [368.0, 100.0]]", "curve = [[368.0, 40.0], [348.0, 100.0]]",
     "dcbus.classes.lighting.curve", "increase"),
    ("curve = [[348.0, 40.0], [368.0, 100.0]]", "curve = [[348.0, 20.0], [368.0, 100.0]]",
     "dcbus.classes.lighting.curve", "comfort_min_pct"),
    ("curve = [[342.0, 30.0], [354.0, 100.0]]", "curve = [[342.0, 30.0], [370.0, 100.0]]",
     "dcbus.classes.heat_pump.curve", "gives way below"),
    ("curve = [[338.0, 0.0], [347.0, 100.0]]", "curve = [[338.0, 0.0], [347.0, 120.0]]",
     "dcbus.classes.ev_charger.curve[1][1]", "0–100"),
    ("band_pct = [90.0, 105.0]", "band_pct = [90.0]", "dcbus.band_pct", "[low_pct, high_pct]"),
    ('storage = "dc_storage"\n', "", "dcbus.storage", "storage_curve"),
])
def test_dcbus_errors_name_file_key_and_expectation(tmp_path: Path, old: str, new: str,
                                                    key: str, expected: str) -> None:
    path = site_with(tmp_path, old, new)
    with pytest.raises(ConfigError) as caught:
        dcbus_settings(load_site(path))
    message = str(caught.value)
    assert str(path) in message or "site.toml" in message
    assert re.search(re.escape(key), message), message
    assert expected in message


def test_site_without_dcbus_has_no_dc_control() -> None:
    site = load_site(EXAMPLE)
    assert dcbus_settings(site) is None


async def test_live_view_shows_the_bus_against_its_band_and_class_fractions() -> None:
    closed = build()
    closed.event(DrEvent("vpp5", EventKind.SETPOINT, "site", closed.clock.now(), 3600.0,
                         (closed.simulated.model.site_power_w() - 15_000.0) / 1000.0))
    await cycle_for(closed, 10.0)
    latest = LatestValues()
    latest.update(Reading(name, point, value, "", closed.clock.now())
                  for name in closed.plant.devices
                  for point, value in closed.plant.devices[name].point_values().items())
    table = dc_bus_table(closed.plant.site, latest)
    assert table is not None
    console = Console(record=True, width=120)
    console.print(table)
    text = console.export_text()
    voltage = grid_of(closed).voltage_v
    assert f"{voltage:.1f} V" in text
    assert "band 337.5–393.8 V" in text
    assert "grid_limit" in text
    lighting = closed.plant.value("dc_loads", "lighting_fraction_pct")
    assert lighting is not None
    assert re.search(rf"lighting\s+│?\s*{lighting:.0f} %", text), text
    assert dc_bus_table(load_site(EXAMPLE), latest) is None
