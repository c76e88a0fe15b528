"""The typed model of a register map: tables, point types, points and device maps.

Everything here is immutable data. A :class:`DeviceMap` is what a map file loads into;
the codec (:mod:`drivers.codec`) turns registers into values for its points and back,
the planner (:mod:`drivers.planner`) groups its points into read requests.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from drivers.controls import Control, Watchdog
from drivers.dlt645 import DataFormat, di_text


class Table(enum.Enum):
    """The four Modbus data tables, with the function codes that read and write them."""

    COIL = "coil"
    DISCRETE_INPUT = "discrete_input"
    HOLDING = "holding"
    INPUT = "input"

    @property
    def read_function(self) -> int:
        return _READ_FUNCTION[self]

    @property
    def is_bits(self) -> bool:
        return self in (Table.COIL, Table.DISCRETE_INPUT)

    @property
    def writable(self) -> bool:
        return self in (Table.COIL, Table.HOLDING)

    @property
    def max_read_count(self) -> int:
        """Protocol limit per read request: 125 registers or 2000 bits."""
        return 2000 if self.is_bits else 125


_READ_FUNCTION = {Table.COIL: 1, Table.DISCRETE_INPUT: 2, Table.HOLDING: 3, Table.INPUT: 4}


class PointType(enum.Enum):
    """Wire types of points. The value is the name used in map files."""

    U16 = "u16"
    S16 = "s16"
    U32 = "u32"
    S32 = "s32"
    U64 = "u64"
    S64 = "s64"
    F32 = "f32"
    F64 = "f64"
    STRING = "string"  # fixed length, 2 ASCII/UTF-8 bytes per register, NUL padded
    BITS16 = "bits16"  # bit field, named bits
    BITS32 = "bits32"
    BOOL = "bool"  # one coil or discrete input

    @property
    def registers(self) -> int:
        """Registers one value occupies (strings: per-point ``length`` instead)."""
        return _REGISTERS[self]

    @property
    def is_integer(self) -> bool:
        return self in _INTEGER_RANGES

    @property
    def integer_range(self) -> tuple[int, int]:
        return _INTEGER_RANGES[self]


_REGISTERS = {
    PointType.U16: 1, PointType.S16: 1, PointType.BITS16: 1,
    PointType.U32: 2, PointType.S32: 2, PointType.BITS32: 2, PointType.F32: 2,
    PointType.U64: 4, PointType.S64: 4, PointType.F64: 4,
    PointType.STRING: 0, PointType.BOOL: 1,
}

_INTEGER_RANGES = {
    PointType.U16: (0, 0xFFFF),
    PointType.S16: (-0x8000, 0x7FFF),
    PointType.BITS16: (0, 0xFFFF),
    PointType.U32: (0, 0xFFFF_FFFF),
    PointType.S32: (-0x8000_0000, 0x7FFF_FFFF),
    PointType.BITS32: (0, 0xFFFF_FFFF),
    PointType.U64: (0, 0xFFFF_FFFF_FFFF_FFFF),
    PointType.S64: (-0x8000_0000_0000_0000, 0x7FFF_FFFF_FFFF_FFFF),
}

#: "Not implemented" raw values per type (SunSpec's and most vendors' conventions).
#: Floats use NaN, which always decodes to None.
#: The first value of each tuple is the one encoders write for "no value".
DEFAULT_NOT_IMPLEMENTED: Mapping[PointType, tuple[int, ...]] = {
    PointType.U16: (0xFFFF,),
    PointType.S16: (-0x8000,),
    PointType.BITS16: (0xFFFF,),
    PointType.U32: (0xFFFF_FFFF,),
    PointType.S32: (-0x8000_0000, 0x7FFF_FFFF),
    PointType.BITS32: (0xFFFF_FFFF,),
    PointType.U64: (0xFFFF_FFFF_FFFF_FFFF,),
    PointType.S64: (-0x8000_0000_0000_0000,),
}


class Order(enum.Enum):
    """Word order (register order of multi-register values) or byte order in a register."""

    BIG = "big"  # most significant first: the Modbus default ("ABCD")
    LITTLE = "little"  # least significant first (word swap "CDAB", byte swap "BADC")


class Access(enum.Enum):
    READ = "r"
    READ_WRITE = "rw"
    WRITE = "w"

    @property
    def readable(self) -> bool:
        return self is not Access.WRITE

    @property
    def writable(self) -> bool:
        return self is not Access.READ


class Protocol(enum.Enum):
    """The protocol a device speaks on its line. The value is the name used in files."""

    MODBUS = "modbus"
    DLT645 = "dlt645"


#: Decoded value of a point: number in base units, label-less enum code, bit field as
#: int, string, bool for coils, or None when the device reports "not implemented".
Value = float | int | str | bool | None


class WriteRangeError(ValueError):
    """A value cannot be written to a point: read-only, wrong type or outside its limits."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PointBase:
    """What every protocol's points share: a name, a base unit, access and write limits.

    ``unit`` is the base unit of the engineering value (W, Wh, V, A, Hz, °C, %).
    ``minimum``/``maximum`` bound writes, in engineering units.
    """

    name: str
    unit: str = ""
    access: Access = Access.READ
    minimum: float | None = None
    maximum: float | None = None
    enum: Mapping[int, str] = field(default_factory=dict)
    bits: Mapping[int, str] = field(default_factory=dict)
    description: str = ""
    #: Points whose current values multiply this one (transformer ratios): the device
    #: reports the secondary side, the engineering value is the primary side.
    ratios: tuple[str, ...] = ()

    @property
    def is_numeric(self) -> bool:
        return True

    @property
    def location(self) -> str:
        """Where the point is on the wire, for people (e.g. "holding 40072 u16")."""
        return ""

    def label(self, value: Value) -> str | None:
        """The enum label of a decoded value, if the point has one."""
        if isinstance(value, int) and not isinstance(value, bool):
            return self.enum.get(value)
        return None

    def bit_names(self, value: Value) -> list[str]:
        """Names of the set bits of a decoded bit field."""
        if not isinstance(value, int) or isinstance(value, bool):
            return []
        return [name for bit, name in sorted(self.bits.items()) if value >> bit & 1]

    def check_write(self, value: Value) -> None:
        """Check that ``value`` may be written to this point: the point is writable and
        the value is a finite number within the limits and enum (numeric points).
        Protocol-neutral: encoding happens later, in the protocol's codec. Raises
        :class:`WriteRangeError` naming the point, the value and the limits."""
        if not self.access.writable:
            raise WriteRangeError(f"{self.name}: point is read-only")
        if value is None:
            raise WriteRangeError(f"{self.name}: cannot write 'no value'")
        if not self.is_numeric:
            return
        if isinstance(value, str | bool) or not math.isfinite(value):
            raise WriteRangeError(f"{self.name}: expected a finite number, got {value!r}")
        low, high = self.minimum, self.maximum
        if (low is not None and value < low) or (high is not None and value > high):
            raise WriteRangeError(
                f"{self.name}: {value:g} {self.unit} is outside "
                f"{_limit(low)}–{_limit(high)} {self.unit}".replace("  ", " ")
            )
        if self.enum and int(value) not in self.enum:
            allowed = ", ".join(f"{k} ({v})" for k, v in sorted(self.enum.items()))
            raise WriteRangeError(f"{self.name}: {value:g} is not one of {allowed}")


