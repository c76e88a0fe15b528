"""Sites that already have a meter: the firmware reads a Chint DDSU666 on its UART (Modbus
RTU master) and serves its values as channel 1. The DDSU666 is the project's simulator
(pymodbus server) serving the shipped ddsu666 map on a virtual RS-485 line; the
gateway then reads the firmware over Modbus TCP."""

from __future__ import annotations

from pathlib import Path

import pytest
from mp_support import MAP, free_port, number, poll, running
from pymodbus.client import AsyncModbusTcpClient

from drivers.maploader import get_map
from drivers.points import AnyMap, Value
from simulators.modbus import ServedDevice, SimSerialServer
from simulators.serialbus import VirtualSerialLine

# What the simulated DDSU666 measures, by point of the shipped map (drivers/maps/ddsu666.toml,
# the register layout micropython/submeter/ddsu666.py reads), in engineering units.
VALUES: dict[str, float] = {
    "voltage": 229.5, "current": 8.25, "power": 1650.0, "reactive_power": -820.0,
    "apparent_power": 1893.4, "power_factor": 0.871, "frequency": 49.98,
    "import_energy": 1234500.0, "export_energy": 67000.0,
}


class Fixed:
    """A binding without physics: :data:`VALUES`, by the map's capabilities."""

    def __init__(self, device_map: AnyMap) -> None:
        self.by_capability: dict[str, Value] = {
            capability: VALUES[point] for capability, point in device_map.capabilities.items()
            if point in VALUES}

    def values(self) -> dict[str, Value]:
        return dict(self.by_capability)

    def extra_points(self) -> dict[str, Value]:
        return {}

    def write(self, capability: str, value: Value) -> None:
        raise KeyError(capability)


async def test_values_of_a_ddsu666_on_the_uart_are_served_as_channel_1(
        build: Path, tmp_path: Path) -> None:
    meter_map = get_map("ddsu666")
    port = free_port()
    async with VirtualSerialLine(baud=9600) as line:
        meter = ServedDevice("ddsu666", meter_map, Fixed(meter_map), unit=3)
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
    for point, value in VALUES.items():
        name = "frequency" if point == "frequency" else f"ch1_{point}"
        if point.endswith("energy"):
            assert values[name] == int(number(value)), name  # whole Wh
        else:
            assert values[name] == pytest.approx(value, abs=MAP.points[name].scale / 2), name
    assert MAP.points["status"].bit_names(values["status"]) == ["wifi connected"]
