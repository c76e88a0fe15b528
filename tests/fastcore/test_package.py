"""The package picks one implementation set, says which, and both sets share one API."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

import fastcore
from fastcore import _meter_py, _shed_py

ROOT = Path(__file__).resolve().parents[2]


def run_python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, **env, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=environment, cwd=ROOT, check=False, timeout=60)


def test_implementation_is_reported(meter_c: ModuleType) -> None:
    if os.environ.get("PEDF_FASTCORE") == "python":
        assert fastcore.IMPLEMENTATION == "python"
    else:
        assert fastcore.IMPLEMENTATION == "cython"
        assert fastcore.MeterAggregator is meter_c.MeterAggregator


def test_environment_forces_the_twins() -> None:
    result = run_python("import fastcore; print(fastcore.IMPLEMENTATION, "
                        "fastcore.MeterAggregator.__module__, fastcore.plan_shed.__module__)",
                        PEDF_FASTCORE="python")
    assert result.stdout.split() == ["python", "fastcore._meter_py", "fastcore._shed_py"]


def test_environment_rejects_unknown_values() -> None:
    result = run_python("import fastcore", PEDF_FASTCORE="fortran")
    assert result.returncode != 0
    assert "PEDF_FASTCORE" in result.stderr


def test_public_names() -> None:
    for name in fastcore.__all__:
        assert hasattr(fastcore, name), name


def test_integrate_energy_still_available() -> None:
    totals = fastcore.integrate_energy(np.array([0.0, 3600.0]), np.array([1000.0, 1000.0]),
                                       7200.0)
    assert totals.import_wh == pytest.approx(1000.0)


def _signatures(obj: object) -> dict[str, inspect.Signature]:
    names = [n for n in dir(obj) if not n.startswith("__") and n != "_setup"]
    found = {}
    for name in names:
        member = inspect.getattr_static(obj, name)
        if isinstance(member, (staticmethod, classmethod)):
            member = member.__func__
        if isinstance(member, property) or inspect.isgetsetdescriptor(member):
            found[name] = inspect.Signature()
            continue
        if callable(member):
            found[name] = inspect.signature(member)
    return found


def _public(signatures: dict[str, inspect.Signature]) -> dict[str, list[tuple[str, object]]]:
    return {name: [(p.name, p.kind) for p in sig.parameters.values()]
            for name, sig in signatures.items() if not name.startswith("_") or
            name == "_raw_state"}


def test_meter_api_is_identical(meter_c: ModuleType) -> None:
    compiled = _public(_signatures(meter_c.MeterAggregator))
    twin = _public(_signatures(_meter_py.MeterAggregator))
    assert compiled == twin
    # a cdef class has no introspectable __init__: compare behaviour instead. Every
    # keyword of the twin is accepted with the same default, and is keyword-only.
    init_py = inspect.signature(_meter_py.MeterAggregator.__init__).parameters
    defaults = {p.name: p.default for p in init_py.values()
                if p.kind is inspect.Parameter.KEYWORD_ONLY}
    explicit = meter_c.MeterAggregator(3, **defaults).config.to_dict()
    assert explicit == meter_c.MeterAggregator(3).config.to_dict()
    assert explicit == _meter_py.MeterAggregator(3).config.to_dict()
    with pytest.raises(TypeError):
        meter_c.MeterAggregator(3, None)
    with pytest.raises(TypeError):
        meter_c.MeterAggregator(3, colour="red")


def test_shed_api_is_identical(shed_c: ModuleType) -> None:
    for name in ("plan_shed", "plan_restore"):
        compiled = inspect.signature(getattr(shed_c, name)).parameters
        twin = inspect.signature(getattr(_shed_py, name)).parameters
        assert [(p.name, p.kind, p.default) for p in compiled.values()] == [
            (p.name, p.kind, p.default) for p in twin.values()], name


def test_stubs_exist_for_compiled_modules() -> None:
    for name in fastcore.KERNELS:
        stub = ROOT / (name.replace(".", "/") + ".pyi")
        assert stub.is_file(), stub
