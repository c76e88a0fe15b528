"""The command path against a real mosquitto: poison payloads, response topics, messages
that can never be published, and a signed command all the way to a verified write."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path
from typing import Any

import aiomqtt
from tests_support import Mosquitto, eventually
from uplink_support import (
    KEY,
    PREFIX,
    building,
    collecting,
    connected,
    gateway,
    publish_command,
    settings_for,
    signed_command,
)

from controller import streams
from controller.commands import sign_hmac
from controller.operator import build_command
from controller.store import Outgoing

#: What took the publisher down before (issue 14), and more of the same kind.
POISON: list[bytes] = [
    b'{"id":"p1","type":"shed","target":"site","issued_at":1,"expires_at":2,'
    b'"params":{"kw":1e400,"duration_s":60},"signature":{"alg":"hmac-sha256","value":"0"}}',
    b"[" * 5000 + b"]" * 5000,
    b'{"id":"p3","params":{"kw":' + b"9" * 5000 + b"}}",
    b'{"id":"p4","id":"p4b"}',
    b'{"id":"\\ud800","type":"shed"}',
    # a signature value hmac.compare_digest cannot compare as text (non-ASCII)
    b'{"id":"p6","type":"release","target":"site","issued_at":1,"expires_at":2,'
    b'"signature":{"alg":"hmac-sha256","value":"\xc3\xa9\xc3\xa9"}}',
    b"\xff\xfe\x00garbage",
    b'{"kw": NaN}',
    b"x" * 20_000,
    # an unhashable type (a list) where a dict key lookup would raise TypeError
    b'{"id":"p10","type":[1],"target":{},"issued_at":"now","expires_at":2,"signature":{}}',
]


async def test_poison_payloads_are_rejected_and_the_commands_behind_them_answered(
        tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "broker").start()
    try:
        async with building(tmp_path, control=False) as (spec, runner), \
                collecting(broker.port, f"{PREFIX}/#") as collector, \
                gateway(spec, runner, settings_for(spec, tmp_path, broker.port)) as app:
            await connected(app)
            good = [signed_command("release", command_id=f"good-{n}") for n in range(5)]
            async with aiomqtt.Client("127.0.0.1", broker.port, identifier="attacker",
                                      protocol=aiomqtt.ProtocolVersion.V5) as client:
                for payload in POISON:
                    await publish_command(client, payload)
                for command in good:  # right behind them
                    await publish_command(client, json.dumps(command).encode())
            replies = f"{PREFIX}/replies"
            total = len(POISON) + len(good)
            await eventually(lambda: len(collector.on(replies)) >= total, timeout_s=20,
                             what=lambda: f"{len(collector.on(replies))} of {total} replies")
            telemetry = f"{PREFIX}/telemetry/grid_meter"
            before = len(collector.on(telemetry))
            await eventually(lambda: len(collector.on(telemetry)) > before,
                             what="telemetry still flowing")
            answers = collector.on(replies)
            assert app.stats.connects == 1  # the session never went down
            assert app.store is not None
            audit = app.store.audit_rows(limit=100)
        statuses = Counter(body["status"] for body in answers)
        assert statuses == {"rejected": len(POISON), "accepted": len(good)}, answers
        assert {body["command_id"] for body in answers if body["status"] == "accepted"} == {
            command["id"] for command in good}
        reasons = [str(body["reason"]) for body in answers if body["status"] == "rejected"]
        for expected in ("out of range for a number", "nest deeper than 8",
                         "a number of 5000 characters", "duplicate key 'id'", "lone surrogate",
                         "bad signature", "not UTF-8", "NaN is not a number JSON allows",
                         "exceeds 16384", "type: expected one of"):
            assert any(expected in reason for reason in reasons), (expected, reasons)
        assert len(audit) == total  # one audit row per command, each bounded
        assert all(len(str(row["payload"])) <= 512 and row["payload_sha256"] for row in audit)
    finally:
        broker.stop()


async def test_replies_go_to_a_response_topic_only_when_allowed(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "broker").start()
    try:
        async with building(tmp_path, control=False) as (spec, runner), \
                collecting(broker.port, "#") as everything, \
                gateway(spec, runner, settings_for(spec, tmp_path, broker.port)) as app:
            await connected(app)
            unsigned = build_command("release", params={}, lifetime_s=60,
                                     command_id="unsigned")
            cases: list[tuple[dict[str, Any], str]] = [
                (unsigned, f"{PREFIX}/replies/op"),  # no signature: not honoured
                (signed_command("release", command_id="wild"), f"{PREFIX}/replies/#"),
                (signed_command("release", command_id="away"), "attacker/inbox"),
                (signed_command("release", command_id="ok"), f"{PREFIX}/replies/op"),
            ]
            async with aiomqtt.Client("127.0.0.1", broker.port, identifier="operator",
                                      protocol=aiomqtt.ProtocolVersion.V5) as client:
                for index, (command, topic) in enumerate(cases):
                    await publish_command(client, json.dumps(command).encode(),
                                          response_topic=topic, correlation=bytes([index]))
            await eventually(lambda: len(everything.on(f"{PREFIX}/replies")) >= 4,
                             what="four replies")
            await eventually(lambda: everything.on(f"{PREFIX}/replies/op"),
                             what="the allowed response topic's reply")
            assert app.store is not None
            assert app.stats.response_topics_refused == 3
            assert app.store.dead_letter_count() == 0  # nothing unpublishable was stored
        on_response_topic = everything.on(f"{PREFIX}/replies/op")
        assert [body["command_id"] for body in on_response_topic] == ["ok"]
        assert not [t for t, _ in everything.messages if t.startswith("attacker")]
    finally:
        broker.stop()


async def test_a_message_that_can_never_be_published_is_set_aside(tmp_path: Path) -> None:
    """A topic MQTT cannot carry (a wildcard row from an older version), one the broker
    refuses (ACL: MQTT 5 PUBACK 0x87) and one larger than the broker takes: each moves to
    the dead letters with its reason; everything else keeps flowing."""
    acl = ("user gateway\ntopic readwrite pedf/jinan-office/#\n"
           "user collector\ntopic read #\n")
    broker = Mosquitto(tmp_path / "broker", users={"gateway": "g", "collector": "c"},
                       acl=acl, extra=("max_packet_size 20000",)).start()
    try:
        async with building(tmp_path) as (spec, runner):
            settings = settings_for(spec, tmp_path, broker.port, username="gateway",
                                    password="g")
            async with gateway(spec, runner, settings) as app:
                store = app.store
                assert store is not None
                await connected(app)
                poison = [Outgoing(streams.address("x/#"), {"why": "a wildcard"}),
                          Outgoing(streams.address("elsewhere/not-allowed"),
                                   {"why": "the ACL"}),
                          Outgoing(streams.EVENTS, {"why": "too large", "pad": "x" * 30_000})]
                seqs, _ = await asyncio.to_thread(store.append, poison)
                assert app.recorder is not None
                app.recorder.notify.set()  # the publisher looks for them now
                await eventually(lambda: store.dead_letter_count() == 3, timeout_s=20,
                                 what=lambda: f"dead letters: {store.dead_letters()}")
                after = store.next_seq  # later messages still go out
                await eventually(lambda: store.depth()[0] == 0 or
                                 min(m.seq for m in store.pending(limit=1)) > after,
                                 timeout_s=20, what="the outbox moving past them")
                letters = {row["seq"]: str(row["reason"]) for row in store.dead_letters()}
                assert app.stats.connects == 1  # none of them broke the connection
        assert "MQTT cannot carry it" in letters[seqs[0]]
        assert "Not authorized (0x87)" in letters[seqs[1]]
        assert "larger than the broker's maximum packet size (20000 bytes)" in letters[seqs[2]]
    finally:
        broker.stop()


async def test_a_signed_command_reaches_the_device_through_the_control_loop(
        tmp_path: Path) -> None:
    """MQTT → command channel → control loop → Modbus write, verified by read-back, on the
    simulated heat pump; the operator gets "accepted" and the event is reported."""
    broker = Mosquitto(tmp_path / "broker").start()
    try:
        async with building(tmp_path) as (spec, runner), \
                collecting(broker.port, f"{PREFIX}/#") as collector:
            heat_pump = runner.site.model.heat_pumps["heat_pump"]
            assert heat_pump.sg_ready_state == 2  # normal operation
            async with gateway(spec, runner, settings_for(spec, tmp_path, broker.port)) as app:
                await connected(app)
                command = sign_hmac(build_command("sg_ready", target="heat_pump",
                                                  params={"state": 1, "duration_s": 600},
                                                  lifetime_s=660, command_id="block-hp"), KEY)
                async with aiomqtt.Client("127.0.0.1", broker.port, identifier="operator",
                                          protocol=aiomqtt.ProtocolVersion.V5) as client:
                    await publish_command(client, json.dumps(command).encode())
                await eventually(lambda: heat_pump.sg_ready_state == 1, timeout_s=20,
                                 what="SG-Ready 1 (blocked) on the simulated heat pump")
                await eventually(lambda: app.gateway.health()["heat_pump"].writes_ok >= 1,
                                 what="a verified write")
                await eventually(lambda: any(body.get("type") == "event_started" for body in
                                             collector.on(f"{PREFIX}/events")),
                                 what="the event reported as started")
                assert app.gateway.health()["heat_pump"].writes_failed == 0
        (reply,) = collector.on(f"{PREFIX}/replies")
        assert (reply["command_id"], reply["status"]) == ("block-hp", "accepted")
    finally:
        broker.stop()