def _limit(limit: float | None) -> str:
    return "…" if limit is None else f"{limit:g}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Point(PointBase):
    """One Modbus point: a named value in a device's register space.

    The engineering value is ``raw * scale + offset`` or, with ``scale_factor`` set,
    ``raw * 10 ** sf`` where ``sf`` is the current value of the named scale-factor point
    (SunSpec).
    """

    table: Table
    address: int
    type: PointType
    length: int = 1  # registers (strings) or 1
    word_order: Order = Order.BIG
    byte_order: Order = Order.BIG
    scale: float = 1.0
    offset: float = 0.0
    scale_factor: str | None = None
    #: Raw values meaning "not implemented" (decode to None); the first is canonical.
    not_implemented: tuple[int, ...] = ()
    #: A lookup table instead of scaling: raw code → engineering value (evcc's "map"
    #: source). A raw value not in the table decodes to None; a value not in it cannot
    #: be written.
    codes: Mapping[int, float] = field(default_factory=dict)

    @property
    def count(self) -> int:
        """Registers (or coils) this point occupies."""
        return self.length if self.type is PointType.STRING else self.type.registers

    @property
    def end(self) -> int:
        """First address after this point."""
        return self.address + self.count

    @property
    def is_numeric(self) -> bool:
        return self.type not in (PointType.STRING, PointType.BOOL)

    @property
    def location(self) -> str:
        return f"{self.table.value} {self.address} {self.type.value}"

    def check_write(self, value: Value) -> None:
        if self.access.writable and not self.table.writable:
            raise WriteRangeError(f"{self.name}: point is read-only")
        if self.type is PointType.BOOL and value is not None and (
                not isinstance(value, bool | int) or value not in (0, 1)):
            raise WriteRangeError(f"{self.name}: expected true or false, got {value!r}")
        PointBase.check_write(self, value)


