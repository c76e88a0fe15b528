"""Pure-Python twin of ``fastcore._codes``: energy per 分类分项 code, rolled up the tree."""

from __future__ import annotations

import math

import numpy as np

from fastcore._codes_common import BAD_CODE, BAD_PARENT, F64, check_rollup


def rollup_codes(series_code: object, parent: object, energy: object) -> F64:
    """Sum each series' ``energy`` into its code and every ancestor of that code.

    ``series_code[i]``: index of series i's code (-1: not coded, skipped);
    ``parent[c]``: index of code c's parent (-1: a root), always before c. Non-finite
    energies are skipped. Returns float64[n_codes], in the unit of ``energy``. The sum
    runs over series in order and, per series, from its code up, like the compiled
    kernel (same rounding)."""
    codes, parents, values = check_rollup(series_code, parent, energy)
    up = parents.tolist()
    n = len(up)
    if any(not -1 <= p < c for c, p in enumerate(up)):
        raise ValueError(BAD_PARENT)
    code_list = codes.tolist()
    if any(not -1 <= c < n for c in code_list):
        raise ValueError(BAD_CODE)
    out = np.zeros(n, dtype=np.float64)
    for code, value in zip(code_list, values.tolist(), strict=True):
        if code < 0 or not math.isfinite(value):
            continue
        while code >= 0:
            out[code] += value
            code = up[code]
    return out
