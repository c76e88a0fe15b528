# cython: language_level=3, boundscheck=False, wraparound=False
"""Energy per 分类分项 code, rolled up the code tree (compiled; twin: _codes_py)."""

import numpy as np

from libc.math cimport isfinite

from fastcore._codes_common import BAD_CODE, BAD_PARENT, check_rollup


def rollup_codes(series_code, parent, energy):
    """Sum each series' ``energy`` into its code and every ancestor (see _codes_py)."""
    codes_a, parents_a, values_a = check_rollup(series_code, parent, energy)
    out_a = np.zeros(len(parents_a), dtype=np.float64)
    cdef const int[::1] codes = codes_a
    cdef const int[::1] up = parents_a
    cdef const double[::1] values = values_a
    cdef double[::1] out = out_a
    cdef Py_ssize_t i, n = codes.shape[0], m = up.shape[0]
    cdef int code
    cdef double value
    cdef bint bad = False
    with nogil:
        for i in range(m):
            if up[i] < -1 or up[i] >= i:
                bad = True
    if bad:
        raise ValueError(BAD_PARENT)
    with nogil:
        for i in range(n):
            if codes[i] < -1 or codes[i] >= m:
                bad = True
    if bad:
        raise ValueError(BAD_CODE)
    with nogil:
        for i in range(n):
            code = codes[i]
            value = values[i]
            if code < 0 or not isfinite(value):
                continue
            while code >= 0:
                out[code] += value
                code = up[code]
    return out_a
