"""The heat/cold meter and the water meter (TUF-2000M table) served over Modbus TCP:
the gateway's reading through the maps, raw registers read with pymodbus as an
independent client (1-based table numbers at number − 1, low word first), and the
physics they meter."""

from __future__ import annotations

import struct
from collections.abc import Sequence

import pytest
from pymodbus.client import AsyncModbusTcpClient
from tests_support import free_port, simulated, site_from_text

from controller.tools import read_device

SITE = """
[site]
id = "flow"
name = "flow"
latitude = 36.67
longitude = 117.0
timezone = "Asia/Shanghai"

[[devices]]
name = "heat_pump"
model = "sg-ready-heatpump"
transport = "tcp"
host = "127.0.0.1"
port = {port}
unit = 1
simulation = {{ rated_electric_w = 45000.0, heat_loss_w_per_k = 4500.0, indoor_c = 20.5 }}

[[devices]]
name = "heat_meter"
model = "tuf2000m-heat"
transport = "tcp"
host = "127.0.0.1"
port = {port}
unit = 2
simulation = {{ measures = "heat_pump" }}

[[devices]]
name = "water_meter"
model = "tuf2000m-water"
transport = "tcp"
host = "127.0.0.1"
port = {port}
unit = 3
energy_code = "02000"
simulation = {{ volume_m3 = 3456.0, daily_m3 = 12.0 }}
"""


def _f32(words: Sequence[int]) -> float:
    """REAL4, low word first."""
    return float(struct.unpack(">f", struct.pack(">HH", words[1], words[0]))[0])


def _s32(words: Sequence[int]) -> int:
    """LONG, low word first."""
    return int(struct.unpack(">i", struct.pack(">HH", words[1], words[0]))[0])


async def test_heat_and_water_meters_over_modbus_tcp() -> None:
    port = free_port()
    spec = site_from_text(SITE.format(port=port))
    async with simulated(spec) as runner:
        heat_pump = runner.site.model.heat_pumps["heat_pump"]
        values = {v.point.name: v.value for v in await read_device(spec.devices["heat_meter"])}
        water = {v.point.name: v.value for v in await read_device(spec.devices["water_meter"])}
        client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=3)
        assert await client.connect()
        try:
            heat_raw = (await client.read_holding_registers(0, count=36, device_id=2)).registers
            water_raw = (await client.read_holding_registers(0, count=10, device_id=3)).registers
        finally:
            client.close()
    # the gateway's view, in base units
    assert values["temperature_1"] == pytest.approx(heat_pump.flow_c, abs=1e-4)
    assert values["temperature_2"] == pytest.approx(heat_pump.return_c, abs=1e-4)
    assert values["energy_flow"] == pytest.approx(abs(heat_pump.thermal_w), rel=1e-6)
    assert heat_pump.thermal_w != 0  # June, 11:00: the heat pump is working
    assert values["positive_heat"] == 1000 * round(heat_pump.heating_energy_wh / 1000)
    assert values["negative_heat"] == 1000 * round(heat_pump.cooling_energy_wh / 1000)
    # flow carries the thermal power at the supply–return difference (4.186 MJ/(m³·K))
    delta_k = abs(heat_pump.flow_c - heat_pump.return_c)
    assert values["flow"] == pytest.approx(abs(heat_pump.thermal_w) * 3600 / (4.186e6 * delta_k),
                                           rel=1e-5)
    # water: a weekday at 11:00, 12 m³ a day over 10 office hours → 1.2 m³/h
    assert water["flow"] == pytest.approx(1.2)
    # the reading at the start (11:00) plus one minute at 1.2 m³/h
    assert water["positive_volume"] == pytest.approx(3456.0 + 1.2 * 60 / 3600, abs=0.002)
    # pymodbus, register by register: the 1-based table at address − 1, low word first
    assert _f32(heat_raw[0:2]) == pytest.approx(values["flow"], rel=1e-6)  # 0001-0002
    assert _f32(heat_raw[32:34]) == pytest.approx(values["temperature_1"], rel=1e-6)  # 0033
    assert _s32(heat_raw[16:18]) * 1000 == values["positive_heat"]  # 0017-0018, kWh
    assert _s32(water_raw[8:10]) / 1000 == pytest.approx(water["positive_volume"])  # litres


def test_water_use_is_a_closed_form_of_office_hours() -> None:
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from simulators.physics.water import WaterDemand

    zone = ZoneInfo("Asia/Shanghai")
    friday = datetime(2026, 6, 26, 17, 0, tzinfo=zone).timestamp()
    demand = WaterDemand(zone, friday, volume_m3=10.0, daily_m3=12.0)
    monday_9 = datetime(2026, 6, 29, 9, 0, tzinfo=zone).timestamp()
    # Friday 17–18 (1.2 m³), the weekend (0), Monday 08–09 (1.2 m³)
    assert demand.volume_at(monday_9) == pytest.approx(12.4)
    assert demand.flow_m3_h_at(friday + 86400) == 0.0  # Saturday
