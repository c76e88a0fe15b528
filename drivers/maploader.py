"""Load and validate register map files (TOML), one per device model.

A map either lists its points (``[[points]]``) or names the SunSpec models it is made of
(``[sunspec]``), whose points come from the definitions shipped in pysunspec2. Every
problem raises :class:`MapError` naming the file, the key and what was expected. See
``docs/maps.md`` for the format.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping
from functools import cache
from importlib import resources
from pathlib import Path
from typing import TypeVar

from drivers import dlt645, sunspec
from drivers.capabilities import KINDS
from drivers.controls import Control, Expression, ExpressionError, Failsafe, Step, Watchdog
from drivers.points import (
    DEFAULT_NOT_IMPLEMENTED,
    Access,
    AddressRange,
    Alias,
    AnyMap,
    DataPoint,
    DeviceMap,
    Order,
    Pacing,
    Point,
    PointBase,
    PointType,
    PollGroup,
    Protocol,
    Table,
    Value,
)
from drivers.schema import ConfigError, Node, load_toml

__all__ = ["BASE_UNITS", "MapError", "get_map", "load_map", "parse_map", "shipped_models"]

PointT = TypeVar("PointT", bound=PointBase)

#: Units a point may declare: base units only, so conversion happens once, at decode.
BASE_UNITS = frozenset(
    {"", "W", "Wh", "V", "A", "Hz", "°C", "%", "var", "VA", "varh", "VAh", "s", "Ah", "Ω",
     "°", "m³", "m³/h"}
)


class MapError(ConfigError):
    """A register map file is malformed."""


def load_map(path: Path | str) -> AnyMap:
    """Load and validate one map file. Raises :class:`MapError`."""
    try:
        root = load_toml(path)
    except ConfigError as exc:
        raise MapError.like(exc) from None
    return parse_map(root, Path(path).stem)


def shipped_models() -> list[str]:
    """Model names of the maps shipped in ``drivers/maps``."""
    folder = resources.files("drivers.maps")
    return sorted(
        entry.name.removesuffix(".toml") for entry in folder.iterdir()
        if entry.name.endswith(".toml")
    )


@cache
def get_map(model: str) -> AnyMap:
    """The shipped map of ``model`` (cached). Raises KeyError listing the known models."""
    if model not in shipped_models():
        raise KeyError(f"unknown device model {model!r}; known: {', '.join(shipped_models())}")
    with resources.as_file(resources.files("drivers.maps") / f"{model}.toml") as path:
        return load_map(path)


# -- parsing --------------------------------------------------------------------------

_TOP_KEYS = ("device", "points", "sunspec", "capabilities", "groups", "unreadable",
             "reserved", "aliases", "controls", "watchdog", "simulation")
_DEVICE_KEYS = ("model", "kind", "protocol", "manufacturer", "description", "documentation",
                "word_order", "byte_order", "not_implemented", "max_registers", "max_gap",
                "pacing", "shared_unit")
_POINT_KEYS = ("name", "table", "address", "type", "length", "word_order", "byte_order",
               "scale", "offset", "scale_factor", "unit", "access", "min", "max",
               "not_implemented", "enum", "bits", "codes", "description", "ratios")


def _error(node: Node, expected: str) -> MapError:
    return MapError(node.file, node.path, expected, node.value)


def parse_map(root: Node, expected_model: str | None = None) -> AnyMap:
    """Build a :class:`DeviceMap` from a parsed map file. Raises :class:`MapError`."""
    try:
        return _parse(root, expected_model)
    except MapError:
        raise
    except ConfigError as exc:
        raise MapError.like(exc) from None


def _parse(root: Node, expected_model: str | None) -> AnyMap:
    device = root.req("device")
    model_node = device.req("model")
    model = model_node.str()
    if expected_model is not None and model != expected_model:
        raise _error(model_node, f'"{expected_model}" (the file name without .toml)')
    kind = device.req("kind").str(choices=KINDS)
    protocol_node = device.get("protocol")
    if protocol_node is not None and protocol_node.str(
            choices=[p.value for p in Protocol]) != Protocol.MODBUS.value:
        return _parse_data_map(root, device, model, kind)
    root.only(_TOP_KEYS)
    device.only(_DEVICE_KEYS)
    word_order = _order(device.get("word_order"), Order.BIG)
    byte_order = _order(device.get("byte_order"), Order.BIG)
    sentinels_default = device.get("not_implemented")
    use_sentinels = True if sentinels_default is None else sentinels_default.bool()
    max_registers = _int_or(device.get("max_registers"), 125, 1, 125)
    max_gap = _int_or(device.get("max_gap"), 0, 0, 124)
    unreadable = tuple(_range(n) for n in _list(root.get("unreadable")))
    reserved = tuple(_range(n) for n in _list(root.get("reserved")))
    for index, answered in enumerate(reserved):
        if any(answered.overlaps(b.table, b.first, b.last) for b in unreadable):
            raise MapError(root.file, f"reserved[{index}]",
                           "a range that overlaps no unreadable range", answered.first)

    points_node, sunspec_node = root.get("points"), root.get("sunspec")
    if (points_node is None) == (sunspec_node is None):
        raise _error(root, "exactly one of [[points]] or [sunspec]")
    constants: dict[str, Value] = {}
    if points_node is not None:
        points = [
            _point(n, word_order, byte_order, use_sentinels) for n in points_node.list()
        ]
    else:
        assert sunspec_node is not None
        points, constants = _sunspec(sunspec_node)
    by_name = _check_points(points, points_node or sunspec_node, unreadable)  # type: ignore[arg-type]
    aliases = tuple(_alias(n, points) for n in _list(root.get("aliases")))
    return dataclasses.replace(
        _device_map(root, device, model, kind, Protocol.MODBUS, by_name, constants),
        unreadable=unreadable, reserved=reserved, aliases=aliases,
        max_registers=max_registers, max_gap=max_gap,
        shared_unit=_str_or(device.get("shared_unit"), ""))


def _device_map(root: Node, device: Node, model: str, kind: str, protocol: Protocol,
                points: Mapping[str, PointT], constants: dict[str, Value]
                ) -> DeviceMap[PointT]:
    """What every map has, whatever its protocol: identity, capabilities, poll groups,
    controls and watchdog, pacing, simulation constants."""
    simulation = root.get("simulation")
    quantities: dict[str, str] = {}
    phases = 3
    if simulation is not None:
        simulation.only(("constants", "quantities", "phases"))
        constants.update(_constants(simulation.get("constants"), points))
        quantities = _quantities(simulation.get("quantities"), kind, points)
        phases_node = simulation.get("phases")
        if phases_node is not None:
            phases = phases_node.int(min=1, max=3)
            if phases == 2:
                raise _error(phases_node, "1 or 3 phases")
    _check_ratios(root, points)
    capabilities = _capabilities(root, kind, points)
    watchdog = _watchdog(root.get("watchdog"), points, capabilities)
    return DeviceMap(
        model=model,
        kind=kind,
        protocol=protocol,
        manufacturer=_str_or(device.get("manufacturer"), ""),
        description=_str_or(device.get("description"), ""),
        documentation=_str_or(device.get("documentation"), ""),
        source=root.file,
        points=points,
        capabilities=capabilities,
        groups=_groups(root.get("groups"), points),
        controls=_controls(root, kind, points, capabilities, watchdog),
        watchdog=watchdog,
        pacing=_pacing(device.get("pacing")),
        sim_constants=constants,
        sim_quantities=quantities,
        sim_phases=phases,
    )


def _list(node: Node | None) -> list[Node]:
    return [] if node is None else node.list()


def _str_or(node: Node | None, default: str) -> str:
    return default if node is None else node.str(nonempty=False)


def _int_or(node: Node | None, default: int, low: int, high: int) -> int:
    return default if node is None else node.int(min=low, max=high)


def _order(node: Node | None, default: Order) -> Order:
    return default if node is None else Order(node.str(choices=[o.value for o in Order]))


def _pacing(node: Node | None) -> Pacing:
    if node is None:
        return Pacing()
    node.only(("request_interval_s", "connect_delay_s", "single_client"))
    interval, delay = node.get("request_interval_s"), node.get("connect_delay_s")
    single = node.get("single_client")
    return Pacing(
        request_interval_s=0.0 if interval is None else interval.float(min=0, max=60),
        connect_delay_s=0.0 if delay is None else delay.float(min=0, max=60),
        single_client=False if single is None else single.bool(),
    )


def _table(node: Node) -> Table:
    return Table(node.str(choices=[t.value for t in Table]))


def _range(node: Node, *extra_keys: str) -> AddressRange:
    node.only(("table", "first", "last", *extra_keys))
    first = node.req("first").int(min=0, max=0xFFFF)
    last_node = node.req("last")
    last = last_node.int(min=0, max=0xFFFF)
    if last < first:
        raise _error(last_node, f"an address >= first ({first})")
    return AddressRange(_table(node.req("table")), first, last)


def _alias(node: Node, points: list[Point]) -> Alias:
    """``[[aliases]]``: ``table`` ``first``–``last`` answers what ``source`` answers from
    ``source_first`` (default ``first``) on."""
    span = _range(node, "source", "source_first")
    source = _table(node.req("source"))
    if span.table.is_bits or source.is_bits or source is span.table:
        raise _error(node.req("source"), "the other register table (aliases mirror "
                     "holding and input registers)")
    start_node = node.get("source_first")
    start = span.first if start_node is None else start_node.int(min=0, max=0xFFFF)
    if start + span.last - span.first > 0xFFFF:
        raise _error(node, "an alias whose source ends at or before address 65535")
    for point in points:
        if span.overlaps(point.table, point.address, point.end - 1):
            raise _error(node, f"an alias range without points of its own table "
                         f"({point.name} is at {point.address})")
    return Alias(span.table, span.first, span.last, source, start)


def _point(node: Node, word_order: Order, byte_order: Order, use_sentinels: bool) -> Point:
    node.only(_POINT_KEYS)
    name = node.req("name").str()
    table = _table(node.req("table"))
    type_node = node.req("type")
    point_type = PointType(type_node.str(choices=[t.value for t in PointType]))
    if table.is_bits != (point_type is PointType.BOOL):
        raise _error(type_node, '"bool" for coils and discrete inputs, and only for them'
                     if table.is_bits else "a register type (bool is for coils and inputs)")
    length_node = node.get("length")
    if point_type is PointType.STRING:
        if length_node is None:
            raise MapError(node.file, node.child_path("length"),
                           "the string length in registers", missing=True)
        length = length_node.int(min=1, max=125)
    elif length_node is not None:
        raise _error(length_node, "no length (only strings have one)")
    else:
        length = 1
    address = node.req("address").int(min=0, max=0xFFFF)
    unit, scale, access = _unit(node), _scale(node), _access(node)
    if access.writable and not table.writable:
        access_node = node.req("access")
        raise _error(access_node, f'"r" ({table.value} points cannot be written)')
    low, high = _limits(node)
    enum = _labels(node.get("enum"), 0, 0xFFFF_FFFF)
    bits_node = node.get("bits")
    if bits_node is not None and point_type not in (PointType.BITS16, PointType.BITS32):
        raise _error(bits_node, "no bits table (only bits16/bits32 points have one)")
    bit_count = 32 if point_type is PointType.BITS32 else 16
    codes = _codes(node, point_type)
    return Point(
        name=name,
        table=table,
        address=address,
        type=point_type,
        length=length,
        word_order=_order(node.get("word_order"), word_order),
        byte_order=_order(node.get("byte_order"), byte_order),
        scale=scale,
        offset=0.0 if node.get("offset") is None else node.req("offset").float(),
        scale_factor=None if node.get("scale_factor") is None
        else node.req("scale_factor").str(),
        unit=unit,
        access=access,
        minimum=low,
        maximum=high,
        not_implemented=_sentinels(node.get("not_implemented"), point_type, use_sentinels),
        enum=enum,
        bits=_labels(bits_node, 0, bit_count - 1),
        description=_str_or(node.get("description"), ""),
        ratios=_ratio_names(node),
        codes=codes,
    )


def _ratio_names(node: Node) -> tuple[str, ...]:
    ratios = node.get("ratios")
    return () if ratios is None else tuple(entry.str() for entry in ratios.list())


def _check_ratios(root: Node, points: Mapping[str, PointBase]) -> None:
    """Each ``ratios`` entry names a numeric point of the map that has no ratios itself."""
    for index, point in enumerate(points.values()):
        for name in point.ratios:
            ratio = points.get(name)
            if ratio is None or ratio is point or ratio.ratios or not ratio.is_numeric:
                raise MapError(root.file, f"points[{index}].ratios",
                               "names of numeric points of this map that have no ratios "
                               "themselves (the transformer ratios)", name)


def _quantities(node: Node | None, kind: str, points: Mapping[str, PointBase]
                ) -> dict[str, str]:
    """``[simulation.quantities]``: point → the quantity (a capability name of the kind)
    the simulator serves in it."""
    quantities: dict[str, str] = {}
    for name, child in ([] if node is None else node.items()):
        if name not in points:
            raise _error(child, "the name of a point of this map")
        quantity = child.str()
        if not KINDS[kind].allows(quantity):
            raise _error(child, f"a quantity a {kind} offers (a capability name, see "
                         "drivers/capabilities.py)")
        quantities[name] = quantity
    return quantities


def _codes(node: Node, point_type: PointType) -> dict[int, float]:
    """``codes``: a table of raw codes and the engineering values they stand for, for
    devices that encode a quantity by lookup rather than by scale."""
    codes_node = node.get("codes")
    if codes_node is None:
        return {}
    if point_type not in (PointType.U16, PointType.S16, PointType.U32, PointType.S32):
        raise _error(codes_node, "no codes table (only u16, s16, u32 and s32 points have one)")
    for key in ("scale", "offset", "scale_factor"):
        if node.has(key):
            raise _error(node.req(key), f"no {key} on a point with a codes table")
    low, high = point_type.integer_range
    codes: dict[int, float] = {}
    for key, child in codes_node.items():
        code = _int_key(key, child, low, high, "raw codes")
        meaning = child.float()
        if meaning in codes.values():
            raise _error(child, "a value no other code stands for")
        codes[code] = meaning
    if not codes:
        raise _error(codes_node, "at least one code")
    return codes


def _unit(node: Node) -> str:
    """A point's ``unit``: a base unit (conversion happens once, at decode)."""
    unit_node = node.get("unit")
    unit = "" if unit_node is None else unit_node.str(nonempty=False)
    if unit not in BASE_UNITS:
        assert unit_node is not None
        raise _error(unit_node, "a base unit (" + ", ".join(sorted(BASE_UNITS - {""})) +
                     ") — convert with scale")
    return unit


