"""Modbus frames: requests encode as the specification says; responses are checked
strictly; fuzzed frames only ever raise FrameError."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.errors import StreamDesyncError
from drivers.frames import (
    FrameError,
    Function,
    Request,
    crc16,
    encode_rtu,
    encode_tcp,
    parse_pdu,
    parse_rtu,
    take_mbap_frame,
)


def test_crc_of_the_specification_example() -> None:
    # Modbus over serial line V1.02, §6.2.2: 02 07 → CRC 0x1241, sent low byte first.
    assert crc16(bytes([0x02, 0x07])) == bytes([0x41, 0x12])


def test_read_request_frames() -> None:
    request = Request(17, Function.READ_HOLDING_REGISTERS, 0x006B, count=3)
    # Modbus Application Protocol V1.1b3 §6.3 example: 03 006B 0003.
    assert request.pdu() == bytes.fromhex("03006B0003")
    assert encode_tcp(1, request) == bytes.fromhex("0001000000061103006B0003")
    assert encode_rtu(request) == bytes.fromhex("1103006B0003") + crc16(
        bytes.fromhex("1103006B0003"))


def test_write_request_frames() -> None:
    assert Request(1, Function.WRITE_SINGLE_COIL, 0x00AC, values=(1,)).pdu() == bytes.fromhex(
        "0500ACFF00")
    assert Request(1, Function.WRITE_MULTIPLE_REGISTERS, 1, values=(10, 258)).pdu() == \
        bytes.fromhex("100001000204000A0102")
    # §6.11 example: coils 20–29 = CD 01.
    coils = (1, 0, 1, 1, 0, 0, 1, 1, 1, 0)
    assert Request(1, Function.WRITE_MULTIPLE_COILS, 0x0013, values=coils).pdu() == \
        bytes.fromhex("0F0013000A02CD01")


@pytest.mark.parametrize("kwargs", [
    {"unit": 300, "function": Function.READ_COILS, "address": 0, "count": 1},
    {"unit": 1, "function": Function.READ_HOLDING_REGISTERS, "address": 0, "count": 126},
    {"unit": 1, "function": Function.READ_COILS, "address": 0, "count": 2001},
    {"unit": 1, "function": Function.READ_INPUT_REGISTERS, "address": 65535, "count": 2},
    {"unit": 1, "function": Function.WRITE_SINGLE_REGISTER, "address": 0, "values": (70000,)},
    {"unit": 1, "function": Function.WRITE_MULTIPLE_REGISTERS, "address": 0, "values": ()},
])
def test_impossible_requests_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=r"is not|values|runs past"):
        Request(**kwargs)  # type: ignore[arg-type]


def test_parse_read_response_and_exception() -> None:
    request = Request(1, Function.READ_HOLDING_REGISTERS, 0, count=2)
    response = parse_pdu(request, 1, bytes.fromhex("0304000A0102"))
    assert response.registers == (10, 258)
    exception = parse_pdu(request, 1, bytes.fromhex("8302"))
    assert exception.exception == 2
    assert not exception.ok
    bits = parse_pdu(Request(1, Function.READ_COILS, 0, count=10), 1, bytes.fromhex("0102CD01"))
    assert bits.bits == (True, False, True, True, False, False, True, True, True, False)


@pytest.mark.parametrize(("unit", "pdu", "reason"), [
    (2, "0304000A0102", "unit 2"),
    (1, "0404000A0102", "function 4"),
    (1, "0306000A0102", "byte count"),
    (1, "0304000A01", "PDU of 5 bytes"),
    (1, "0304000A010203", "PDU of 7 bytes"),
    (1, "830201", "exception response of 3 bytes"),
    (1, "", "empty"),
])
def test_mismatched_responses_are_frame_errors(unit: int, pdu: str, reason: str) -> None:
    request = Request(1, Function.READ_HOLDING_REGISTERS, 0, count=2)
    with pytest.raises(FrameError, match=reason):
        parse_pdu(request, unit, bytes.fromhex(pdu))


def test_write_response_must_echo_the_request() -> None:
    request = Request(1, Function.WRITE_SINGLE_REGISTER, 5, values=(42,))
    assert parse_pdu(request, 1, request.pdu()).ok
    with pytest.raises(FrameError, match="echo"):
        parse_pdu(request, 1, bytes.fromhex("060005002B"))


def test_mbap_frames_are_taken_off_a_split_stream() -> None:
    pdu = bytes.fromhex("030400010002")
    frame = bytes.fromhex("00070000000701") + pdu  # transaction 7, length 7, unit 1
    stream = bytearray(frame[:5])
    assert take_mbap_frame(stream) is None
    stream += frame[5:] + frame[:3]  # the rest, and the start of the next frame
    assert take_mbap_frame(stream) == (7, 1, pdu)
    assert take_mbap_frame(stream) is None
    assert stream == frame[:3]  # what belongs to the next frame stays


def test_a_bad_mbap_header_loses_the_stream() -> None:
    with pytest.raises(StreamDesyncError, match="protocol id"):
        take_mbap_frame(bytearray.fromhex("00010001000601030400"))  # protocol id 1
    with pytest.raises(StreamDesyncError, match="MBAP length"):
        take_mbap_frame(bytearray.fromhex("00010000040001"))  # length 1024


def test_rtu_responses_are_checked_by_crc_and_length() -> None:
    request = Request(3, Function.READ_INPUT_REGISTERS, 0, count=1)
    good = bytes.fromhex("03040200FF")
    good += crc16(good)
    assert parse_rtu(request, good[:4]) is None
    response = parse_rtu(request, good)
    assert response is not None
    assert response.registers == (255,)
    with pytest.raises(FrameError, match="CRC"):
        parse_rtu(request, good[:-1] + bytes([good[-1] ^ 1]))
    with pytest.raises(FrameError, match="trailing garbage"):
        parse_rtu(request, good + b"\x00")
    with pytest.raises(FrameError, match="unit 4"):
        parse_rtu(request, b"\x04")


# -- fuzzing --------------------------------------------------------------------------

requests = st.builds(
    Request,
    unit=st.integers(1, 247),
    function=st.sampled_from([Function.READ_COILS, Function.READ_HOLDING_REGISTERS,
                              Function.READ_INPUT_REGISTERS]),
    address=st.integers(0, 1000),
    count=st.integers(1, 20),
)


def good_pdu(request: Request, data: st.DataObject) -> bytes:
    size = request.response_length() - 2
    return bytes([request.function, size]) + data.draw(st.binary(min_size=size, max_size=size))


@st.composite
def mangled(draw: st.DrawFn, frame: bytes) -> bytes:
    """Truncate, extend with garbage, or flip bytes of a frame."""
    kind = draw(st.sampled_from(["truncate", "garbage", "flip", "random"]))
    if kind == "truncate":
        return frame[:draw(st.integers(0, max(0, len(frame) - 1)))]
    if kind == "garbage":
        return frame + draw(st.binary(min_size=1, max_size=20))
    if kind == "flip":
        index = draw(st.integers(0, len(frame) - 1))
        return frame[:index] + bytes([frame[index] ^ draw(st.integers(1, 255))]) + frame[
            index + 1:]
    return draw(st.binary(max_size=300))


@given(requests, st.data())
def test_fuzzed_tcp_frames_only_raise_frame_errors(request: Request, data: st.DataObject) -> None:
    pdu = good_pdu(request, data)
    frame = struct.pack(">HHHB", 9, 0, len(pdu) + 1, request.unit) + pdu
    stream = bytearray(data.draw(mangled(frame)))
    try:
        while (parsed := take_mbap_frame(stream)) is not None:
            transaction, unit, body = parsed
            if transaction == 9:
                parse_pdu(request, unit, body)
    except FrameError:
        pass


@given(requests, st.data())
def test_fuzzed_rtu_frames_only_raise_frame_errors(request: Request, data: st.DataObject) -> None:
    body = bytes([request.unit]) + good_pdu(request, data)
    frame = body + crc16(body)
    chunks = data.draw(mangled(frame))
    try:
        for start in range(0, len(chunks), 7):
            response = parse_rtu(request, chunks[:start + 7])
            if response is not None:
                # Only an intact frame may ever parse: everything fed so far is one frame
                # with a right CRC (bytes after it are the line's problem, not this one's).
                fed = chunks[:start + 7]
                assert crc16(fed[:-2]) == fed[-2:]
                break
    except FrameError:
        pass
