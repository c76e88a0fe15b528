"""The gateway's driver reads the firmware's Modbus TCP server running on the MicroPython
unix port (heap limited to an ESP32's), exactly as the controller polls any meter: the
read plan of each poll group from drivers.planner, pymodbus' client on a real socket,
drivers.codec to decode. The values must be what the synthetic waveform implies."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from mp_support import (
    MAP,
    UNIT,
    Device,
    exception_code,
    free_port,
    number,
    poll,
    poll_all,
    running,
    sine_wave,
)
from pymodbus.client import AsyncModbusTcpClient

from drivers.points import Table, Value

WAVE = sine_wave()  # 230 V; 20 A lagging 30°, 10 A leading 60°, 5 A exported (160°)


async def until(client: AsyncModbusTcpClient, condition: Any,
                seconds: float = 20.0) -> dict[str, Value]:
    deadline = time.monotonic() + seconds
    while True:
        values = await poll_all(client)
        if condition(values):
            return values
        assert time.monotonic() < deadline, f"condition never met; last poll: {values}"
        await asyncio.sleep(0.05)


@pytest.fixture
async def meter(build: Path, tmp_path: Path) -> AsyncIterator[tuple[Device, AsyncModbusTcpClient]]:
    port = free_port()
    config = {"modbus_tcp": {"port": port}, "metering": {"cycles": 10},
              "demand_window_s": 60}
    sim = {"wave": str(WAVE.write(tmp_path / "wave.bin", 1.0)), "rate": WAVE.rate,
           "speed": 50}
    with running(build, tmp_path / "root", config=config, sim=sim) as device:
        device.wait_for("modbus-tcp: listening")
        client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=3, retries=1)
        assert await client.connect()
        try:
            yield device, client
        finally:
            client.close()


def close(got: Value, want: float, scale: float, tol: float = 0.005) -> bool:
    assert isinstance(got, int | float), got
    return abs(got - want) <= tol * scale


async def test_gateway_reads_what_the_firmware_meters(
        meter: tuple[Device, AsyncModbusTcpClient]) -> None:
    _, client = meter
    values = await until(client, lambda v: v["frequency"] and v["demand"])
    ref = WAVE.reference()
    assert close(values["frequency"], 50.0, 50.0)
    for c, want in enumerate(ref["channels"], start=1):
        assert close(values[f"ch{c}_voltage"], ref["V"], ref["V"])
        assert close(values[f"ch{c}_current"], want["I"], want["I"])
        assert close(values[f"ch{c}_power"], want["P"], want["S"])
        assert close(values[f"ch{c}_apparent_power"], want["S"], want["S"])
        assert close(values[f"ch{c}_reactive_power"], want["Q"], want["S"])
        assert close(values[f"ch{c}_power_factor"], want["PF"], 1.0)
    total = sum(ch["P"] for ch in ref["channels"])
    assert close(values["demand"], total, total)
    assert values["firmware_version"] == 1 * 256 + 0
    assert values["demand_window"] == 60
    assert MAP.points["status"].bit_names(values["status"]) == ["wifi connected"]

    # Energy: channel 3 exports, the others import; counters follow P x uptime.
    values = await until(client, lambda v: number(v["uptime"]) >= 60)
    hours = number(values["uptime"]) / 3600
    for c, want in enumerate(ref["channels"], start=1):
        imported, exported = values[f"ch{c}_import_energy"], values[f"ch{c}_export_energy"]
        assert isinstance(imported, int)
        assert isinstance(exported, int)
        expected = abs(want["P"]) * hours
        counter, other = (imported, exported) if want["P"] > 0 else (exported, imported)
        assert other == 0
        assert abs(counter - expected) <= 1 + abs(want["P"]) * 2 / 3600  # 1 Wh, 2 s


async def test_registers_outside_the_map_answer_exception_2(
        meter: tuple[Device, AsyncModbusTcpClient]) -> None:
    _, client = meter
    end = max(p.end for p in MAP.points.values() if p.table is Table.INPUT)
    for address, count in ((end, 1), (end - 1, 2), (1000, 10)):
        response = await client.read_input_registers(address, count=count, device_id=UNIT)
        assert exception_code(response) == 2, (address, response)
    response = await client.read_holding_registers(1, count=1, device_id=UNIT)
    assert exception_code(response) == 2
    response = await client.read_coils(0, count=1, device_id=UNIT)
    assert exception_code(response) == 1  # no coils at all


async def test_demand_window_is_writable_within_the_map_limits(
        meter: tuple[Device, AsyncModbusTcpClient]) -> None:
    device, client = meter
    point = MAP.points["demand_window"]
    response = await client.write_register(point.address, 900, device_id=UNIT)
    assert not response.isError()
    device.wait_for(r"demand: window set to 900 s")
    assert (await poll(client, MAP, ("demand_window",)))["demand_window"] == 900
    for bad in (int(point.minimum or 0) - 1, int(point.maximum or 0) + 1):
        response = await client.write_register(point.address, bad, device_id=UNIT)
        assert exception_code(response) == 3, bad
    response = await client.write_register(5, 100, device_id=UNIT)
    assert exception_code(response) == 2
    assert (await poll(client, MAP, ("demand_window",)))["demand_window"] == 900
    # The new window survives a reboot: it is saved with the counters at once.
    device.stop()
    device.start()
    device.wait_for("modbus-tcp: listening")
    client.close()
    assert await client.connect()
    assert (await poll(client, MAP, ("demand_window",)))["demand_window"] == 900
