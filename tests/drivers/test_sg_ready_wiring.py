"""SG-Ready as data: the label's truth table on two relay contacts and the order of their
writes, the site file's ``sg_ready`` and ``safe_open`` keys with their errors, and coded
register values (the Midea map's SG/EVU register)."""

from __future__ import annotations

import itertools
import tomllib

import pytest
from tests_support import site_from_text

from drivers.codec import decode, encode, register_map
from drivers.devices import (
    SG_READY_CONTACTS,
    Relay,
    sg_ready_contact_writes,
    sg_ready_from_contacts,
)
from drivers.maploader import MapError, get_map, parse_map
from drivers.points import WriteRangeError
from drivers.schema import ConfigError, Node

BASE = """
[site]
id = "t"

[[devices]]
name = "relay_b"
model = "relay16"
transport = "tcp"
host = "127.0.0.1"
port = 1502
unit = 1
{relay}

[[devices]]
name = "heat_pump"
model = "{model}"
transport = "tcp"
host = "127.0.0.1"
port = 1503
unit = 1
{heat_pump}

[[loads]]
name = "plugs"
device = "relay_b"
channel = 3
rated_w = 1000.0
"""


def site(heat_pump: str = "", relay: str = "", model: str = "midea-mthermal-r290") -> str:
    return BASE.format(heat_pump=heat_pump, relay=relay, model=model)


def test_the_label_truth_table() -> None:
    assert SG_READY_CONTACTS == {1: (True, False), 2: (False, False), 3: (False, True),
                                 4: (True, True)}
    for state, (first, second) in SG_READY_CONTACTS.items():
        assert sg_ready_from_contacts(first, second) == state
    assert sg_ready_from_contacts(True, None) is None


@pytest.mark.parametrize(("start", "end"), list(itertools.product(range(1, 5), repeat=2)))
def test_contact_writes_never_pass_through_block_or_force(start: int, end: int) -> None:
    """Applied one by one, the writes from ``start`` to ``end`` only pass through states
    that are one of the two ends or milder (2 normal, 3 boost)."""
    relay = Relay(get_map("relay16"), {})
    contacts = (13, 14)
    closed = dict(zip(contacts, SG_READY_CONTACTS[start], strict=True))
    writes = sg_ready_contact_writes(relay, contacts, end)
    assert sorted(w.point for w in writes) == ["relay_13", "relay_14"]
    for write in writes:
        closed[int(write.point.removeprefix("relay_"))] = bool(write.value)
        now = sg_ready_from_contacts(closed[13], closed[14])
        assert now in (start, end, 2, 3), (start, end, writes)
    assert sg_ready_from_contacts(closed[13], closed[14]) == end
    with pytest.raises(WriteRangeError):
        sg_ready_contact_writes(relay, contacts, 5)


def test_the_site_wires_contacts_and_safe_states() -> None:
    spec = site_from_text(site(
        'sg_ready = { relay = "relay_b", contacts = [13, 14], min_dwell_s = 900 }',
        "safe_open = [13, 14]"))
    wiring = spec.devices["heat_pump"].sg_ready
    assert wiring is not None
    assert (wiring.relay, wiring.contacts, wiring.min_dwell_s, wiring.max_blocked_s) == (
        "relay_b", (13, 14), 900.0, 7200.0)
    relay = spec.devices["relay_b"]
    assert not relay.safe_closed(13)
    assert relay.safe_closed(3)
    register = site_from_text(site("sg_ready = { min_dwell_s = 300 }"))
    assert register.devices["heat_pump"].sg_ready is not None
    assert not register.devices["heat_pump"].sg_ready.by_contacts


@pytest.mark.parametrize(("heat_pump", "relay", "model", "where", "expected"), [
    ('sg_ready = { relay = "relay_b", contacts = [3, 14] }', "", "midea-mthermal-r290",
     "devices[1].sg_ready.contacts[0]", "not already used by load plugs"),
    ('sg_ready = { relay = "relay_b", contacts = [13] }', "", "midea-mthermal-r290",
     "devices[1].sg_ready.contacts", "two channels"),
    ('sg_ready = { relay = "relay_b", contacts = [13, 13] }', "", "midea-mthermal-r290",
     "devices[1].sg_ready.contacts[1]", "other than contact 1"),
    ('sg_ready = { relay = "relay_b", contacts = [13, 17] }', "", "midea-mthermal-r290",
     "devices[1].sg_ready.contacts[1]", "1–16"),
    ('sg_ready = { relay = "heat_pump", contacts = [13, 14] }', "", "midea-mthermal-r290",
     "devices[1].sg_ready.relay", "a relay device"),
    ('sg_ready = { relay = "relay_b" }', "", "midea-mthermal-r290",
     "devices[1].sg_ready.contacts", "relay and contacts together"),
    ('sg_ready = { relay = "relay_b", contacts = [13, 14], max_blocked_s = 9000 }', "",
     "midea-mthermal-r290", "devices[1].sg_ready.max_blocked_s", "60–7200"),
    ('sg_ready = { relay = "relay_b", contacts = [13, 14], colour = 1 }', "",
     "midea-mthermal-r290", "devices[1].sg_ready.colour", "unknown key"),
    ("", 'sg_ready = { relay = "relay_b", contacts = [1, 2] }', "midea-mthermal-r290",
     "devices[0].sg_ready", "only heat pumps"),
    ("", "safe_open = [17]", "midea-mthermal-r290", "devices[0].safe_open[0]", "1–16"),
    ("safe_open = [1]", "", "midea-mthermal-r290", "devices[1].safe_open",
     "only relay modules"),
])
def test_wiring_errors_name_the_key(heat_pump: str, relay: str, model: str, where: str,
                                    expected: str) -> None:
    with pytest.raises(ConfigError) as error:
        site_from_text(site(heat_pump, relay, model))
    assert error.value.path == where, str(error.value)
    assert expected in str(error.value)


def test_coded_values_decode_and_encode_through_the_table() -> None:
    point = register_map(get_map("midea-mthermal-r290")).points["sg_signals"]
    assert [decode(point, [raw]) for raw in (0, 2, 4, 6)] == [2, 1, 3, 4]
    assert decode(point, [1]) is None  # a code the table does not have
    assert encode(point, 1) == [2]  # blocked: the SG signal, bit 1
    assert encode(point, 3) == [4]  # boost: the EVU signal, bit 2
    with pytest.raises(WriteRangeError, match="none of its coded values"):
        encode(point, 2.5)


@pytest.mark.parametrize(("extra", "expected"), [
    ('scale = 0.1\n[points.codes]\n"0" = 1', "no scale on a point with a codes table"),
    ('[points.codes]\n"x" = 1', "raw codes"),
    ('[points.codes]\n"0" = 1\n"1" = 1', "no other code"),
])
def test_codes_tables_are_checked(extra: str, expected: str) -> None:
    text = f"""
[device]
model = "coded"
kind = "heat_pump"

[[points]]
name = "power"
table = "input"
address = 0
type = "u16"
unit = "W"

[[points]]
name = "state"
table = "input"
address = 1
type = "u16"
{extra}

[capabilities]
power_w = "power"
"""
    with pytest.raises(MapError, match=expected):
        parse_map(Node("coded.toml", "", tomllib.loads(text)), "coded")