def _scale(node: Node) -> float:
    scale_node = node.get("scale")
    scale = 1.0 if scale_node is None else scale_node.float()
    if scale == 0.0:
        assert scale_node is not None
        raise _error(scale_node, "a non-zero number")
    return scale


def _access(node: Node) -> Access:
    access_node = node.get("access")
    return Access.READ if access_node is None else Access(
        access_node.str(choices=[a.value for a in Access]))


def _limits(node: Node) -> tuple[float | None, float | None]:
    low_node, high_node = node.get("min"), node.get("max")
    low = None if low_node is None else low_node.float()
    high = None if high_node is None else high_node.float()
    if low is not None and high is not None and high < low:
        assert high_node is not None
        raise _error(high_node, f"a number >= min ({low:g})")
    return low, high


def _labels(node: Node | None, low: int, high: int) -> dict[int, str]:
    if node is None:
        return {}
    labels: dict[int, str] = {}
    for key, child in node.items():
        labels[_int_key(key, child, low, high, "integers")] = child.str()
    return labels


def _int_key(key: str, child: Node, low: int, high: int, what: str) -> int:
    """A table key that must be an integer ``low``–``high`` (decimal or 0x…)."""
    try:
        code = int(key, 0)
    except ValueError:
        raise _error(child, f'keys that are {what} {low}–{high}, e.g. "1"') from None
    if not low <= code <= high:
        raise _error(child, f"a key {low}–{high}")
    return code


