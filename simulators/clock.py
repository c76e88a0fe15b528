"""Clocks for the simulators: real time, accelerated time, or stepped by hand.

Physics models never read the system clock; they are advanced to the time a clock
gives. Times are UNIX seconds (wall-clock meaning: they drive the sun and the load
profiles), so an accelerated clock compresses a simulated day into minutes.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Simulated UNIX time, s."""
        ...


class ScaledClock:
    """Simulated time = ``start`` + ``speed`` × real seconds elapsed since creation.

    Uses the monotonic clock for elapsed time, so wall-clock jumps of the host do not
    move simulated time.
    """

    def __init__(self, *, start: float | None = None, speed: float = 1.0) -> None:
        if speed <= 0:
            raise ValueError(f"speed must be > 0, got {speed}")
        self.start = time.time() if start is None else start
        self.speed = speed
        self._origin = time.monotonic()

    def now(self) -> float:
        return self.start + (time.monotonic() - self._origin) * self.speed


class ManualClock:
    """A clock that only moves when told to (tests, faster-than-real-time runs)."""

    def __init__(self, start: float = 0.0) -> None:
        self.t = start

    def now(self) -> float:
        return self.t

    def advance(self, seconds: float) -> float:
        if seconds < 0:
            raise ValueError("a clock does not go backwards")
        self.t += seconds
        return self.t
