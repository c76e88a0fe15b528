"""Water use of a building: a constant flow during office hours on weekdays, none
otherwise, so the meter's volume at any time is a closed-form integral (no stepping,
exactly conserved, the same at any simulation speed)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo


@dataclass
class WaterDemand:
    """``daily_m3`` drawn evenly between ``open_h`` and ``close_h`` local time, Monday
    to Friday; ``volume_m3`` is the meter's reading at ``start_s``."""

    zone: tzinfo
    start_s: float
    volume_m3: float = 1000.0
    daily_m3: float = 12.0
    open_h: float = 8.0
    close_h: float = 18.0

    @property
    def flow_m3_per_s(self) -> float:
        return self.daily_m3 / ((self.close_h - self.open_h) * 3600.0)

    def _open_seconds(self, until_s: float) -> float:
        """Office-hours seconds between ``start_s`` and ``until_s``."""
        total = 0.0
        day = datetime.fromtimestamp(self.start_s, self.zone).replace(
            hour=0, minute=0, second=0, microsecond=0)
        end = datetime.fromtimestamp(until_s, self.zone)
        while day <= end:
            if day.weekday() < 5:
                opens = (day + timedelta(hours=self.open_h)).timestamp()
                closes = (day + timedelta(hours=self.close_h)).timestamp()
                total += max(0.0, min(closes, until_s) - max(opens, self.start_s))
            day = (day + timedelta(days=1, hours=2)).replace(hour=0)  # DST-safe next day
        return total

    def volume_at(self, t_s: float) -> float:
        """The meter's reading (m³) at ``t_s``."""
        return self.volume_m3 + self.flow_m3_per_s * self._open_seconds(max(t_s, self.start_s))

    def flow_m3_h_at(self, t_s: float) -> float:
        local = datetime.fromtimestamp(t_s, self.zone)
        hour = local.hour + local.minute / 60.0 + local.second / 3600.0
        open_now = local.weekday() < 5 and self.open_h <= hour < self.close_h
        return self.flow_m3_per_s * 3600.0 if open_now else 0.0
