"""The firmware's Modbus RTU slave, on a UART that is a pseudo-terminal of a virtual
RS-485 line (simulators.serialbus, with the wire's timing at 19200 baud), read by
pymodbus' serial client with the gateway's plan and codec."""

from __future__ import annotations

from pathlib import Path

import pytest
from mp_support import MAP, UNIT, exception_code, number, poll_all, running, sine_wave
from pymodbus.client import AsyncModbusSerialClient
from pymodbus.exceptions import ModbusIOException

from simulators.serialbus import VirtualSerialLine

BAUD = 19200


async def test_gateway_reads_the_firmware_over_rtu(build: Path, tmp_path: Path) -> None:
    wave = sine_wave()
    async with VirtualSerialLine(baud=BAUD) as line:
        config = {"modbus_tcp": {"enabled": False},
                  "modbus_rtu": {"enabled": True, "uart": 2, "baudrate": BAUD,
                                 "unit_id": UNIT}}
        sim = {"wave": str(wave.write(tmp_path / "wave.bin", 1.0)), "rate": wave.rate,
               "speed": 20, "uart": {"2": line.device_port}}
        with running(build, tmp_path / "root", config=config, sim=sim) as device:
            device.wait_for("modbus-rtu: unit 1")
            client = AsyncModbusSerialClient(line.gateway_port, baudrate=BAUD, timeout=2,
                                             retries=2)
            assert await client.connect()
            try:
                values = await poll_all(client)
                for _ in range(50):  # until the first window is metered
                    if values["frequency"]:
                        break
                    values = await poll_all(client)
                ref = wave.reference()
                assert abs(number(values["frequency"]) - 50.0) < 0.25
                ch1 = ref["channels"][0]
                assert abs(number(values["ch1_power"]) - ch1["P"]) < 0.005 * ch1["S"]
                assert values["demand_window"] == 900

                # writes, and the exception codes of the map
                response = await client.write_registers(
                    MAP.points["demand_window"].address, [120], device_id=UNIT)
                assert not response.isError()
                response = await client.read_holding_registers(0, count=1, device_id=UNIT)
                assert response.registers == [120]
                response = await client.read_input_registers(59, count=1, device_id=UNIT)
                assert exception_code(response) == 2
                response = await client.write_register(0, 5, device_id=UNIT)
                assert exception_code(response) == 3
                # a request to another unit on the bus is not answered, and does not
                # disturb the next one to us
                other = AsyncModbusSerialClient(line.gateway_port, baudrate=BAUD,
                                                timeout=0.3, retries=0)
                client.close()
                assert await other.connect()
                with pytest.raises(ModbusIOException):  # no answer at all
                    await other.read_input_registers(0, count=2, device_id=UNIT + 1)
                other.close()
                assert await client.connect()
                response = await client.read_input_registers(48, count=1, device_id=UNIT)
                assert not response.isError()
                assert abs(response.registers[0] - 5000) <= 25  # 50.00 Hz in 0.01 Hz
            finally:
                client.close()
