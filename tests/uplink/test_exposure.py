"""Nothing exposed by default: the embedded broker and the metrics endpoint listen on
loopback unless told otherwise, the broker lets anonymous clients read and command but
forge nothing, site users get their ACLs, metrics can ask for basic auth, and
``pedf check`` says what will listen where."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import json
import logging
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from tests_support import distinct_free_ports, eventually, with_uplink
from uplink_support import PREFIX, building, gateway, signed_command

from controller.app import App
from controller.config import BrokerUser, uplink_settings
from drivers.site import SiteSpec


def refused(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return False
    except OSError:
        return True


@contextlib.asynccontextmanager
async def embedded(tmp_path: Path, **changes: Any) -> AsyncIterator[tuple[App, int]]:
    """The gateway with its embedded broker (amqtt, MQTT 3.1.1) on a free port."""
    async with building(tmp_path) as (spec, runner):
        port, metrics = distinct_free_ports(2)
        settings = dataclasses.replace(uplink_settings(spec), port=port,
                                       store_path=str(tmp_path / "state.sqlite"),
                                       metrics_port=metrics, **changes)
        async with gateway(spec, runner, settings) as app:
            await eventually(lambda: app.stats.subscribed, what="the gateway subscribed")
            yield app, port


def granted(codes: Any) -> list[int]:
    """SUBACK codes as numbers (128: refused)."""
    return [int(getattr(code, "value", code)) for code in codes]


async def messages_until_reply(client: aiomqtt.Client, command_id: str
                               ) -> list[tuple[str, Any]]:
    """What ``client`` receives up to the reply to ``command_id``, sent after everything
    else the test published (so whatever else got through has arrived by then)."""
    received: list[tuple[str, Any]] = []
    async with asyncio.timeout(10):
        async for message in client.messages:
            assert isinstance(message.payload, bytes)
            body = json.loads(message.payload)
            received.append((str(message.topic), body))
            if str(message.topic) == f"{PREFIX}/replies" and body["command_id"] == command_id:
                return received
    raise AssertionError("unreachable")  # the timeout ends the loop


async def test_anonymous_clients_may_read_and_command_but_forge_nothing(
        tmp_path: Path) -> None:
    async with embedded(tmp_path) as (app, port):
        assert refused("127.0.0.2", port)  # bound to 127.0.0.1, not to every address
        async with aiomqtt.Client("127.0.0.1", port, identifier="forger") as forger, \
                aiomqtt.Client("127.0.0.1", port, identifier="watcher") as watcher:
            assert granted(await watcher.subscribe("#")) == [128]  # not everything
            assert granted(await watcher.subscribe(f"{PREFIX}/#", qos=1)) == [1]
            await forger.publish(f"{PREFIX}/status", b'{"state":"offline"}', qos=1,
                                 retain=True)
            await forger.publish(f"{PREFIX}/telemetry/grid_meter", b'{"seq":1,"fake":1}',
                                 qos=1)
            await forger.publish(f"{PREFIX}/commands",
                                 json.dumps(signed_command("release", command_id="anon"))
                                 .encode(), qos=1)
            seen = await messages_until_reply(watcher, "anon")
        replies = [body for topic, body in seen if topic == f"{PREFIX}/replies"]
        assert [r["command_id"] for r in replies] == ["anon"]  # commands are let through
        assert not [body for _, body in seen if body.get("fake")]
        assert not [body for topic, body in seen
                    if topic == f"{PREFIX}/status" and body["state"] == "offline"]
        assert app.stats.connects == 1


async def test_site_users_get_their_acls_and_nobody_else_gets_in(tmp_path: Path) -> None:
    operator = BrokerUser("operator", "op-secret", publish=(f"{PREFIX}/commands",),
                          subscribe=(f"{PREFIX}/replies",))
    async with embedded(tmp_path, broker_users=(operator,)) as (_app, port):
        for username, password in ((None, None), ("operator", "wrong"), ("pedf-gateway", "x")):
            with pytest.raises(aiomqtt.MqttError):
                async with aiomqtt.Client("127.0.0.1", port, username=username,
                                          password=password):
                    pass
        async with aiomqtt.Client("127.0.0.1", port, username="operator",
                                  password="op-secret") as client:
            assert granted(await client.subscribe(f"{PREFIX}/telemetry/#")) == [128]
            assert granted(await client.subscribe(f"{PREFIX}/replies", qos=1)) == [1]
            await client.publish(f"{PREFIX}/commands", json.dumps(
                signed_command("release", command_id="op")).encode(), qos=1)
            seen = await messages_until_reply(client, "op")
        assert [(topic, body["command_id"]) for topic, body in seen] == [
            (f"{PREFIX}/replies", "op")]


async def test_metrics_on_loopback_and_behind_basic_auth(tmp_path: Path) -> None:
    async with embedded(tmp_path, metrics_username="prometheus",
                        metrics_password="scrape-secret") as (app, _port):
        port = app.settings.metrics_port
        assert port is not None
        url = f"http://127.0.0.1:{port}/metrics"

        def scrape(credentials: str | None) -> tuple[int, str]:
            request = urllib.request.Request(url)
            if credentials is not None:
                token = base64.b64encode(credentials.encode()).decode()
                request.add_header("Authorization", f"Basic {token}")
            try:
                with urllib.request.urlopen(request, timeout=5) as response:
                    return response.status, response.read().decode()
            except urllib.error.HTTPError as exc:
                return exc.code, ""

        assert await asyncio.to_thread(scrape, None) == (401, "")
        assert (await asyncio.to_thread(scrape, "prometheus:wrong"))[0] == 401
        status, text = await asyncio.to_thread(scrape, "prometheus:scrape-secret")
        assert status == 200
        assert "pedf_store_writable 1.0" in text
        assert "pedf_outbox_dead_letters 0.0" in text
        assert refused("127.0.0.2", port)


async def test_a_broker_beyond_this_machine_is_logged(tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    users = (BrokerUser("operator", "op-secret", publish=(f"{PREFIX}/commands",)),)
    with caplog.at_level(logging.WARNING, logger="pedf.app"):
        async with embedded(tmp_path, embedded_host="0.0.0.0", broker_users=users):
            pass
    assert "the embedded MQTT broker listens on 0.0.0.0, beyond this machine: 1 user(s)" \
        in caplog.text


def test_pedf_check_says_what_listens_where(tmp_path: Path, site_spec: SiteSpec) -> None:
    (tmp_path / "metrics.secret").write_text("s\n")
    path = with_uplink(Path(site_spec.file), """
        [uplink]
        port = 1884
        metrics_port = 9108
        metrics_host = "0.0.0.0"
        metrics_username = "prometheus"
        metrics_password_file = "metrics.secret"
        """.replace("        ", ""))
    result = subprocess.run([sys.executable, "-m", "controller.cli", "check", str(path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert [line for line in result.stdout.splitlines() if "listens on" in line] == [
        "pedf run listens on 127.0.0.1:1884: MQTT broker (embedded): anonymous clients may "
        "read pedf/jinan-office/# and publish pedf/jinan-office/commands",
        "pedf run listens on 0.0.0.0:9108 (beyond this machine): Prometheus metrics "
        "(basic auth)"]


