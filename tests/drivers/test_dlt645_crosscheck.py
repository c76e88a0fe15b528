"""DL/T 645-2007 codec cross-checked, frame by frame, against the independent ``dlt645``
package (PyPI ``dlt645`` 3.2.0, repository 600888/dlt645), in both directions and without
sockets: its frame builder and parser (``DLT645Protocol``), its meter simulator's request
handler (``MeterServerService.handle_request``) and its master's reply handler
(``MeterClientService.handle_response``).

Both services are built without a transport (``server=None`` / ``client=None``): their
request/response handlers are plain methods on frames, which is all that is used here; the
master's frame builders are captured by replacing ``send_and_handle_request`` and
``_send_broadcast`` on the instance, the two methods through which all its frames leave.
Each service deep-copies the package's whole DI table (about a second), so one meter and
one master serve the module; tests that write set what they rely on.

Where the package departs from the standard, the test says so and pins its behaviour:
broadcast time sync sent YY first, passwords sent in printed order, and a maximum-demand
time read in the wrong byte order by its master.
"""

from __future__ import annotations

import datetime
from typing import Any

import pytest

dlt645 = pytest.importorskip("dlt645", minversion="3.2.0")

from dlt645 import (  # type: ignore[import-untyped]  # noqa: E402
    Demand,
    DLT645Protocol,
    MeterClientService,
    MeterServerService,
)

from drivers.dlt645 import (  # noqa: E402
    FORMATS,
    Dlt645DeviceError,
    ErrorCode,
    Frame,
    FrameReceiver,
    ReadReply,
    check_reply,
    decode_value,
    decode_values,
    encode_frame,
    encode_value,
    parse_format,
    parse_write,
    read_address_request,
    read_reply,
    read_request,
    time_sync_request,
    write_request,
)

METER = "123456789012"
METER_WIRE = bytes.fromhex("129078563412")  # A0..A5, how the package holds addresses


def ours(raw: bytes | bytearray) -> Frame:
    receiver = FrameReceiver()
    receiver.feed(bytes(raw))
    frame = receiver.next_frame()
    assert frame is not None
    assert receiver.next_frame() is None
    return frame


def theirs(frame: Frame) -> Any:
    return DLT645Protocol.deserialize(encode_frame(frame))


class Captured:
    """A master of the package whose frames are kept instead of sent."""

    def __init__(self) -> None:
        self.client = MeterClientService(client=None)
        self.client.address = bytearray(METER_WIRE)
        self.frames: list[bytes] = []
        self.client.send_and_handle_request = self._keep
        self.client._send_broadcast = self._keep

    def _keep(self, raw: bytes | bytearray) -> None:
        self.frames.append(bytes(raw))

    def last(self) -> Frame:
        return ours(self.frames[-1])


@pytest.fixture(scope="module")
def master() -> Captured:
    return Captured()


@pytest.fixture(scope="module")
def meter() -> Any:
    server = MeterServerService(server=None, address=bytearray(METER_WIRE))
    assert server.set_00(0x00010000, 123456.78)
    assert server.set_01(0x01010000, Demand(12.3456, datetime.datetime(2026, 12, 3, 10, 15)))
    assert server.set_02(0x02010100, 220.1)
    assert server.set_02(0x02020100, -1.234)
    assert server.set_02(0x02030000, -12.3456)
    assert server.set_02(0x02060000, -0.5)
    assert server.set_02(0x02800002, 50.02)
    return server


def ask(meter: Any, request: Frame) -> Frame:
    """The package's meter answers our request; we receive its bytes."""
    answer = meter.handle_request(theirs(request))
    assert answer is not None
    return ours(answer)


# ------------------------------------------------------------------ their frames, our parser


def test_their_requests_parse_as_ours(master: Captured) -> None:
    master.client.read_00(0x00010000)
    assert master.last() == read_request(METER, 0x00010000)
    master.client.read_02(0x02010100)
    assert master.last() == read_request(METER, 0x02010100)
    master.client.read_address()
    assert master.last() == read_address_request()
    assert encode_frame(read_address_request()) == master.frames[-1]


def test_their_write_parses_as_ours(master: Captured) -> None:
    master.client.operation_code = bytearray(bytes.fromhex("78563412"))  # held C0 first
    master.client.write_04(0x04000102, "101530", "02000000")
    write = parse_write(master.last())
    assert (write.di, write.password, write.operator) == (0x04000102, "02000000", "12345678")
    assert decode_value(FORMATS["time"], write.value) == "10:15:30"


def test_their_password_bytes_are_in_printed_order(master: Captured) -> None:
    # DL/T 645 sends PA P0 P1 P2 (P0 least significant): "02123456" goes 02 56 34 12.
    # The package sends the printed digits as they stand, 02 12 34 56, which we read back
    # as "02563412"; its own meter compares raw bytes, so it is consistent with itself.
    master.client.write_04(0x04000102, "101530", "02123456")
    assert parse_write(master.last()).password == "02563412"
    assert master.last().data[4:8] == bytes.fromhex("02123456")


def test_their_broadcast_time_is_sent_year_first(master: Captured) -> None:
    # 7.6: DATA is ssmmhhDDMMYY (seconds first, like every item). The package sends
    # YYMMDDhhmmss in reading order: the same six BCD bytes, reversed.
    moment = datetime.datetime(2026, 12, 3, 10, 15, 30)
    master.client.broadcast_time_sync(moment)
    frame = master.last()
    standard = time_sync_request(moment)
    assert (frame.address, frame.control) == (standard.address, standard.control)
    assert frame.data == standard.data[::-1] == bytes.fromhex("261203101530")


