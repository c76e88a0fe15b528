"""The city platform protocol over real sockets: packets checked against openssl, the
reference data centre's refusals, and the reliability faults — platform down, gateway
SIGKILLed mid-report, wrong key, garbage answers: nothing lost, nothing duplicated."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from tests_support import eventually, eventually_sync, free_port

from controller.platform.receiver import Receiver
from controller.platform.settings import PlatformSettings
from controller.platform.uploader import Uploader, group_periods
from controller.platform.wire import (
    Message,
    Operation,
    PacketReader,
    WireError,
    crc16_modbus,
    dialects,
    encode_packet,
    encrypt,
    login_digest,
    parse_message,
)
from controller.store import EnergyWindow, Store

KEY = b"jinan-demo-key16"
DIALECT = dialects()["jianshe-2009"]
ZONE = ZoneInfo("Asia/Shanghai")
T0 = 1_782_057_600.0  # 2026-06-22 00:00 in Jinan
BUILDING = "370100A001"


def _fill(store: Store, first: int, count: int) -> None:
    """``count`` 15-min windows from window ``first`` on, with codes and known values."""
    for n in range(first, first + count):
        energy = {"01000": 10.0 + n, "01A00": 4.0 + n / 4, "01A10": 4.0 + n / 4,
                  "01C00": 6.0 + 0.75 * n, "01C10": 6.0 + 0.75 * n}
        store.record_energy_window(EnergyWindow("900s", T0 + 900 * n, energy), {})


def _uploader(store: Store, port: int, key: bytes = KEY) -> Uploader:
    settings = PlatformSettings(enabled=True, port=port, building_id=BUILDING, key=key,
                                dialect=DIALECT.with_overrides(heartbeat_s=0.5),
                                timeout_s=2.0, backoff_max_s=0.3, backlog_days=3650)
    return Uploader(settings, store, "900s", 900, ZONE, poll_s=0.05)


@contextlib.asynccontextmanager
async def _running(uploader: Uploader) -> AsyncIterator[Uploader]:
    task = asyncio.create_task(uploader.run())
    try:
        yield uploader
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _expected(store: Store) -> dict[str, dict[str, float]]:
    """The gateway's view: every complete period with its energy per code."""
    rows = store.energy_periods("900s", 0, 1e12)
    last = store.last_energy_period("900s")
    assert last is not None
    from datetime import datetime
    return {datetime.fromtimestamp(p.start_s, ZONE).strftime("%Y%m%d%H%M%S"):
            {c: round(v, 4) for c, v in p.energy.items()}
            for p in group_periods(rows, 900, last + 900)}


# -- packets ---------------------------------------------------------------------------


def test_body_encryption_matches_openssl() -> None:
    xml = Message(BUILDING, "01", Operation.HEARTBEAT).to_xml()
    openssl = subprocess.run(["openssl", "enc", "-aes-128-cbc", "-K", KEY.hex(), "-iv",
                              KEY.hex()], input=xml, capture_output=True, check=True).stdout
    assert encrypt(DIALECT, KEY, xml) == openssl
    # A packet framed by hand around openssl's body: head, length, body, CRC, tail.
    packet = (bytes.fromhex("55AA55AA") + len(openssl).to_bytes(4, "big") + openssl
              + crc16_modbus(openssl).to_bytes(2, "little") + bytes.fromhex("68166816"))
    assert packet == encode_packet(DIALECT, KEY, xml)
    reader = PacketReader(DIALECT, KEY)
    assert reader.feed(packet[:7]) == []  # bytes arrive in pieces
    assert [parse_message(x) for x in reader.feed(packet[7:])] == [parse_message(xml)]


def test_zero_padding_dialect_matches_openssl() -> None:
    ningbo = dialects()["ningbo-2018"]
    xml = b"<root/>" + b" " * 9  # 16 bytes: no padding block
    openssl = subprocess.run(["openssl", "enc", "-aes-128-cbc", "-nopad", "-K", KEY.hex(),
                              "-iv", KEY.hex()], input=xml, capture_output=True,
                             check=True).stdout
    assert encrypt(ningbo, KEY, xml) == openssl


def test_crc16_modbus_reference_value() -> None:
    assert crc16_modbus(b"123456789") == 0x4B37  # the CRC catalogue's check value