def _sentinels(node: Node | None, point_type: PointType, default_on: bool) -> tuple[int, ...]:
    if node is None:
        return DEFAULT_NOT_IMPLEMENTED.get(point_type, ()) if default_on else ()
    if isinstance(node.value, bool):
        return DEFAULT_NOT_IMPLEMENTED.get(point_type, ()) if node.value else ()
    values = []
    for child in node.list():
        if not point_type.is_integer:
            raise _error(child, "true/false (only integer types take sentinel values)")
        low, high = point_type.integer_range
        values.append(child.int(min=low, max=high))
    return tuple(values)


def _check_points(points: list[Point], where: Node,
                  unreadable: tuple[AddressRange, ...]) -> dict[str, Point]:
    by_name: dict[str, Point] = {}
    for index, point in enumerate(points):
        if point.name in by_name:
            raise MapError(where.file, f"points[{index}].name", "a unique point name",
                           point.name)
        if point.end > 0x10000:
            raise MapError(where.file, f"points[{index}].address",
                           "a point that ends at or before register 65535", point.address)
        by_name[point.name] = point
    for index, point in enumerate(points):
        path = f"points[{index}]"
        if point.scale_factor is not None:
            sf = by_name.get(point.scale_factor)
            if sf is None or sf.type is not PointType.S16:
                raise MapError(where.file, f"{path}.scale_factor",
                               "the name of an s16 scale-factor point", point.scale_factor)
        for blocked in unreadable:
            if blocked.overlaps(point.table, point.address, point.end - 1):
                raise MapError(where.file, f"{path}.address",
                               "an address outside the unreadable ranges", point.address)
    ordered = sorted(points, key=lambda p: (p.table.value, p.address))
    for before, after in itertools.pairwise(ordered):
        if before.table is after.table and after.address < before.end:
            raise MapError(where.file, "points",
                           f"points that do not overlap ({before.name} ends at "
                           f"{before.end}, {after.name} starts at {after.address})",
                           after.name)
    return by_name


