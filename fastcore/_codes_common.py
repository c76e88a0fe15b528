"""Input checks of the 分类分项 roll-up kernel, shared by the compiled module and its twin."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

I32 = npt.NDArray[np.int32]
F64 = npt.NDArray[np.float64]


def _array(value: object, name: str, dtype: type) -> np.ndarray:
    if not isinstance(value, np.ndarray) or value.dtype != np.dtype(dtype) or (
            not value.dtype.isnative):
        raise TypeError(f"{name} must be a numpy array of native {np.dtype(dtype).name} "
                        f"(convert with np.asarray(x, dtype=np.{np.dtype(dtype).name}))")
    if value.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional")
    return np.ascontiguousarray(value)


#: The errors for out-of-range indices; both implementations check them in their loops
#: (``parent[c] < c``: a parent comes before its children, so every walk up ends).
BAD_PARENT = "parent[c] must be -1 (a root) or the index of an earlier code"
BAD_CODE = "series_code must be -1 (no code) or an index into parent"


def check_rollup(series_code: object, parent: object,
                 energy: object) -> tuple[I32, I32, F64]:
    """Check the types, shapes and lengths of :func:`rollup_codes` arguments. Raises
    TypeError/ValueError naming the argument (index ranges: see BAD_PARENT, BAD_CODE)."""
    codes = _array(series_code, "series_code", np.int32)
    parents = _array(parent, "parent", np.int32)
    values = _array(energy, "energy", np.float64)
    if len(codes) != len(values):
        raise ValueError("series_code and energy must have the same length")
    return codes, parents, values
