"""The one generic codec: registers to engineering values and back. Sans-I/O.

Decoding applies, in order: word and byte order, the wire type, the "not implemented"
sentinels (decode to None), then scaling (fixed ``scale``/``offset`` or a SunSpec-style
scale-factor exponent read in the same poll). Encoding reverses it and, for writes,
checks the point is writable and the value lies within the point's limits.

Registers are ints 0–65535; coils and discrete inputs are bools.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Sequence
from typing import cast

from drivers.points import (
    AnyMap,
    DeviceMap,
    Order,
    Point,
    PointType,
    Protocol,
    Table,
    Value,
    WriteRangeError,
)

__all__ = [
    "DecodeError",
    "PointDecoder",
    "RegisterImage",
    "WriteRangeError",
    "bytes_to_registers",
    "decode",
    "decode_points",
    "decode_raw",
    "encode",
    "encode_raw",
    "encode_write",
    "register_map",
    "registers_to_bytes",
    "scale_factor_value",
    "with_dependencies",
]

#: SunSpec limits scale factors to -10..10; anything else is treated as invalid.
SCALE_FACTOR_LIMIT = 10

_STRUCT = {
    PointType.U16: ">H", PointType.S16: ">h", PointType.BITS16: ">H",
    PointType.U32: ">I", PointType.S32: ">i", PointType.BITS32: ">I", PointType.F32: ">f",
    PointType.U64: ">Q", PointType.S64: ">q", PointType.F64: ">d",
}


class DecodeError(ValueError):
    """Registers cannot be decoded for a point (wrong count or out-of-range words)."""


# -- byte layout ----------------------------------------------------------------------


def registers_to_bytes(registers: Sequence[int], word_order: Order, byte_order: Order) -> bytes:
    """Arrange registers as big-endian bytes of the value they carry."""
    words = registers if word_order is Order.BIG else list(reversed(registers))
    out = bytearray()
    for word in words:
        if not 0 <= word <= 0xFFFF:
            raise DecodeError(f"register value {word} is not 0–65535")
        if byte_order is Order.BIG:
            out += bytes((word >> 8, word & 0xFF))
        else:
            out += bytes((word & 0xFF, word >> 8))
    return bytes(out)


def bytes_to_registers(data: bytes, word_order: Order, byte_order: Order) -> list[int]:
    """Inverse of :func:`registers_to_bytes`; ``data`` must have an even length."""
    if len(data) % 2:
        raise ValueError("register data must have an even number of bytes")
    words = []
    for i in range(0, len(data), 2):
        hi, lo = (data[i], data[i + 1]) if byte_order is Order.BIG else (data[i + 1], data[i])
        words.append(hi << 8 | lo)
    return words if word_order is Order.BIG else list(reversed(words))


# -- raw values -----------------------------------------------------------------------


def decode_raw(point: Point, registers: Sequence[int] | Sequence[bool]) -> int | float | str | bool:
    """The wire value of ``point`` from exactly ``point.count`` registers (or bits)."""
    _check_count(point, registers)
    return PointDecoder(point).raw(registers)


def _check_count(point: Point, registers: Sequence[int] | Sequence[bool]) -> None:
    if len(registers) != point.count:
        raise DecodeError(
            f"{point.name}: expected {point.count} register(s), got {len(registers)}"
        )


class PointDecoder:
    """How ``point`` decodes, worked out once: the struct formats of its type, word order
    and byte order, its sentinels and its scaling.

    :func:`decode` and :func:`decode_raw` build one per call; a read plan keeps one per
    point and calls it on every poll (about 1 µs a value instead of 7: the lookups of the
    point's layout, and the register-by-register byte assembly of
    :func:`registers_to_bytes`, happen here once). ``registers`` must hold exactly
    ``point.count`` values; the callers check or guarantee it.
    """

    __slots__ = ("_codes", "_kind", "_not_implemented", "_offset", "_pack", "_reverse", "_scale",
                 "_scale_factor", "_unpack", "point")

    def __init__(self, point: Point) -> None:
        self.point = point
        kind = point.type
        self._kind = kind
        self._reverse = point.word_order is not Order.BIG
        order = ">" if point.byte_order is Order.BIG else "<"
        self._pack = struct.Struct(f"{order}{point.count}H").pack
        self._unpack = None if kind in (PointType.BOOL, PointType.STRING) \
            else struct.Struct(_STRUCT[kind]).unpack
        self._not_implemented = point.not_implemented
        self._scale_factor = point.scale_factor is not None
        self._scale = point.scale
        self._offset = point.offset
        self._codes = point.codes

    def raw(self, registers: Sequence[int] | Sequence[bool]) -> int | float | str | bool:
        """The wire value (what :func:`decode_raw` returns)."""
        if self._kind is PointType.BOOL:
            return bool(registers[0])
        words = registers[::-1] if self._reverse else registers
        try:
            data = self._pack(*words)
        except struct.error:
            word = next((w for w in words if not 0 <= w <= 0xFFFF), words[0])
            raise DecodeError(f"register value {word} is not 0–65535") from None
        if self._unpack is None:
            return data.split(b"\x00", 1)[0].decode("utf-8", errors="replace").rstrip()
        value: int | float = self._unpack(data)[0]
        return value

    def value(self, registers: Sequence[int] | Sequence[bool],
              scale_factor: int | None = None) -> Value:
        """The engineering value (what :func:`decode` returns)."""
        raw = self.raw(registers)
        if isinstance(raw, bool | str):
            return raw
        if isinstance(raw, float):
            if math.isnan(raw):
                return None
        elif raw in self._not_implemented:
            return None
        if self._codes:
            return self._codes.get(int(raw))
        if self._scale_factor:
            if scale_factor is None:
                return None
            return float(raw) * 10.0 ** scale_factor
        if self._scale == 1.0 and self._offset == 0.0:
            return raw
        return raw * self._scale + self._offset


def encode_raw(point: Point, raw: int | float | str | bool) -> list[int]:
    """Registers (or one bit as 0/1) carrying the wire value ``raw``.

    Raises :class:`WriteRangeError` when ``raw`` does not fit the point's type.
    """
    if point.type is PointType.BOOL:
        return [1 if raw else 0]
    if point.type is PointType.STRING:
        data = str(raw).encode("utf-8")
        size = point.length * 2
        if len(data) > size:
            raise WriteRangeError(f"{point.name}: string longer than {size} bytes")
        return bytes_to_registers(data.ljust(size, b"\x00"), point.word_order, point.byte_order)
    if point.type.is_integer:
        if isinstance(raw, float):
            if not math.isfinite(raw):
                raise WriteRangeError(f"{point.name}: {raw} is not a finite number")
            raw = round(raw)
        if not isinstance(raw, int):
            raise WriteRangeError(f"{point.name}: expected a number, got {raw!r}")
        low, high = point.type.integer_range
        if not low <= raw <= high:
            raise WriteRangeError(
                f"{point.name}: raw value {raw} does not fit {point.type.value} ({low}–{high})"
            )
    elif not isinstance(raw, int | float) or isinstance(raw, bool):
        raise WriteRangeError(f"{point.name}: expected a number, got {raw!r}")
    data = struct.pack(_STRUCT[point.type], raw)
    return bytes_to_registers(data, point.word_order, point.byte_order)


# -- engineering values ---------------------------------------------------------------


def scale_factor_value(raw: int | None) -> int | None:
    """A scale-factor register's exponent, or None when not implemented or out of range."""
    if raw is None or raw == -0x8000 or not -SCALE_FACTOR_LIMIT <= raw <= SCALE_FACTOR_LIMIT:
        return None
    return raw


