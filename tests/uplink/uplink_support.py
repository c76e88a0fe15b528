"""What the uplink tests share: the building served on free ports, the gateway assembled
around it, a subscriber that survives broker restarts, an operator sending commands, and
waits on the conditions that matter (connected, drained)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from tests_support import eventually, example_on_free_ports, with_uplink

from controller.app import App, assemble
from controller.commands import sign_hmac
from controller.config import UplinkSettings, uplink_settings
from controller.operator import build_command
from drivers.site import SiteSpec, load_site
from simulators.clock import ManualClock
from simulators.runner import SiteRunner
from simulators.sitefile import build_site

START = 1_782_093_600.0  # 2026-06-22 10:00 in Jinan
KEY = b"jinan-demo-key-change-me"
PREFIX = "pedf/jinan-office"


@dataclass
class Collector:
    """A subscriber with a persistent session that reconnects through broker restarts."""

    port: int
    topic: str
    messages: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    arrived: list[float] = field(default_factory=list)  # monotonic time of each message
    client_id: str = "test-collector"
    subscribed: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        while True:
            try:
                async with aiomqtt.Client("127.0.0.1", self.port, identifier=self.client_id,
                                          clean_session=False,
                                          protocol=aiomqtt.ProtocolVersion.V311) as client:
                    await client.subscribe(self.topic, qos=1)
                    self.subscribed.set()
                    async for message in client.messages:
                        payload = message.payload
                        assert isinstance(payload, bytes | bytearray)
                        try:
                            body = json.loads(payload)
                        except (ValueError, RecursionError):  # e.g. a poison command
                            body = {"unparsed": len(payload)}
                        if not isinstance(body, dict):
                            body = {"unparsed": len(payload)}
                        self.messages.append((str(message.topic), body))
                        self.arrived.append(time.monotonic())
            except aiomqtt.MqttError:
                await asyncio.sleep(0.2)  # the broker is away: try again

    def seqs(self) -> list[int]:
        return [body["seq"] for _, body in self.messages if "seq" in body]

    def on(self, topic: str) -> list[dict[str, Any]]:
        return [body for name, body in self.messages if name == topic]


@contextlib.asynccontextmanager
async def collecting(port: int, topic: str, client_id: str = "test-collector"
                     ) -> AsyncIterator[Collector]:
    collector = Collector(port, topic, client_id=client_id)
    task = asyncio.create_task(collector.run())
    try:
        async with asyncio.timeout(10):
            await collector.subscribed.wait()
        yield collector
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def site_file_for_run(site_file: str | Path, port: int, state: Path) -> Path:
    """The site file, rewritten for ``pedf run`` against the broker on ``port`` (MQTT 5)
    with its store at ``state`` and the demo command key."""
    return with_uplink(Path(site_file), f"""
        [uplink]
        host = "127.0.0.1"
        port = {port}
        protocol = "5"
        [uplink.outbox]
        path = "{state}"
        [uplink.commands]
        hmac_key = "{KEY.decode()}"
        """.replace("        ", ""))


def settings_for(site: SiteSpec, tmp_path: Path, port: int, **changes: Any) -> UplinkSettings:
    return dataclasses.replace(uplink_settings(site), host="127.0.0.1", port=port,
                               protocol="5", store_path=str(tmp_path / "state.sqlite"),
                               health_interval_s=2.0, **changes)


@contextlib.asynccontextmanager
async def building(tmp_path: Path, *, control: bool = True
                   ) -> AsyncIterator[tuple[SiteSpec, SiteRunner]]:
    """The Jinan building on free ports, its physics frozen at START."""
    path = example_on_free_ports(tmp_path)
    if not control:
        path.write_text(path.read_text(encoding="utf-8") + "\n[control]\nenabled = false\n",
                        encoding="utf-8")
    spec = load_site(path)
    async with SiteRunner(build_site(spec, start_s=START), ManualClock(START)) as runner:
        yield spec, runner


@contextlib.asynccontextmanager
async def gateway(spec: SiteSpec, runner: SiteRunner, settings: UplinkSettings
                  ) -> AsyncIterator[App]:
    async with assemble(spec, serial_ports=runner.serial_ports, settings=settings) as app:
        stop = asyncio.Event()
        task = asyncio.create_task(app.gateway.run(stop, app.services))
        try:
            yield app
        finally:
            stop.set()
            await task


async def connected(app: App, timeout_s: float = 10.0) -> None:
    """Until the uplink is connected and subscribed to commands."""
    await eventually(lambda: app.stats.subscribed, timeout_s=timeout_s,
                     what=lambda: f"uplink subscribed (last error: {app.stats.last_error})")


async def drained(app: App, timeout_s: float = 30.0) -> None:
    """Until the outbox is empty."""
    store = app.store
    assert store is not None
    await eventually(lambda: store.depth()[0] == 0, timeout_s=timeout_s,
                     what=lambda: f"outbox empty (holds {store.depth()})")


def out_of_order(messages: list[tuple[str, dict[str, Any]]], upto_seq: float = math.inf
                 ) -> list[tuple[str, int]]:
    """(topic, seq) of every message whose first arrival came after a higher seq of its
    topic had arrived (duplicates are allowed: delivery is at least once)."""
    highest: dict[str, int] = {}
    seen: set[int] = set()
    late = []
    for topic, body in messages:
        seq = body.get("seq")
        if not isinstance(seq, int) or seq > upto_seq or seq in seen:
            continue
        seen.add(seq)
        if seq < highest.get(topic, 0):
            late.append((topic, seq))
        highest[topic] = max(highest.get(topic, 0), seq)
    return late


def signed_command(command_type: str, *, key: bytes = KEY, **kwargs: Any) -> dict[str, Any]:
    """A command signed with the demo site's key (``build_command``'s arguments)."""
    kwargs.setdefault("lifetime_s", 600.0)
    kwargs.setdefault("params", {})
    return sign_hmac(build_command(command_type, **kwargs), key)


async def publish_command(client: aiomqtt.Client, payload: bytes, *,
                          response_topic: str | None = None,
                          correlation: bytes | None = None) -> None:
    """Publish ``payload`` to the gateway's command topic (QoS 1), with MQTT 5
    response topic and correlation data when given."""
    properties = None
    if response_topic is not None or correlation is not None:
        properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        if response_topic is not None:
            properties.ResponseTopic = response_topic
        if correlation is not None:
            properties.CorrelationData = correlation
    await client.publish(f"{PREFIX}/commands", payload, qos=1, properties=properties)
