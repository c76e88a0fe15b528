"""No network operation can stall the sub-meter: it boots and meters without Wi-Fi, a
broker that accepts connections but never answers is given up on, a Modbus client that
sends half a request and goes silent does not block the others -- and the watchdog is
fed on time throughout."""

from __future__ import annotations

import socket
from pathlib import Path

from mp_support import MAP, free_port, poll, running, sine_wave
from pymodbus.client import AsyncModbusTcpClient


async def read(port: int, names: tuple[str, ...]) -> dict[str, object]:
    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=3)
    assert await client.connect()
    try:
        for _ in range(100):
            values = await poll(client, MAP, names)
            if values.get("frequency"):
                break
        return dict(values)
    finally:
        client.close()


async def test_without_wifi_it_boots_meters_and_serves(build: Path, tmp_path: Path) -> None:
    wave = sine_wave()
    port = free_port()
    config = {"modbus_tcp": {"port": port},
              "mqtt": {"enabled": True, "host": "127.0.0.1", "port": free_port()}}
    sim = {"wave": str(wave.write(tmp_path / "wave.bin", 1.0)), "rate": wave.rate,
           "speed": 20, "net": False}
    with running(build, tmp_path / "root", config=config, sim=sim) as device:
        device.wait_for("modbus-tcp: listening")
        values = await read(port, ("frequency", "status", "ch1_power"))
        assert device.matches("mqtt") == []  # no attempt without a network
    assert values["status"] == 0  # no Wi-Fi, no MQTT, nothing wrong
    assert abs(float(str(values["frequency"])) - 50.0) < 0.1


async def test_a_silent_broker_and_a_stalled_client_block_nothing(
        build: Path, tmp_path: Path) -> None:
    wave = sine_wave()
    port = free_port()
    with socket.socket() as blackhole, socket.socket() as stalled:
        blackhole.bind(("127.0.0.1", 0))
        blackhole.listen(8)  # accepts TCP connections (backlog), never says a word
        config = {"modbus_tcp": {"port": port, "max_clients": 2},
                  "mqtt": {"enabled": True, "host": "127.0.0.1",
                           "port": blackhole.getsockname()[1]},
                  "watchdog_s": 5}
        sim = {"wave": str(wave.write(tmp_path / "wave.bin", 1.0)), "rate": wave.rate,
               "speed": 5, "stats": 10}
        with running(build, tmp_path / "root", config=config, sim=sim) as device:
            device.wait_for("modbus-tcp: listening")
            stalled.connect(("127.0.0.1", port))
            stalled.sendall(bytes((0, 1, 0, 0, 0, 6, 1)))  # half a request, then silence
            values = await read(port, ("frequency", "ch1_power"))
            assert abs(float(str(values["frequency"])) - 50.0) < 0.1
            device.wait_for(r"mqtt: down \(no CONNACK\)", timeout=15)
            device.wait_for(r"stats: windows=\d+", after=len(device.lines))
            values = await read(port, ("frequency",))  # still serving after all that
            assert device.matches("watchdog") == []