def _capabilities(root: Node, kind: str, points: Mapping[str, PointBase]) -> dict[str, str]:
    spec = KINDS[kind]
    node = root.get("capabilities")
    capabilities: dict[str, str] = {}
    if node is not None:
        for capability, child in node.items():
            if not spec.allows(capability):
                raise _error(child, f"a capability a {kind} offers (see drivers/capabilities.py)"
                             f"; {capability!r} is not one")
            target = child.str()
            if target not in points:
                raise _error(child, "the name of a point of this map")
            capabilities[capability] = target
    missing = sorted(spec.required - capabilities.keys())
    if missing:
        raise MapError(root.file, "capabilities", f"the {kind} capabilities "
                       + ", ".join(missing), missing=True)
    return capabilities


def _groups(node: Node | None, points: Mapping[str, PointBase]) -> dict[str, PollGroup]:
    groups: dict[str, PollGroup] = {}
    if node is None:
        return groups
    for name, child in node.items():
        child.only(("interval_s", "points"))
        interval = child.req("interval_s").float(min=0.05, max=86400)
        names = []
        for entry in child.req("points").list():
            point_name = entry.str()
            if point_name not in points:
                raise _error(entry, "the name of a point of this map")
            if not points[point_name].access.readable:
                raise _error(entry, "a readable point")
            names.append(point_name)
        groups[name] = PollGroup(name, interval, tuple(names))
    return groups


