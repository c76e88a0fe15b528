"""Demand-response baselines: what the site would have imported without the event.

Two methods (``[control] baseline_method``):

* ``pre_event``: the average site import over the ``baseline_pre_event_s`` before the
  event starts (from the control loop's recent grid samples, else the metering windows);
* ``similar_days``: for each demand window the event covers, the average of the same
  window on the last ``baseline_days`` days of the same type (working day / weekend),
  from the stored metering history; the event's baseline is their mean. With fewer than
  half of those days on record it falls back to ``pre_event``.

The baseline is fixed when the event starts, so the target does not move under it.
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, tzinfo

#: (series, since, until) -> [(window start, kW)], e.g. Store.windows.
WindowHistory = Callable[[str, float, float], list[tuple[float, float]]]


def pre_event_kw(samples: Sequence[tuple[float, float]], start_s: float, span_s: float
                 ) -> float | None:
    """Time-weighted average (kW) of grid samples ``(t, W)`` in [start − span, start)."""
    window = [(t, w) for t, w in samples if start_s - span_s <= t < start_s]
    if len(window) < 2:
        return None
    total = 0.0
    for (t0, w0), (t1, w1) in itertools.pairwise(window):
        total += 0.5 * (w0 + w1) * (t1 - t0)
    duration = window[-1][0] - window[0][0]
    return total / duration / 1000.0 if duration > 0 else None


def pre_event_from_windows(history: WindowHistory, series: str, start_s: float,
                           span_s: float) -> float | None:
    windows = history(series, start_s - span_s, start_s)
    return statistics.fmean(kw for _, kw in windows) if windows else None


def similar_days_kw(history: WindowHistory, series: str, start_s: float, duration_s: float,
                    *, days: int, window_s: float, zone: tzinfo) -> float | None:
    """Mean over the event's windows of the same window on ``days`` similar past days."""
    start = datetime.fromtimestamp(start_s, zone)
    weekend = start.weekday() >= 5
    first_window = start_s - (start_s % window_s)
    window_starts = [first_window + k * window_s
                     for k in range(max(1, int(-(-duration_s // window_s))))]
    per_window: list[float] = []
    for window in window_starts:
        values: list[float] = []
        day = datetime.fromtimestamp(window, zone)
        back = 0
        while len(values) < days and back < days * 3:
            back += 1
            candidate = day - timedelta(days=back)
            if (candidate.weekday() >= 5) != weekend:
                continue
            moment = candidate.timestamp()
            found = history(series, moment, moment + 1.0)
            if found:
                values.append(found[0][1])
        if len(values) < max(1, days // 2):
            return None
        per_window.append(statistics.fmean(values))
    return statistics.fmean(per_window)


def baseline_kw(method: str, *, samples: Sequence[tuple[float, float]], history: WindowHistory,
                series: str, start_s: float, duration_s: float, pre_event_s: float, days: int,
                window_s: float, zone: tzinfo) -> tuple[float | None, str]:
    """The baseline (kW) and the method that produced it (after any fallback)."""
    if method == "similar_days":
        value = similar_days_kw(history, series, start_s, duration_s, days=days,
                                window_s=window_s, zone=zone)
        if value is not None:
            return value, "similar_days"
    value = pre_event_kw(samples, start_s, pre_event_s)
    if value is None:
        value = pre_event_from_windows(history, series, start_s, pre_event_s)
    return value, "pre_event"
