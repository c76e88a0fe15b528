"""The uplink against a real mosquitto: outages, SIGKILL, quota, commands, TLS, ACL."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import json
import math
import os
import signal
import sqlite3
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from tests_support import Mosquitto, example_on_free_ports, free_port, with_uplink

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


@dataclass
class Collector:
    """A subscriber with a persistent session that reconnects through broker restarts."""

    port: int
    topic: str
    messages: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    client_id: str = "test-collector"

    async def run(self) -> None:
        while True:
            try:
                async with aiomqtt.Client("127.0.0.1", self.port, identifier=self.client_id,
                                          clean_session=False,
                                          protocol=aiomqtt.ProtocolVersion.V311) as client:
                    await client.subscribe(self.topic, qos=1)
                    async for message in client.messages:
                        payload = message.payload
                        assert isinstance(payload, bytes | bytearray)
                        self.messages.append((str(message.topic), json.loads(payload)))
            except aiomqtt.MqttError:
                await asyncio.sleep(0.2)

    def seqs(self) -> list[int]:
        return [body["seq"] for _, body in self.messages if "seq" in body]


@contextlib.asynccontextmanager
async def collecting(port: int, topic: str) -> AsyncIterator[Collector]:
    collector = Collector(port, topic)
    task = asyncio.create_task(collector.run())
    await asyncio.sleep(0.3)
    try:
        yield collector
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def settings_for(site: SiteSpec, tmp_path: Path, port: int, **changes: Any) -> UplinkSettings:
    return dataclasses.replace(uplink_settings(site), host="127.0.0.1", port=port,
                               protocol="5", store_path=str(tmp_path / "state.sqlite"),
                               health_interval_s=2.0, **changes)


@contextlib.asynccontextmanager
async def building(tmp_path: Path, *, control: bool = True
                   ) -> AsyncIterator[tuple[SiteSpec, SiteRunner]]:
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


async def until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def connected(app: App, timeout_s: float = 10.0) -> None:
    """Until the uplink is connected and subscribed to commands."""
    deadline = time.monotonic() + timeout_s
    while not app.stats.connected:
        assert time.monotonic() < deadline, f"not connected: {app.stats.last_error}"
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)


async def drained(app: App, timeout_s: float = 30.0) -> None:
    assert app.store is not None
    deadline = time.monotonic() + timeout_s
    while app.store.depth()[0] > 0:
        assert time.monotonic() < deadline, f"outbox still holds {app.store.depth()}"
        await asyncio.sleep(0.1)


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


async def test_a_broker_outage_loses_nothing(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "broker").start()
    try:
        async with building(tmp_path) as (spec, runner), \
                collecting(broker.port, "pedf/jinan-office/#") as collector:
            settings = settings_for(spec, tmp_path, broker.port)
            async with gateway(spec, runner, settings) as app:
                await asyncio.sleep(3.0)
                broker.stop()  # the broker goes away under steady telemetry
                await asyncio.sleep(4.0)
                assert app.store is not None
                waiting = app.store.depth()[0]
                assert waiting > 20  # telemetry piled up in the outbox meanwhile
                broker.start()
                await asyncio.sleep(1.0)
                await drained(app)
                last = app.store.next_seq - 1
                await asyncio.sleep(1.0)
            received = set(collector.seqs())
            missing = set(range(1, last + 1)) - received
            assert not missing, f"lost {len(missing)} of {last}: {sorted(missing)[:10]}"
            assert app.stats.connects >= 2
    finally:
        broker.stop()


async def test_sigkill_mid_stream_then_restart_delivers_every_written_seq(
        tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "broker").start()
    state = tmp_path / "state.sqlite"
    try:
        async with building(tmp_path) as (spec, _runner), \
                collecting(broker.port, "pedf/jinan-office/#") as collector:
            site_file = with_uplink(Path(spec.file), f"""
                [uplink]
                host = "127.0.0.1"
                port = {broker.port}
                protocol = "5"
                [uplink.outbox]
                path = "{state}"
                [uplink.commands]
                hmac_key = "jinan-demo-key-change-me"
                """.replace("    ", ""))
            command = [sys.executable, "-m", "controller.cli", "run", str(site_file)]
            env = {**os.environ, "PYTHONUNBUFFERED": "1"}
            first = await asyncio.create_subprocess_exec(
                *command, env=env, stderr=asyncio.subprocess.DEVNULL)
            await asyncio.sleep(4.0)
            broker.stop()  # from now on the outbox keeps what it writes
            await asyncio.sleep(3.0)
            first.send_signal(signal.SIGKILL)  # mid-stream, no chance to flush anything
            await first.wait()
            with sqlite3.connect(state) as db:
                written_up_to = int(db.execute(
                    "SELECT value FROM meta WHERE key = 'next_seq'").fetchone()[0]) - 1
                waiting = db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
            assert waiting > 20  # undelivered when the gateway died
            assert not set(range(1, written_up_to + 1)) <= set(collector.seqs())
            broker.start()
            second = await asyncio.create_subprocess_exec(
                *command, env=env, stderr=asyncio.subprocess.PIPE)
            deadline = time.monotonic() + 30
            while not set(range(1, written_up_to + 1)) <= set(collector.seqs()):
                assert time.monotonic() < deadline, "not everything arrived"
                await asyncio.sleep(0.2)
            second.send_signal(signal.SIGTERM)
            _, errors = await second.communicate()
            assert second.returncode == 0, errors.decode()[-2000:]
            assert out_of_order(collector.messages, written_up_to) == []  # per topic
    finally:
        broker.stop()


async def test_quota_overflow_drops_the_oldest_and_reports_it(tmp_path: Path) -> None:
    port = free_port()  # nobody listens here yet: the uplink cannot connect
    async with building(tmp_path) as (spec, runner):
        settings = settings_for(spec, tmp_path, port, quota_bytes=64 * 1024)
        async with gateway(spec, runner, settings) as app:
            store = app.store
            assert store is not None
            deadline = time.monotonic() + 30
            while store.dropped_total == 0:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.2)
            await asyncio.sleep(1.0)
            _waiting, stored = store.depth()
            assert stored <= 64 * 1024
            remaining = [m.seq for m in store.pending(limit=100_000)]
            assert remaining == list(range(remaining[0], remaining[-1] + 1))  # contiguous
            assert remaining[0] == store.dropped_total + 1  # exactly the oldest were dropped
            broker = Mosquitto(tmp_path / "broker", port=port).start()
            try:
                async with collecting(port, "pedf/jinan-office/#") as collector:
                    await drained(app)
                    await asyncio.sleep(0.5)
                    last = store.next_seq - 1
                    dropped = store.dropped_total
            finally:
                broker.stop()
    received = set(collector.seqs())
    # Nothing was ever delivered before the broker came: what is missing is exactly the
    # oldest `dropped` messages, and everything after them arrived.
    assert received == set(range(dropped + 1, last + 1))
    overflow = [body for _, body in collector.messages if body.get("type") == "outbox_overflow"]
    assert overflow, "the loss was not reported"
    ranges = sorted((body["first_seq"], body["last_seq"]) for body in overflow)
    for (_, end_a), (start_b, _) in itertools.pairwise(ranges):
        assert end_a < start_b  # each loss reported once
    assert all(body["dropped"] == body["last_seq"] - body["first_seq"] + 1 for body in overflow)
    assert all(end <= dropped for _, end in ranges)
    # The newest report carries the total (older reports may themselves have been dropped).
    assert max(body["dropped_total"] for body in overflow) == dropped


async def test_commands_over_mqtt5_and_nothing_written_when_rejected(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "broker").start()
    try:
        # The command channel alone: no control loop takes the accepted command (or
        # writes anything of its own), so what reaches the inbox can be inspected.
        async with building(tmp_path, control=False) as (spec, runner):
            settings = settings_for(spec, tmp_path, broker.port)
            async with gateway(spec, runner, settings) as app:
                await connected(app)
                await until(lambda: app.gateway.capability("battery", "max_charge_w")
                            is not None)  # the rating check needs the battery's rating
                good = sign_hmac(build_command("sg_ready", target="heat_pump",
                                               params={"state": 1, "duration_s": 600},
                                               lifetime_s=660), KEY)
                bad = {**good, "id": "forged"}
                over = sign_hmac(build_command("battery_setpoint", target="battery",
                                               params={"power_w": 5e6, "duration_s": 60},
                                               lifetime_s=120), KEY)
                replies: dict[str, dict[str, Any]] = {}  # by command id
                answered: dict[int, dict[str, Any]] = {}  # on the response topic, by index
                async with aiomqtt.Client("127.0.0.1", broker.port, identifier="operator",
                                          protocol=aiomqtt.ProtocolVersion.V5) as client:
                    await client.subscribe("pedf/jinan-office/replies/#", qos=1)
                    for index, payload in enumerate((good, bad, over, {"id": 3})):
                        properties = Properties(PacketTypes.PUBLISH)
                        properties.ResponseTopic = "pedf/jinan-office/replies/operator"
                        properties.CorrelationData = bytes([index])
                        await client.publish("pedf/jinan-office/commands",
                                             json.dumps(payload).encode(), qos=1,
                                             properties=properties)
                    async with asyncio.timeout(10):
                        async for message in client.messages:
                            body = json.loads(message.payload)  # type: ignore[arg-type]
                            if str(message.topic) == "pedf/jinan-office/replies":
                                replies[str(body["command_id"])] = body
                            else:
                                correlation = message.properties.CorrelationData  # type: ignore[union-attr]
                                answered[correlation[0]] = body
                            if len(replies) == 4 and len(answered) == 2:
                                break
                assert replies[good["id"]]["status"] == "accepted"
                assert replies["forged"] == {**replies["forged"], "status": "rejected",
                                             "reason": "bad signature"}
                assert "above the rating of battery" in replies[over["id"]]["reason"]
                assert "missing field" in replies["None"]["reason"]
                # Only signed commands are answered on their response topic too.
                def unsequenced(body: dict[str, Any]) -> dict[str, Any]:
                    return {k: v for k, v in body.items() if k != "seq"}

                assert {k: unsequenced(v) for k, v in answered.items()} == {
                    0: unsequenced(replies[good["id"]]), 2: unsequenced(replies[over["id"]])}
                assert app.inbox.qsize() == 1  # only the good one reached the control loop
                assert all(h.writes_ok == 0 and h.writes_failed == 0
                           for h in app.gateway.health().values())
                assert runner.site.model.batteries["battery"].power_w == 0.0
                assert app.store is not None
                assert [r["result"] for r in reversed(app.store.audit_rows())] == [
                    "accepted", "rejected", "rejected", "rejected"]
    finally:
        broker.stop()


async def test_tls_with_acl(tmp_path: Path) -> None:
    acl = ("user gateway\ntopic readwrite pedf/jinan-office/#\n"
           "user operator\ntopic write pedf/jinan-office/commands\n"
           "topic read pedf/jinan-office/replies\n")
    broker = Mosquitto(tmp_path / "broker", tls=True,
                       users={"gateway": "g-secret", "operator": "o-secret"}, acl=acl).start()
    assert broker.tls_port is not None
    try:
        async with building(tmp_path) as (spec, runner):
            settings = dataclasses.replace(
                settings_for(spec, tmp_path, broker.tls_port), username="gateway",
                password="g-secret", tls=_tls(broker.certs["ca"]))
            async with gateway(spec, runner, settings) as app:
                await connected(app)
                command = sign_hmac(build_command("shed", params={"kw": 10.0,
                                                                  "duration_s": 60},
                                                  lifetime_s=120), KEY)
                context = _client_tls(broker.certs["ca"])
                async with aiomqtt.Client("127.0.0.1", broker.tls_port, username="operator",
                                          password="o-secret", tls_context=context,
                                          identifier="op") as client:
                    await client.subscribe("pedf/jinan-office/replies", qos=1)
                    await client.publish("pedf/jinan-office/commands",
                                         json.dumps(command).encode(), qos=1)
                    # The operator may not read telemetry: only replies reach it.
                    async with asyncio.timeout(10):
                        async for message in client.messages:
                            assert str(message.topic) == "pedf/jinan-office/replies"
                            assert json.loads(message.payload)["status"] == "accepted"  # type: ignore[arg-type]
                            break
                assert app.stats.connected
            wrong_ca = dataclasses.replace(settings, tls=_tls(broker.certs["client_cert"]))
            async with gateway(spec, runner, wrong_ca) as app:
                await asyncio.sleep(2.0)
                assert not app.stats.connected
                assert "certificate" in app.stats.last_error.lower()
    finally:
        broker.stop()


def _tls(ca: Path) -> Any:
    from controller.config import TlsSettings

    return TlsSettings(str(ca), None, None, check_hostname=True)


def _client_tls(ca: Path) -> Any:
    import ssl

    return ssl.create_default_context(cafile=str(ca))


async def test_home_assistant_discovery_and_metrics(tmp_path: Path) -> None:
    import urllib.request

    broker = Mosquitto(tmp_path / "broker").start()
    metrics_port = free_port()
    try:
        async with building(tmp_path) as (spec, runner), \
                collecting(broker.port, "homeassistant/#") as discovery:
            settings = settings_for(spec, tmp_path, broker.port, home_assistant=True,
                                    metrics_port=metrics_port)
            async with gateway(spec, runner, settings):
                await asyncio.sleep(3.0)
                text = await asyncio.to_thread(
                    lambda: urllib.request.urlopen(
                        f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode())
        configs = dict(discovery.messages)
        soc = configs["homeassistant/sensor/jinan_office_battery_soc_pct/config"]
        assert soc["state_topic"] == "pedf/jinan-office/telemetry/battery"
        assert soc["value_template"] == "{{ value_json['values'][\"battery.SoC\"] }}"
        assert soc["unit_of_measurement"] == "%"
        assert soc["availability_topic"] == "pedf/jinan-office/status"
        assert 'pedf_polls_total{device="grid_meter",result="ok"}' in text
        assert "pedf_outbox_messages" in text
        assert 'pedf_device_up{device="battery"} 1.0' in text
    finally:
        broker.stop()
