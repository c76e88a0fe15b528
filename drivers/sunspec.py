"""SunSpec: register points built from the model definitions pysunspec2 ships, and
discovery of a device's model chain. Sans-I/O.

A SunSpec device starts its map with the marker "SunS" (0x5375 0x6E53) at one of the
well-known base addresses (40000, 0 or 50000), followed by models, each a header
``ID, L`` (model id, length in registers after the header) and ``L`` registers of body,
and ends with ``ID = 0xFFFF, L = 0``. Point names are ``<group>.<point>``, where the group
is the model's name in its definition (``common``, ``inverter_three_phase``…); repeating
groups are indexed from 0: ``mppt.module[1].DCW``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

from drivers.points import Access, Point, PointType, Table

__all__ = [
    "BASE_ADDRESSES",
    "END_MODEL_ID",
    "MARKER",
    "ModelHeader",
    "SunSpecError",
    "SunSpecScan",
    "build_points",
    "model_definition",
    "model_name",
]

MARKER = (0x5375, 0x6E53)  # "SunS"
BASE_ADDRESSES = (40000, 0, 50000)
END_MODEL_ID = 0xFFFF

_TYPES: dict[str, tuple[PointType, tuple[int, ...]]] = {
    # SunSpec type -> (wire type, "not implemented" values)
    "uint16": (PointType.U16, (0xFFFF,)),
    "int16": (PointType.S16, (-0x8000,)),
    "count": (PointType.U16, (0,)),
    "acc16": (PointType.U16, (0,)),
    "enum16": (PointType.U16, (0xFFFF,)),
    "bitfield16": (PointType.BITS16, (0xFFFF,)),
    "pad": (PointType.U16, (0x8000,)),
    "sunssf": (PointType.S16, (-0x8000,)),
    "uint32": (PointType.U32, (0xFFFF_FFFF,)),
    "int32": (PointType.S32, (-0x8000_0000,)),
    "acc32": (PointType.U32, (0,)),
    "enum32": (PointType.U32, (0xFFFF_FFFF,)),
    "bitfield32": (PointType.BITS32, (0xFFFF_FFFF,)),
    "ipaddr": (PointType.U32, (0,)),
    "uint64": (PointType.U64, (0xFFFF_FFFF_FFFF_FFFF,)),
    "int64": (PointType.S64, (-0x8000_0000_0000_0000,)),
    "acc64": (PointType.U64, (0,)),
    "float32": (PointType.F32, ()),
    "float64": (PointType.F64, ()),
    "string": (PointType.STRING, ()),
    "ipv6addr": (PointType.STRING, ()),
    "eui48": (PointType.U64, ()),
}

_UNITS = {
    "A": "A", "V": "V", "W": "W", "Hz": "Hz", "VA": "VA", "var": "var", "VAr": "var",
    "Wh": "Wh", "VAh": "VAh", "varh": "varh", "C": "°C", "Secs": "s", "S": "s", "AH": "Ah",
    "Ah": "Ah", "ohms": "Ω", "Ohm": "Ω", "cos()": "", "Pct": "%",
}


class SunSpecError(ValueError):
    """A model id has no definition, or a model's layout does not fit its definition."""


@cache
def model_definition(model_id: int) -> Mapping[str, Any]:
    """The parsed JSON definition of ``model_id`` from the pysunspec2 package."""
    try:
        text = (
            resources.files("sunspec2") / "models" / "json" / f"model_{model_id}.json"
        ).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SunSpecError(f"SunSpec model {model_id} has no definition in pysunspec2") from None
    definition: Mapping[str, Any] = json.loads(text)
    return definition


def model_name(model_id: int) -> str:
    """The model's group name, used as the prefix of its point names."""
    return str(model_definition(model_id)["group"]["name"])


def _group_size(group: Mapping[str, Any]) -> int:
    """Registers of one instance of ``group`` with no repetitions of nested groups."""
    return sum(int(p["size"]) for p in group.get("points", ()))


