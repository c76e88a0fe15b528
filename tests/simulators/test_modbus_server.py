"""The simulators over real sockets and pseudo-terminals: values, errors, writes, faults."""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time
from typing import Any

import pytest
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ModbusIOException
from pymodbus.pdu import ModbusPDU

from drivers.codec import RegisterImage, decode_points, register_map, with_dependencies
from drivers.planner import plan_group
from drivers.points import Table
from drivers.site import DeviceSpec
from simulators.clock import ManualClock
from simulators.runner import SiteRunner


async def tcp_client(device: DeviceSpec) -> AsyncModbusTcpClient:
    client = AsyncModbusTcpClient(device.line.host, port=device.line.port, timeout=1,
                                  retries=0, reconnect_delay=0)
    assert await client.connect()
    return client


async def read_table(client: AsyncModbusTcpClient | AsyncModbusSerialClient, table: Table,
                     address: int, count: int, unit: int) -> ModbusPDU:
    functions = {Table.HOLDING: client.read_holding_registers,
                 Table.INPUT: client.read_input_registers, Table.COIL: client.read_coils,
                 Table.DISCRETE_INPUT: client.read_discrete_inputs}
    result: ModbusPDU = await functions[table](address, count=count, device_id=unit)
    return result


async def poll(client: AsyncModbusTcpClient | AsyncModbusSerialClient, device: DeviceSpec,
               group: str) -> dict[str, Any]:
    device_map = register_map(device.device_map)
    image = RegisterImage()
    for request in plan_group(device_map, device_map.groups[group].points):
        response = await read_table(client, request.table, request.address, request.count,
                                    device.unit)
        assert not response.isError(), (request, response)
        values = response.bits[:request.count] if request.table.is_bits else response.registers
        image.store(request.table, request.address, values)
    return dict(decode_points(device_map, with_dependencies(device_map,
        device_map.groups[group].points), image))


async def test_served_values_decode_to_what_the_physics_holds(running_site: SiteRunner) -> None:
    spec, model = running_site.site.spec, running_site.site.model
    client = await tcp_client(spec.devices["pv_inverter"])
    values = await poll(client, spec.devices["pv_inverter"], "realtime")
    client.close()
    assert values["inverter_three_phase.W"] == pytest.approx(model.pv["pv_inverter"].power_w,
                                                             abs=5.0)  # W_SF = 1: 10 W steps
    assert values["inverter_three_phase.W"] > 30_000  # June, 11:00
    assert values["inverter_three_phase.St"] == 4  # MPPT
    client = await tcp_client(spec.devices["battery"])
    values = await poll(client, spec.devices["battery"], "realtime")
    client.close()
    assert values["battery.SoC"] == pytest.approx(model.batteries["battery"].soc_pct, abs=0.05)
    client = await tcp_client(spec.devices["heat_pump"])
    values = await poll(client, spec.devices["heat_pump"], "realtime")
    client.close()
    assert values["electric_power"] == pytest.approx(
        model.heat_pumps["heat_pump"].electric_w, abs=0.5)


async def test_rtu_bus_serves_two_meters(running_site: SiteRunner) -> None:
    spec, model = running_site.site.spec, running_site.site.model
    grid = spec.devices["grid_meter"]
    port = running_site.serial_ports[grid.line.serial_port]
    client = AsyncModbusSerialClient(port, baudrate=9600, timeout=1, retries=0)
    assert await client.connect()
    try:
        grid_values = await poll(client, grid, "realtime")
        feeder_values = await poll(client, spec.devices["heat_pump_meter"], "realtime")
        assert grid_values["total_power"] == pytest.approx(model.site_power_w(), abs=1.0)
        assert feeder_values["total_power"] == pytest.approx(
            model.meters["heat_pump_meter"].counter.power_w, abs=0.1)
        # A unit nobody serves on the bus gets no answer at all, as on RS-485.
        with pytest.raises(ModbusIOException, match="No response"):
            await client.read_holding_registers(0x2000, count=2, device_id=9)
    finally:
        client.close()


