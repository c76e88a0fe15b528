"""Third-party clients read the vendors' simulated devices at the addresses their
documents give: pymodbus' client for the Huawei SUN2000 (whose quirks a client must
respect, as huawei-solar-lib does), mbpoll for Sungrow (1-based document numbers, as
mbpoll counts by default) and GoodWe. None of them shares code with our drivers.

Physics stand still (``tests_support.simulated``): what a client reads must be what the
models hold, to the register's resolution.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusIOException
from tests_support import mbpoll, polled_values, simulated
from vendor_sites import vendor_site_on_free_ports

from drivers.site import DeviceSpec
from simulators.runner import SiteRunner

INT32, UINT32 = AsyncModbusTcpClient.DATATYPE.INT32, AsyncModbusTcpClient.DATATYPE.UINT32


@pytest.fixture
async def huawei(tmp_path: Path) -> AsyncIterator[SiteRunner]:
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    async with simulated(vendor_site_on_free_ports("huawei-shop", tmp_path)) as runner:
        yield runner


class HuaweiClient:
    """pymodbus' client used the way huawei-solar-lib uses it: wait after connecting,
    keep 50 ms between requests (the map's pacing facts, which it reads)."""

    def __init__(self, device: DeviceSpec) -> None:
        self.device = device
        self.client = AsyncModbusTcpClient(device.line.host, port=device.line.port,
                                           timeout=0.5, retries=0)

    async def read(self, address: int, count: int) -> list[int]:
        await asyncio.sleep(self.device.pacing.request_interval_s)
        response = await self.client.read_holding_registers(address, count=count,
                                                            device_id=self.device.unit)
        assert not response.isError(), (address, response)
        return list(response.registers)

    async def number(self, address: int, data_type: AsyncModbusTcpClient.DATATYPE) -> float:
        registers = await self.read(address, 2)
        value = self.client.convert_from_registers(registers, data_type)
        assert isinstance(value, int)
        return float(value)


async def test_pymodbus_reads_the_huawei_at_its_documented_addresses(
        huawei: SiteRunner) -> None:
    model, spec = huawei.site.model, huawei.site.spec
    pv, battery, meter = model.pv["inverter"], model.batteries["battery"], \
        model.meters["grid_meter"]
    reader = HuaweiClient(spec.devices["inverter"])
    await reader.client.connect()
    try:
        await asyncio.sleep(spec.devices["inverter"].pacing.connect_delay_s)
        # Solar Inverter Modbus Interface Definitions, Issue 05: …
        assert await reader.number(32064, INT32) == pytest.approx(pv.dc_power_w, abs=1)
        # 32080 active power: the AC port, PV and (idle) battery together
        assert await reader.number(32080, INT32) == pytest.approx(
            pv.power_w + battery.power_w, abs=1)
        # 32106 accumulated energy yield, kWh with gain 100
        assert await reader.number(32106, UINT32) / 100 == pytest.approx(
            pv.energy_wh / 1000, abs=0.01)
        # 37113 power sensor active power, + feeding the grid
        assert await reader.number(37113, INT32) == pytest.approx(-meter.counter.power_w,
                                                                  abs=1)
        # 37760 storage SoC, % with gain 10; 37765 storage power, + charging
        (soc,) = await reader.read(37760, 1)
        assert soc / 10 == pytest.approx(battery.soc_pct, abs=0.05)
        assert await reader.number(37765, INT32) == pytest.approx(-battery.power_w, abs=1)
        # evcc reads the power sensor as one block of 37 registers from 37101
        block = await reader.read(37101, 37)
        assert reader.client.convert_from_registers(block[12:14], INT32) == pytest.approx(
            -meter.counter.power_w, abs=1)  # 37113 inside the block
        line_voltage = reader.client.convert_from_registers(block[25:27], INT32)
        assert isinstance(line_voltage, int)
        assert line_voltage / 10 == pytest.approx(400, rel=0.03)  # 37126 A-B line voltage
        # 40125 active power percentage derating, gain 10: written with FC 06
        await asyncio.sleep(0.05)
        written = await reader.client.write_register(40125, 455, device_id=1)
        assert not written.isError()
        assert (pv.limit_enabled, pv.limit_pct) == (True, 45.5)
        assert await reader.read(40125, 1) == [455]
    finally:
        reader.client.close()


async def test_a_client_in_a_hurry_meets_the_huawei_quirks(huawei: SiteRunner) -> None:
    """Right after connecting the simulated SUN2000 does not answer; two requests in a
    row without a pause, the second gets exception 06 (busy); a second client is shut
    out while the first is connected."""
    device = huawei.site.spec.devices["inverter"]
    client = AsyncModbusTcpClient(device.line.host, port=device.line.port, timeout=0.5,
                                  retries=0)
    await client.connect()
    try:
        with pytest.raises(ModbusIOException):  # no answer within the connect delay
            await client.read_holding_registers(32064, count=2, device_id=1)
        await asyncio.sleep(device.pacing.connect_delay_s)
        first = await client.read_holding_registers(32064, count=2, device_id=1)
        hurried = await client.read_holding_registers(32064, count=2, device_id=1)
        assert not first.isError()
        assert hurried.isError()
        assert hurried.exception_code == 6
        other = AsyncModbusTcpClient(device.line.host, port=device.line.port, timeout=0.5,
                                     retries=0)
        await other.connect()
        try:
            with pytest.raises(ModbusIOException):
                await other.read_holding_registers(32064, count=2, device_id=1)
        finally:
            other.close()
    finally:
        client.close()


def mbpoll_tcp(device: DeviceSpec, *args: str) -> list[str]:
    assert device.line.port is not None
    return ["-m", "tcp", "-a", str(device.unit), "-1", "-p", str(device.line.port), *args,
            device.line.host]


async def test_mbpoll_reads_the_sungrow_at_its_1_based_document_numbers(
        tmp_path: Path) -> None:
    """mbpoll counts registers from 1 unless told -0, as Sungrow's documents do: the
    document's number goes to mbpoll as it is printed. Sungrow's 32-bit values come low
    word first, mbpoll's default order (no -B)."""
    async with simulated(vendor_site_on_free_ports("sungrow-workshop", tmp_path)) as runner:
        model, spec = runner.site.model, runner.site.spec
        sg, sh, battery = spec.devices["string_inverter"], spec.devices["hybrid"], \
            spec.devices["battery"]
        # SG: doc 5017 total DC power (protocol 5016), doc 5031 total active power (5030)
        values = polled_values(await mbpoll(*mbpoll_tcp(sg, "-t", "3:int", "-r", "5017")))
        assert values[5017] == pytest.approx(model.pv["string_inverter"].dc_power_w, abs=1)
        values = polled_values(await mbpoll(*mbpoll_tcp(sg, "-t", "3:int", "-r", "5031")))
        assert values[5031] == pytest.approx(model.pv["string_inverter"].power_w, abs=1)
        # the same register by its protocol address: -0 and 5016
        values = polled_values(await mbpoll(*mbpoll_tcp(sg, "-0", "-t", "3:int", "-r",
                                                        "5016")))
        assert values[5016] == pytest.approx(model.pv["string_inverter"].dc_power_w, abs=1)
        # SH: doc 13010 export power (+ export) and doc 5601 meter power (+ import), doc
        # 13023 battery level (0.1 %)
        grid_w = model.meters["grid_meter"].counter.power_w
        values = polled_values(await mbpoll(*mbpoll_tcp(sh, "-t", "3:int", "-r", "13010")))
        assert values[13010] == pytest.approx(-grid_w, abs=1)
        values = polled_values(await mbpoll(*mbpoll_tcp(sh, "-t", "3:int", "-r", "5601")))
        assert values[5601] == pytest.approx(grid_w, abs=1)
        values = polled_values(await mbpoll(*mbpoll_tcp(battery, "-t", "3", "-r", "13023")))
        assert values[13023] / 10 == pytest.approx(model.batteries["battery"].soc_pct,
                                                   abs=0.05)
        # doc 13100 reserved SoC for backup, written with FC 06 (holding: -t 4)
        output = await mbpoll(*mbpoll_tcp(battery, "-t", "4", "-r", "13100"), "20")
        assert "Written 1 references" in output, output
        assert model.batteries["battery"].min_reserve_pct == 20
        # doc 5001 nominal power is an input register: FC 03 there is refused, 02
        output = await mbpoll(*mbpoll_tcp(sg, "-t", "4", "-r", "5001"))
        assert "Illegal data address" in output, output


async def test_mbpoll_reads_the_goodwe_at_its_documented_addresses(tmp_path: Path) -> None:
    async with simulated(vendor_site_on_free_ports("goodwe-office", tmp_path)) as runner:
        model, spec = runner.site.model, runner.site.spec
        inverter = spec.devices["inverter"]  # unit 247, GoodWe's default
        # 35301 PV power total, 36025 meter total power (+ export), 35182 battery power,
        # 37007 SoC — FC 03, big-endian words: -0 (the document's addresses are protocol
        # addresses) and -B
        values = polled_values(await mbpoll(*mbpoll_tcp(
            inverter, "-0", "-B", "-t", "4:int", "-r", "35301")))
        assert values[35301] == pytest.approx(model.pv["inverter"].dc_power_w, abs=1)
        values = polled_values(await mbpoll(*mbpoll_tcp(
            inverter, "-0", "-B", "-t", "4:int", "-r", "36025")))
        assert values[36025] == pytest.approx(-model.meters["grid_meter"].counter.power_w,
                                              abs=1)
        values = polled_values(await mbpoll(*mbpoll_tcp(
            inverter, "-0", "-B", "-t", "4:int", "-r", "35182")))
        assert values[35182] == pytest.approx(model.batteries["battery"].power_w, abs=1)
        values = polled_values(await mbpoll(*mbpoll_tcp(inverter, "-0", "-t", "4", "-r",
                                                        "37007")))
        assert values[37007] == pytest.approx(model.batteries["battery"].soc_pct, abs=0.5)


async def test_the_smartlogger_answers_for_the_plant_and_forwards_to_the_battery() -> None:
    """A SmartLogger at unit 0 with the plant's totals, a LUNA2000 behind it at unit 1 (on
    the logger's RS-485: none of the SDongle's connect delay). pymodbus reads the plant
    at the logger's documented addresses; the gateway polls both units over the logger's
    one TCP port and charges the battery through it."""
    from tests_support import free_port, polling, site_from_text

    from drivers.devices import Battery

    port = free_port()
    spec = site_from_text(f"""
[site]
id = "logger"

[[devices]]
name = "logger"
model = "huawei-smartlogger"
transport = "tcp"
host = "127.0.0.1"
port = {port}
unit = 0
simulation = {{ peak_power_w = 120000.0, rated_ac_w = 100000.0 }}

[[devices]]
name = "battery"
model = "huawei-luna2000"
transport = "tcp"
host = "127.0.0.1"
port = {port}
unit = 1
pacing = {{ connect_delay_s = 0.0, single_client = false }}
""")
    async with simulated(spec) as runner:
        model = runner.site.model
        client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=1.0, retries=0)
        await client.connect()
        try:
            # 40521 input power, 40525 active power (W), 40446 yield (kWh/100), unit 0
            registers = (await client.read_holding_registers(40521, count=6,
                                                             device_id=0)).registers
            assert client.convert_from_registers(registers[:2], INT32) == pytest.approx(
                model.pv["logger"].dc_power_w, abs=1)
            assert client.convert_from_registers(registers[4:6], INT32) == pytest.approx(
                model.pv["logger"].power_w, abs=1)
            energy = (await client.read_holding_registers(40446, count=4,
                                                          device_id=0)).registers
            yield_kwh = client.convert_from_registers(energy, client.DATATYPE.INT64)
            assert isinstance(yield_kwh, int)
            assert yield_kwh / 100 == pytest.approx(model.pv["logger"].energy_wh / 1000,
                                                    abs=0.01)
        finally:
            client.close()
        async with polling(spec) as gateway:
            await gateway.all_good({"logger": ["dc_power", "energy"],
                                    "battery": ["soc", "max_charge_power"]})
            battery = Battery(spec.devices["battery"].device_map,
                              gateway.gateway.bus.latest.device_values("battery"))
            results = await gateway.gateway.execute("battery",
                                                    battery.set_power_w(-1500.0, revert_s=60))
            assert all(r.ok for r in results), results
            assert model.batteries["battery"].forced_w == pytest.approx(-1500.0)
