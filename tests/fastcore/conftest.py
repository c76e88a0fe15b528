"""Fixtures for the fastcore tests: every behaviour test runs against both the compiled
kernel and its pure-Python twin; the agreement tests need both."""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest

from fastcore import _meter_py, _shed_py


def _compiled(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(name)
    except ImportError:
        if os.environ.get("PEDF_FASTCORE") == "cython":
            raise
        return None


METER_C = _compiled("fastcore._meter")
SHED_C = _compiled("fastcore._shed")
NOT_BUILT = "compiled fastcore kernels not built (python setup.py build_ext --inplace)"


def _params(twin: ModuleType, compiled: ModuleType | None) -> list[object]:
    return [
        pytest.param(twin, id="python"),
        pytest.param(compiled, id="cython",
                     marks=pytest.mark.skipif(compiled is None, reason=NOT_BUILT)),
    ]


@pytest.fixture(params=_params(_meter_py, METER_C))
def meter_impl(request: pytest.FixtureRequest) -> ModuleType:
    """A metering implementation module (fastcore._meter or fastcore._meter_py)."""
    module: ModuleType = request.param
    return module


@pytest.fixture(params=_params(_shed_py, SHED_C))
def shed_impl(request: pytest.FixtureRequest) -> ModuleType:
    """A shedding implementation module (fastcore._shed or fastcore._shed_py)."""
    module: ModuleType = request.param
    return module


@pytest.fixture
def meter_c() -> ModuleType:
    if METER_C is None:
        pytest.skip(NOT_BUILT)
    return METER_C


@pytest.fixture
def shed_c() -> ModuleType:
    if SHED_C is None:
        pytest.skip(NOT_BUILT)
    return SHED_C