def _constants(node: Node | None, points: Mapping[str, PointBase]) -> dict[str, Value]:
    constants: dict[str, Value] = {}
    if node is None:
        return constants
    for name, child in node.items():
        if name not in points:
            raise _error(child, "the name of a point of this map")
        value = child.value
        if not isinstance(value, int | float | str | bool):
            raise _error(child, "a number, string or boolean")
        constants[name] = value
    return constants


def _sunspec(node: Node) -> tuple[list[Point], dict[str, Value]]:
    """Points and layout constants (marker, model ids and lengths) of a SunSpec map."""
    node.only(("base_address", "models", "repeats", "limits"))
    base_node = node.get("base_address")
    base = sunspec.BASE_ADDRESSES[0] if base_node is None else base_node.int(min=0, max=0xFF00)
    if base_node is not None and base not in sunspec.BASE_ADDRESSES:
        raise _error(base_node, "one of the SunSpec base addresses 40000, 0, 50000")
    repeats: dict[int, int] = {}
    repeats_node = node.get("repeats")
    if repeats_node is not None:
        for key, child in repeats_node.items():
            if not key.isdigit():
                raise _error(child, 'keys that are model ids, e.g. "160"')
            repeats[int(key)] = child.int(min=0, max=100)
    limits: dict[str, tuple[float, float]] = {}
    limits_node = node.get("limits")
    if limits_node is not None:
        for name, child in limits_node.items():
            pair = child.list()
            if len(pair) != 2:
                raise _error(child, "[min, max]")
            limits[name] = (pair[0].float(), pair[1].float())
    marker = Point(name="SunS", table=Table.HOLDING, address=base, type=PointType.STRING,
                   length=2, description="SunSpec marker")
    points: list[Point] = [marker]
    constants: dict[str, Value] = {"SunS": "SunS"}
    address = base + 2
    for index, model_node in enumerate(node.req("models").list()):
        model_id = model_node.int(min=1, max=0xFFFE)
        try:
            count = repeats.get(model_id, 0)
            model_points = sunspec.build_points(model_id, address, count, limits)
            length = sunspec.model_length(model_id, count)
        except sunspec.SunSpecError as exc:
            raise MapError(node.file, f"{node.path}.models[{index}]",
                           f"a SunSpec model pysunspec2 defines ({exc})", model_id) from None
        prefix = sunspec.model_name(model_id)
        constants[f"{prefix}.ID"] = model_id
        constants[f"{prefix}.L"] = length
        points.extend(model_points)
        address += 2 + length
    names = {p.name for p in points}
    for name in limits:
        if name not in names:
            raise MapError(node.file, f"{node.path}.limits.{name}",
                           "the name of a point of these models", name)
    end_id = Point(name="end.ID", table=Table.HOLDING, address=address, type=PointType.U16,
                   description="end of the SunSpec model chain (0xFFFF)")
    end_length = Point(name="end.L", table=Table.HOLDING, address=address + 1,
                       type=PointType.U16, description="end model length (0)")
    points += [end_id, end_length]
    constants.update({"end.ID": sunspec.END_MODEL_ID, "end.L": 0})
    return points, constants