def _repeating_group(model_id: int) -> Mapping[str, Any] | None:
    groups = model_definition(model_id)["group"].get("groups", ())
    if len(groups) > 1:
        raise SunSpecError(f"SunSpec model {model_id} has several repeating groups")
    return groups[0] if groups else None


def model_length(model_id: int, repeats: int = 0) -> int:
    """The model's ``L`` (registers after the ID/L header) with ``repeats`` instances of
    its repeating group (models without one ignore ``repeats``)."""
    top = model_definition(model_id)["group"]
    fixed = _group_size(top) - 2
    group = _repeating_group(model_id)
    return fixed + (repeats * _group_size(group) if group is not None else 0)


def repeats_for_length(model_id: int, length: int) -> int:
    """How many repeating-group instances a model of length ``length`` holds.

    Raises :class:`SunSpecError` when the length does not fit the definition.
    """
    fixed = model_length(model_id, 0)
    group = _repeating_group(model_id)
    if group is None:
        if length < fixed:
            raise SunSpecError(f"model {model_id}: length {length} < defined {fixed}")
        return 0
    extra = length - fixed
    size = _group_size(group)
    if extra < 0 or extra % size:
        raise SunSpecError(
            f"model {model_id}: length {length} is not {fixed} + n × {size}"
        )
    return extra // size


def build_points(model_id: int, address: int, repeats: int = 0,
                 limits: Mapping[str, tuple[float, float]] | None = None,
                 instance_suffix: str = "") -> list[Point]:
    """Points of one model whose ID register sits at ``address``.

    ``limits`` gives write limits (engineering units) by point name; SunSpec definitions
    carry none. ``instance_suffix`` distinguishes a second instance of the same model.
    """
    top = model_definition(model_id)["group"]
    prefix = f"{top['name']}{instance_suffix}"
    points: list[Point] = []
    cursor = address
    for definition, name in _walk(top, prefix, repeats):
        point = _point(definition, name, cursor, prefix, limits or {})
        points.append(point)
        cursor += int(definition["size"])
    expected_end = address + 2 + model_length(model_id, repeats)
    if cursor != expected_end:  # pragma: no cover - guards against odd definitions
        raise SunSpecError(f"model {model_id}: layout ends at {cursor}, not {expected_end}")
    return points


def _walk(group: Mapping[str, Any], prefix: str, repeats: int
          ) -> Iterator[tuple[Mapping[str, Any], str]]:
    for definition in group.get("points", ()):
        yield definition, f"{prefix}.{definition['name']}"
    for sub in group.get("groups", ()):
        for index in range(repeats):
            sub_prefix = f"{prefix}.{sub['name']}[{index}]"
            for definition in sub.get("points", ()):
                yield definition, f"{sub_prefix}.{definition['name']}"


def _point(definition: Mapping[str, Any], name: str, address: int, prefix: str,
           limits: Mapping[str, tuple[float, float]]) -> Point:
    sunspec_type = str(definition["type"])
    if sunspec_type not in _TYPES:
        raise SunSpecError(f"{name}: SunSpec type {sunspec_type!r} is not supported")
    wire_type, sentinels = _TYPES[sunspec_type]
    size = int(definition["size"])
    if wire_type is not PointType.STRING and wire_type.registers != size:
        raise SunSpecError(f"{name}: size {size} does not fit type {sunspec_type}")
    symbols = {int(s["value"]): str(s["name"]) for s in definition.get("symbols", ())}
    is_bits = wire_type in (PointType.BITS16, PointType.BITS32)
    scale_factor = definition.get("sf")
    if isinstance(scale_factor, int | float):  # a few definitions give a fixed exponent
        scale, scale_factor = 10.0 ** float(scale_factor), None
    else:
        scale = 1.0
    raw_unit = str(definition.get("units", "")).strip()
    low_high = limits.get(name)
    access = Access.READ_WRITE if definition.get("access") == "RW" else Access.READ
    return Point(
        name=name,
        table=Table.HOLDING,
        address=address,
        type=wire_type,
        length=size if wire_type is PointType.STRING else 1,
        scale=scale,
        scale_factor=f"{prefix}.{scale_factor}" if scale_factor else None,
        unit=_normalise_unit(raw_unit),
        access=access,
        minimum=low_high[0] if low_high else None,
        maximum=low_high[1] if low_high else None,
        not_implemented=sentinels,
        enum={} if is_bits else symbols,
        bits=symbols if is_bits else {},
        description=" ".join(
            str(definition.get(k, "")) for k in ("label", "desc") if definition.get(k)
        ) + (f" [{raw_unit}]" if raw_unit and raw_unit not in _UNITS else ""),
    )


