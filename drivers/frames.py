"""Modbus frames, sans-I/O: requests to bytes, bytes to checked responses.

Covers function codes 1, 2, 3, 4 (reads), 5, 6, 15, 16 (writes) and exception responses,
framed for Modbus TCP (MBAP header) or RTU (unit, PDU, CRC-16). Parsing is strict: a
response must match its request in transaction id (TCP), unit, function code, byte count
and, for writes, the echoed address and values; anything else raises :class:`FrameError`
with the reason, and nothing malformed is ever returned as data. Late frames for an
earlier request are recognised on TCP by their transaction id and dropped.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from drivers.errors import FrameError, StreamDesyncError

__all__ = [
    "ExceptionCode",
    "FrameError",
    "Function",
    "Request",
    "Response",
    "crc16",
    "encode_rtu",
    "encode_tcp",
    "parse_pdu",
    "parse_rtu",
    "take_mbap_frame",
]


class Function(enum.IntEnum):
    READ_COILS = 1
    READ_DISCRETE_INPUTS = 2
    READ_HOLDING_REGISTERS = 3
    READ_INPUT_REGISTERS = 4
    WRITE_SINGLE_COIL = 5
    WRITE_SINGLE_REGISTER = 6
    WRITE_MULTIPLE_COILS = 15
    WRITE_MULTIPLE_REGISTERS = 16

    @property
    def is_read(self) -> bool:
        return self <= 4

    @property
    def is_bits(self) -> bool:
        return self in (1, 2, 5, 15)


class ExceptionCode(enum.IntEnum):
    ILLEGAL_FUNCTION = 1
    ILLEGAL_DATA_ADDRESS = 2
    ILLEGAL_DATA_VALUE = 3
    SERVER_DEVICE_FAILURE = 4
    ACKNOWLEDGE = 5
    SERVER_DEVICE_BUSY = 6
    GATEWAY_PATH_UNAVAILABLE = 10
    GATEWAY_TARGET_FAILED = 11

    @classmethod
    def describe(cls, code: int) -> str:
        try:
            return f"exception {code:02X} ({cls(code).name.lower().replace('_', ' ')})"
        except ValueError:
            return f"exception {code:02X}"


@dataclass(frozen=True, slots=True)
class Request:
    """One Modbus request. Reads use ``count``; writes carry ``values`` (registers, or
    0/1 for coils)."""

    unit: int
    function: Function
    address: int
    count: int = 0
    values: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not 0 <= self.unit <= 255:
            raise ValueError(f"unit id {self.unit} is not 0–255")
        if not 0 <= self.address <= 0xFFFF:
            raise ValueError(f"address {self.address} is not 0–65535")
        limit = {1: 2000, 2: 2000, 3: 125, 4: 125}.get(self.function)
        if limit is not None and not 1 <= self.count <= limit:
            raise ValueError(f"count {self.count} is not 1–{limit} for {self.function.name}")
        if not self.function.is_read:
            single = self.function in (Function.WRITE_SINGLE_COIL, Function.WRITE_SINGLE_REGISTER)
            most = 1 if single else (1968 if self.function.is_bits else 123)
            if not 1 <= len(self.values) <= most:
                raise ValueError(f"{len(self.values)} values for {self.function.name}")
            top = 1 if self.function.is_bits else 0xFFFF
            if any(not 0 <= v <= top for v in self.values):
                raise ValueError(f"values out of range for {self.function.name}")
        if self.address + self.quantity > 0x10000:
            raise ValueError("request runs past address 65535")

    @property
    def quantity(self) -> int:
        return self.count if self.function.is_read else len(self.values)

    def pdu(self) -> bytes:
        function = self.function
        if function.is_read:
            return struct.pack(">BHH", function, self.address, self.count)
        if function is Function.WRITE_SINGLE_COIL:
            return struct.pack(">BHH", function, self.address, 0xFF00 if self.values[0] else 0)
        if function is Function.WRITE_SINGLE_REGISTER:
            return struct.pack(">BHH", function, self.address, self.values[0])
        if function is Function.WRITE_MULTIPLE_COILS:
            packed = _pack_bits(self.values)
            return struct.pack(">BHHB", function, self.address, len(self.values),
                               len(packed)) + packed
        data = b"".join(struct.pack(">H", v) for v in self.values)
        return struct.pack(">BHHB", function, self.address, len(self.values), len(data)) + data

    def response_length(self) -> int:
        """Length of a normal response PDU."""
        if self.function.is_read:
            per = (self.count + 7) // 8 if self.function.is_bits else 2 * self.count
            return 2 + per
        return 5


@dataclass(frozen=True, slots=True)
class Response:
    """A checked response: ``registers`` or ``bits`` for reads, or an exception code."""

    unit: int
    function: Function
    registers: tuple[int, ...] = ()
    bits: tuple[bool, ...] = ()
    exception: int | None = None

    @property
    def ok(self) -> bool:
        return self.exception is None


def _pack_bits(bits: tuple[int, ...] | list[int]) -> bytes:
    out = bytearray((len(bits) + 7) // 8)
    for index, bit in enumerate(bits):
        if bit:
            out[index // 8] |= 1 << (index % 8)
    return bytes(out)


def parse_pdu(request: Request, unit: int, pdu: bytes) -> Response:
    """Check a response PDU against ``request`` and decode it. Raises FrameError."""
    if unit != request.unit:
        raise FrameError(f"response from unit {unit}, expected {request.unit}")
    if not pdu:
        raise FrameError("empty PDU")
    function = pdu[0]
    if function == request.function | 0x80:
        if len(pdu) != 2:
            raise FrameError(f"exception response of {len(pdu)} bytes, expected 2")
        return Response(unit, request.function, exception=pdu[1])
    if function != request.function:
        raise FrameError(f"function {function} in response, expected {int(request.function)}")
    if len(pdu) != request.response_length():
        raise FrameError(f"response PDU of {len(pdu)} bytes, expected "
                         f"{request.response_length()}")
    if request.function.is_read:
        if pdu[1] != len(pdu) - 2:
            raise FrameError(f"byte count {pdu[1]} does not match {len(pdu) - 2} data bytes")
        data = pdu[2:]
        if request.function.is_bits:
            bits = tuple(bool(data[i // 8] >> (i % 8) & 1) for i in range(request.count))
            return Response(unit, request.function, bits=bits)
        registers = struct.unpack(f">{request.count}H", data)
        return Response(unit, request.function, registers=registers)
    if pdu[1:] != request.pdu()[1:5]:
        raise FrameError("write response does not echo the request")
    return Response(unit, request.function)


# -- Modbus TCP -----------------------------------------------------------------------

MBAP = struct.Struct(">HHHB")


def encode_tcp(transaction_id: int, request: Request) -> bytes:
    pdu = request.pdu()
    return MBAP.pack(transaction_id & 0xFFFF, 0, len(pdu) + 1, request.unit) + pdu


#: Bytes of unparsed data a Modbus TCP stream may hold before it is declared lost.
MAX_STREAM_BUFFER = 4096


def take_mbap_frame(buffer: bytearray) -> tuple[int, int, bytes] | None:
    """Take the next whole MBAP frame off the front of a TCP byte stream: (transaction
    id, unit, PDU), or None while more bytes are needed (``buffer`` is left as is).

    A header that cannot be a Modbus frame (protocol id ≠ 0, length out of 2–254) or more
    than 4 KiB of unparsed data raise :class:`StreamDesyncError`: on a stream there is no
    resynchronising, so the connection must go.
    """
    if len(buffer) > MAX_STREAM_BUFFER:
        raise StreamDesyncError("more than 4 KiB of unparsed data")
    if len(buffer) < MBAP.size:
        return None
    transaction_id, protocol, length, unit = MBAP.unpack_from(buffer)
    if protocol != 0:
        raise StreamDesyncError(f"protocol id {protocol} in MBAP header, expected 0")
    if not 2 <= length <= 254:
        raise StreamDesyncError(f"MBAP length {length} is not 2–254")
    end = 6 + length
    if len(buffer) < end:
        return None
    pdu = bytes(buffer[MBAP.size:end])
    del buffer[:end]
    return transaction_id, unit, pdu


# -- Modbus RTU -----------------------------------------------------------------------


def _crc_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC_TABLE = _crc_table()


def crc16(data: bytes) -> bytes:
    """Modbus CRC-16 (poly 0xA001, init 0xFFFF), low byte first."""
    crc = 0xFFFF
    for byte in data:
        crc = (crc >> 8) ^ _CRC_TABLE[(crc ^ byte) & 0xFF]
    return bytes((crc & 0xFF, crc >> 8))


def encode_rtu(request: Request) -> bytes:
    frame = bytes((request.unit,)) + request.pdu()
    return frame + crc16(frame)


def parse_rtu(request: Request, data: bytes | bytearray) -> Response | None:
    """The checked RTU response to ``request`` in ``data`` (every byte received since the
    request went out), or None while more bytes are needed.

    Raises :class:`FrameError` for bytes that cannot be the answer: wrong unit or
    function, bad CRC, bad length, or trailing garbage after a complete frame (the line
    must then be left to fall silent).
    """
    if data and data[0] != request.unit:
        raise FrameError(f"frame from unit {data[0]}, expected {request.unit}")
    if len(data) < 2:
        return None
    if data[1] not in (request.function, request.function | 0x80):
        raise FrameError(f"function {data[1]} in response, expected {int(request.function)}")
    expected = 5 if data[1] == request.function | 0x80 else 1 + request.response_length() + 2
    if len(data) < expected:
        return None
    if len(data) > expected:
        raise FrameError(f"{len(data) - expected} bytes of trailing garbage")
    frame = bytes(data)
    if crc16(frame[:-2]) != frame[-2:]:
        raise FrameError("CRC mismatch")
    return parse_pdu(request, frame[0], frame[1:-2])
