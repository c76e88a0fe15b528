"""Switchable loads with daily profiles, and relay modules with a watchdog."""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass


def _office_hours(hour: float, weekday: int, start: float = 8.0, end: float = 18.0) -> float:
    """1 in office hours on working days, smooth 30-minute shoulders, 0 otherwise."""
    if weekday >= 5:
        return 0.0
    rise = 1.0 / (1.0 + math.exp(-(hour - start) * 6.0))
    fall = 1.0 / (1.0 + math.exp((hour - end) * 6.0))
    return rise * fall


def _lighting(hour: float, weekday: int) -> float:
    return 0.1 + 0.9 * _office_hours(hour, weekday)


def _plugs(hour: float, weekday: int) -> float:
    return 0.15 + 0.85 * _office_hours(hour, weekday) * (0.85 + 0.15 * math.sin(hour))


def _hvac_fan(hour: float, weekday: int) -> float:
    return 0.05 + 0.95 * _office_hours(hour, weekday, 7.0, 19.0)


def _server(hour: float, weekday: int) -> float:
    return 0.92 + 0.08 * _office_hours(hour, weekday)


def _elevator(hour: float, weekday: int) -> float:
    peaks = math.exp(-((hour - 8.5) ** 2) * 4) + math.exp(-((hour - 12.0) ** 2) * 4) + (
        math.exp(-((hour - 17.5) ** 2) * 4)
    )
    return 0.05 + 0.5 * _office_hours(hour, weekday) + 0.45 * min(1.0, peaks)


def _kitchen(hour: float, weekday: int) -> float:
    if weekday >= 5:
        return 0.05
    return 0.05 + 0.95 * max(math.exp(-((hour - 11.5) ** 2) * 1.5), 0.6 * math.exp(
        -((hour - 17.5) ** 2) * 2))


def _ev_charger(hour: float, weekday: int) -> float:
    return 0.1 + 0.9 * _office_hours(hour, weekday, 8.5, 16.0)


def _water_heater(hour: float, weekday: int) -> float:
    return 0.2 + 0.8 * math.exp(-((hour - 7.5) ** 2) * 2) + 0.3 * _office_hours(hour, weekday)


def _constant(hour: float, weekday: int) -> float:
    return 1.0


PROFILES: dict[str, Callable[[float, int], float]] = {
    "lighting": _lighting,
    "plugs": _plugs,
    "hvac_fan": _hvac_fan,
    "server": _server,
    "elevator": _elevator,
    "kitchen": _kitchen,
    "ev_charger": _ev_charger,
    "water_heater": _water_heater,
    "constant": _constant,
}


def profile_fraction(profile: str, local_hour: float, weekday: int, name: str = "",
                     unix_s: float = 0.0, variation: float = 0.1) -> float:
    """Fraction of rated power (0–1) a load of ``profile`` draws at ``local_hour``.

    A deterministic ±``variation`` per load and 5-minute slot (hash of the name and the
    slot) keeps loads from moving in lockstep while runs stay reproducible.
    """
    base = PROFILES[profile](local_hour, weekday)
    slot = int(unix_s // 300)
    jitter = (zlib.crc32(f"{name}:{slot}".encode()) / 0xFFFF_FFFF) * 2.0 - 1.0
    return max(0.0, min(1.0, base * (1.0 + variation * jitter)))


@dataclass(frozen=True, slots=True)
class LoadConfig:
    name: str
    rated_w: float
    profile: str = "constant"
    power_factor: float = 0.95
    dc: bool = False  # on the DC bus instead of the AC distribution


class RelayModule:
    """Relay channels (True = closed, load on) with a communication watchdog.

    Any write refreshes the watchdog; when ``watchdog_s`` > 0 and no write arrived for
    that long, every channel goes to its safe state and ``trips`` counts it. The safe
    state is per channel (``safe_states``, True = closed), closed by default so shed
    loads come back on; a channel driving an SG-Ready contact is set to fall open.
    """

    def __init__(self, channels: int, start_s: float) -> None:
        self.states = [True] * channels
        self.safe_states = [True] * channels
        self.watchdog_s = 0.0
        self.trips = 0
        self.t_s = start_s
        self._last_write_s = start_s

    def _check(self, channel: int) -> None:
        if not 1 <= channel <= len(self.states):
            raise ValueError(f"relay channel {channel} does not exist")

    def write_channel(self, channel: int, on: bool) -> None:
        """Set channel ``channel`` (1-based)."""
        self._check(channel)
        self.states[channel - 1] = on
        self._last_write_s = self.t_s

    def set_safe_state(self, channel: int, closed: bool) -> None:
        """Set the state channel ``channel`` (1-based) takes when the watchdog trips."""
        self._check(channel)
        self.safe_states[channel - 1] = closed
        self._last_write_s = self.t_s

    def set_watchdog(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("watchdog timeout must be >= 0")
        self.watchdog_s = seconds
        self._last_write_s = self.t_s

    def advance(self, t_s: float) -> None:
        self.t_s = max(self.t_s, t_s)
        if self.watchdog_s > 0 and self.t_s - self._last_write_s >= self.watchdog_s:
            if self.states != self.safe_states:
                self.states = list(self.safe_states)
                self.trips += 1
            self._last_write_s = self.t_s
