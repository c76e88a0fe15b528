"""Modbus as a device protocol (:mod:`drivers.protocol`): reads planned from the register
map, verified writes, framed as Modbus TCP (MBAP) on a native TCP connection or as RTU
(unit, PDU, CRC) on a serial line or a serial device server. Sans-I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from drivers.codec import (
    PointDecoder,
    encode_write,
    register_map,
    scale_factor_value,
    with_dependencies,
)
from drivers.devices import Write
from drivers.frames import (
    ExceptionCode,
    Function,
    Request,
    Response,
    encode_rtu,
    encode_tcp,
    parse_pdu,
    parse_rtu,
    take_mbap_frame,
)
from drivers.planner import ReadRequest, plan_group
from drivers.points import AnyMap, DeviceMap, Point, Table, Value, WriteRangeError
from drivers.protocol import (
    DeviceAnswerError,
    Driver,
    Exchange,
    Framing,
    ReadOperation,
    WriteOperation,
)

__all__ = ["READ_FUNCTION", "ModbusDriver", "ModbusExchange", "exchange_for"]

READ_FUNCTION = {Table.COIL: Function.READ_COILS,
                 Table.DISCRETE_INPUT: Function.READ_DISCRETE_INPUTS,
                 Table.HOLDING: Function.READ_HOLDING_REGISTERS,
                 Table.INPUT: Function.READ_INPUT_REGISTERS}


class ModbusExchange(Exchange):
    """One Modbus request; ``answer`` is the checked :class:`~drivers.frames.Response`."""

    answer: Response | None = None

    def __init__(self, request: Request) -> None:
        self.request = request

    def describe(self) -> str:
        request = self.request
        what = f"{request.function.name.lower()} {request.address}"
        return f"unit {request.unit} {what}+{request.quantity}"


class _TcpExchange(ModbusExchange):
    """MBAP framing: answers are matched by transaction id; late answers to earlier
    requests are skipped as stale."""

    _transaction = -1

    def encode(self, transaction: int) -> bytes:
        self._transaction = transaction & 0xFFFF
        self.answer = None
        return encode_tcp(self._transaction, self.request)

    def receive(self, buffer: bytearray) -> bool:
        while (frame := take_mbap_frame(buffer)) is not None:
            transaction, unit, pdu = frame
            if transaction != self._transaction:
                self.stale_frames += 1
                continue
            self.answer = parse_pdu(self.request, unit, pdu)
            return True
        return False


class _RtuExchange(ModbusExchange):
    """RTU framing: the bytes since the request are the answer, checked by CRC."""

    def encode(self, transaction: int) -> bytes:
        self.answer = None
        return encode_rtu(self.request)

    def receive(self, buffer: bytearray) -> bool:
        self.answer = parse_rtu(self.request, buffer)
        if self.answer is None:
            return False
        buffer.clear()  # the answer was every byte since the request: used, not discarded
        return True


def exchange_for(request: Request, framing: Framing) -> ModbusExchange:
    """The exchange carrying ``request`` on a line of ``framing``."""
    return _TcpExchange(request) if framing is Framing.STREAM else _RtuExchange(request)


def _checked(exchange: ModbusExchange) -> Response:
    response = exchange.answer
    assert response is not None, "complete() before the answer arrived"
    if response.exception is not None:
        raise DeviceAnswerError(response.exception, ExceptionCode.describe(response.exception))
    return response


@dataclass(frozen=True, slots=True)
class _Slot:
    """Where a point's registers are in a plan's answers, and how they decode."""

    name: str
    request: int  # index of the request that reads them
    start: int  # their offset in that request's answer
    end: int
    decoder: PointDecoder
    scale_factor: _Slot | None  # the slot of the point's scale factor, if it has one


@dataclass(frozen=True, slots=True)
class _Plan:
    requests: tuple[tuple[ReadRequest, Request], ...]
    slots: tuple[_Slot, ...]  # the points asked for plus the scale factors they need


def _slots(reads: Sequence[ReadRequest], points: Sequence[Point]) -> tuple[_Slot, ...]:
    """Each point's place in the answers to ``reads`` (the planner never splits a point
    over two requests), its decoder, and its scale factor's place."""
    slots: dict[str, _Slot] = {}
    for point in sorted(points, key=lambda p: p.scale_factor is not None):  # factors first
        index = next((i for i, read in enumerate(reads) if read.table is point.table
                      and read.address <= point.address
                      and point.end <= read.address + read.count), None)
        if index is None:
            raise ValueError(f"{point.name}: no planned request reads all its registers")
        start = point.address - reads[index].address
        sf = None if point.scale_factor is None else slots[point.scale_factor]
        slots[point.name] = _Slot(point.name, index, start, start + point.count,
                                  PointDecoder(point), sf)
    return tuple(slots[point.name] for point in points)