# -- controls: write recipes and fail-safe ---------------------------------------------

_STEP_KEYS = ("point", "value", "when", "optional")


def _expression(node: Node, names: frozenset[str]) -> Expression:
    if isinstance(node.value, bool) or not isinstance(node.value, str | int | float):
        raise _error(node, 'a number or an expression such as "value / max_charge_w * 100"')
    try:
        expression = Expression.parse(node.value)
    except ExpressionError as exc:
        raise _error(node, f"an arithmetic expression ({exc})") from None
    unknown = sorted(expression.names - names)
    if unknown:
        raise _error(node, "an expression over value, revert_s/timeout_s and this map's "
                     f"capabilities and points (unknown: {', '.join(unknown)})")
    return expression


def _steps(node: Node, points: Mapping[str, PointBase], names: frozenset[str]
           ) -> tuple[Step, ...]:
    steps = []
    entries = node.list()
    if not entries:
        raise _error(node, "at least one write step")
    for entry in entries:
        entry.only(_STEP_KEYS)
        point_node = entry.req("point")
        point = points.get(point_node.str())
        if point is None:
            raise _error(point_node, "the name of a point of this map")
        if not point.access.writable:
            raise _error(point_node, "a writable point")
        when = entry.get("when")
        optional = entry.get("optional")
        steps.append(Step(point.name, _expression(entry.req("value"), names),
                          None if when is None else _expression(when, names),
                          False if optional is None else optional.bool()))
    return tuple(steps)