@dataclass(frozen=True, slots=True, kw_only=True)
class DataPoint(PointBase):
    """One DL/T 645 data item (or a part of one): the value at byte ``offset`` of the data
    identifier ``di``'s data, in the standard's ``format`` (appendix A), times ``scale``
    into the base unit (e.g. kW × 1000 = W)."""

    di: int
    format: DataFormat
    offset: int = 0
    scale: float = 1.0

    @property
    def size(self) -> int:
        """Bytes of the value on the wire."""
        return self.format.size

    @property
    def end(self) -> int:
        """First byte after this value in its data identifier's data."""
        return self.offset + self.format.size

    @property
    def is_numeric(self) -> bool:
        return self.format.is_number

    @property
    def location(self) -> str:
        at = f"+{self.offset}" if self.offset else ""
        return f"DI {di_text(self.di)}{at} {self.format.text}"


@dataclass(frozen=True, slots=True)
class AddressRange:
    """Inclusive register range ``first``–``last`` of one table."""

    table: Table
    first: int
    last: int

    def overlaps(self, table: Table, first: int, last: int) -> bool:
        return table is self.table and first <= self.last and last >= self.first


@dataclass(frozen=True, slots=True)
class Alias:
    """Registers ``first``–``last`` of ``table`` answer what ``source`` answers from
    ``source_first`` on (e.g. a meter whose input registers mirror its holding
    registers, so FC 04 reads what FC 03 reads). Read-only."""

    table: Table
    first: int
    last: int
    source: Table
    source_first: int

    def source_address(self, address: int) -> int:
        return self.source_first + address - self.first

    def covers(self, table: Table, first: int, last: int) -> bool:
        return table is self.table and self.first <= first and last <= self.last


@dataclass(frozen=True, slots=True)
class PollGroup:
    """A named set of points read together at one interval (a default the site may override)."""

    name: str
    interval_s: float
    points: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Pacing:
    """Request pacing a device needs (defaults a site file may override)."""

    request_interval_s: float = 0.0  # minimum time between two requests
    connect_delay_s: float = 0.0  # wait after a TCP connect before the first request
    single_client: bool = False  # accepts one TCP connection at a time


P = TypeVar("P", bound=PointBase, covariant=True)


