"""SG-Ready by contacts through the real gateway over sockets (Modbus TCP to the relay
module, RTU on a virtual RS-485 line to the Midea heat pump), and a third-party client
(mbpoll) reading the simulated Midea heat pump at the addresses of Midea's table."""

from __future__ import annotations

import asyncio
import contextlib
import re
from pathlib import Path

from tests_support import eventually, example_on_free_ports, mbpoll, polling, simulated

from controller.control.events import DrEvent, EventKind
from controller.control.loop import ControlLoop, sg_ready_state
from controller.control.plant import GatewayPlant
from controller.control.settings import ControlSettings
from controller.inbox import CommandInbox
from drivers.site import load_site

SITE = Path(__file__).resolve().parents[1] / "control" / "sites" / "sg-contacts.toml"


async def test_the_gateway_drives_the_contacts_and_hands_them_back(tmp_path: Path) -> None:
    spec = load_site(example_on_free_ports(tmp_path, SITE))
    async with simulated(spec, serial_time_scale=0.05) as runner:
        model = runner.site.model
        relay, heat_pump = model.relays["relay_b"], model.heat_pumps["heat_pump"]
        relay.safe_states = [True] * 16  # a module that lost its configuration
        async with polling(spec, runner.serial_ports) as gateway:
            await gateway.all_good({"relay_b": ["relay_13", "relay_14", "safe_state_13"],
                                    "heat_pump": ["heating_power", "ta_room"]},
                                   timeout_s=20)
            loop = ControlLoop(GatewayPlant(gateway.gateway),
                               ControlSettings(cycle_s=0.5, relay_watchdog_s=60),
                               CommandInbox(), clock=runner.clock.now)
            now = runner.clock.now()
            loop.book.add(DrEvent("sg-1", EventKind.SG_READY, "heat_pump", now - 1, 3600.0, 1))
            task = asyncio.create_task(loop.run())
            try:
                await eventually(lambda: heat_pump.sg_ready_state == 1, timeout_s=20,
                                 what="the heat pump blocked by its contacts")
                assert relay.states[12:14] == [True, False]  # 1:0 on channels 13, 14
                assert relay.safe_states[12:14] == [False, False]  # programmed to fall open
                assert all(relay.safe_states[:12])
                await eventually(lambda: sg_ready_state(
                    loop.plant, spec.devices["heat_pump"]) == 1, timeout_s=20,
                    what="the blocked state read back from the relay's coils")
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            # stopping control handed the contacts back over the wire: both open
            assert relay.states[12:14] == [False, False]
            assert heat_pump.sg_ready_state == 2


def polled(output: str) -> dict[int, int]:
    return {int(ref): int(value) for ref, value in
            re.findall(r"^\[(\d+)\]:\s+(-?\d+)", output, flags=re.M)}


async def test_mbpoll_reads_the_midea_heat_pump_at_its_table_addresses(
        tmp_path: Path) -> None:
    """Midea MODBUS MAPPING TABLE 0052003044313 V.E: 104 Tw_in, 105 Tw_out, 107 T4 (°C),
    143–144 electricity consumption (higher bits first, R290: kWh × 100), 150 real-time
    heating power consumption (kW × 100), FC 03 only; 10 SG/EVU bits; 23–99 not
    implemented."""
    spec = load_site(example_on_free_ports(tmp_path, SITE))
    async with simulated(spec, serial_time_scale=0.05) as runner:
        hp = runner.site.model.heat_pumps["heat_pump"]
        port = runner.serial_ports[spec.devices["heat_pump"].line.serial_port]
        rtu = ("-m", "rtu", "-b", "9600", "-P", "none", "-a", "1", "-0", "-1", "-t", "4")
        values = polled(await mbpoll(*rtu, "-r", "100", "-c", "52", port))
        assert values[150] == round(hp.electric_w / 10)  # kW × 100
        assert values[150] > 0
        assert values[104] == round(hp.return_c)
        assert values[105] == round(hp.flow_c)
        assert values[107] == round(hp.outdoor_c(hp.t_s))
        assert values[143] * 65536 + values[144] == round(hp.energy_wh / 10)  # kWh × 100
        assert (await mbpoll(*rtu, "-r", "10", "-c", "1", port)).count("[10]:") == 1
        assert polled(await mbpoll(*rtu, "-r", "10", "-c", "1", port))[10] == 0
        refused = await mbpoll(*rtu, "-r", "50", "-c", "1", port)
        assert "Illegal data address" in refused
        no_fc04 = await mbpoll("-m", "rtu", "-b", "9600", "-P", "none", "-a", "1", "-0", "-1",
                               "-t", "3", "-r", "150", "-c", "1", port)
        assert "[150]:" not in no_fc04, no_fc04