def _known_names(points: Mapping[str, PointBase], capabilities: Mapping[str, str],
                 *extra: str) -> frozenset[str]:
    readable = {name for name, point in points.items() if point.access.readable}
    return frozenset(readable | set(capabilities) | set(extra))


def _watchdog(node: Node | None, points: Mapping[str, PointBase],
              capabilities: Mapping[str, str]) -> Watchdog | None:
    if node is None:
        return None
    node.only(("set", "timeout_s"))
    names = _known_names(points, capabilities, "timeout_s")
    return Watchdog(_steps(node.req("set"), points, names),
                    node.req("timeout_s").float(min=1, max=86400))


def _controls(root: Node, kind: str, points: Mapping[str, PointBase],
              capabilities: Mapping[str, str], watchdog: Watchdog | None
              ) -> dict[str, Control]:
    """``[controls.NAME]`` tables, checked against the kind's vocabulary. A map whose
    writable points say it could offer a control (the control's hint capability) must
    declare it: otherwise the gateway would silently never act on the device."""
    spec = KINDS[kind]
    node = root.get("controls")
    controls: dict[str, Control] = {}
    for name, child in ([] if node is None else node.items()):
        if name not in spec.controls:
            offered = ", ".join(spec.controls) or "none"
            raise _error(child, f"a control a {kind} offers ({offered})")
        child.only(("set", "release", "failsafe", "revert_s"))
        names = _known_names(points, capabilities, "value", "revert_s")
        failsafe_node = child.req("failsafe")
        failsafe = Failsafe(failsafe_node.str(choices=[f.value for f in Failsafe]))
        revert_node = child.get("revert_s")
        if revert_node is not None and failsafe is not Failsafe.DEVICE_REVERTS:
            raise _error(revert_node, 'no revert_s (only failsafe = "device_reverts" has one)')
        control = Control(
            name, _steps(child.req("set"), points, names),
            _steps(child.req("release"), points, _known_names(points, capabilities)),
            failsafe, None if revert_node is None else revert_node.float(min=1, max=86400))
        if failsafe is Failsafe.DEVICE_REVERTS and control.revert_s is None \
                and not control.programs_revert:
            raise _error(child, 'a device_reverts control whose set steps write "revert_s" '
                         "or that states the device's own revert_s")
        if failsafe is Failsafe.WATCHDOG and watchdog is None:
            raise _error(failsafe_node, "a [watchdog] table in this map for failsafe = "
                         '"watchdog"')
        controls[name] = control
    for name, control_spec in spec.controls.items():
        point = points.get(capabilities.get(control_spec.hint, ""))
        if point is not None and point.access.writable and name not in controls:
            raise MapError(root.file, f"controls.{name}",
                           f"a recipe for control {name!r} ({control_spec.meaning}): the map "
                           f"offers a writable {control_spec.hint} but does not say how the "
                           "gateway sets and releases it", missing=True)
    return controls


# -- DL/T 645 maps ----------------------------------------------------------------------

_DATA_DEVICE_KEYS = ("model", "kind", "protocol", "manufacturer", "description",
                     "documentation", "pacing")
