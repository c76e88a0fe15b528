"""Fuzzing the whole command channel (parse, canonical form, signature, validation,
replay window, audit, replies): whatever arrives, exactly one reply and one audit row
come out, and nothing unsigned is ever accepted."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests_support import EXAMPLE

from controller.channel import CommandChannel
from controller.commands import Verifier, sign_hmac
from controller.inbox import CommandInbox
from controller.store import InboundCommand, Store
from controller.topics import Topics
from controller.uplink import UplinkStats
from drivers.site import SiteSpec, load_site

KEY = b"fuzz-key"
NOW = 1_795_400_000.0
REPLIES = "pedf/jinan-office/replies"


@pytest.fixture(scope="module")
def site() -> SiteSpec:
    return load_site(EXAMPLE)


def ratings(device: str, capability: str) -> float | None:
    return 100_000.0 if device == "battery" else None


@pytest.fixture
def channel(site: SiteSpec) -> CommandChannel:
    """One channel for all examples of a test (ids are made unique per example)."""
    return CommandChannel(site, Store(":memory:", synchronous="normal"),
                          Topics("pedf/jinan-office"), CommandInbox(maxsize=100_000),
                          Verifier(hmac_key=KEY), ratings, UplinkStats(), clock=lambda: NOW)


_ids = itertools.count()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False,
                                                          allow_infinity=False)
    | st.text(max_size=40),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(
        st.text(max_size=12), children, max_size=5),
    max_leaves=30)

#: Text that looks like JSON and is built to hurt: deep nesting, huge or non-finite
#: numbers, duplicate keys, lone surrogates, constants, stray bytes.
adversarial_text = st.one_of(
    st.integers(1, 20_000).map(lambda n: "[" * n + "]" * n),
    st.integers(1, 20_000).map(lambda n: '{"a":' * n + "1" + "}" * n),
    st.integers(30, 6000).map(lambda n: '{"id":"x","n":' + "9" * n + "}"),
    st.sampled_from(["1e400", "-1e400", "NaN", "Infinity", "-Infinity", "1e-400",
                     '"\\ud800"', '"\\udfff\\ud800"', "0x10", "01", "1.", ".5"]).map(
        lambda v: '{"id":"x","params":{"kw":' + v + "}}"),
    st.lists(st.sampled_from(['"id":"a"', '"id":"b"', '"type":"shed"', '"params":{}']),
             min_size=2, max_size=6).map(lambda pairs: "{" + ",".join(pairs) + "}"),
    json_values.map(json.dumps),
)


def command_with(fields: dict[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = {"id": f"dr-{next(_ids)}", "type": "shed", "target": "site",
                            "issued_at": NOW - 1, "expires_at": NOW + 900,
                            "params": {"kw": 40.0, "duration_s": 900}}
    body.update(fields)
    return body


top_level = st.dictionaries(st.sampled_from(["id", "type", "target", "issued_at",
                                             "expires_at", "params", "signature", "extra"]),
                            json_values, max_size=4)


def check_one_reply(channel: CommandChannel, payload: bytes, *,
                    response_topic: str | None = None) -> dict[str, object]:
    before = channel.store.audit_count()
    (replies,) = channel.process([InboundCommand(payload, response_topic, b"\x01")])
    topics = [channel.topics.of(r.stream) for r in replies]
    assert topics[0] == REPLIES
    assert all(t == REPLIES or t.startswith(REPLIES + "/") for t in topics)
    assert channel.store.audit_count() == before + 1
    body = replies[0].body
    assert body["status"] in ("accepted", "rejected")
    if body["status"] == "rejected":
        assert isinstance(body["reason"], str)
        assert 0 < len(body["reason"]) <= 200
    return body


FUZZ = settings(max_examples=250, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(payload=st.binary(max_size=3000))
def test_arbitrary_bytes_are_only_ever_rejected(channel: CommandChannel, payload: bytes) -> None:
    assert check_one_reply(channel, payload)["status"] == "rejected"


@FUZZ
@given(text=adversarial_text, topic=st.none() | st.text(max_size=30))
def test_adversarial_json_is_only_ever_rejected(channel: CommandChannel, text: str,
                                                topic: str | None) -> None:
    payload = text.encode("utf-8", "surrogatepass")
    assert check_one_reply(channel, payload, response_topic=topic)["status"] == "rejected"
    assert channel.stats.commands["accepted"] == 0


@FUZZ
@given(fields=top_level, sign=st.booleans())
def test_commands_with_any_fields_get_one_answer(channel: CommandChannel,
                                                 fields: dict[str, Any], sign: bool) -> None:
    """Signed or not: any values in the fields (signing after the change reaches the
    meaning checks) get one answer; unsigned ones are never accepted."""
    body = command_with(fields)
    if sign:
        try:
            body = sign_hmac({k: v for k, v in body.items() if k != "signature"}, KEY)
        except ValueError:  # a value with no canonical form cannot be signed
            sign = False
    payload = json.dumps(body, allow_nan=False).encode("utf-8", "surrogatepass")
    answer = check_one_reply(channel, payload, response_topic=f"{REPLIES}/operator")
    if not sign:
        assert answer["status"] == "rejected"


@FUZZ
@given(params=st.dictionaries(st.sampled_from(["kw", "duration_s", "loads", "start_at",
                                               "ramp_s", "randomize_s", "power_w", "state",
                                               "command_id", "x"]), json_values, max_size=5),
       command_type=st.sampled_from(["shed", "cap_import", "grid_setpoint",
                                     "battery_setpoint", "sg_ready", "release", "cancel",
                                     "modify"]),
       target=st.sampled_from(["site", "battery", "heat_pump", "grid_meter", "nope"]))
def test_signed_commands_with_any_params_get_one_answer(
        channel: CommandChannel, params: dict[str, Any], command_type: str,
        target: str) -> None:
    body = sign_hmac(command_with({"type": command_type, "target": target,
                                   "params": params}), KEY)
    answer = check_one_reply(channel, json.dumps(body).encode())
    if answer["command_id"] is None:  # refused before its id was read: a number too long
        assert str(answer["reason"]).startswith("invalid JSON: a number of")
    else:
        assert answer["command_id"] == body["id"]
