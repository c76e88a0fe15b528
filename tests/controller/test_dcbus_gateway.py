"""直柔 through the real gateway over sockets: the simulated DC bus served by pymodbus
(Modbus TCP, the three DC maps), the gateway polling it and its control loop writing the
curves (read back over the wire) and the converter's grid limit, handed back when
control stops; and mbpoll, a third-party client, reading the converter."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest
from tests_support import (
    eventually,
    example_on_free_ports,
    mbpoll,
    polled_values,
    polling,
    simulated,
)

from controller.app import App
from controller.console.views import live as console_live
from controller.control.dcbus_config import dcbus_settings
from controller.control.events import DrEvent, EventKind
from controller.control.loop import ControlLoop
from controller.control.plant import GatewayPlant
from controller.control.settings import ControlSettings
from controller.inbox import CommandInbox
from drivers.dc_curves import DcLoadClass
from drivers.site import load_site
from simulators.physics.dcgrid import ConverterMode, DcGrid

SITE = Path(__file__).resolve().parents[1] / "control" / "sites" / "dc-bus.toml"


def mode(grid: DcGrid) -> ConverterMode:
    return grid.converter.mode


async def test_the_gateway_writes_curves_and_the_grid_limit_over_modbus(
        tmp_path: Path) -> None:
    spec = load_site(example_on_free_ports(tmp_path, SITE))
    settings = dcbus_settings(spec)
    assert settings is not None
    async with simulated(spec) as runner:
        grid: DcGrid = runner.site.model.dc_grids["dc_converter"]
        async with polling(spec) as gateway:
            await gateway.all_good({"dc_converter": ["bus_voltage", "nominal_voltage"],
                                    "dc_loads": ["lighting_v1", "ev_charger_pct4"],
                                    "dc_storage": ["curve_v1", "soc"],
                                    "grid_meter": ["total_power"]}, timeout_s=20)
            loop = ControlLoop(GatewayPlant(gateway.gateway),
                               ControlSettings(cycle_s=0.5), CommandInbox(),
                               clock=runner.clock.now)
            assert loop.dc is not None
            dc = loop.dc
            now = runner.clock.now()
            grid_w = runner.site.model.site_power_w()
            loop.book.add(DrEvent("vpp-w", EventKind.SETPOINT, "site", now - 1, 3600.0,
                                  (grid_w - 10_000.0) / 1000.0))
            task = asyncio.create_task(loop.run())
            try:
                await eventually(lambda: mode(grid) is ConverterMode.GRID_LIMIT,
                                 timeout_s=20, what="the converter in grid-limit mode")
                for cls, spec_class in settings.classes.items():
                    await eventually(
                        lambda cls=cls, points=spec_class.curve.points:  # type: ignore[misc]
                        grid.loads[cls].curve.points[:len(points)] == points,
                        timeout_s=20, what=f"the {cls.value} curve on the device")
                # the polled settings group brings the read-back: verified
                await eventually(lambda: dc.verified.get("lighting") is True,
                                 timeout_s=30, what="the curves verified by read-back")
                assert grid.converter.watchdog_s == settings.watchdog_s
                # the console's live page shows the bus as the gateway reads it
                page = console_live(cast(App, SimpleNamespace(
                    site=spec, gateway=gateway.gateway, control=loop)), runner.clock.now())
                shown = page["dcbus"]
                assert shown["band_v"] == [round(375.0 * pct / 100.0, 1)
                                           for pct in settings.band_pct]
                assert shown["bus_voltage_v"] == pytest.approx(grid.voltage_v, abs=15.0)
                assert list(shown["classes"]) == [c.value for c in settings.give_way_order()]
                assert all(c["fraction_pct"] is not None for c in shown["classes"].values())
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            assert mode(grid) is ConverterMode.DROOP  # handed back over the wire
            assert grid.loads[DcLoadClass.EV_CHARGER].curve.points[:2] == \
                settings.classes[DcLoadClass.EV_CHARGER].curve.points  # curves stay


async def test_mbpoll_reads_the_interface_converter(tmp_path: Path) -> None:
    spec = load_site(example_on_free_ports(tmp_path, SITE))
    async with simulated(spec) as runner:
        grid: DcGrid = runner.site.model.dc_grids["dc_converter"]
        line = spec.devices["dc_converter"].line
        output = await mbpoll("-m", "tcp", "-a", "1", "-0", "-r", "0", "-c", "1", "-t", "3",
                              "-1", "-p", str(line.port), line.host)
        values = polled_values(output)
        assert values[0] / 10 == pytest.approx(grid.voltage_v, abs=0.051)  # u16, 0.1 V
        output = await mbpoll("-m", "tcp", "-a", "1", "-0", "-r", "10", "-c", "1", "-t", "3",
                              "-1", "-p", str(line.port), line.host)
        assert polled_values(output)[10] == 3750  # nominal 375.0 V
