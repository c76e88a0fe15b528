"""The command channel: every way a command can be wrong is refused with a reason,
audited, and never reaches the control loop; good commands are queued once."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
from tests_support import EXAMPLE, eventually

from controller.channel import CommandChannel
from controller.commands import CommandRejectedError, Verifier, sign_ed25519, sign_hmac, validate
from controller.inbox import CommandInbox
from controller.store import InboundCommand, Store
from controller.topics import Topics
from controller.uplink import UplinkStats
from drivers.site import SiteSpec, load_site

KEY = b"test-key"
NOW = 1_795_400_000.0


@pytest.fixture(scope="module")
def site() -> SiteSpec:
    return load_site(EXAMPLE)


def ratings(device: str, capability: str) -> float | None:
    return {"max_charge_w": 100_000.0, "max_discharge_w": 100_000.0}.get(capability) \
        if device == "battery" else None


def command(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"id": "dr-1", "type": "shed", "target": "site",
                            "issued_at": NOW - 1, "expires_at": NOW + 900,
                            "params": {"kw": 40.0, "duration_s": 900}}
    body.update(changes)
    return body


def signed(body: dict[str, Any], key: bytes = KEY) -> bytes:
    return json.dumps(sign_hmac(body, key)).encode()


def check(site: SiteSpec, payload: bytes) -> None:
    validate(payload, site=site, verifier=Verifier(hmac_key=KEY), now_s=NOW, max_skew_s=30,
             ratings=ratings)


def test_a_good_command_validates(site: SiteSpec) -> None:
    result = validate(signed(command()), site=site, verifier=Verifier(hmac_key=KEY), now_s=NOW,
                      max_skew_s=30, ratings=ratings)
    assert (result.id, result.type, result.params["kw"]) == ("dr-1", "shed", 40.0)


@pytest.mark.parametrize(("payload", "reason"), [
    (signed(command(), b"wrong key"), "bad signature"),
    (json.dumps(command()).encode(), "missing field 'signature'"),
    (signed(command(expires_at=NOW - 60, issued_at=NOW - 1000)), "expired 60 s ago"),
    (signed(command(issued_at=NOW + 120, expires_at=NOW + 900)), "120 s in the future"),
    (signed(command(expires_at=NOW - 10)), "expires_at must be after issued_at"),
    (signed(command(colour="red")), "unknown field 'colour'"),
    (signed(command(params={"kw": 40.0, "duration_s": 900, "x": 1})),
     "params: unknown field 'x'"),
    (signed(command(params={"kw": "40", "duration_s": 900})), 'params.kw: expected a number'),
    (signed(command(params={"kw": -5.0, "duration_s": 900})), "params.kw: -5 is outside"),
    (signed(command(params={"kw": 40.0})), "params.duration_s: missing"),
    (signed(command(params={"kw": 40.0, "duration_s": 1e9})), "params.duration_s"),
    (signed(command(params={"kw": 4000.0, "duration_s": 900})),
     "4000 kW is above the 177 kW of sheddable load"),
    (signed(command(params={"kw": 4.0, "duration_s": 900, "loads": ["toaster"]})),
     "unknown load 'toaster'"),
    (signed(command(params={"kw": 4.0, "duration_s": 900, "loads": ["server_room"]})),
     "load 'server_room' is not sheddable"),
    (signed(command(type="battery_setpoint", target="battery",
                    params={"power_w": 150_000.0, "duration_s": 60})),
     "150000 W is above the rating of battery (100000 W)"),
    (signed(command(type="battery_setpoint", target="toaster",
                    params={"power_w": 1.0, "duration_s": 60})), "unknown device 'toaster'"),
    (signed(command(type="battery_setpoint", target="heat_pump",
                    params={"power_w": 1.0, "duration_s": 60})), "heat_pump is a heat_pump"),
    (signed(command(type="sg_ready", target="heat_pump",
                    params={"state": 5, "duration_s": 60})), "integer 1–4"),
    (signed(command(type="sg_ready", target="heat_pump",
                    params={"state": True, "duration_s": 60})), "integer 1–4"),
    (signed(command(type="teleport")), "type: expected one of"),
    (signed(command(id="a b")), "id: expected"),
    (b'{"id": "x", "kw": NaN}', "NaN is not a number JSON allows"),
    (b'{"id": "x", "kw": Infinity}', "Infinity is not a number JSON allows"),
    (b"not json", "invalid JSON"),
    (b"[1, 2]", "expected a JSON object"),
    (b"\xff\xfe", "not UTF-8"),
    (b"{" + b'"a":1,' * 5000 + b'"b":2}', "exceeds 16384"),
    # what used to escape the parser (issue 14), and its kin
    (b'{"id": "x", "params": {"kw": 1e400}}', "1e400 is out of range for a number"),
    (b"[" * 5000 + b"]" * 5000, "nest deeper than 8"),
    (b'{"id": "x", "kw": ' + b"9" * 5000 + b"}", "a number of 5000 characters"),
    (b'{"id": "a", "id": "b"}', "duplicate key 'id'"),
    (b'{"id": "x", "params": {"kw": 1, "kw": 2}}', "duplicate key 'kw'"),
    (b'{"id": "\\ud800"}', "lone surrogate"),
])
def test_bad_commands_are_rejected_with_a_reason(site: SiteSpec, payload: bytes,
                                                 reason: str) -> None:
    with pytest.raises(CommandRejectedError) as caught:
        check(site, payload)
    assert reason in caught.value.reason


def test_nan_inside_a_signed_command_never_validates(site: SiteSpec) -> None:
    body = command()
    text = json.dumps(sign_hmac(body, KEY)).replace('"kw": 40.0', '"kw": NaN')
    with pytest.raises(CommandRejectedError, match="NaN"):
        check(site, text.encode())


def test_ed25519_signatures(site: SiteSpec, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    private = Ed25519PrivateKey.generate()
    private_pem = private.private_bytes(serialization.Encoding.PEM,
                                        serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption())
    public_pem = private.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo)
    verifier = Verifier(ed25519_public_key_pem=public_pem)
    good = json.dumps(sign_ed25519(command(), private_pem)).encode()
    assert validate(good, site=site, verifier=verifier, now_s=NOW, max_skew_s=30,
                    ratings=ratings).id == "dr-1"
    tampered = json.loads(good)
    tampered["params"]["kw"] = 41.0
    with pytest.raises(CommandRejectedError, match="bad signature"):
        validate(json.dumps(tampered).encode(), site=site, verifier=verifier, now_s=NOW,
                 max_skew_s=30, ratings=ratings)
    with pytest.raises(CommandRejectedError, match="hmac-sha256 is not enabled"):
        validate(signed(command()), site=site, verifier=verifier, now_s=NOW, max_skew_s=30,
                 ratings=ratings)


def channel(site: SiteSpec, store: Store, inbox: CommandInbox) -> CommandChannel:
    return CommandChannel(site, store, Topics("pedf/jinan-office"), inbox,
                          Verifier(hmac_key=KEY), ratings, UplinkStats(), clock=lambda: NOW)


def test_channel_queues_once_replies_and_audits(site: SiteSpec, tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite")
    inbox = CommandInbox()
    handler = channel(site, store, inbox)
    replies = handler.handle(signed(command()), response_topic="pedf/jinan-office/replies/op-7",
                             correlation=b"\x07")
    assert [handler.topics.of(r.stream) for r in replies] == ["pedf/jinan-office/replies",
                                          "pedf/jinan-office/replies/op-7"]
    assert replies[0].body["status"] == "accepted"
    assert replies[1].correlation == b"\x07"
    again = handler.handle(signed(command()))  # the same command again: idempotent
    assert again[0].body == {"ts": NOW, "command_id": "dr-1", "status": "accepted",
                             "duplicate": True}
    assert inbox.qsize() == 1
    different = handler.handle(signed(command(params={"kw": 50.0, "duration_s": 900})))
    assert different[0].body["status"] == "rejected"
    assert "replayed id" in str(different[0].body["reason"])
    bad = handler.handle(signed(command(id="dr-2"), b"nope"))
    assert bad[0].body == {"ts": NOW, "command_id": "dr-2", "status": "rejected",
                           "reason": "bad signature"}
    assert inbox.qsize() == 1
    audit = store.audit_rows()
    assert [row["result"] for row in reversed(audit)] == ["accepted", "duplicate", "rejected",
                                                          "rejected"]
    assert audit[0]["command_id"] == "dr-2"
    assert audit[0]["reason"] == "bad signature"


def test_seen_ids_survive_a_restart(site: SiteSpec, tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    store = Store(path)
    channel(site, store, CommandInbox()).handle(signed(command()))
    store.close()
    inbox = CommandInbox()
    replies = channel(site, Store(path), inbox).handle(signed(command()))
    assert replies[0].body.get("duplicate") is True
    assert inbox.qsize() == 0  # not executed twice


def test_a_full_inbox_refuses_with_busy(site: SiteSpec, tmp_path: Path) -> None:
    inbox = CommandInbox(maxsize=1)
    handler = channel(site, Store(tmp_path / "s.sqlite"), inbox)
    assert handler.handle(signed(command(id="a")))[0].body["status"] == "accepted"
    refused = handler.handle(signed(command(id="b")))[0].body
    assert refused["status"] == "rejected"
    assert str(refused["reason"]).startswith("busy")


def test_time_is_checked_with_the_real_clock_by_default(site: SiteSpec) -> None:
    now = time.time()
    body = command(issued_at=now, expires_at=now + 60)
    assert validate(signed(body), site=site, verifier=Verifier(hmac_key=KEY), now_s=now,
                    max_skew_s=30, ratings=ratings).expires_at == now + 60


# -- the channel as a service: recorded commands, batches, room, faults -----------------


async def test_recorded_commands_are_decided_after_a_restart(site: SiteSpec,
                                                              tmp_path: Path) -> None:
    """What was recorded before a crash and not decided is decided at the next start:
    a command that expired meanwhile is answered as expired, never applied."""
    path = tmp_path / "s.sqlite"
    store = Store(path)
    fresh = signed(command(id="fresh"))
    stale = signed(command(id="stale", issued_at=NOW - 4000, expires_at=NOW - 3000))
    store.record_inbound([(InboundCommand(fresh), False), (InboundCommand(stale), False)])
    store.close()  # the gateway died here
    inbox = CommandInbox()
    handler = channel(site, Store(path), inbox)
    service = asyncio.create_task(handler.run())
    try:
        await eventually(lambda: handler.store.inbound_depth() == 0, what="decided")
    finally:
        service.cancel()
    replies = {json.loads(m.payload)["command_id"]: json.loads(m.payload)
               for m in handler.store.pending()}
    assert replies["fresh"]["status"] == "accepted"
    assert replies["stale"]["status"] == "rejected"
    assert replies["stale"]["reason"] == "expired 3000 s ago"
    assert [c.id for c in iter(inbox.get_nowait, None)] == ["fresh"]


def test_one_batch_accepts_a_command_once(site: SiteSpec, tmp_path: Path) -> None:
    inbox = CommandInbox()
    handler = channel(site, Store(tmp_path / "s.sqlite"), inbox)
    same = InboundCommand(signed(command()))
    replies = handler.process([same, same])
    assert [r[0].body["status"] for r in replies] == ["accepted", "accepted"]
    assert replies[1][0].body.get("duplicate") is True
    assert inbox.qsize() == 1


def test_the_audit_stays_within_a_tiny_quota(site: SiteSpec, tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite", audit_max_rows=10)
    handler = channel(site, store, CommandInbox())
    for number in range(30):
        handler.handle(signed(command(id=f"bad-{number}"), b"wrong key") + b" " * 10_000)
    rows = store.audit_rows(limit=100)
    assert len(rows) == 10
    assert [row["command_id"] for row in rows] == [f"bad-{n}" for n in range(29, 19, -1)]
    assert all(row["payload_size"] and int(str(row["payload_size"])) > 10_000 for row in rows)


async def test_a_full_inbox_waits_for_the_control_loop_before_refusing(
        site: SiteSpec, tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite")
    inbox = CommandInbox(maxsize=1)
    handler = channel(site, store, inbox)
    handler.busy_wait_s = 30.0
    store.record_inbound([(InboundCommand(signed(command(id=f"c{n}"))), False)
                          for n in range(3)])
    service = asyncio.create_task(handler.run())
    taken: list[str] = []
    try:
        while len(taken) < 3:  # a slow control loop takes one command at a time
            got = await eventually(inbox.get_nowait, what="a command in the inbox")
            assert got is not None
            taken.append(got.id)
    finally:
        service.cancel()
    assert taken == ["c0", "c1", "c2"]  # none refused as busy
    assert handler.stats.commands["accepted"] == 3


def test_a_bug_in_deciding_is_a_rejection_not_a_crash(site: SiteSpec, tmp_path: Path) -> None:
    def broken(device: str, capability: str) -> float | None:
        raise RuntimeError("a bug")

    store = Store(tmp_path / "s.sqlite")
    handler = CommandChannel(site, store, Topics("pedf/jinan-office"), CommandInbox(),
                             Verifier(hmac_key=KEY), broken, UplinkStats(), clock=lambda: NOW)
    body = handler.handle(signed(command(type="battery_setpoint", target="battery",
                                         params={"power_w": 1.0, "duration_s": 60})))[0].body
    assert body["status"] == "rejected"
    assert body["reason"] == "internal error (RuntimeError): not applied"
    assert store.audit_rows()[0]["result"] == "rejected"
