"""Sites that already have a meter: the firmware reads a Chint DDSU666 on its UART (Modbus
RTU master) and serves its values as channel 1. The DDSU666 is the project's simulator
(pymodbus server) serving the register layout below on a virtual RS-485 line; the
gateway then reads the firmware over Modbus TCP."""

from __future__ import annotations

from pathlib import Path

import pytest
from mp_support import MAP, free_port, number, poll, running
from pymodbus.client import AsyncModbusTcpClient

from drivers.maploader import load_map
from drivers.points import Value
from simulators.modbus import ServedDevice, SimSerialServer
from simulators.serialbus import VirtualSerialLine

# The registers the firmware reads (micropython/submeter/ddsu666.py), as a map the
# simulator serves: IEEE-754 floats, function 03, values in V, A, kW, kvar, kVA, Hz, kWh.
DDSU666 = """
[device]
model = "ddsu666"
kind = "meter"
max_gap = 2

[[points]]
name = "voltage"
table = "holding"
address = 0x2000
type = "f32"
unit = "V"
[[points]]
name = "current"
table = "holding"
address = 0x2002
type = "f32"
unit = "A"
[[points]]
name = "power"
table = "holding"
address = 0x2004
type = "f32"
scale = 1000
unit = "W"
[[points]]
name = "reactive_power"
table = "holding"
address = 0x2006
type = "f32"
scale = 1000
unit = "var"
[[points]]
name = "apparent_power"
table = "holding"
address = 0x2008
type = "f32"
scale = 1000
unit = "VA"
[[points]]
name = "power_factor"
table = "holding"
address = 0x200A
type = "f32"
[[points]]
name = "frequency"
table = "holding"
address = 0x200E
type = "f32"
unit = "Hz"
[[points]]
name = "import_energy"
table = "holding"
address = 0x4000
type = "f32"
scale = 1000
unit = "Wh"
[[points]]
name = "export_energy"
table = "holding"
address = 0x400A
type = "f32"
scale = 1000
unit = "Wh"

[capabilities]
power_w = "power"
import_wh = "import_energy"
export_wh = "export_energy"

[simulation.constants]
voltage = 229.5
current = 8.25
power = 1650.0
reactive_power = -820.0
apparent_power = 1893.4
power_factor = 0.871
frequency = 49.98
import_energy = 1234500.0
export_energy = 67000.0
"""


class Constants:
    """A binding without physics: the map's simulation constants are the values."""

    def values(self) -> dict[str, Value]:
        return {}

    def extra_points(self) -> dict[str, Value]:
        return {}

    def write(self, capability: str, value: Value) -> None:
        raise KeyError(capability)


async def test_values_of_a_ddsu666_on_the_uart_are_served_as_channel_1(
        build: Path, tmp_path: Path) -> None:
    path = tmp_path / "ddsu666.toml"
    path.write_text(DDSU666)
    meter_map = load_map(path)
    port = free_port()
    async with VirtualSerialLine(baud=9600) as line:
        meter = ServedDevice("ddsu666", meter_map, Constants(), unit=3)
        server = SimSerialServer([meter], line.device_port, baud=9600)
        await server.serve_forever(background=True)
        try:
            config = {"source": "ddsu666", "modbus_tcp": {"port": port},
                      "ddsu666": {"uart": 1, "unit_id": 3, "interval_s": 0.5,
                                  "timeout_s": 1.0}}
            sim = {"speed": 1, "uart": {"1": line.gateway_port}}
            with running(build, tmp_path / "root", config=config, sim=sim) as device:
                device.wait_for("modbus-tcp: listening")
                client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=3)
                assert await client.connect()
                names = (*(n for n in MAP.points if n.startswith("ch1_")), "frequency",
                         "status")
                try:
                    for _ in range(200):
                        values = await poll(client, MAP, names)
                        if values["ch1_voltage"]:
                            break
                finally:
                    client.close()
        finally:
            await server.shutdown()  # type: ignore[no-untyped-call]
    # channel 1 carries the meter's values, at the sub-meter map's register resolution
    for point, value in meter_map.sim_constants.items():
        name = "frequency" if point == "frequency" else f"ch1_{point}"
        if point.endswith("energy"):
            assert values[name] == int(number(value)), name  # whole Wh
        else:
            assert values[name] == pytest.approx(value, abs=MAP.points[name].scale / 2), name
    assert MAP.points["status"].bit_names(values["status"]) == ["wifi connected"]
