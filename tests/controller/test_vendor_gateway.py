"""The real gateway over sockets against the vendors' simulators, quirks and all.

A Huawei SUN2000's SDongle takes one client, ignores requests for about a second after a
connect and answers requests closer than 50 ms with exception 06 (busy) — facts the
huawei-sun2000 maps carry in ``[device.pacing]`` and the simulator reproduces. The
gateway paces itself from the maps: over one connection it polls the inverter, the
battery and the power sensor (three maps at one unit id) without a failed request, and
its control loop drives the forcible charge and the derating through the same quirks.
Without the maps' pacing the quirks bite, which shows they are real.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from pathlib import Path

import pytest
from pymodbus.client import AsyncModbusTcpClient
from tests_support import eventually, polling, simulated
from vendor_sites import vendor_site_on_free_ports

from controller.control.events import DrEvent, EventKind
from controller.control.loop import ControlLoop
from controller.control.plant import GatewayPlant
from controller.control.settings import ControlSettings
from controller.inbox import CommandInbox
from controller.lines import TcpLine
from drivers.devices import Inverter
from drivers.points import Pacing
from simulators.modbus import ServedDevice

HUAWEI_POINTS = {
    "inverter": ["dc_power", "ac_power", "active_power_derating", "energy", "model_name",
                 "l1_current", "power_factor"],
    "battery": ["soc", "power", "forcible_command", "max_charge_power", "rated_capacity"],
    "grid_meter": ["power", "l1_power", "imported_energy", "exported_energy"],
}


async def test_the_gateway_polls_and_controls_a_quirky_huawei_over_one_connection(
        tmp_path: Path) -> None:
    spec = vendor_site_on_free_ports("huawei-shop", tmp_path)
    async with simulated(spec) as runner, polling(spec) as gateway:
        await gateway.all_good(HUAWEI_POINTS, timeout_s=20.0)
        model = runner.site.model
        battery, pv = model.batteries["battery"], model.pv["inverter"]
        # The control loop over the same connection: a forcible charge of 2 kW …
        loop = ControlLoop(GatewayPlant(gateway.gateway),
                           ControlSettings(cycle_s=1.0, battery_mode="idle"), CommandInbox())
        loop.book.add(DrEvent("bat", EventKind.BATTERY, "battery", loop.clock(), 600.0, -2000.0))
        task = asyncio.create_task(loop.run())
        try:
            await eventually(lambda: battery.forced_w == -2000.0, timeout_s=15.0,
                             what="the forcible charge in force")
            # … and the derating, by the inverter's recipe through the gateway.
            inverter = Inverter(spec.devices["inverter"].device_map,
                                gateway.gateway.bus.latest.device_values("inverter"))
            results = await gateway.gateway.execute("inverter", inverter.limit_power(40.0))
            assert all(r.ok for r in results), results
            assert (pv.limit_enabled, pv.limit_pct) == (True, 40.0)
            results = await gateway.gateway.execute("inverter",
                                                    inverter.release_power_limit())
            assert all(r.ok for r in results), results
            assert pv.limit_pct == 100.0
            polls_before = gateway.polls("battery")
            await gateway.until(lambda: gateway.polls("battery") >= polls_before + 3,
                                "polls go on after the writes")
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        health = gateway.gateway.health()
        line = gateway.gateway.scheduler_of("inverter").line
        unit = runner.devices["inverter"]
        assert isinstance(unit, ServedDevice)
    for name in HUAWEI_POINTS:
        assert health[name].polls_failed == 0, (name, health[name])
        assert health[name].writes_failed == 0, (name, health[name])
    assert health["battery"].writes_ok >= 4  # the forcible-charge recipe's writes
    assert isinstance(line, TcpLine)
    assert line.stats.connects == 1  # one client, one connection for three maps
    assert line.stats.timeouts == 0
    assert (unit.quirks.ignored_early, unit.quirks.busy) == (0, 0)  # never too early


@pytest.mark.parametrize(("setting", "quirk"), [("connect_delay_s", "ignored_early"),
                                                ("request_interval_s", "busy")])
async def test_without_the_maps_pacing_the_huawei_quirks_bite(
        tmp_path: Path, setting: str, quirk: str) -> None:
    """The same building and the same SDongle, polled by a gateway told to skip one of
    the maps' pacing facts: the simulated SDongle ignores requests right after the
    connect (the gateway times out) or answers hurried ones with exception 06 (the
    gateway reports an error), so polls fail — the pacing is what lets it through."""
    spec = vendor_site_on_free_ports("huawei-shop", tmp_path, timeout_s="0.3")
    careless = dataclasses.replace(spec, devices={
        name: dataclasses.replace(d, pacing=_without(d.pacing, setting))
        for name, d in spec.devices.items()})
    async with simulated(spec) as runner, polling(careless) as gateway:
        unit = runner.devices["inverter"]
        assert isinstance(unit, ServedDevice)
        await gateway.until(lambda: getattr(unit.quirks, quirk) >= 1,
                            f"the simulated device's quirk {quirk}", timeout_s=20.0)
        await gateway.until(lambda: sum(gateway.health(n).polls_failed
                                        for n in HUAWEI_POINTS) >= 1,
                            "the gateway sees the failures", timeout_s=20.0)


async def test_a_second_client_is_refused_while_the_gateway_polls(tmp_path: Path) -> None:
    spec = vendor_site_on_free_ports("huawei-shop", tmp_path)
    inverter = spec.devices["inverter"]
    async with simulated(spec), polling(spec) as gateway:
        await gateway.all_good({"inverter": ["dc_power"]}, timeout_s=20.0)
        client = AsyncModbusTcpClient(inverter.line.host, port=inverter.line.port,
                                      timeout=1.0, retries=0)
        await client.connect()
        try:  # the device closes the second connection at once
            await eventually(lambda: not client.connected, what="second client refused")
        finally:
            client.close()
        polls = gateway.polls("inverter")
        await gateway.until(lambda: gateway.polls("inverter") > polls + 2,
                            "the gateway keeps polling")
    assert gateway.health("inverter").polls_failed == 0


@pytest.fixture(autouse=True)
def _quiet_pymodbus() -> None:
    import logging

    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)


def _without(pacing: Pacing, setting: str) -> Pacing:
    """``pacing`` with one of its delays (``request_interval_s`` or ``connect_delay_s``)
    set to zero."""
    if setting == "request_interval_s":
        return dataclasses.replace(pacing, request_interval_s=0.0)
    if setting == "connect_delay_s":
        return dataclasses.replace(pacing, connect_delay_s=0.0)
    raise ValueError(f"no pacing delay named {setting!r}")
