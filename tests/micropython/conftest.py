"""Fixtures of the firmware tests: the firmware is built once per session, from the
register map, into a temporary directory (micropython/tools/build.py)."""

from __future__ import annotations

import builtins
import importlib
import importlib.util
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest
from mp_support import TOOLS


def _load_build_tool() -> types.ModuleType:
    """micropython/tools/build.py under a name of its own (``build`` is also a PyPI
    package), without touching sys.path."""
    spec = importlib.util.spec_from_file_location("submeter_build_tool", TOOLS / "build.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


firmware_build = _load_build_tool()


@pytest.fixture(scope="session")
def build_tool() -> types.ModuleType:
    """micropython/tools/build.py as a module."""
    return firmware_build


@pytest.fixture(scope="session")
def build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built firmware: gen/ (generated regmap.py), unix/ and esp32/ (.mpy)."""
    out = tmp_path_factory.mktemp("firmware")
    firmware_build.build(out)
    return out


def _shim() -> types.ModuleType:
    """CPython stand-in for MicroPython's ``micropython`` module (as in micropython-lib:
    const is the identity; the code emitters are no-ops)."""
    shim = types.ModuleType("micropython")
    shim.const = lambda value: value  # type: ignore[attr-defined]
    shim.native = lambda function: function  # type: ignore[attr-defined]
    shim.viper = lambda function: function  # type: ignore[attr-defined]
    return shim


@pytest.fixture
def host_firmware(build: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[types.ModuleType]:
    """The firmware package imported on CPython (for the sans-I/O modules), with the
    generated register table of this build. Removed from sys.modules afterwards."""
    monkeypatch.setitem(sys.modules, "micropython", _shim())
    for name in ("ptr", "ptr8", "ptr16", "ptr32"):  # viper annotations, evaluated by CPython
        monkeypatch.setattr(builtins, name, object, raising=False)
    monkeypatch.syspath_prepend(str(TOOLS.parent))
    for name in [n for n in sys.modules if n == "submeter" or n.startswith("submeter.")]:
        monkeypatch.delitem(sys.modules, name)
    package = importlib.import_module("submeter")
    package.__path__.append(str(build / "gen" / "submeter"))
    yield package
    for name in [n for n in sys.modules if n == "submeter" or n.startswith("submeter.")]:
        del sys.modules[name]
