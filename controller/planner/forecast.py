"""Forecasts for the plan, learned from the site's own readings.

* PV: clear-sky irradiance at the site's latitude and longitude (the sun's position by
  the NOAA approximations, Haurwitz's clear-sky model), times a scale learned from the
  inverters' history (least squares of measured power on the clear-sky shape: the
  array's size and the local clearness in one number). An external forecast (a CSV
  file of ``time, pv_kw``) replaces it where it covers the horizon.
* Load: similar days — the mean of the last few days of the same type (workday,
  weekend, holiday by the tariff calendar) at the same quarter hour.
* Heat: the building's heat-loss coefficient from the heat pump's thermal power and the
  indoor–outdoor difference (least squares, through the origin).

Each learner keeps a bounded history (a few weeks of 15-min means); each falls back to
something sane while it has none (the configured coefficients, a flat profile).
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, tzinfo
from pathlib import Path

import numpy as np

from controller.planner.problem import Series

#: Solar constant, W/m².
SOLAR_CONSTANT_W_M2 = 1361.0
QUARTER_S = 900.0


def clear_sky_w_m2(latitude_deg: float, longitude_deg: float, unix_s: float) -> float:
    """Clear-sky global horizontal irradiance (Haurwitz), W/m², at ``unix_s`` (UTC
    based: no time zone needed)."""
    days = unix_s / 86400.0
    gamma = 2.0 * math.pi * ((days % 365.2422) / 365.2422)  # fractional year, rad
    decl = (0.006918 - 0.399912 * math.cos(gamma) + 0.070257 * math.sin(gamma)
            - 0.006758 * math.cos(2 * gamma) + 0.000907 * math.sin(2 * gamma)
            - 0.002697 * math.cos(3 * gamma) + 0.00148 * math.sin(3 * gamma))
    eot_min = 229.18 * (0.000075 + 0.001868 * math.cos(gamma) - 0.032077 * math.sin(gamma)
                        - 0.014615 * math.cos(2 * gamma) - 0.040849 * math.sin(2 * gamma))
    utc_min = (unix_s % 86400.0) / 60.0
    solar_min = utc_min + eot_min + 4.0 * longitude_deg
    hour_angle = math.radians(solar_min / 4.0 - 180.0)
    lat = math.radians(latitude_deg)
    cos_z = math.sin(lat) * math.sin(decl) + math.cos(lat) * math.cos(decl) * math.cos(
        hour_angle)
    if cos_z <= 0.0:
        return 0.0
    return 1098.0 * cos_z * math.exp(-0.059 / cos_z)


def quarter_means(samples: Iterable[tuple[float, float]]) -> dict[float, float]:
    """Mean value per 15-min slot (slot start, UNIX s) of ``(t, value)`` samples."""
    sums: dict[float, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for t, value in samples:
        if math.isfinite(value):
            slot = sums[t - t % QUARTER_S]
            slot[0] += value
            slot[1] += 1.0
    return {start: total / count for start, (total, count) in sums.items()}


@dataclass
class PvForecaster:
    """PV power forecast: clear-sky shape × learned scale (kW per W/m²)."""

    latitude_deg: float
    longitude_deg: float
    default_kw_per_w_m2: float = 0.0  # before any history (0: expect no PV)
    history: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=4 * 96 * 14))
    external: dict[float, float] = field(default_factory=dict)  # slot start -> kW
    _scale: float | None = None

    def observe(self, slot_s: float, pv_kw: float) -> None:
        """A 15-min mean of measured PV power (kW)."""
        self.history.append((slot_s, pv_kw))
        self._scale = None

    @property
    def scale_kw_per_w_m2(self) -> float:
        if self._scale is None:
            num = den = 0.0
            for slot, kw in self.history:
                sky = self.clear_sky(slot + QUARTER_S / 2)
                if sky > 50.0:
                    num += kw * sky
                    den += sky * sky
            self._scale = num / den if den > 0 else self.default_kw_per_w_m2
        return self._scale

    def clear_sky(self, unix_s: float) -> float:
        return clear_sky_w_m2(self.latitude_deg, self.longitude_deg, unix_s)

    def forecast(self, slots: Sequence[float]) -> Series:
        """kW per slot (slot starts, UNIX s): the external forecast where it has the slot,
        else clear sky × the learned scale."""
        scale = self.scale_kw_per_w_m2
        return np.array([self.external[s] if s in self.external
                         else scale * self.clear_sky(s + QUARTER_S / 2) for s in slots])


def read_forecast_file(path: Path) -> dict[float, float]:
    """A PV forecast file: CSV rows ``time, pv_kw`` (time as UNIX s or ISO 8601 with an
    offset), a header row allowed. Returns kW by 15-min slot start. Raises ValueError
    naming the line of a malformed row."""
    out: dict[float, float] = {}
    with path.open(newline="") as handle:
        for number, row in enumerate(csv.reader(handle), start=1):
            if not row or row[0].startswith("#") or (number == 1 and not _numberish(row[0])
                                                     and "T" not in row[0]):
                continue
            try:
                when = float(row[0]) if _numberish(row[0]) else datetime.fromisoformat(
                    row[0]).timestamp()
                kw = float(row[1])
            except (ValueError, IndexError) as exc:
                raise ValueError(f"{path}: line {number}: expected 'time, pv_kw' ({exc})") \
                    from None
            if not math.isfinite(kw):
                raise ValueError(f"{path}: line {number}: pv_kw must be finite")
            out[when - when % QUARTER_S] = kw
    return out


def _numberish(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


DayType = Callable[[date], str]


@dataclass
class LoadForecaster:
    """Similar-day load profile by day type (the tariff calendar's: workday, weekend,
    holiday) and quarter hour."""

    zone: tzinfo
    day_type: DayType
    days: int = 4  # how many similar days to average
    history: dict[float, float] = field(default_factory=dict)  # slot start -> kW
    keep_s: float = 28 * 86400.0

    def observe(self, slot_s: float, load_kw: float) -> None:
        self.history[slot_s] = load_kw
        if len(self.history) > self.keep_s / QUARTER_S * 1.1:
            oldest = slot_s - self.keep_s
            for key in [k for k in self.history if k < oldest]:
                del self.history[key]

    def forecast(self, slots: Sequence[float], *, before_s: float | None = None) -> Series:
        """kW per slot from the similar days before ``before_s`` (default: the first
        slot); a slot no similar day has: the same quarter hour on any day, else the
        mean of everything, else 0."""
        cutoff = slots[0] if before_s is None else before_s
        by_key: dict[tuple[str, int], list[tuple[float, float]]] = defaultdict(list)
        by_quarter: dict[int, list[float]] = defaultdict(list)
        for slot, kw in self.history.items():
            if slot >= cutoff:
                continue
            local = datetime.fromtimestamp(slot, self.zone)
            quarter = local.hour * 4 + local.minute // 15
            by_key[(self.day_type(local.date()), quarter)].append((slot, kw))
            by_quarter[quarter].append(kw)
        everything = list(self.history.values())
        fallback = float(np.mean(everything)) if everything else 0.0
        out = []
        for slot in slots:
            local = datetime.fromtimestamp(slot, self.zone)
            quarter = local.hour * 4 + local.minute // 15
            similar = sorted(by_key.get((self.day_type(local.date()), quarter), []))
            if similar:
                out.append(float(np.mean([kw for _, kw in similar[-self.days:]])))
            elif by_quarter.get(quarter):
                out.append(float(np.mean(by_quarter[quarter])))
            else:
                out.append(fallback)
        return np.array(out)


@dataclass
class HeatLossEstimator:
    """The building's heat-loss coefficient (kW/K) from 15-min means of the heat pump's
    thermal power and the indoor–outdoor difference; ``default`` until a day of
    heating or cooling has been seen."""

    default_kw_per_k: float
    history: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=96 * 14))

    def observe(self, thermal_kw: float, indoor_minus_outdoor_k: float) -> None:
        if abs(indoor_minus_outdoor_k) >= 3.0 and thermal_kw != 0.0:
            self.history.append((thermal_kw, indoor_minus_outdoor_k))

    @property
    def kw_per_k(self) -> float:
        if len(self.history) < 96:
            return self.default_kw_per_k
        num = sum(q * dt for q, dt in self.history)
        den = sum(dt * dt for _, dt in self.history)
        estimate = num / den if den > 0 else self.default_kw_per_k
        # A wild estimate (the heat pump barely ran): stay near the configured value.
        return min(max(estimate, 0.25 * self.default_kw_per_k), 4.0 * self.default_kw_per_k)


def nmae(forecast: Sequence[float], actual: Sequence[float]) -> float | None:
    """Normalised mean absolute error: mean |forecast − actual| / mean |actual| (None
    when the actual mean is 0)."""
    f, a = np.asarray(forecast, float), np.asarray(actual, float)
    scale = float(np.mean(np.abs(a)))
    return None if scale <= 0 else float(np.mean(np.abs(f - a))) / scale


def backtest_day_ahead(history: dict[float, float],
                       forecast_day: Callable[[list[float], float], Series],
                       zone: tzinfo, *, warmup_days: int = 7) -> float | None:
    """Day-ahead 15-min nMAE over ``history`` (slot start -> kW): each day after the
    first ``warmup_days`` is forecast from what came before its midnight
    (``forecast_day(slots, cutoff_s)``) and compared with what happened. None when the
    history is too short."""
    if not history:
        return None
    first = min(history)
    days = sorted({datetime.fromtimestamp(s, zone).date() for s in history})
    errors, scale = 0.0, 0.0
    for day in days:
        midnight = datetime.combine(day, datetime.min.time(), zone).timestamp()
        if midnight < first + warmup_days * 86400.0:
            continue
        slots = [midnight + i * QUARTER_S for i in range(96)]
        if not all(s in history for s in slots):
            continue
        predicted = forecast_day(slots, midnight)
        actual = np.array([history[s] for s in slots])
        errors += float(np.sum(np.abs(predicted - actual)))
        scale += float(np.sum(np.abs(actual)))
    return None if scale <= 0 else errors / scale
