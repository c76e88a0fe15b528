"""The month's demand (需量) as the control loop sees it: 15-minute windows of site import.

China's 需量电费 is charged on the month's highest 15-minute average import. The loop
feeds every grid sample into a :class:`DemandTracker`, which integrates import (W, + only,
trapezoid, gaps longer than ``max_gap_s`` skipped) per window aligned to local midnight,
closes each window as energy / window length (a utility demand register's rule), and keeps
the month's highest closed window. Peak shaving reads it through
:class:`~controller.control.model.DemandState`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime, tzinfo

from controller.control.model import DemandState

log = logging.getLogger("pedf.control")


@dataclass
class DemandTracker:
    zone: tzinfo
    window_s: float = 900.0
    max_gap_s: float = 120.0
    window_start_s: float | None = None
    window_ws: float = 0.0  # import energy of the open window, W·s
    month: tuple[int, int] | None = None
    month_peak_kw: float | None = None
    last: tuple[float, float] | None = None

    def _window_of(self, t: float) -> float:
        local = datetime.fromtimestamp(t, self.zone)
        seconds = local.hour * 3600 + local.minute * 60 + local.second + local.microsecond / 1e6
        return t - seconds % self.window_s

    def add(self, t: float, grid_w: float) -> bool:
        """Add a grid sample; True when a window closed (worth saving)."""
        value = max(0.0, grid_w)
        closed = False
        window = self._window_of(t)
        if self.window_start_s is None:
            self.window_start_s = window
        elif window > self.window_start_s:
            if self.last is not None and t - self.last[0] <= self.max_gap_s:
                boundary = window  # book the part of the interval before the boundary
                frac = (boundary - self.last[0]) / (t - self.last[0])
                edge = self.last[1] + (value - self.last[1]) * frac
                self.window_ws += 0.5 * (self.last[1] + edge) * (boundary - self.last[0])
                self.last = (boundary, edge)
            self._close(self.window_start_s)
            self.window_start_s = window
            closed = True
        if self.last is not None and 0 < t - self.last[0] <= self.max_gap_s:
            self.window_ws += 0.5 * (self.last[1] + value) * (t - self.last[0])
        if self.last is None or t > self.last[0]:
            self.last = (t, value)
        return closed

    def _close(self, start_s: float) -> None:
        kw = self.window_ws / self.window_s / 1000.0
        local = datetime.fromtimestamp(start_s, self.zone)
        month = (local.year, local.month)
        if month != self.month:
            self.month, self.month_peak_kw = month, None
        if self.month_peak_kw is None or kw > self.month_peak_kw:
            self.month_peak_kw = kw
        self.window_ws = 0.0

    def state(self, now_s: float, *, billed: bool) -> DemandState | None:
        if self.window_start_s is None:
            return None
        local = datetime.fromtimestamp(now_s, self.zone)
        peak = self.month_peak_kw if self.month == (local.year, local.month) else None
        return DemandState(self.window_start_s, self.window_s, self.window_ws / 3.6e6, peak,
                           billed)

    def to_json(self) -> str:
        return json.dumps({"month": self.month, "month_peak_kw": self.month_peak_kw})

    def restore(self, text: str | None) -> None:
        """Take the month's peak from a saved state (the open window starts afresh)."""
        if not text:
            return
        try:
            data = json.loads(text)
            month = data["month"]
            self.month = None if month is None else (int(month[0]), int(month[1]))
            peak = data["month_peak_kw"]
            self.month_peak_kw = None if peak is None else float(peak)
        except (ValueError, KeyError, TypeError, IndexError):
            log.error("saved demand state unreadable: the month's peak starts afresh")
