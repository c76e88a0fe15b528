"""MQTT with a real mosquitto: the firmware publishes its readings; while the link is down
they go to the ring file in flash -- across a reboot too -- and are replayed in order once
it is back. Nothing is lost; duplicates (QoS 1 is at least once) carry the same
(boot, seq) and are dropped by the subscriber."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from mp_support import Device, sine_wave
from tests_support import Mosquitto
from tests_support import eventually as shared_eventually

TOPIC = "pedf/submeter"
DEVICE = "sm-test"


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[int]:
    """A mosquitto of our own on a free port (tests_support.Mosquitto)."""
    broker = Mosquitto(tmp_path / "broker").start()
    try:
        yield broker.port
    finally:
        broker.stop()


class LinkProxy:
    """A TCP relay between the device and the broker that can be cut like a dead uplink:
    open connections are dropped and new ones refused until restored."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", self.port,
                                                  reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        await self._server.wait_closed()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(4096):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers -= {writer, up_writer}


@contextlib.asynccontextmanager
async def subscriber(port: int) -> AsyncIterator[list[dict[str, Any]]]:
    """Every reading the broker delivers, in arrival order."""
    received: list[dict[str, Any]] = []
    async with aiomqtt.Client("127.0.0.1", port) as client:
        await client.subscribe(f"{TOPIC}/+/reading", qos=1)

        async def collect() -> None:
            async for message in client.messages:
                assert isinstance(message.payload, bytes)
                received.append(json.loads(message.payload))

        task = asyncio.create_task(collect(), name="mqtt-subscriber")
        try:
            yield received
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def ring_lines(root: Path) -> list[bytes]:
    ring = root / "ring"
    if not ring.exists():
        return []
    return [line for path in sorted(ring.iterdir()) for line in path.read_bytes().splitlines()]


async def eventually(condition: Any, what: str = "") -> None:
    """``tests_support.eventually`` with this suite's 20 s deadline."""
    await shared_eventually(condition, timeout_s=20.0, what=what)


async def test_readings_survive_a_dead_link_and_a_reboot_in_order(
        build: Path, tmp_path: Path, mosquitto: int) -> None:
    wave = sine_wave()
    proxy = LinkProxy(mosquitto)
    await proxy.start()
    root = tmp_path / "flash"
    config = {"device_id": DEVICE, "modbus_tcp": {"enabled": False},
              "mqtt": {"enabled": True, "host": "127.0.0.1", "port": proxy.port,
                       "topic": TOPIC, "interval_s": 1.0, "keepalive_s": 10}}
    sim = {"wave": str(wave.write(tmp_path / "wave.bin", 1.0)), "rate": wave.rate,
           "speed": 10}  # a reading every 100 ms of wall time
    Device.prepare(root, config=config, sim=sim)
    async with subscriber(mosquitto) as received:
        device = Device(build, root).start()
        try:
            await eventually(lambda: len(received) >= 5, what="live readings")
            await proxy.cut()
            await eventually(lambda: device.matches("mqtt: down"), what="the link to drop")
            await eventually(lambda: len(ring_lines(root)) >= 8, what="readings in the ring")
        finally:
            device.kill()  # a reboot in the middle of the outage
        buffered = [json.loads(line) for line in ring_lines(root)]
        assert {r["boot"] for r in buffered} == {1}
        # a reading torn by the power cut, half written
        segment = sorted((root / "ring").iterdir())[-1]
        with segment.open("ab") as f:
            f.write(b'{"dev":"sm-test","boot":1,"se')

        device = Device(build, root).start()
        try:
            await eventually(lambda: any(json.loads(line)["boot"] == 2
                                         for line in ring_lines(root) if line.endswith(b"}")),
                             what="offline readings after the reboot")
            await proxy.start()
            await eventually(lambda: any(r["boot"] == 2 and r["seq"] >= 15 for r in received),
                             what="live readings after the replay")
        finally:
            device.stop()
            await proxy.cut()

    unique: list[tuple[int, int]] = []
    for reading in received:
        key = (reading["boot"], reading["seq"])
        if key not in unique:
            unique.append(key)
    assert unique == sorted(unique), "replayed out of order"
    for boot in (1, 2):
        seqs = [seq for b, seq in unique if b == boot]
        assert seqs == list(range(1, len(seqs) + 1)), f"boot {boot} lost readings: {seqs}"
    assert {(r["boot"], r["seq"]) for r in buffered} <= set(unique)
    sample = received[0]
    assert sample["dev"] == DEVICE
    assert len(sample["ch"]) == 3
    assert abs(sample["ch"][0][2] - wave.reference()["channels"][0]["P"]) < 25
