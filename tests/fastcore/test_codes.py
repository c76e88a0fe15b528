"""fastcore.rollup_codes: energy per 分类分项 code, each series rolled up the code tree;
the compiled kernel and its twin agree bit for bit."""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import numpy as np
import pytest

from fastcore import _codes_py


def _compiled() -> ModuleType | None:
    try:
        return importlib.import_module("fastcore._codes")
    except ImportError:
        if os.environ.get("PEDF_FASTCORE") == "cython":
            raise
        return None


CODES_C = _compiled()


@pytest.fixture(params=[pytest.param(_codes_py, id="python"),
                        pytest.param(CODES_C, id="cython", marks=pytest.mark.skipif(
                            CODES_C is None, reason="compiled fastcore kernels not built"))])
def codes_impl(request: pytest.FixtureRequest) -> ModuleType:
    module: ModuleType = request.param
    return module


# The tree 01000 ← 01A00 ← {01A10, 01A20}; 01000 ← 01B00 (indices 0..4).
PARENT = np.array([-1, 0, 1, 1, 0], dtype=np.int32)


def test_each_series_adds_to_its_code_and_every_ancestor(codes_impl: ModuleType) -> None:
    series = np.array([2, 3, 4, -1, 2], dtype=np.int32)
    energy = np.array([1.5, 2.0, 4.0, 100.0, 0.25])  # the uncoded 100 counts nowhere
    out = codes_impl.rollup_codes(series, PARENT, energy)
    # 01A10: 1.5 + 0.25; 01A20: 2.0; 01B00: 4.0; 01A00 = 1.75 + 2.0; 01000 = 3.75 + 4.0
    assert out.tolist() == [7.75, 3.75, 1.75, 2.0, 4.0]


def test_non_finite_energy_is_skipped(codes_impl: ModuleType) -> None:
    out = codes_impl.rollup_codes(np.array([2, 2], dtype=np.int32), PARENT,
                                  np.array([np.nan, 1.0]))
    assert out.tolist() == [1.0, 1.0, 1.0, 0.0, 0.0]


@pytest.mark.parametrize(("series", "parent", "energy", "error"), [
    (np.array([0], dtype=np.int64), PARENT, np.array([1.0]), TypeError),
    (np.array([0], dtype=np.int32), PARENT, np.array([1.0], dtype=np.float32), TypeError),
    (np.array([0, 1], dtype=np.int32), PARENT, np.array([1.0]), ValueError),
    (np.array([5], dtype=np.int32), PARENT, np.array([1.0]), ValueError),
    (np.array([0], dtype=np.int32), np.array([-1, 2, 1], dtype=np.int32), np.array([1.0]),
     ValueError),  # a parent after its child could loop
])
def test_bad_arguments_are_refused(codes_impl: ModuleType, series: object, parent: object,
                                   energy: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        codes_impl.rollup_codes(series, parent, energy)


def test_kernel_and_twin_agree_on_random_trees() -> None:
    if CODES_C is None:
        pytest.skip("compiled fastcore kernels not built")
    rng = np.random.default_rng(13)
    for _ in range(50):
        n_codes = int(rng.integers(1, 30))
        parent = np.array([-1] + [int(rng.integers(-1, i)) for i in range(1, n_codes)],
                          dtype=np.int32)
        series = rng.integers(-1, n_codes, size=int(rng.integers(0, 60))).astype(np.int32)
        energy = rng.exponential(3.0, size=len(series))
        assert np.array_equal(CODES_C.rollup_codes(series, parent, energy),
                              _codes_py.rollup_codes(series, parent, energy))