_DATA_POINT_KEYS = ("name", "di", "offset", "format", "signed", "scale", "unit", "access",
                    "min", "max", "enum", "description", "ratios")


def _parse_data_map(root: Node, device: Node, model: str, kind: str) -> AnyMap:
    """A DL/T 645 map: ``[[points]]`` by data identifier and format, ``[[blocks]]``."""
    root.only(("device", "points", "blocks", "capabilities", "groups", "controls",
               "watchdog", "simulation"))
    device.only(_DATA_DEVICE_KEYS)
    points_node = root.req("points")
    points = [_data_point(n) for n in points_node.list()]
    by_name = _check_data_points(points, points_node)
    return dataclasses.replace(
        _device_map(root, device, model, kind, Protocol.DLT645, by_name, {}),
        blocks=_blocks(root.get("blocks"), points))


def _di(node: Node) -> int:
    try:
        return dlt645.parse_di(node.value if isinstance(node.value, str | int) else "")
    except ValueError:
        raise _error(node, 'a data identifier such as "02-01-01-00"') from None


def _data_point(node: Node) -> DataPoint:
    node.only(_DATA_POINT_KEYS)
    format_node = node.req("format")
    signed_node = node.get("signed")
    try:
        data_format = dlt645.parse_format(
            format_node.str(), signed=False if signed_node is None else signed_node.bool())
    except ValueError as exc:
        raise _error(format_node, f"a DL/T 645 data format ({exc})") from None
    low, high = _limits(node)
    offset_node = node.get("offset")
    return DataPoint(
        name=node.req("name").str(),
        di=_di(node.req("di")),
        offset=0 if offset_node is None else offset_node.int(min=0, max=199),
        format=data_format,
        scale=_scale(node),
        unit=_unit(node),
        access=_access(node),
        minimum=low,
        maximum=high,
        enum=_labels(node.get("enum"), 0, 0xFFFF_FFFF),
        description=_str_or(node.get("description"), ""),
        ratios=_ratio_names(node),
    )


def _check_data_points(points: list[DataPoint], where: Node) -> dict[str, DataPoint]:
    """Unique names; values of one data identifier do not overlap; a writable value is
    its data identifier's whole data (a write replaces all of it)."""
    by_name: dict[str, DataPoint] = {}
    by_di: dict[int, list[DataPoint]] = {}
    for index, point in enumerate(points):
        if point.name in by_name:
            raise MapError(where.file, f"points[{index}].name", "a unique point name",
                           point.name)
        by_name[point.name] = point
        by_di.setdefault(point.di, []).append(point)
    for di, members in by_di.items():
        ordered = sorted(members, key=lambda p: p.offset)
        for before, after in itertools.pairwise(ordered):
            if after.offset < before.end:
                raise MapError(where.file, "points", f"values of DI {dlt645.di_text(di)} that "
                               f"do not overlap ({before.name} ends at byte {before.end}, "
                               f"{after.name} starts at {after.offset})", after.name)
        for point in members:
            if point.access.writable and len(members) > 1:
                raise MapError(where.file, "points", f"a writable value that is the whole "
                               f"data of DI {dlt645.di_text(di)}", point.name)
    return by_name


def _blocks(node: Node | None, points: list[DataPoint]) -> dict[int, tuple[int, ...]]:
    """``[[blocks]]``: a block identifier (e.g. ``02-01-FF-00``) answers the data of its
    member identifiers, concatenated in order; each member must be a DI of the map."""
    known = {p.di for p in points}
    blocks: dict[int, tuple[int, ...]] = {}
    for entry in [] if node is None else node.list():
        entry.only(("di", "members"))
        block = _di(entry.req("di"))
        members = []
        for member_node in entry.req("members").list():
            member = _di(member_node)
            if member not in known:
                raise _error(member_node, "the data identifier of a point of this map")
            members.append(member)
        if len(members) < 2:
            raise _error(entry.req("members"), "at least two member data identifiers")
        blocks[block] = tuple(members)
    return blocks
