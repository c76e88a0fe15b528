"""Pure-Python twin of the ``_energy`` kernel: identical API, used when the compiled
module is unavailable and as the reference the property tests compare against."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

SECONDS_PER_HOUR = 3600.0


class EnergyTotals(NamedTuple):
    """Result of integrating one power series.

    ``import_wh`` and ``export_wh`` are both >= 0 (Wh). ``gaps`` counts sample intervals
    longer than ``max_gap_s``, which are not integrated. ``rejected`` counts samples
    dropped because their timestamp or power is NaN/inf or their timestamp does not
    increase.
    """

    import_wh: float
    export_wh: float
    gaps: int
    rejected: int


def integrate_energy(
    timestamps_s: Sequence[float], power_w: Sequence[float], max_gap_s: float
) -> EnergyTotals:
    """Integrate ``power_w`` (W, positive = import, negative = export) over time.

    Trapezoidal rule between consecutive accepted samples; an interval whose power
    changes sign is split at the interpolated zero crossing so import and export are
    each exact for a linear ramp. Samples with a non-finite time or power, or a time not
    after the previous accepted sample, are rejected and counted; intervals longer than
    ``max_gap_s`` (s) are skipped and counted.

    Raises ``ValueError`` when the two sequences differ in length or ``max_gap_s <= 0``.
    """
    n = len(timestamps_s)
    if len(power_w) != n:
        raise ValueError(f"timestamps_s has {n} samples but power_w has {len(power_w)}")
    if not max_gap_s > 0.0:
        raise ValueError(f"max_gap_s must be > 0, got {max_gap_s}")
    import_ws = export_ws = 0.0
    gaps = rejected = 0
    previous: tuple[float, float] | None = None
    for t1_raw, p1_raw in zip(timestamps_s, power_w, strict=True):
        t1, p1 = float(t1_raw), float(p1_raw)
        if not (math.isfinite(t1) and math.isfinite(p1)):
            rejected += 1
            continue
        if previous is not None:
            t0, p0 = previous
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
        previous = (t1, p1)
    return EnergyTotals(
        import_wh=import_ws / SECONDS_PER_HOUR,
        export_wh=export_ws / SECONDS_PER_HOUR,
        gaps=gaps,
        rejected=rejected,
    )
