"""fastcore: compiled kernels for metering aggregation and load shedding.

Every kernel has a pure-Python twin with the same API. The compiled module is used when
it was built by the install; otherwise the twin is used. ``IMPLEMENTATION`` says which
one is active ("cython" or "python"); set ``PEDF_FASTCORE=python`` to force the twin.
"""

from __future__ import annotations

import os

from fastcore._energy_py import EnergyTotals

__all__ = ["IMPLEMENTATION", "EnergyTotals", "integrate_energy"]

IMPLEMENTATION: str
if os.environ.get("PEDF_FASTCORE") == "python":
    from fastcore._energy_py import integrate_energy

    IMPLEMENTATION = "python"
else:
    try:
        from fastcore._energy import integrate_energy  # type: ignore[no-redef]

        IMPLEMENTATION = "cython"
    except ImportError:  # compiled module not built: fall back to the twin
        from fastcore._energy_py import integrate_energy

        IMPLEMENTATION = "python"