@pytest.mark.parametrize(("damage", "reason"), [
    (lambda p: b"\x00" + p[1:], "does not start"),
    (lambda p: p[:-7] + bytes([p[-7] ^ 1]) + p[-6:], "CRC"),
    (lambda p: p[:-1] + b"\x00", "does not end"),
    (lambda p: p[:4] + (1 << 30).to_bytes(4, "big") + p[8:], "limit"),
])
def test_broken_packets_are_refused_with_a_reason(damage: object, reason: str) -> None:
    packet = encode_packet(DIALECT, KEY, Message(BUILDING, "01", Operation.HEARTBEAT).to_xml())
    with pytest.raises(WireError, match=reason):
        PacketReader(DIALECT, KEY).feed(damage(packet))  # type: ignore[operator]


def test_a_wrong_key_or_bad_xml_is_refused() -> None:
    packet = encode_packet(DIALECT, KEY, Message(BUILDING, "01", Operation.HEARTBEAT).to_xml())
    with pytest.raises(WireError):
        parse_message(PacketReader(DIALECT, b"another-key-1234").feed(packet)[0])
    for bad in (b"<root/>", b"<root><common><building_id>b</building_id>"
                b"<gateway_id>g</gateway_id></common><data operation='x'/></root>",
                b'<!DOCTYPE x [<!ENTITY a "b">]><root/>', b"not xml"):
        with pytest.raises(WireError):
            parse_message(bad)


def test_login_digest_is_md5_of_sequence_then_key() -> None:
    # md5("12345678" + "jinan-demo-key16"), computed with coreutils' md5sum
    expected = subprocess.run(["md5sum"], input=b"12345678" + KEY, capture_output=True,
                              check=True).stdout.split()[0].decode()
    assert login_digest("12345678", KEY) == expected


# -- the data centre and the uploader ----------------------------------------------------


async def test_reports_resends_and_queries(tmp_path: Path) -> None:
    store = Store(tmp_path / "gw.sqlite")
    _fill(store, 0, 5)
    async with Receiver(DIALECT, KEY) as receiver, _running(_uploader(store, receiver.port)):
        await eventually(lambda: len(receiver.periods(BUILDING)) == 5, what="5 periods")
        _fill(store, 5, 2)  # two more windows: two more periods
        await eventually(lambda: len(receiver.periods(BUILDING)) == 7, what="7 periods")
        await eventually(lambda: receiver.stats.logins >= 1 and not receiver.stats.bad_packets)
        # the data centre asks again for the first hour: answered, stored once
        reports = receiver.stats.reports
        await receiver.query(BUILDING, "01", T0, T0 + 3600)
        await eventually(lambda: receiver.stats.reports >= reports + 4, what="4 replies")
        assert receiver.stats.duplicates >= 4
    assert receiver.periods(BUILDING) == _expected(store)
    store.close()


async def test_data_before_login_is_refused_with_result_fail() -> None:
    async with Receiver(DIALECT, KEY) as receiver:
        reader, writer = await asyncio.open_connection("127.0.0.1", receiver.port)
        report = Message(BUILDING, "01", Operation.REPORT, {"time": "20260622000000"},
                         (("01000", 1.0),))
        writer.write(encode_packet(DIALECT, KEY, report.to_xml()))
        answers = PacketReader(DIALECT, KEY)
        async with asyncio.timeout(5):
            data = await reader.read(65536)
        reply = parse_message(answers.feed(data)[0])
        assert (reply.operation, reply.fields["result"]) == (Operation.LOGIN_RESULT, "fail")
        async with asyncio.timeout(5):
            assert await reader.read(65536) == b""  # and the connection is closed
        writer.close()
        assert receiver.periods(BUILDING) == {}


async def test_platform_down_then_back(tmp_path: Path) -> None:
    """The platform is down for an hour of reports (accelerated): every period arrives
    once it is back."""
    store = Store(tmp_path / "gw.sqlite")
    port = free_port()
    async with _running(_uploader(store, port)) as uploader:
        for n in range(5):  # an hour and a quarter of windows while nobody answers
            _fill(store, n, 1)
        await eventually(lambda: uploader.stats.errors >= 2, what="failed attempts")
        async with Receiver(DIALECT, KEY, port=port) as receiver:
            await eventually(lambda: len(receiver.periods(BUILDING)) == 5, what="backlog")
            assert receiver.stats.duplicates == 0
    assert receiver.periods(BUILDING) == _expected(store)
    assert store.delivered("city", 0) == {T0 + 900 * n for n in range(5)}
    store.close()


