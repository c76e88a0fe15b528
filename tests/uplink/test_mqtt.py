"""The uplink against a real mosquitto: outages, SIGKILL, quota, commands, TLS, ACL."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import json
import os
import signal
import sqlite3
import sys
from pathlib import Path
from typing import Any

import aiomqtt
from tests_support import Mosquitto, eventually, free_port
from uplink_support import (
    KEY,
    PREFIX,
    building,
    collecting,
    connected,
    drained,
    gateway,
    out_of_order,
    publish_command,
    settings_for,
    site_file_for_run,
)

from controller.commands import sign_hmac
from controller.operator import build_command


async def test_a_broker_outage_loses_nothing_and_keeps_each_topic_in_order(
        tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "broker").start()
    try:
        async with building(tmp_path) as (spec, runner), \
                collecting(broker.port, f"{PREFIX}/#") as collector:
            settings = settings_for(spec, tmp_path, broker.port)
            async with gateway(spec, runner, settings) as app:
                store = app.store
                assert store is not None
                await eventually(lambda: len(collector.on(f"{PREFIX}/telemetry/grid_meter")) >= 2,
                                 timeout_s=20, what="telemetry flowing")
                broker.stop()  # the broker goes away under steady telemetry
                await eventually(lambda: store.depth()[0] > 60, timeout_s=30,
                                 what="a backlog in the outbox")
                broker.start()
                last = store.next_seq - 1  # written during the outage, or before

                def missing() -> set[int]:
                    return set(range(1, last + 1)) - set(collector.seqs())

                await eventually(lambda: not missing(), timeout_s=30,
                                 what=lambda: f"{len(missing())} of {last} delivered")
            # After the outage the backlog and new messages interleave across topics, but
            # within a topic they arrive in sequence order.
            assert out_of_order(collector.messages) == []
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
            site_file = site_file_for_run(spec.file, broker.port, state)
            command = [sys.executable, "-m", "controller.cli", "run", str(site_file)]
            env = {**os.environ, "PYTHONUNBUFFERED": "1"}
            first = await asyncio.create_subprocess_exec(
                *command, env=env, stderr=asyncio.subprocess.DEVNULL)
            await eventually(lambda: collector.on(f"{PREFIX}/telemetry/grid_meter"),
                             timeout_s=30, what="telemetry from the first gateway")
            broker.stop()  # from now on the outbox keeps what it writes

            def waiting() -> int:
                with contextlib.closing(sqlite3.connect(state)) as db:
                    return int(db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

            await eventually(lambda: waiting() > 20, timeout_s=30, what="a backlog")
            first.send_signal(signal.SIGKILL)  # mid-stream, no chance to flush anything
            await first.wait()
            with contextlib.closing(sqlite3.connect(state)) as db:
                written_up_to = int(db.execute(
                    "SELECT value FROM meta WHERE key = 'next_seq'").fetchone()[0]) - 1
            assert waiting() > 20  # undelivered when the gateway died
            assert not set(range(1, written_up_to + 1)) <= set(collector.seqs())
            broker.start()
            second = await asyncio.create_subprocess_exec(
                *command, env=env, stderr=asyncio.subprocess.PIPE)
            await eventually(lambda: set(range(1, written_up_to + 1)) <= set(collector.seqs()),
                             timeout_s=30, what="everything written before the kill")
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
            await eventually(lambda: store.dropped_total > 0, timeout_s=30,
                             what="the quota dropping messages")
            _waiting, stored = store.depth()
            assert stored <= 64 * 1024
            remaining = [m.seq for m in store.pending(limit=100_000)]
            assert remaining == list(range(remaining[0], remaining[-1] + 1))  # contiguous
            assert remaining[0] == store.dropped_total + 1  # exactly the oldest were dropped
            broker = Mosquitto(tmp_path / "broker", port=port).start()
            try:
                async with collecting(port, f"{PREFIX}/#") as collector:
                    await drained(app)
                    last = store.next_seq - 1
                    dropped = store.dropped_total
                    await eventually(lambda: last in collector.seqs(), timeout_s=10,
                                     what="the last message delivered")
            finally:
                broker.stop()
    received = set(collector.seqs())
    # Nothing was ever delivered before the broker came: what is missing are the oldest
    # messages, all of them counted as dropped, and everything after them arrived. (While
    # the backlog drains the gateway keeps writing, so the quota may still drop a few rows
    # already in flight: those arrive and are counted too — never the other way round.)
    missing = set(range(1, last + 1)) - received
    assert missing, "nothing was dropped"
    assert missing == set(range(1, max(missing) + 1)), "a gap after the oldest"
    assert max(missing) <= dropped, "a message lost without being counted as dropped"
    assert received == set(range(max(missing) + 1, last + 1))
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
                await eventually(lambda: app.gateway.capability("battery", "max_charge_w")
                                 is not None, what="the battery's rating")  # for the check
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
                        await publish_command(client, json.dumps(payload).encode(),
                                              response_topic=f"{PREFIX}/replies/operator",
                                              correlation=bytes([index]))
                    async with asyncio.timeout(10):
                        async for message in client.messages:
                            body = json.loads(message.payload)
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
                            assert json.loads(message.payload)["status"] == "accepted"
                            break
                assert app.stats.connected
            wrong_ca = dataclasses.replace(settings, tls=_tls(broker.certs["client_cert"]))
            async with gateway(spec, runner, wrong_ca) as app:
                await eventually(lambda: "certificate" in app.stats.last_error.lower(),
                                 what=lambda: f"a certificate error ({app.stats.last_error})")
                assert not app.stats.connected
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
                soc_config = "homeassistant/sensor/jinan_office_battery_soc_pct/config"
                await eventually(lambda: soc_config in dict(discovery.messages),
                                 what="discovery configs")

                def scrape() -> str:
                    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics",
                                                timeout=5) as response:
                        return str(response.read().decode())

                def battery_up() -> str:
                    page = scrape()
                    return page if ('pedf_device_up{device="battery"} 1.0' in page and
                                    'pedf_site_power_watts{flow="grid"}' in page and
                                    "pedf_energy_watt_hours_total{" in page) else ""

                text = await eventually(battery_up, what="the battery and grid in the metrics")
        configs = dict(discovery.messages)
        soc = configs["homeassistant/sensor/jinan_office_battery_soc_pct/config"]
        assert soc["state_topic"] == "pedf/jinan-office/telemetry/battery"
        assert '"battery.SoC" in v' in soc["value_template"]
        assert soc["default_entity_id"] == "sensor.jinan_office_battery_soc_pct"
        assert soc["unit_of_measurement"] == "%"
        assert soc["availability_topic"] == "pedf/jinan-office/status"
        assert 'pedf_polls_total{device="grid_meter",result="ok"}' in text
        assert "pedf_outbox_messages" in text
        assert 'pedf_device_up{device="battery"} 1.0' in text
        assert 'pedf_build_info{site="jinan-office",version=' in text
        assert 'pedf_request_latency_seconds_bucket{device="battery",le="+Inf"}' in text
        assert 'pedf_request_latency_seconds_count{device="battery"}' in text
        assert 'pedf_device_last_success_timestamp_seconds{device="battery"}' in text
        assert 'pedf_site_power_watts{flow="grid"}' in text
        assert 'pedf_battery_soc_percent{device="battery"}' in text
        assert "pedf_energy_watt_hours_total{device=" in text
    finally:
        broker.stop()
