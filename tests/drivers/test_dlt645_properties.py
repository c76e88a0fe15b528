"""DL/T 645-2007 codec, property-based: frames survive any chunking of a stream with wake-up
bytes and garbage between them; every value format round-trips; and arbitrary bytes only
ever raise the module's own errors while the receiver's memory stays bounded."""

from __future__ import annotations

import contextlib
import datetime
from collections.abc import Iterator

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers.dlt645 import (
    Dlt645DeviceError,
    Dlt645FrameError,
    Frame,
    FrameReceiver,
    check_reply,
    decode_value,
    encode_frame,
    encode_value,
    parse_format,
    parse_read,
    parse_write,
    read_follow_request,
    read_request,
)

FAST = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])
DIGITS = "0123456789"
MAX_HELD = 12 + 255  # one incomplete frame


@st.composite
def addresses(draw: st.DrawFn) -> str:
    """Concrete addresses and wildcard forms led by whole AA bytes."""
    wild = 2 * draw(st.integers(0, 6))
    return "A" * wild + draw(st.text(DIGITS, min_size=12 - wild, max_size=12 - wild))


frames = st.builds(Frame, addresses(), st.integers(0, 255), st.binary(max_size=200))
# Garbage without 68H cannot look like a frame start, so the frames after it are exact.
garbage = st.binary(max_size=24).map(lambda raw: raw.replace(b"\x68", b""))


def chunks(stream: bytes, cuts: list[int]) -> Iterator[bytes]:
    """``stream`` cut after the given lengths, the rest in one piece."""
    offset = 0
    for length in cuts:
        yield stream[offset:offset + length]
        offset += length
    yield stream[offset:]


def drain(receiver: FrameReceiver) -> list[Frame]:
    taken = []
    while (frame := receiver.next_frame()) is not None:
        taken.append(frame)
    return taken


@FAST
@given(st.lists(st.tuples(garbage, st.integers(0, 4), frames), min_size=1, max_size=4),
       garbage, st.lists(st.integers(0, 40), max_size=25))
def test_frames_survive_garbage_and_any_chunking(
        items: list[tuple[bytes, int, Frame]], tail: bytes, cuts: list[int]) -> None:
    stream = b"".join(junk + encode_frame(frame, preamble=preamble)
                      for junk, preamble, frame in items) + tail
    receiver = FrameReceiver()
    received = []
    for chunk in chunks(stream, cuts):
        receiver.feed(chunk)
        received += drain(receiver)
        assert receiver.buffered <= MAX_HELD
    assert received == [frame for _, _, frame in items]
    junk = [*(j for j, _, _ in items), tail]
    assert receiver.discarded == sum(len(j) - j.count(0xFE) for j in junk)
    assert receiver.buffered == 0


# Arbitrary bytes, biased towards the bytes that give frames their shape so that headers,
# lengths and end bytes line up often enough to reach every branch of the receiver.
streams = st.lists(st.sampled_from([0x68, 0x16, 0xFE, 0x00, 0x12, 0x33]) | st.integers(0, 255),
                   max_size=600).map(bytes)


@FAST
@given(streams, st.lists(st.integers(0, 64), max_size=40))
def test_arbitrary_bytes_only_raise_frame_errors_and_memory_stays_bounded(
        stream: bytes, cuts: list[int]) -> None:
    receiver = FrameReceiver()
    for chunk in chunks(stream, cuts):
        receiver.feed(chunk)
        assert receiver.buffered <= MAX_HELD
        while True:
            try:
                if receiver.next_frame() is None:
                    break
            except Dlt645FrameError:
                continue
    assert receiver.discarded <= len(stream)


@FAST
@given(st.binary(max_size=300), frames)
def test_a_frame_after_arbitrary_bytes_and_a_pause_is_found(noise: bytes, frame: Frame) -> None:
    # Whatever came before, after clear() (the runtime's answer to a quiet line) the next
    # frame comes out exact.
    receiver = FrameReceiver()
    receiver.feed(noise)
    receiver.clear()
    receiver.feed(encode_frame(frame))
    assert drain(receiver) == [frame]


@FAST
@given(addresses(), st.integers(0, 0xFFFFFFFF), st.integers(0, 255), st.binary(max_size=60),
       st.booleans())
def test_check_reply_of_arbitrary_frames_raises_only_its_own_errors(
        address: str, di: int, control: int, data: bytes, follow: bool) -> None:
    request = read_follow_request(address, di, 1) if follow else read_request(address, di)
    for reply in (Frame("123456789012", control, data), Frame(address, control, data),
                  Frame(address, 0x80 | request.function | (control & 0x60), data)):
        with contextlib.suppress(Dlt645FrameError, Dlt645DeviceError):
            check_reply(request, reply)