@dataclass(frozen=True, slots=True)
class DeviceMap(Generic[P]):
    """A device model's map, loaded from a map file: its points (Modbus registers or
    DL/T 645 data items, by ``protocol``), what they mean (capabilities), how they are
    polled (groups) and how the gateway controls the device (controls, watchdog)."""

    model: str
    kind: str
    manufacturer: str
    description: str
    source: str  # file the map came from, for error messages
    points: Mapping[str, P]
    capabilities: Mapping[str, str]  # capability (e.g. "power_w") -> point name
    groups: Mapping[str, PollGroup]
    protocol: Protocol = Protocol.MODBUS
    controls: Mapping[str, Control] = field(default_factory=dict)
    watchdog: Watchdog | None = None
    unreadable: tuple[AddressRange, ...] = ()
    max_registers: int = 125
    max_gap: int = 0
    pacing: Pacing = Pacing()
    documentation: str = ""
    #: Modbus: the physical device this map is a part of, when several maps read one
    #: device at one unit id (a SUN2000 inverter, the LUNA2000 battery and the power
    #: sensor it reads): devices whose maps name the same ``shared_unit`` may share a
    #: unit id on a line. Empty: the map is a whole device.
    shared_unit: str = ""
    #: DL/T 645: block data identifiers and the identifiers whose data they concatenate.
    blocks: Mapping[int, tuple[int, ...]] = field(default_factory=dict)
    #: Fixed values a simulated device serves (identification strings, ratings).
    sim_constants: Mapping[str, Value] = field(default_factory=dict)
    #: Points a simulated device fills from its physics by quantity name (the kind's
    #: capability vocabulary) although they are not the map's capability for it.
    sim_quantities: Mapping[str, str] = field(default_factory=dict)
    #: Phases a simulated meter of this model measures (3, or 1 for a single-phase meter).
    sim_phases: int = 3
    #: Modbus: ranges the device answers where no point is mapped (they read zero).
    reserved: tuple[AddressRange, ...] = ()
    #: Modbus: register ranges that answer what another table answers.
    aliases: tuple[Alias, ...] = ()

    def point(self, name: str) -> P:
        """The point ``name``; raises KeyError naming the map when it does not exist."""
        try:
            return self.points[name]
        except KeyError:
            raise KeyError(f"{self.model}: no point named {name!r}") from None

    def capability_point(self, capability: str) -> P | None:
        name = self.capabilities.get(capability)
        return None if name is None else self.points[name]

    def control(self, name: str) -> Control | None:
        """The recipe of control ``name`` (e.g. ``"power_limit"``), None if not offered."""
        return self.controls.get(name)

    def with_ratios(self, names: Iterable[str]) -> tuple[str, ...]:
        """``names`` plus the ratio points their values are multiplied by, each once, in
        order: what a read of ``names`` must fetch to report primary values."""
        wanted = dict.fromkeys(names)
        for name in list(wanted):
            wanted.update(dict.fromkeys(self.point(name).ratios))
        return tuple(wanted)

    def primary(self, values: Mapping[str, Value]) -> dict[str, Value]:
        """``values`` as read from the device with every point that has ``ratios``
        multiplied by their current values (secondary side → primary side). A ratio that
        is missing, not a number or not positive makes the primary value unknown
        (None)."""
        return self._rescale(values, multiply=True)

    def secondary(self, values: Mapping[str, Value]) -> dict[str, Value]:
        """The inverse of :meth:`primary`: what a device reports for primary values
        ``values`` (its simulator divides by its ratios)."""
        return self._rescale(values, multiply=False)

    def _rescale(self, values: Mapping[str, Value], *, multiply: bool) -> dict[str, Value]:
        out = dict(values)
        for name, value in values.items():
            point = self.points.get(name)
            if point is None or not point.ratios or value is None \
                    or isinstance(value, str | bool):
                continue
            factor = 1.0
            for ratio_name in point.ratios:
                ratio = values.get(ratio_name)
                if isinstance(ratio, bool) or not isinstance(ratio, int | float) \
                        or not ratio > 0:
                    factor = math.nan
                    break
                factor *= ratio
            if math.isnan(factor):
                out[name] = None
            else:
                out[name] = value * factor if multiply else value / factor
        return out


#: A map of any protocol (a Modbus register map or a DL/T 645 data map).
AnyMap = DeviceMap[PointBase]
