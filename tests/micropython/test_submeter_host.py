"""The firmware's sans-I/O modules on CPython: register image, Modbus framing, counter
records. Frames are built and parsed by pymodbus' own framers; registers are decoded by
the gateway's codec (drivers), so the firmware cannot drift from either."""

from __future__ import annotations

import importlib
import struct
import types
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pymodbus.framer import FramerRTU, FramerSocket
from pymodbus.pdu import DecodePDU, ExceptionResponse, ModbusPDU
from pymodbus.pdu.bit_message import ReadCoilsRequest
from pymodbus.pdu.register_message import (
    ReadHoldingRegistersRequest,
    ReadInputRegistersRequest,
    WriteMultipleRegistersRequest,
    WriteSingleRegisterRequest,
)

from drivers.codec import RegisterImage, decode_points, register_map
from drivers.maploader import get_map
from drivers.points import Point, Table

MAP = register_map(get_map("esp32-submeter"))
UNIT = 7
HYPOTHESIS = settings(max_examples=60, deadline=None,
                      suppress_health_check=[HealthCheck.function_scoped_fixture])


def slot_of(fw: types.ModuleType, point: Point) -> int:
    """The value slot the generated table assigns to ``point``."""
    regmap = fw.regmap
    records = regmap.INPUT_POINTS if point.table is Table.INPUT else regmap.HOLDING_POINTS
    for k in range(0, len(records), 5):
        if struct.unpack_from(">H", records, k)[0] == point.address:
            return int(records[k + 3])
    raise AssertionError(f"{point.name} is not in the generated table")


def registers(data: bytes | bytearray) -> list[int]:
    return list(struct.unpack(f">{len(data) // 2}H", data))


@pytest.fixture
def fw(host_firmware: types.ModuleType) -> types.ModuleType:
    for name in ("image", "modbus", "regmap", "store"):
        importlib.import_module(f"submeter.{name}")
    return host_firmware


@st.composite
def point_values(draw: st.DrawFn) -> dict[str, float | int]:
    """A value for every register point, in engineering units, that its type can carry."""
    out: dict[str, float | int] = {}
    for point in MAP.points.values():
        low, high = point.type.integer_range
        if point.minimum is not None:
            low = max(low, round(point.minimum / point.scale))
        if point.maximum is not None:
            high = min(high, round(point.maximum / point.scale))
        raw = draw(st.integers(low, high))
        out[point.name] = raw if point.scale == 1 else raw * point.scale
    return out


@HYPOTHESIS
@given(values=point_values())
def test_what_the_firmware_packs_the_gateway_codec_decodes(
        fw: types.ModuleType, values: dict[str, float | int]) -> None:
    image = fw.image.Image()
    for name, value in values.items():
        image.values[slot_of(fw, MAP.points[name])] = value
    image.pack()
    seen = RegisterImage()
    seen.store(Table.INPUT, 0, registers(image.input))
    seen.store(Table.HOLDING, 0, registers(image.holding))
    decoded = decode_points(MAP, MAP.points.values(), seen)
    assert decoded.keys() == values.keys()
    for name, value in values.items():
        assert decoded[name] == pytest.approx(value, abs=MAP.points[name].scale / 2), name


def test_counters_wrap_and_measurements_saturate(fw: types.ModuleType) -> None:
    image = fw.image.Image()
    energy = MAP.points["ch1_import_energy"]
    power = MAP.points["ch1_power"]
    image.values[slot_of(fw, energy)] = 2**32 + 5  # Wh: the u32 counter wraps
    image.values[slot_of(fw, power)] = 1e12  # W: beyond s32 x 0.1 W
    image.pack()
    seen = RegisterImage()
    seen.store(Table.INPUT, 0, registers(image.input))
    decoded = decode_points(MAP, [energy, power], seen)
    assert decoded == {"ch1_import_energy": 5, "ch1_power": pytest.approx(0x7FFFFFFF * 0.1)}


# -- Modbus framing -----------------------------------------------------------------------

INPUT_END = max(p.end for p in MAP.points.values() if p.table is Table.INPUT)