async def test_unmapped_register_answers_illegal_address(running_site: SiteRunner) -> None:
    spec = running_site.site.spec
    client = await tcp_client(spec.devices["heat_pump"])
    try:
        response = await client.read_input_registers(100, count=2, device_id=1)
        assert response.isError()
        assert response.exception_code == 2
        response = await client.read_holding_registers(0, count=20, device_id=1)  # runs past
        assert response.isError()
        assert response.exception_code == 2
    finally:
        client.close()


async def test_writes_are_checked_against_the_map(running_site: SiteRunner) -> None:
    spec, model = running_site.site.spec, running_site.site.model
    heat_pump = model.heat_pumps["heat_pump"]
    client = await tcp_client(spec.devices["heat_pump"])
    try:
        response = await client.write_register(1, 750, device_id=1)  # 75.0 °C > max 60
        assert response.isError()
        assert response.exception_code == 3
        assert heat_pump.flow_setpoint_c == 40.0  # unchanged
        response = await client.write_register(0, 1, device_id=1)  # SG-Ready 1: blocked
        assert not response.isError()
        assert heat_pump.sg_ready_state == 1
        response = await client.write_register(0, 7, device_id=1)  # not a state
        assert response.isError()
        assert response.exception_code == 3
        assert heat_pump.sg_ready_state == 1
    finally:
        client.close()
    inverter = spec.devices["pv_inverter"]
    client = await tcp_client(inverter)
    try:
        w = register_map(inverter.device_map).point("inverter_three_phase.W")
        response = await client.write_register(w.address, 5, device_id=1)  # read-only
        assert response.isError()
        assert response.exception_code == 2
    finally:
        client.close()


async def test_relay_coils_switch_loads(running_site: SiteRunner) -> None:
    spec, model = running_site.site.spec, running_site.site.model
    client = await tcp_client(spec.devices["relay_b"])
    try:
        response = await client.write_coils(0, [False, False, True], device_id=2)
        assert not response.isError()
        assert model.relays["relay_b"].states[:3] == [False, False, True]
        assert model.relays["relay_a"].states[:3] == [True, True, True]  # other unit
        bits = await client.read_coils(0, count=16, device_id=2)
        assert bits.bits[:3] == [False, False, True]
        running_site.clock.advance(1.0)  # type: ignore[attr-defined]
        running_site.refresh()
        assert model.loads["ev_charger_1"].power_w == 0.0
    finally:
        client.close()


async def test_unknown_unit_on_a_tcp_gateway_answers_0b(running_site: SiteRunner) -> None:
    client = await tcp_client(running_site.site.spec.devices["relay_a"])
    try:
        response = await client.read_coils(0, count=8, device_id=7)
        assert response.isError()
        assert response.exception_code == 0x0B
    finally:
        client.close()


# -- faults ---------------------------------------------------------------------------


def raw_request(transaction: int, unit: int, function: int, address: int, count: int) -> bytes:
    return struct.pack(">HHHBBHH", transaction, 0, 6, unit, function, address, count)


async def raw_exchange(device: DeviceSpec, request: bytes, wait_s: float = 1.0) -> bytes:
    reader, writer = await asyncio.open_connection(device.line.host, device.line.port)
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.read(512), wait_s)
    finally:
        writer.close()


async def test_fault_latency_and_timeout(running_site: SiteRunner) -> None:
    device = running_site.site.spec.devices["battery"]
    faults = running_site.faults("battery")
    faults.latency_s = 0.3
    started = time.monotonic()
    answer = await raw_exchange(device, raw_request(1, 1, 3, 40000, 2))
    assert time.monotonic() - started >= 0.3
    assert answer[7:] == bytes([3, 4, 0x53, 0x75, 0x6E, 0x53])  # "SunS", late
    faults.clear()
    faults.no_response = True
    with pytest.raises(asyncio.TimeoutError):
        await raw_exchange(device, raw_request(2, 1, 3, 40000, 2), wait_s=0.5)


async def test_fault_exception_and_disconnect(running_site: SiteRunner) -> None:
    device = running_site.site.spec.devices["battery"]
    faults = running_site.faults("battery")
    faults.exception = 6
    answer = await raw_exchange(device, raw_request(1, 1, 3, 40000, 2))
    assert answer[7:] == bytes([0x83, 6])  # device busy
    faults.clear()
    faults.disconnect = True
    assert await raw_exchange(device, raw_request(2, 1, 3, 40000, 2)) == b""  # closed