@FAST
@given(st.binary(min_size=1, max_size=256), st.lists(st.integers(0, 64), max_size=20))
def test_received_frames_check_parse_and_decode_without_surprises(
        stream: bytes, cuts: list[int]) -> None:
    # Turn arbitrary bytes into valid frames by fixing the header, length and checksum,
    # then push each through everything that reads a frame.
    body = bytearray(b"\x68" + bytes.fromhex("123456789012")[::-1] + b"\x68" + stream[:1]
                     + bytes([len(stream) - 1]) + stream[1:])
    raw = bytes(body) + bytes([sum(body) & 0xFF, 0x16])
    receiver = FrameReceiver()
    got = []
    for chunk in chunks(raw, cuts):
        receiver.feed(chunk)
        got += drain(receiver)
    assert len(got) == 1
    frame = got[0]
    for call in (lambda: check_reply(read_request("123456789012", 0x00010000), frame),
                 lambda: parse_read(frame), lambda: parse_write(frame)):
        with contextlib.suppress(Dlt645FrameError, Dlt645DeviceError):
            call()
    for text in ("XXXXXX.XX", "XXX.XXX", "YYMMDDhhmm", "YYMMDDWW", "hhmmss", "NNNN"):
        fmt = parse_format(text, signed=text == "XXX.XXX")
        with contextlib.suppress(Dlt645FrameError):
            decode_value(fmt, frame.data[:fmt.size])


NUMBER_FORMATS = ["XXXXXX.XX", "XXX.X", "XXX.XXX", "XX.XXXX", "X.XXX", "XX.XX", "XXXXXXXX",
                  "XXXX.XXXX", "XX", "XXXXXXXXXX.XX"]


@st.composite
def numbers(draw: st.DrawFn) -> tuple[str, bool, int]:
    """(format, signed, scaled value within the format's range)."""
    text = draw(st.sampled_from(NUMBER_FORMATS))
    signed = draw(st.booleans())
    digits = text.count("X")
    top = 8 if signed else 10
    limit = top * 10 ** (digits - 1) - 1
    scaled = draw(st.integers(-limit if signed else 0, limit))
    return text, signed, scaled


@FAST
@given(numbers())
def test_numbers_round_trip(case: tuple[str, bool, int]) -> None:
    text, signed, scaled = case
    fmt = parse_format(text, signed=signed)
    value = scaled / 10**fmt.decimals if fmt.decimals else scaled
    data = encode_value(fmt, value)
    assert len(data) == fmt.size
    assert decode_value(fmt, data) == value
    assert encode_value(fmt, decode_value(fmt, data)) == data


@FAST
@given(st.sampled_from(NUMBER_FORMATS), st.booleans(), st.binary(min_size=1, max_size=6))
def test_number_bytes_round_trip_or_raise(text: str, signed: bool, raw: bytes) -> None:
    fmt = parse_format(text, signed=signed)
    data = (raw * fmt.size)[:fmt.size]
    try:
        value = decode_value(fmt, data)
    except Dlt645FrameError:
        return
    negative_zero = signed and data[-1] == 0x80 and not any(data[:-1])
    assert encode_value(fmt, value) == (bytes(fmt.size) if negative_zero else data)


@FAST
@given(st.datetimes(datetime.datetime(2000, 1, 1), datetime.datetime(2099, 12, 31, 23, 59, 59)),
       st.sampled_from(["YYMMDDhhmmss", "YYMMDDhhmm", "YYMMDDWW", "YYMMDD", "hhmmss", "hhmm"]))
def test_dates_and_times_round_trip(moment: datetime.datetime, text: str) -> None:
    fmt = parse_format(text)
    iso = {"YYMMDDhhmmss": moment.isoformat(timespec="seconds"),
           "YYMMDDhhmm": moment.isoformat(timespec="minutes"),
           "YYMMDDWW": moment.date().isoformat(), "YYMMDD": moment.date().isoformat(),
           "hhmmss": moment.time().isoformat(timespec="seconds"),
           "hhmm": moment.time().isoformat(timespec="minutes")}[text]
    data = encode_value(fmt, iso)
    assert decode_value(fmt, data) == iso
    if text == "YYMMDDWW":
        assert data[0] == moment.isoweekday() % 7  # 0 = Sunday
    digits = "".join(f"{b:02X}" for b in data[::-1])
    assert digits == moment.strftime({"YYMMDDhhmmss": "%y%m%d%H%M%S", "YYMMDDhhmm": "%y%m%d%H%M",
                                      "YYMMDDWW": "%y%m%d" + digits[-2:],
                                      "YYMMDD": "%y%m%d", "hhmmss": "%H%M%S",
                                      "hhmm": "%H%M"}[text])


@FAST
@given(st.text(DIGITS, min_size=1, max_size=8).filter(lambda d: len(d) % 2 == 0))
def test_digit_strings_round_trip(digits: str) -> None:
    fmt = parse_format("N" * len(digits))
    assert decode_value(fmt, encode_value(fmt, digits)) == digits
    assert encode_value(fmt, int(digits)) == encode_value(fmt, digits)
