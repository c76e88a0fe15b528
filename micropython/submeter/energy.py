# Energy counters and the demand window. Pure: powers and durations in, counters out.
#
# Counters are integers of milliwatt-hours (exact, arbitrary precision: the ESP32's floats
# are single precision and would stop counting small increments above ~16 MWh) plus a float
# remainder below 1 mWh per counter.


class Energy:
    def __init__(self, nch, counters=None):
        self.nch = nch
        self.mwh = list(counters) if counters else [0] * (2 * nch)  # import, export per ch
        self._frac = [0.0] * (2 * nch)

    def add(self, c, power_w, seconds):
        """Count ``power_w`` (+ import, - export) of channel ``c`` for ``seconds``."""
        k = 2 * c
        if power_w < 0:
            k += 1
            power_w = -power_w
        x = self._frac[k] + power_w * seconds / 3.6  # W*s -> mWh
        whole = int(x)
        self.mwh[k] += whole
        self._frac[k] = x - whole

    def wh(self, c, export):
        """Whole watt-hours of channel ``c``'s import (or export) counter."""
        return self.mwh[2 * c + (1 if export else 0)] // 1000


class Demand:
    """Average total power over consecutive windows of ``window_s`` seconds of device
    time, aligned to boot. ``value`` is the average of the last complete window (0 before
    the first one completes)."""

    def __init__(self, window_s):
        self.window_s = window_s
        self.value = 0.0
        self.completed = 0
        self._joules = 0.0
        self._seconds = 0.0

    def add(self, total_w, seconds):
        self._joules += total_w * seconds
        self._seconds += seconds
        if self._seconds >= self.window_s:
            self.value = self._joules / self._seconds
            self.completed += 1
            self._joules = 0.0
            self._seconds = 0.0

    def set_window(self, window_s):
        """A new window length; the window in progress starts over."""
        self.window_s = window_s
        self._joules = 0.0
        self._seconds = 0.0
