# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Compiled kernel: trapezoidal integration of a power series into import/export energy.

Same API and results as :mod:`fastcore._energy_py` (the pure-Python twin).
"""

from libc.math cimport isfinite

from fastcore._energy_py import EnergyTotals

cdef double SECONDS_PER_HOUR = 3600.0


cpdef object integrate_energy(const double[::1] timestamps_s, const double[::1] power_w,
                              double max_gap_s):
    """Integrate ``power_w`` (W, + import / - export) over ``timestamps_s`` (s).

    See :func:`fastcore._energy_py.integrate_energy` for the exact rules.
    """
    cdef Py_ssize_t n = timestamps_s.shape[0]
    if power_w.shape[0] != n:
        raise ValueError(f"timestamps_s has {n} samples but power_w has {power_w.shape[0]}")
    if not max_gap_s > 0.0:
        raise ValueError(f"max_gap_s must be > 0, got {max_gap_s}")
    cdef double import_ws = 0.0, export_ws = 0.0
    cdef double t0 = 0.0, p0 = 0.0, t1, p1, dt, frac
    cdef Py_ssize_t i, gaps = 0, rejected = 0
    cdef bint have_previous = False
    for i in range(n):
        t1 = timestamps_s[i]
        p1 = power_w[i]
        if not (isfinite(t1) and isfinite(p1)):
            rejected += 1
            continue
        if have_previous:
            dt = t1 - t0
            if dt <= 0.0:
                rejected += 1
                continue
            if dt > max_gap_s:
                gaps += 1
            elif p0 >= 0.0 and p1 >= 0.0:
                import_ws += 0.5 * (p0 + p1) * dt
            elif p0 <= 0.0 and p1 <= 0.0:
                export_ws -= 0.5 * (p0 + p1) * dt
            else:
                frac = p0 / (p0 - p1)
                if p0 > 0.0:
                    import_ws += 0.5 * p0 * frac * dt
                    export_ws -= 0.5 * p1 * (1.0 - frac) * dt
                else:
                    export_ws -= 0.5 * p0 * frac * dt
                    import_ws += 0.5 * p1 * (1.0 - frac) * dt
        t0 = t1
        p0 = p1
        have_previous = True
    return EnergyTotals(
        import_wh=import_ws / SECONDS_PER_HOUR,
        export_wh=export_ws / SECONDS_PER_HOUR,
        gaps=gaps,
        rejected=rejected,
    )
