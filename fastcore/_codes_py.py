"""Pure-Python twin of ``fastcore._codes``: energy per 分类分项 code, rolled up the tree."""

from __future__ import annotations

import math

import numpy as np

from fastcore._codes_common import F64, check_rollup


def rollup_codes(series_code: object, parent: object, energy: object) -> F64:
    """Sum each series' ``energy`` into its code and every ancestor of that code.

    ``series_code[i]``: index of series i's code (-1: not coded, skipped);
    ``parent[c]``: index of code c's parent (-1: a root), always before c. Non-finite
    energies are skipped. Returns float64[n_codes], in the unit of ``energy``. The sum
    runs over series in order and, per series, from its code up, like the compiled
    kernel (same rounding)."""
    codes, parents, values = check_rollup(series_code, parent, energy)
    out = np.zeros(len(parents), dtype=np.float64)
    up = parents.tolist()
    for code, value in zip(codes.tolist(), values.tolist(), strict=True):
        if code < 0 or not math.isfinite(value):
            continue
        while code >= 0:
            out[code] += value
            code = up[code]
    return out