class _Read(ReadOperation):
    """Reads a plan's requests; ``values`` decodes each point straight from the answer
    that holds it, with the decoders the plan keeps."""

    def __init__(self, driver: ModbusDriver, plan: _Plan) -> None:
        self._device_map = driver.device_map
        self._framing = driver.framing
        self._plan = plan
        self._index = -1
        self._answers: list[Sequence[int] | None] = [None] * len(plan.requests)
        self._exchange: ModbusExchange | None = None

    def next_exchange(self) -> Exchange | None:
        self._index += 1
        if self._index >= len(self._plan.requests):
            self._exchange = None
            return None
        self._exchange = exchange_for(self._plan.requests[self._index][1], self._framing)
        return self._exchange

    def complete(self) -> None:
        assert self._exchange is not None
        response = _checked(self._exchange)
        read = self._plan.requests[self._index][0]
        self._answers[self._index] = response.bits if read.table.is_bits \
            else response.registers

    @property
    def values(self) -> dict[str, Value]:
        answers = self._answers
        values: dict[str, Value] = {}
        for slot in self._plan.slots:
            registers = answers[slot.request]
            if registers is None:
                continue  # not read (the operation failed before)
            sf = None
            sf_slot = slot.scale_factor
            if sf_slot is not None:
                sf_registers = answers[sf_slot.request]
                if sf_registers is not None:
                    raw = sf_slot.decoder.raw(sf_registers[sf_slot.start:sf_slot.end])
                    sf = scale_factor_value(raw if isinstance(raw, int) else None)
            values[slot.name] = slot.decoder.value(registers[slot.start:slot.end], sf)
        return self._device_map.primary(values)  # transformer ratios applied

    @property
    def covering(self) -> tuple[str, ...]:
        return self._plan.requests[self._index][0].points


class _Write(WriteOperation):
    """The write, then a read of the same registers: they must hold what was written."""

    def __init__(self, framing: Framing, write: Request, read_back: Request) -> None:
        self._steps = [exchange_for(write, framing), exchange_for(read_back, framing)]
        self._index = -1

    def next_exchange(self) -> Exchange | None:
        self._index += 1
        return self._steps[self._index] if self._index < len(self._steps) else None

    def complete(self) -> None:
        response = _checked(self._steps[self._index])
        if self._index == 1:
            written = self._steps[0].request.values
            got = tuple(int(b) for b in response.bits) if response.function.is_bits \
                else response.registers
            if got != written:
                self.mismatch = f"read-back {list(got)} differs from written {list(written)}"


class ModbusDriver(Driver):
    """A Modbus device at ``unit`` on a line of ``framing``."""

    def __init__(self, device_map: AnyMap, unit: int, framing: Framing, *,
                 max_registers: int = 125) -> None:
        self.device_map: DeviceMap[Point] = register_map(device_map)
        self.unit = unit
        self.framing = framing
        self.max_registers = max_registers
        self._plans: dict[tuple[str, ...], _Plan] = {}

    def describe(self) -> str:
        return f"unit {self.unit}"

    def plan(self, points: Sequence[str]) -> list[ReadRequest]:
        """The read requests covering ``points`` (and their scale factors and ratios)."""
        return [read for read, _ in self._plan(tuple(points)).requests]

    def _plan(self, points: tuple[str, ...]) -> _Plan:
        plan = self._plans.get(points)
        if plan is None:
            reads = plan_group(self.device_map, points, max_registers=self.max_registers)
            plan = _Plan(
                tuple((read, Request(self.unit, READ_FUNCTION[read.table], read.address,
                                     count=read.count)) for read in reads),
                _slots(reads, with_dependencies(self.device_map, points)))
            self._plans[points] = plan
        return plan

    def read(self, points: Sequence[str]) -> ReadOperation:
        return _Read(self, self._plan(tuple(points)))

    def write(self, write: Write, latest: Mapping[str, Value]) -> WriteOperation:
        point = self.device_map.point(write.point)
        values = tuple(encode_write(point, write.value, self._scale_factor(point, latest)))
        unit, address = self.unit, point.address
        if point.table is Table.COIL:
            function = Function.WRITE_SINGLE_COIL if len(values) == 1 \
                else Function.WRITE_MULTIPLE_COILS
            read_back = Request(unit, Function.READ_COILS, address, count=len(values))
        elif point.table is Table.HOLDING:
            function = Function.WRITE_SINGLE_REGISTER if len(values) == 1 \
                else Function.WRITE_MULTIPLE_REGISTERS
            read_back = Request(unit, Function.READ_HOLDING_REGISTERS, address,
                                count=len(values))
        else:
            raise WriteRangeError(f"{point.name}: {point.table.value} is read-only")
        return _Write(self.framing, Request(unit, function, address, values=values), read_back)

    @staticmethod
    def _scale_factor(point: Point, latest: Mapping[str, Value]) -> int | None:
        if point.scale_factor is None:
            return None
        raw = latest.get(point.scale_factor)
        sf = scale_factor_value(raw if isinstance(raw, int) and not isinstance(raw, bool)
                                else None)
        if sf is None:
            raise WriteRangeError(f"{point.name}: scale factor {point.scale_factor} has not "
                                  "been read yet")
        return sf