def decode(point: Point, registers: Sequence[int] | Sequence[bool],
           scale_factor: int | None = None) -> Value:
    """The engineering value of ``point`` (None when the device says "not implemented").

    ``scale_factor`` is the current exponent of ``point.scale_factor`` (ignored for points
    without one); when the point needs one and it is None, the value is None too.
    """
    _check_count(point, registers)
    return PointDecoder(point).value(registers, scale_factor)


def encode(point: Point, value: Value, scale_factor: int | None = None) -> list[int]:
    """Registers carrying the engineering ``value`` (None encodes the "not implemented"
    sentinel, or NaN for floats). No access or limit checks: see :func:`encode_write`.

    Raises :class:`WriteRangeError` when the scaled value does not fit the wire type.
    """
    if value is None:
        return encode_raw(point, _sentinel(point))
    if point.type in (PointType.BOOL, PointType.STRING):
        return encode_raw(point, value)
    if isinstance(value, str | bool):
        raise WriteRangeError(f"{point.name}: expected a number, got {value!r}")
    raw: int | float
    if point.codes:
        return encode_raw(point, _code_of(point, value))
    if point.scale_factor is not None:
        if scale_factor is None:
            raise WriteRangeError(
                f"{point.name}: scale factor {point.scale_factor} is not implemented"
            )
        raw = value / 10.0 ** scale_factor
    elif isinstance(value, int) and point.scale == 1.0 and point.offset == 0.0:
        raw = value  # exact: 64-bit counters must not pass through a float
    else:
        raw = (value - point.offset) / point.scale
    if point.type.is_integer:
        if not math.isfinite(raw):
            raise WriteRangeError(f"{point.name}: {value} is not a finite number")
        raw = round(raw)
        if raw in point.not_implemented:
            raise WriteRangeError(
                f"{point.name}: {value} encodes to the reserved 'not implemented' value"
            )
        return encode_raw(point, int(raw))
    return encode_raw(point, raw)