def _normalise_unit(unit: str) -> str:
    if unit.startswith("%"):
        return "%"
    return _UNITS.get(unit, "")


# -- discovery ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ModelHeader:
    """A model found on a device: id, address of its ID register, and its length L."""

    model_id: int
    address: int
    length: int


@dataclass
class SunSpecScan:
    """Sans-I/O discovery of a SunSpec model chain.

    Drive it with ``next_read()`` (holding registers to read, or None when finished) and
    ``feed(registers)`` with the response, or ``feed(None)`` after an exception or
    timeout. When done, ``base_address`` is the marker's address (None if no marker was
    found) and ``models`` lists the chain in order. ``error`` explains a broken chain.
    """

    base_addresses: Sequence[int] = BASE_ADDRESSES
    max_models: int = 64
    base_address: int | None = None
    models: list[ModelHeader] = field(default_factory=list)
    error: str | None = None
    _probe: int = 0
    _cursor: int | None = None
    _done: bool = False

    @property
    def done(self) -> bool:
        return self._done

    def next_read(self) -> tuple[int, int] | None:
        """(address, count) of the next holding-register read, or None when finished."""
        if self._done:
            return None
        if self.base_address is None:
            return self.base_addresses[self._probe], 2
        assert self._cursor is not None
        return self._cursor, 2

    def feed(self, registers: Sequence[int] | None) -> None:
        """Give the response to the read ``next_read()`` asked for."""
        if self._done:
            raise RuntimeError("SunSpec scan already finished")
        if self.base_address is None:
            if registers is not None and tuple(registers[:2]) == MARKER:
                self.base_address = self.base_addresses[self._probe]
                self._cursor = self.base_address + 2
                return
            self._probe += 1
            if self._probe >= len(self.base_addresses):
                self._done = True
            return
        assert self._cursor is not None
        if registers is None or len(registers) < 2:
            self.error = f"no answer for the model header at {self._cursor}"
            self._done = True
            return
        model_id, length = int(registers[0]), int(registers[1])
        if model_id == END_MODEL_ID:
            self._done = True
            return
        self.models.append(ModelHeader(model_id, self._cursor, length))
        self._cursor += 2 + length
        if len(self.models) >= self.max_models or self._cursor > 0xFFFF:
            self.error = "model chain does not end"
            self._done = True


def points_for_models(models: Sequence[ModelHeader]) -> list[Point]:
    """Points for every model of a discovered chain that pysunspec2 defines.

    Models without a definition are skipped (their header still tells where the next
    starts); a second instance of a model gets the suffix ``#2`` and so on.
    """
    points: list[Point] = []
    seen: dict[int, int] = {}
    for header in models:
        try:
            repeats = repeats_for_length(header.model_id, header.length)
        except SunSpecError:
            continue
        seen[header.model_id] = seen.get(header.model_id, 0) + 1
        suffix = "" if seen[header.model_id] == 1 else f"#{seen[header.model_id]}"
        points.extend(build_points(header.model_id, header.address, repeats,
                                   instance_suffix=suffix))
    return points