async def test_a_wrong_key_delivers_nothing_and_the_right_one_everything(
        tmp_path: Path) -> None:
    store = Store(tmp_path / "gw.sqlite")
    _fill(store, 0, 3)
    async with Receiver(DIALECT, KEY) as receiver:
        async with _running(_uploader(store, receiver.port, b"wrong-key-123456")) as wrong:
            await eventually(lambda: wrong.stats.errors >= 2 and receiver.stats.bad_packets >= 2,
                             what="refused attempts")
        assert receiver.periods(BUILDING) == {}
        assert store.delivered("city", 0) == set()
        async with _running(_uploader(store, receiver.port)):
            await eventually(lambda: len(receiver.periods(BUILDING)) == 3, what="delivery")
    assert receiver.periods(BUILDING) == _expected(store)
    store.close()


async def test_garbage_answers(tmp_path: Path) -> None:
    """A platform that answers garbage: nothing counts as delivered; a real one later
    gets every period once."""
    store = Store(tmp_path / "gw.sqlite")
    _fill(store, 0, 3)
    answered = 0

    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal answered
        with contextlib.suppress(OSError):
            await reader.read(65536)
            writer.write(os.urandom(64) if answered % 2 else bytes.fromhex("55AA55AA")
                         + (16).to_bytes(4, "big") + os.urandom(22))
            answered += 1
            await writer.drain()
            await asyncio.sleep(0.2)
        writer.close()

    server = await asyncio.start_server(garbage, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with _running(_uploader(store, port)) as uploader:
        await eventually(lambda: answered >= 3 and uploader.stats.errors >= 3,
                         what="garbage answered")
        assert store.delivered("city", 0) == set()
        server.close()
        await server.wait_closed()
        async with Receiver(DIALECT, KEY, port=port) as receiver:
            await eventually(lambda: len(receiver.periods(BUILDING)) == 3, what="delivery")
    assert receiver.periods(BUILDING) == _expected(store)
    store.close()


SITE = """
[site]
id = "kill-test"
name = "k"
latitude = 36.67
longitude = 117.0
timezone = "Asia/Shanghai"

[[devices]]
name = "grid"
model = "sdm630"
transport = "tcp"
host = "127.0.0.1"
port = 1502
unit = 1
role = "grid"

[uplink]
enabled = false

[uplink.outbox]
path = "{store}"

[platform]
host = "127.0.0.1"
port = {port}
building_id = "370100A001"
key = "jinan-demo-key16"
timeout_s = 30.0
backoff_max_s = 0.3
backlog_days = 3650.0
"""


def _upload_process(site: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "controller.cli", "platform", "upload",
                             str(site)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


async def test_gateway_killed_mid_report(tmp_path: Path) -> None:
    """SIGKILL after the platform stored a report but before its acknowledgement came
    back: the restarted gateway sends it again, the platform keeps one copy."""
    store_path = tmp_path / "gw.sqlite"
    store = Store(store_path)
    _fill(store, 0, 4)
    store.close()
    async with Receiver(DIALECT, KEY, ack_delay_s=60.0) as receiver:
        site = tmp_path / "site.toml"
        site.write_text(SITE.format(store=store_path, port=receiver.port))
        first = _upload_process(site)
        try:
            await eventually(lambda: receiver.stats.reports >= 1, timeout_s=30,
                             what="a report stored, its acknowledgement held back")
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait(10)
        assert len(receiver.periods(BUILDING)) == 1
        receiver.ack_delay_s = 0.0
        second = _upload_process(site)
        try:
            await eventually(lambda: len(receiver.periods(BUILDING)) == 4, timeout_s=30,
                             what="every period")
            check = Store(store_path)
            eventually_sync(lambda: len(check.delivered("city", 0)) == 4, timeout_s=30,
                            what="every acknowledgement recorded")
            check.close()
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(10)
        assert receiver.stats.duplicates >= 1  # the killed report came again…
    store = Store(store_path)
    assert receiver.periods(BUILDING) == _expected(store)  # …and was kept once
    store.close()
