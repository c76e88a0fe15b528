"""The build: register table generated from the map, every module compiled by mpy-cross,
the freeze manifest, the type check against micropython-esp32-stubs, and the checks that
stop a build when the map asks for something the firmware does not serve."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest
from mp_support import FIRMWARE, MAP, REPO, TOOLS

from drivers.points import Table
from simulators.modbus import served_ranges

MAP_TEXT = (REPO / "drivers" / "maps" / "esp32-submeter.toml").read_text()
MODULES = sorted(p.stem for p in (FIRMWARE / "submeter").glob("*.py"))


def test_every_module_is_compiled_for_both_targets(build: Path) -> None:
    sizes = json.loads((build / "sizes.json").read_text())
    assert set(sizes["unix"]) == {*MODULES, "regmap"}
    assert set(sizes["esp32"]) == {*MODULES, "regmap"} - {"hal_unix"}
    for target, modules in sizes.items():
        for name, size in modules.items():
            path = build / target / "submeter" / f"{name}.mpy"
            assert path.stat().st_size == size
            assert path.read_bytes()[:2] == b"M\x06"  # .mpy, version 6


def test_the_manifest_freezes_exactly_the_device_modules(build: Path) -> None:
    frozen: list[Path] = []

    def module(path: str, base_path: str = ".", opt: int | None = None) -> None:
        frozen.append((FIRMWARE / base_path / path).resolve())

    exec((FIRMWARE / "manifest.py").read_text(), {"include": lambda *a: None, "module": module})
    sources = {(FIRMWARE / "submeter" / f"{m}.py").resolve() for m in MODULES} - {
        (FIRMWARE / "submeter" / "hal_unix.py").resolve()}
    assert set(frozen) == sources | {(FIRMWARE / "build/gen/submeter/regmap.py").resolve(),
                                     (FIRMWARE / "main.py").resolve()}


def test_the_register_table_follows_the_map(build: Path, build_tool: types.ModuleType) -> None:
    source = (build / "gen" / "submeter" / "regmap.py").read_text()
    for point in MAP.points.values():
        prefix = "IR" if point.table is Table.INPUT else "HR"
        name = re.sub(r"\W", "_", point.name).upper()
        assert f"_{prefix}_{name} = const({point.address})" in source
    for table in (Table.INPUT, Table.HOLDING):  # the simulator's rule for served registers
        assert build_tool.readable_ranges(MAP, table) == served_ranges(MAP, table)


def drifted(tmp_path: Path, old: str, new: str) -> Path:
    assert old in MAP_TEXT
    path = tmp_path / "esp32-submeter.toml"
    path.write_text(MAP_TEXT.replace(old, new, 1))
    return path


@pytest.mark.parametrize(("old", "new", "message"), [
    ("[capabilities]", '[[points]]\nname = "ch1_thd"\ntable = "input"\naddress = 14\n'
     'type = "u16"\n\n[capabilities]', r"ch1_thd: the firmware has no value"),
    ("scale = 0.001\nunit = \"A\"", "scale = 0.002\nunit = \"A\"",
     r"ch1_current: scale 0.002 is not a power of ten"),
    ('address = 1\ntype = "u32"', 'address = 1\ntype = "f32"',
     r"ch1_current: type f32 is not packed"),
    ('"4" = "counters restored from backup"', '"4" = "counters restored"',
     r"status: the firmware sets the bits"),
])
def test_a_map_the_firmware_cannot_serve_stops_the_build(
        build_tool: types.ModuleType, tmp_path: Path, old: str, new: str, message: str) -> None:
    with pytest.raises(build_tool.BuildError, match=message):
        build_tool.generate(drifted(tmp_path, old, new))
    result = subprocess.run(
        [sys.executable, str(TOOLS / "build.py"), "--out", str(tmp_path / "out"), "--map",
         str(tmp_path / "esp32-submeter.toml")], capture_output=True, text=True, check=False)
    assert result.returncode == 1
    assert re.search(message, result.stderr)


def test_a_moved_register_moves_in_the_firmware(build_tool: types.ModuleType,
                                                tmp_path: Path) -> None:
    source = build_tool.generate(drifted(
        tmp_path, 'name = "frequency"\ntable = "input"\naddress = 48',
        'name = "frequency"\ntable = "input"\naddress = 46'))
    assert "_IR_FREQUENCY = const(46)" in source


def test_the_firmware_type_checks_against_the_esp32_stubs() -> None:
    result = subprocess.run([sys.executable, str(TOOLS / "typecheck.py")],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_build_tools_are_lint_and_type_clean() -> None:
    """micropython/ is excluded from the project's ruff run (firmware is MicroPython);
    its CPython tools are checked here."""
    tools = [str(p) for p in TOOLS.glob("*.py")]
    ruff = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", *tools],
                          capture_output=True, text=True, check=False, cwd=REPO)
    assert ruff.returncode == 0, ruff.stdout + ruff.stderr
    mypy = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-incremental",
                           "--cache-dir", "/dev/null", *tools],
                          capture_output=True, text=True, check=False, cwd=REPO)
    assert mypy.returncode == 0, mypy.stdout + mypy.stderr


def test_deploy_copies_every_device_module_in_one_mpremote_session(build: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(TOOLS / "deploy.py"), "--no-build", "--out", str(build),
         "--port", "/dev/ttyUSB0", "--dry-run"], capture_output=True, text=True, check=True)
    line = result.stdout
    assert line.startswith("mpremote connect /dev/ttyUSB0 exec ")
    for name in json.loads((build / "sizes.json").read_text())["esp32"]:
        assert f"esp32/submeter/{name}.mpy" in line
    assert "hal_unix" not in line
    assert line.rstrip().endswith("main.py :main.py + reset")