@st.composite
def requests(draw: st.DrawFn) -> ModbusPDU:
    kind = draw(st.sampled_from(["input", "holding", "write1", "writeN", "coils"]))
    address = draw(st.integers(0, 70))
    if kind == "input":
        return ReadInputRegistersRequest(address=address, count=draw(st.integers(1, 125)))
    if kind == "holding":
        return ReadHoldingRegistersRequest(address=address, count=draw(st.integers(1, 125)))
    if kind == "write1":
        return WriteSingleRegisterRequest(address=draw(st.integers(0, 2)),
                                          registers=[draw(st.integers(0, 0xFFFF))])
    if kind == "writeN":
        count = draw(st.integers(1, 3))
        return WriteMultipleRegistersRequest(
            address=draw(st.integers(0, 2)),
            registers=draw(st.lists(st.integers(0, 4000), min_size=count, max_size=count)))
    return ReadCoilsRequest(address=address, count=draw(st.integers(1, 10)))


def expected(request: ModbusPDU, image: types.SimpleNamespace) -> tuple[int, list[int]]:
    """(exception code or 0, registers read) the map says the device must answer."""
    if isinstance(request, ReadInputRegistersRequest):
        ok = request.address + request.count <= INPUT_END
        return (0, image.input[request.address:request.address + request.count]) if ok \
            else (2, [])
    if isinstance(request, ReadHoldingRegistersRequest):
        ok = request.address + request.count <= 1
        return (0, image.holding[:request.count]) if ok else (2, [])
    if isinstance(request, WriteSingleRegisterRequest | WriteMultipleRegistersRequest):
        if request.address != 0 or len(request.registers) != 1:
            return 2, []
        return (0, []) if 60 <= request.registers[0] <= 3600 else (3, [])
    return 1, []


def check_response(response: ModbusPDU | None, request: ModbusPDU, want: tuple[int, list[int]],
                   fw_image: types.ModuleType) -> None:
    code, regs = want
    assert response is not None
    if code:
        assert isinstance(response, ExceptionResponse), response
        assert response.exception_code == code
        return
    assert not isinstance(response, ExceptionResponse), response
    assert response.function_code == request.function_code
    if regs:
        assert list(response.registers) == regs


@HYPOTHESIS
@given(request=requests(), tid=st.integers(0, 0xFFFF), unit=st.sampled_from([UNIT, 255, 0]))
def test_modbus_tcp_answers_like_the_map_says(fw: types.ModuleType, request: ModbusPDU,
                                              tid: int, unit: int) -> None:
    image = fw.image.Image()
    image.values = [float(k) for k in range(len(image.values))]
    image.values[slot_of(fw, MAP.points["demand_window"])] = 900
    image.pack()
    before = types.SimpleNamespace(input=registers(image.input),
                                   holding=registers(image.holding))
    request.dev_id, request.transaction_id = unit, tid
    frame = FramerSocket(DecodePDU(False)).buildFrame(request)
    out = bytearray(260)
    n = fw.modbus.tcp_respond(image, (UNIT, 0, 255), bytearray(frame), len(frame), out)
    used, response = FramerSocket(DecodePDU(False)).handleFrame(bytes(out[:n]), 0, 0)
    assert used == n
    assert response is not None
    assert response.transaction_id == tid
    assert response.dev_id == unit
    check_response(response, request, expected(request, before), fw.image)


def test_modbus_tcp_rejects_too_long_reads_and_other_units(fw: types.ModuleType) -> None:
    image = fw.image.Image()
    image.pack()
    out = bytearray(260)
    # 126 registers: exception 3 (pymodbus will not even build this request)
    frame = struct.pack(">HHHBBHH", 1, 0, 6, UNIT, 4, 0, 126)
    n = fw.modbus.tcp_respond(image, (UNIT,), bytearray(frame), len(frame), out)
    assert bytes(out[7:n]) == bytes((0x84, 3))
    # another unit behind "this gateway": 0x0B, target failed to respond
    frame = struct.pack(">HHHBBHH", 1, 0, 6, 9, 4, 0, 1)
    n = fw.modbus.tcp_respond(image, (UNIT,), bytearray(frame), len(frame), out)
    assert bytes(out[7:n]) == bytes((0x84, 0x0B))
    # the MBAP length tells where frames end; a bad protocol id is no frame at all
    assert fw.modbus.tcp_frame_length(frame + frame, 24) == 12
    assert fw.modbus.tcp_frame_length(frame, 11) == 0
    assert fw.modbus.tcp_frame_length(b"\x00\x01\x00\x01\x00\x06" + frame[6:], 12) == -1