def test_their_replies_check_as_ours() -> None:
    # The package's own frame builder for a meter reply, read by our receiver.
    built = DLT645Protocol.build_frame(bytearray(METER_WIRE), 0x91,
                                       bytes.fromhex("00000100 78563412"))
    reply = ours(built)
    assert check_reply(read_request(METER, 0x00010000), reply) == ReadReply(
        0x00010000, bytes.fromhex("78563412"), False)


# ------------------------------------------------------------------ their meter, our master


@pytest.mark.parametrize(("di", "name", "value"), [
    (0x00010000, "energy", 123456.78),
    (0x02010100, "voltage", 220.1),
    (0x02020100, "current", -1.234),
    (0x02030000, "power", -12.3456),
    (0x02060000, "power_factor", -0.5),
    (0x02800002, "frequency", 50.02),
])
def test_their_meter_answers_our_reads(meter: Any, di: int, name: str, value: float) -> None:
    answer = check_reply(read_request(METER, di), ask(meter, read_request(METER, di)))
    assert isinstance(answer, ReadReply)
    assert (answer.di, answer.more) == (di, False)
    assert decode_value(FORMATS[name], answer.data) == value


def test_their_meter_answers_a_maximum_demand_read(meter: Any) -> None:
    answer = check_reply(read_request(METER, 0x01010000),
                         ask(meter, read_request(METER, 0x01010000)))
    assert isinstance(answer, ReadReply)
    assert decode_values((FORMATS["demand"], FORMATS["demand_time"]), answer.data) == (
        12.3456, "2026-12-03T10:15")


def test_their_meter_answers_read_address_and_refuses_unknown_items(meter: Any) -> None:
    assert check_reply(read_address_request(), ask(meter, read_address_request())) == METER
    request = read_request(METER, 0x02FF0000)  # a variable it does not have
    with pytest.raises(Dlt645DeviceError) as caught:
        check_reply(request, ask(meter, request))
    assert (caught.value.code, caught.value.reason) == (ErrorCode.NO_DATA, "no requested data")


def test_their_meter_takes_our_write(meter: Any) -> None:
    assert meter.set_password("02000000")
    value = encode_value(FORMATS["time"], "10:15:30")
    request = write_request(METER, 0x04000102, value, password="02000000",
                            operator="12345678")
    assert check_reply(request, ask(meter, request)) is None
    answer = check_reply(read_request(METER, 0x04000102),
                         ask(meter, read_request(METER, 0x04000102)))
    assert isinstance(answer, ReadReply)
    assert decode_value(FORMATS["time"], answer.data) == "10:15:30"


def test_their_meter_and_ours_disagree_on_password_byte_order(meter: Any) -> None:
    assert meter.set_password("02123456")  # stored as sent by the package: 02 12 34 56
    value = encode_value(FORMATS["time"], "10:15:30")
    standard = write_request(METER, 0x04000102, value, password="02123456")
    with pytest.raises(Dlt645DeviceError) as caught:
        check_reply(standard, ask(meter, standard))
    assert caught.value.code == ErrorCode.UNAUTHORISED
    swapped = write_request(METER, 0x04000102, value, password="02563412")
    assert check_reply(swapped, ask(meter, swapped)) is None


# ------------------------------------------------------------------ our meter, their master


@pytest.mark.parametrize(("di", "name", "value"), [
    (0x00010000, "energy", 123456.78),
    (0x02010100, "voltage", 220.1),
    (0x02020100, "current", -1.234),
    (0x02030000, "power", -12.3456),
    (0x02800002, "frequency", 50.02),
])
def test_their_master_reads_our_replies(master: Captured, di: int, name: str,
                                       value: float) -> None:
    reply = read_reply(METER, di, encode_value(FORMATS[name], value))
    raw = theirs(reply)
    assert (bytes(raw.addr), raw.ctrl_code, bytes(raw.data)) == (
        METER_WIRE, 0x91, bytes(reply.data))
    assert master.client.handle_response(raw).value == value


def test_their_parser_reads_our_requests() -> None:
    for request in (read_request(METER, 0x00010000), read_address_request(),
                    write_request(METER, 0x04000102, bytes.fromhex("301510"))):
        raw = theirs(request)
        assert bytes(raw.addr) == bytes.fromhex(request.address)[::-1]
        assert (raw.ctrl_code, bytes(raw.data)) == (request.control, request.data)
        assert len(raw.preamble) == 4


@pytest.mark.skipif(dlt645.__version__ != "3.2.0", reason="pins a 3.2.0 behaviour")
def test_their_master_reads_demand_time_in_the_wrong_byte_order(master: Captured) -> None:
    # Appendix A sends YYMMDDhhmm minutes first (its own meter does so); the package's
    # master reads those five bytes year first, so 2026-12-03 10:15 comes out 2015-10-03
    # 12:26. The demand value itself agrees.
    data = encode_value(FORMATS["demand"], 12.3456) + encode_value(
        FORMATS["demand_time"], "2026-12-03T10:15")
    demand = master.client.handle_response(theirs(read_reply(METER, 0x01010000, data))).value
    assert demand.value == 12.3456
    assert demand.time == datetime.datetime(2015, 10, 3, 12, 26)


def test_their_meter_round_trips_a_date_item(meter: Any) -> None:
    assert meter.set_password("02000000")
    date = parse_format("YYMMDDWW")
    request = write_request(METER, 0x04000101, encode_value(date, "2026-12-03"),
                            password="02000000")
    assert check_reply(request, ask(meter, request)) is None
    answer = check_reply(read_request(METER, 0x04000101),
                         ask(meter, read_request(METER, 0x04000101)))
    assert isinstance(answer, ReadReply)
    assert answer.data == bytes.fromhex("04 03 12 26")  # WW 04: Thursday
    assert decode_value(date, answer.data) == "2026-12-03"
