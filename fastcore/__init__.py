"""fastcore: compiled kernels for metering aggregation and load shedding.

Every kernel has a pure-Python twin with the same API and results. The compiled modules
are used when they were built by the install; otherwise the twins are. The choice is
all-or-nothing and made here, once: ``IMPLEMENTATION`` says which set is active
("cython" or "python"). Set the environment variable ``PEDF_FASTCORE=python`` to force
the twins, or ``PEDF_FASTCORE=cython`` to fail the import (ImportError) instead of
falling back when the compiled modules are missing.

Kernels (see docs/fastcore.md):

* :class:`MeterAggregator` — per-load energy, demand windows, time-of-use cost, carbon,
  counters, site figures, state save/restore.
* :class:`TariffCalendar` — any number of named periods (the standard five: 尖峰, 高峰,
  平段, 低谷, 深谷), seasons, day types and holidays (pure data the kernels compile).
* :func:`plan_shed` / :func:`plan_restore` — demand-response load shedding and a
  staggered restore plan.
* :func:`integrate_energy` — trapezoidal integration of one power series.
* :func:`rollup_codes` — energy per 分类分项 code, each series rolled up the code tree.
"""

from __future__ import annotations

import importlib
import os

from fastcore._common import (
    ANOMALY_KINDS,
    CHINA_GRID_EMISSION_FACTOR_KG_PER_KWH,
    ROLE_BATTERY,
    ROLE_CONSUMER,
    ROLE_GRID,
    ROLE_NAMES,
    ROLE_PV,
    LoadTotals,
    MeterConfig,
    SiteFigures,
)
from fastcore._energy_py import EnergyTotals
from fastcore._shed_common import RestorePlan, ShedPlan, default_cost
from fastcore._tariff import (
    HOLIDAY,
    MAX_PERIODS,
    STANDARD_PERIODS,
    WEEKEND,
    WORKDAY,
    DayLayout,
    Holiday,
    Period,
    Segment,
    TariffCalendar,
    TariffSeason,
    Tier,
)

__all__ = [
    "ANOMALY_KINDS",
    "CHINA_GRID_EMISSION_FACTOR_KG_PER_KWH",
    "HOLIDAY",
    "IMPLEMENTATION",
    "MAX_PERIODS",
    "ROLE_BATTERY",
    "ROLE_CONSUMER",
    "ROLE_GRID",
    "ROLE_NAMES",
    "ROLE_PV",
    "STANDARD_PERIODS",
    "WEEKEND",
    "WORKDAY",
    "DayLayout",
    "EnergyTotals",
    "Holiday",
    "LoadTotals",
    "MeterAggregator",
    "MeterConfig",
    "Period",
    "RestorePlan",
    "Segment",
    "ShedPlan",
    "SiteFigures",
    "TariffCalendar",
    "TariffSeason",
    "Tier",
    "default_cost",
    "integrate_energy",
    "plan_restore",
    "plan_shed",
    "rollup_codes",
]

#: compiled module -> its pure-Python twin (same public names)
KERNELS = {
    "fastcore._codes": "fastcore._codes_py",
    "fastcore._energy": "fastcore._energy_py",
    "fastcore._meter": "fastcore._meter_py",
    "fastcore._shed": "fastcore._shed_py",
}


def _choose_implementation() -> str:
    wanted = os.environ.get("PEDF_FASTCORE", "").strip().lower()
    if wanted not in ("", "auto", "python", "cython"):
        raise ImportError(f"PEDF_FASTCORE must be 'python', 'cython' or unset, got {wanted!r}")
    if wanted == "python":
        return "python"
    try:
        for name in KERNELS:
            importlib.import_module(name)
    except ImportError as exc:  # not built (or built for another interpreter)
        if wanted == "cython":
            raise ImportError(f"PEDF_FASTCORE=cython but the compiled kernels cannot be "
                              f"imported ({exc}); `pip install .` builds them") from exc
        return "python"
    return "cython"


IMPLEMENTATION: str = _choose_implementation()

if IMPLEMENTATION == "cython":
    from fastcore._codes import rollup_codes
    from fastcore._energy import integrate_energy
    from fastcore._meter import MeterAggregator
    from fastcore._shed import plan_restore, plan_shed
else:
    from fastcore._codes_py import rollup_codes
    from fastcore._energy_py import integrate_energy  # type: ignore[assignment]
    from fastcore._meter_py import MeterAggregator  # type: ignore[assignment]
    from fastcore._shed_py import plan_restore, plan_shed