@HYPOTHESIS
@given(data=st.binary(max_size=300))
def test_crc16_is_modbus_crc16(fw: types.ModuleType, data: bytes) -> None:
    crc = fw.modbus.crc16(data, len(data))
    assert crc.to_bytes(2, "little") == FramerRTU.compute_CRC(data).to_bytes(2, "big")


@HYPOTHESIS
@given(request=requests(), noise=st.binary(max_size=24),
       other=st.integers(1, 247).filter(lambda u: u != UNIT), split=st.integers(0, 40))
def test_rtu_slave_finds_its_frames_in_the_bus_traffic(fw: types.ModuleType,
                                                       request: ModbusPDU, noise: bytes,
                                                       other: int, split: int) -> None:
    """Noise, requests to another unit and that unit's answers go by; the request to us,
    however it is split across reads, gets exactly one answer."""
    image = fw.image.Image()
    image.pack()
    before = types.SimpleNamespace(input=registers(image.input),
                                   holding=registers(image.holding))
    framer = FramerRTU(DecodePDU(False))
    theirs = ReadHoldingRegistersRequest(address=1, count=2, dev_id=other)
    their_answer = bytes((other, 3, 4, 0, 1, 0, 2))
    their_answer += FramerRTU.compute_CRC(their_answer).to_bytes(2, "big")
    request.dev_id = UNIT
    ours = framer.buildFrame(request)
    slave = fw.modbus.RtuSlave(image, UNIT)
    answers = []
    for chunk in (noise, b"", framer.buildFrame(theirs) + their_answer, b"",
                  ours[:split % len(ours)], ours[split % len(ours):], b"", b""):
        response = slave.feed(chunk, not chunk)
        if response is not None:
            answers.append(response)
    assert len(answers) == 1
    used, response = framer.handleFrame(answers[0], UNIT, 0)
    assert used == len(answers[0])
    check_response(response, request, expected(request, before), fw.image)


def test_rtu_unknown_function_gets_exception_1_once_the_line_is_quiet(
        fw: types.ModuleType) -> None:
    image = fw.image.Image()
    slave = fw.modbus.RtuSlave(image, UNIT)
    frame = bytes((UNIT, 0x2B, 0x0E, 0x01, 0x00))  # read device identification: unsupported
    frame += FramerRTU.compute_CRC(frame).to_bytes(2, "big")
    assert slave.feed(frame, False) is None  # its length is unknown: wait for silence
    answer = slave.feed(b"", True)
    assert answer[:3] == bytes((UNIT, 0xAB, 1))
    broadcast = bytes((0, 6, 0, 0, 0x03, 0x84))  # write 900 to everyone: acted on, silent
    broadcast += FramerRTU.compute_CRC(broadcast).to_bytes(2, "big")
    assert slave.feed(broadcast, False) is None
    assert image.values[slot_of(fw, MAP.points["demand_window"])] == 900


# -- counter records ----------------------------------------------------------------------


@HYPOTHESIS
@given(counters=st.lists(st.integers(0, 2**64 - 1), min_size=6, max_size=6),
       pulses=st.lists(st.integers(0, 2**64 - 1), min_size=2, max_size=2),
       seq=st.integers(0, 2**32 - 1), cut=st.integers(0, 85), flip=st.integers(0, 687))
def test_counter_records_detect_torn_and_corrupt_writes(
        fw: types.ModuleType, counters: list[int], pulses: list[int], seq: int, cut: int,
        flip: int) -> None:
    record = fw.store.encode(seq, 3, 900, counters, pulses)  # 86 bytes: 3 channels, 2 pulses
    assert len(record) == 86
    assert fw.store.decode(record, 3, 2) == (seq, 3, 900, counters, pulses)
    assert fw.store.decode(record[:cut], 3, 2) is None  # torn by a power cut
    corrupt = bytearray(record)
    corrupt[flip // 8] ^= 1 << flip % 8
    assert fw.store.decode(bytes(corrupt), 3, 2) is None


def test_the_generated_table_is_not_in_the_source_tree() -> None:
    """regmap.py exists only in build directories (see micropython/README.md)."""
    source = Path(__file__).resolve().parents[2] / "micropython" / "submeter" / "regmap.py"
    assert not source.exists()