async def test_fault_corrupt_frames(running_site: SiteRunner) -> None:
    device = running_site.site.spec.devices["battery"]
    running_site.faults("battery").corrupt = True
    answer = await raw_exchange(device, raw_request(1, 1, 3, 40000, 2))
    length = struct.unpack(">H", answer[4:6])[0]
    assert length == len(answer) - 6  # MBAP intact…
    assert answer[8] != len(answer) - 9  # …but the byte count lies


async def test_fault_corrupt_rtu_frame_has_a_bad_crc(running_site: SiteRunner) -> None:
    import os

    from tests_support import crc16

    grid = running_site.site.spec.devices["grid_meter"]
    running_site.faults("grid_meter").corrupt = True
    fd = os.open(running_site.serial_ports[grid.line.serial_port],
                 os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)  # a blocking read would stop the loop
    try:
        import tty

        tty.setraw(fd)
        request = bytes([1, 3, 0x20, 0x00, 0x00, 0x02])
        os.write(fd, request + crc16(request))
        data = b""
        deadline = time.monotonic() + 2.0
        while len(data) < 9 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
            with contextlib.suppress(BlockingIOError):
                data += os.read(fd, 64)
        assert len(data) == 9, data
        assert data[:3] == bytes([1, 3, 4])
        assert crc16(data[:-2]) != data[-2:]
    finally:
        os.close(fd)


async def test_fault_freeze_and_scale_factor_change(running_site: SiteRunner) -> None:
    spec = running_site.site.spec
    clock = running_site.clock
    assert isinstance(clock, ManualClock)
    inverter = spec.devices["pv_inverter"]
    faults = running_site.faults("pv_inverter")
    client = await tcp_client(inverter)
    try:
        faults.freeze = True
        before = await poll(client, inverter, "realtime")
        clock.advance(1800.0)
        frozen = await poll(client, inverter, "realtime")
        assert frozen == before
        faults.freeze = False
        thawed = await poll(client, inverter, "realtime")
        assert thawed["inverter_three_phase.W"] != before["inverter_three_phase.W"]
        faults.scale_factor_period_s = 0.2
        seen_sf = set()
        for _ in range(12):
            values = await poll(client, inverter, "realtime")
            seen_sf.add(values["inverter_three_phase.W_SF"])
            # Re-read with its scale factor, power stays right whichever exponent is served.
            assert values["inverter_three_phase.W"] == pytest.approx(
                running_site.site.model.pv["pv_inverter"].power_w, abs=51.0)
            await asyncio.sleep(0.05)
        assert seen_sf == {1, 2}
    finally:
        client.close()


async def test_fault_reboot_then_back(running_site: SiteRunner) -> None:
    device = running_site.site.spec.devices["dc_bus"]
    running_site.faults("dc_bus").reboot(0.5)
    assert await raw_exchange(device, raw_request(1, 1, 4, 0, 2)) == b""
    await asyncio.sleep(0.6)
    answer = await raw_exchange(device, raw_request(2, 1, 4, 0, 2))
    assert answer[7:9] == bytes([4, 4])


async def test_single_client_device_closes_a_second_connection(site_spec) -> None:  # type: ignore[no-untyped-def]
    from simulators.sitefile import build_site

    site = build_site(site_spec)
    async with SiteRunner(site, ManualClock(site.start_s),
                          single_client=frozenset({"battery"})) as runner:
        device = runner.site.spec.devices["battery"]
        first = await asyncio.open_connection(device.line.host, device.line.port)
        await asyncio.sleep(0.05)
        second_reader, second_writer = await asyncio.open_connection(device.line.host,
                                                                     device.line.port)
        assert await asyncio.wait_for(second_reader.read(16), 1.0) == b""  # closed at once
        second_writer.close()
        reader, writer = first
        writer.write(raw_request(1, 1, 3, 40000, 2))
        answer = await asyncio.wait_for(reader.read(64), 1.0)
        assert answer[7:9] == bytes([3, 4])  # the first client is still served
        writer.close()