def encode_write(point: Point, value: Value, scale_factor: int | None = None) -> list[int]:
    """Registers for writing ``value`` to ``point``, after checking that the point is
    writable and ``value`` is finite and within the point's limits (engineering units).

    Raises :class:`WriteRangeError` with the point, value and limits on any violation.
    """
    point.check_write(value)
    if point.type is PointType.BOOL:
        return encode_raw(point, bool(value))
    return encode(point, value, scale_factor)


def _code_of(point: Point, value: float) -> int:
    """The raw code of ``value`` in the point's lookup table."""
    for code, meaning in point.codes.items():
        if meaning == value:
            return code
    allowed = ", ".join(f"{meaning:g}" for meaning in sorted(point.codes.values()))
    raise WriteRangeError(f"{point.name}: {value:g} is none of its coded values ({allowed})")


def _sentinel(point: Point) -> int | float | str | bool:
    if point.type in (PointType.F32, PointType.F64):
        return math.nan
    if point.type is PointType.STRING:
        return ""
    if point.type is PointType.BOOL:
        return False
    if point.not_implemented:
        return point.not_implemented[0]
    raise WriteRangeError(f"{point.name}: point has no 'not implemented' value")


# -- register images ------------------------------------------------------------------


class RegisterImage:
    """The registers and bits read from one device in one poll, by table and address."""

    __slots__ = ("_tables",)

    def __init__(self) -> None:
        self._tables: dict[Table, dict[int, int]] = {table: {} for table in Table}

    def store(self, table: Table, address: int, values: Iterable[int] | Iterable[bool]) -> None:
        """Record a read response: ``values`` start at ``address``."""
        cells = self._tables[table]
        for offset, value in enumerate(values):
            cells[address + offset] = int(value)

    def get(self, table: Table, address: int, count: int) -> list[int] | None:
        """``count`` values from ``address``, or None if any of them was not read."""
        cells = self._tables[table]
        try:
            return [cells[address + i] for i in range(count)]
        except KeyError:
            return None

    def clear(self) -> None:
        for cells in self._tables.values():
            cells.clear()


def decode_points(device_map: DeviceMap[Point], points: Iterable[Point],
                  image: RegisterImage) -> dict[str, Value]:
    """Decode ``points`` from ``image``, resolving scale factors from the same image.

    Points whose registers are missing from the image are left out of the result;
    points that decode to "not implemented" map to None. Points with transformer
    ``ratios`` come out on the primary side (multiplied by the ratios read with them).
    """
    values: dict[str, Value] = {}
    for point in points:
        registers = image.get(point.table, point.address, point.count)
        if registers is None:
            continue
        sf: int | None = None
        if point.scale_factor is not None:
            sf_point = device_map.points[point.scale_factor]
            sf_registers = image.get(sf_point.table, sf_point.address, sf_point.count)
            if sf_registers is not None:
                raw = decode_raw(sf_point, sf_registers)
                sf = scale_factor_value(raw if isinstance(raw, int) else None)
        values[point.name] = decode(point, registers, sf)
    return device_map.primary(values)


def register_map(device_map: AnyMap) -> DeviceMap[Point]:
    """``device_map`` as a Modbus register map. Raises TypeError for another protocol."""
    if device_map.protocol is not Protocol.MODBUS:
        raise TypeError(f"{device_map.model} speaks {device_map.protocol.value}, not modbus")
    return cast(DeviceMap[Point], device_map)


def with_dependencies(device_map: DeviceMap[Point], names: Sequence[str]) -> list[Point]:
    """The named points plus the points their values depend on, deduplicated: the
    scale factors they are scaled by and the transformer ratios they are multiplied
    by (read in the same plan, every poll, as the device may change them). Raises
    KeyError naming the map for an unknown point."""
    seen: dict[str, Point] = {}
    for name in device_map.with_ratios(names):
        point = device_map.point(name)
        seen[point.name] = point
        if point.scale_factor is not None:
            seen.setdefault(point.scale_factor, device_map.points[point.scale_factor])
    return list(seen.values())
