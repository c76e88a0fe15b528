"""The Modbus driver's read operations against answers built here, byte for byte.

A read plan decodes each point straight from the answer that holds it (a
``PointDecoder`` per point, kept with the plan); the reference is the codec's general
path, ``decode_points`` over a ``RegisterImage`` of the same answers.
"""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.codec import RegisterImage, decode_points, register_map, with_dependencies
from drivers.frames import crc16
from drivers.maploader import get_map, shipped_models
from drivers.modbus import ModbusDriver, ModbusExchange
from drivers.points import Protocol, Value
from drivers.protocol import Framing

MODBUS_MODELS = [m for m in shipped_models() if get_map(m).protocol is Protocol.MODBUS]


def answer_pdu(exchange: ModbusExchange, words: list[int]) -> bytes:
    """The response PDU to ``exchange``'s read request, carrying ``words`` (or bits)."""
    request = exchange.request
    if request.function.is_bits:
        bits = [w & 1 for w in words[:request.count]]
        data = bytes(sum(bit << i for i, bit in enumerate(bits[n:n + 8]))
                     for n in range(0, len(bits), 8))
    else:
        data = struct.pack(f">{request.count}H", *words[:request.count])
    return bytes([request.function, len(data)]) + data


def poll(driver: ModbusDriver, points: tuple[str, ...], draw: st.DataObject | None
         ) -> tuple[dict[str, Value], dict[str, Value]]:
    """(the operation's values, the reference decode of the same answers). Registers are
    drawn by hypothesis, or a fixed pattern."""
    operation = driver.read(points)
    reads = iter(driver.plan(points))
    image = RegisterImage()
    transaction = 0
    while (exchange := operation.next_exchange()) is not None:
        assert isinstance(exchange, ModbusExchange)
        request, read = exchange.request, next(reads)
        words = [draw.draw(st.integers(0, 0xFFFF)) if draw is not None
                 else (request.address + i) * 37 % 0x10000 for i in range(request.count)]
        pdu = answer_pdu(exchange, words)
        transaction += 1
        exchange.encode(transaction)
        if driver.framing is Framing.STREAM:
            buffer = bytearray(struct.pack(">HHHB", transaction, 0, len(pdu) + 1,
                                           request.unit) + pdu)
        else:
            body = bytes([request.unit]) + pdu
            buffer = bytearray(body + crc16(body))
        assert exchange.receive(buffer)
        assert not buffer  # the answer's bytes were used: none left to be discarded
        operation.complete()
        answer = exchange.answer
        assert answer is not None
        image.store(read.table, read.address,
                    answer.bits if read.table.is_bits else answer.registers)
    device_map = register_map(driver.device_map)
    return operation.values, decode_points(device_map, with_dependencies(device_map, points),
                                           image)


def same(values: dict[str, Value], reference: dict[str, Value]) -> None:
    assert values.keys() == reference.keys()
    for name, expected in reference.items():
        got = values[name]
        nan = isinstance(expected, float) and math.isnan(expected)
        assert (isinstance(got, float) and math.isnan(got)) if nan else got == expected, name


@pytest.mark.parametrize("model", MODBUS_MODELS)
@pytest.mark.parametrize("framing", [Framing.STREAM, Framing.SERIAL])
def test_read_plans_decode_like_the_codec(model: str, framing: Framing) -> None:
    device_map = register_map(get_map(model))
    driver = ModbusDriver(device_map, 7, framing)
    groups = [group.points for group in device_map.groups.values()]
    groups.append(tuple(p.name for p in device_map.points.values() if p.access.readable))
    for points in groups:
        same(*poll(driver, tuple(points), None))


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(MODBUS_MODELS), st.data())
def test_read_plans_decode_any_registers_like_the_codec(model: str, data: st.DataObject
                                                        ) -> None:
    device_map = register_map(get_map(model))
    driver = ModbusDriver(device_map, 1, Framing.STREAM)
    points = tuple(p.name for p in device_map.points.values() if p.access.readable)
    same(*poll(driver, points, data))


def test_a_failed_read_keeps_what_was_answered() -> None:
    device_map = register_map(get_map("sunspec-inverter"))
    driver = ModbusDriver(device_map, 1, Framing.SERIAL)
    points = tuple(p.name for p in device_map.points.values() if p.access.readable)
    first, second = driver.plan(points)[:2]
    operation = driver.read(points)
    exchange = operation.next_exchange()
    assert isinstance(exchange, ModbusExchange)
    exchange.encode(0)
    body = bytes([exchange.request.unit]) + answer_pdu(exchange, [1] * first.count)
    assert exchange.receive(bytearray(body + crc16(body)))
    operation.complete()
    assert operation.next_exchange() is not None  # ... which never gets its answer
    assert operation.covering == second.points
    decoded = operation.values
    assert set(decoded) == {p.name for p in with_dependencies(device_map, points)
                            if p.table is first.table and first.address <= p.address
                            and p.end <= first.address + first.count}
