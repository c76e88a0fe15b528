# Metering math: integer moments from the kernel -> RMS, powers, power factor, frequency.
# Pure (no I/O): feed it interleaved ADC frames [v, i1, .., iN] from any source.
#
# Windows span a whole number of mains cycles, from one rising zero crossing of the
# voltage to the `cycles`-th next one, located to a fraction of a sample by linear
# interpolation, and tile the sample stream without gaps. Over whole cycles the mean of a
# signal is its DC offset exactly, so variances and covariances computed from the raw sums
# need no filter:
#   Vrms = sqrt(E[v^2] - E[v]^2) * v_gain        Irms likewise with the channel's i_gain
#   P    = (E[v*i] - E[v]E[i]) * v_gain * i_gain   (active power, + consumption)
#   S    = Vrms * Irms
#   Q    = sign(Qf) * sqrt(S^2 - P^2)    IEEE 1459 non-active power: equals the reactive
#          power for sinusoids; with harmonics it includes the distortion power. Qf, the
#          fundamental-weighted reactive power from the quadrature sum, gives its sign
#          (+ current lagging, inductive).
#   PF   = P / S (signed like P)
#   f    = cycles / window duration
# Per-channel phase calibration rotates (P, Qf) by the phase error of the CT and of the
# multiplexed ADC, before S and Q are formed.
import math
from array import array

from micropython import const

from submeter import kernels as K

R_V = const(0)  # per-channel result slots: V, A, W, VA, var, PF
R_I = const(1)
R_P = const(2)
R_S = const(3)
R_Q = const(4)
R_PF = const(5)


class Meter:
    """Meters ``nch`` current channels against one voltage reference.

    ``feed`` calls ``on_window(meter)`` at the end of every window; the results are then
    in ``ch[c][R_*]``, ``freq`` (Hz, 0 when no voltage crossings were found), ``window_s``
    (seconds of signal the window covered) and ``v_missing``.
    """

    def __init__(self, nch, cycles=10, v_gain=0.1887, i_gains=None, phases_deg=None,
                 mid=2048, hysteresis=30, kernel="viper", min_hz=40, v_min=20.0):
        if not 1 <= nch <= K.MAX_CHANNELS:
            raise ValueError("1..%d channels" % K.MAX_CHANNELS)
        self.nch = nch
        self.cycles = cycles
        self.v_gain = v_gain
        self.i_gain = list(i_gains or [0.0488] * nch)
        phases = phases_deg or [0.0] * nch
        self.cos = [math.cos(math.radians(p)) for p in phases]
        self.sin = [math.sin(math.radians(p)) for p in phases]
        self.min_hz = min_hz
        self.v_min = v_min
        self.hysteresis = hysteresis
        self.run = K.kernel(kernel)
        st = array("i", [0] * K.NSTATE)
        st[K.S_MID] = mid
        st[K.S_HYST] = hysteresis
        st[K.S_THR] = K.THR_BIAS
        st[K.S_NEED] = 1
        self.st = st
        self.acc = array("i", [0] * (2 + 4 * nch))
        self.sums = [0] * (2 + 4 * nch)  # exact integer moments of the window
        self.ch = [[0.0, 0.0, 0.0, 0.0, 0.0, 1.0] for _ in range(nch)]
        self.freq = 0.0
        self.window_s = 0.0
        self.v_missing = True
        self.windows = 0
        self.frames_total = 0
        self._synced = False
        self._frames = 0
        self._t = 0.0  # seconds of signal in the current window
        self._g0 = 0.0  # the window began this many samples before its first frame

    def feed(self, buf, nframes, rate, on_window, contiguous=True):
        """Meter ``nframes`` frames of ``buf`` (array('H')) sampled at ``rate`` frames/s.
        ``contiguous``: the frames follow the previous call's without a pause; if not (a
        board that samples in bursts), the window in progress is dropped, and a block
        without any zero crossing is metered as a window of its own (no voltage)."""
        if not contiguous:
            self.gap()
        st = self.st
        acc = self.acc
        sums = self.sums
        run = self.run
        nch = self.nch
        na = len(sums)
        limit = (self.cycles + 1) * rate / self.min_hz
        pos = 0
        while pos < nframes:
            n = nframes - pos
            if n > K.MAX_BLOCK:
                n = K.MAX_BLOCK
            used = run(buf, pos, n, nch, st, acc)
            for k in range(na):
                sums[k] += acc[k]
            self._frames += used
            self._t += used / rate
            pos += used
            if st[K.S_NEED] <= 0:
                xa = st[K.S_XA]
                xb = st[K.S_XB]
                g = xb / (xb - xa)  # the crossing lies g samples before frame `pos`
                moved = False
                if self._synced:
                    moved = self._finish(rate, g, True)
                    on_window(self)
                if moved:  # the next window must start at a crossing of the new level
                    self._synced = False
                    self._restart(0.0)
                    st[K.S_NEED] = 1
                    st[K.S_ARMED] = 0
                else:
                    self._synced = True
                    self._restart(g)
                    st[K.S_NEED] = self.cycles
            elif self._frames > limit:  # no voltage crossings: close the window anyway
                self._finish(rate, 0.0, False)
                on_window(self)
                self._synced = False
                self._restart(0.0)
                st[K.S_NEED] = 1
        if not contiguous and not self._synced and self._frames > 1:
            self._finish(rate, 0.0, False)
            on_window(self)
            self._restart(0.0)
        self.frames_total += nframes

    def gap(self):
        """The next frames do not follow the previous ones (the sampling paused): drop the
        window in progress and wait for the next zero crossing."""
        self._synced = False
        self._restart(0.0)
        self.st[K.S_NEED] = 1
        self.st[K.S_ARMED] = 0

    def _restart(self, g):
        sums = self.sums
        for k in range(len(sums)):
            sums[k] = 0
        self._frames = 0
        self._t = 0.0
        self._g0 = g

    def _finish(self, rate, g1, crossed):
        """Compute the window's results; True when the crossing level moved (by 2 counts
        or more: the DC level of the first window, or a drift)."""
        n = self._frames
        if n < 2:
            return False
        s = self.sums
        mv = s[K.A_SV] / n
        v_counts = math.sqrt(max(s[K.A_SVV] / n - mv * mv, 0.0))
        vrms = v_counts * self.v_gain
        st = self.st
        # the next windows cross at the DC level just measured, with a hysteresis of a
        # third of the RMS (a quarter of a sine's peak): harmonics and noise around the
        # zero crossing cannot re-arm the trigger
        old = st[K.S_THR]
        st[K.S_THR] = K.THR_BIAS + (int(mv + 0.5) if mv >= 0 else -int(0.5 - mv))
        st[K.S_HYST] = max(self.hysteresis, int(v_counts / 3))
        moved = abs(st[K.S_THR] - old) >= 2
        seconds = self._t + (self._g0 - g1) / rate
        self.window_s = seconds
        freq = self.cycles / seconds if crossed and seconds > 0 else 0.0
        self.freq = freq
        self.v_missing = not crossed or vrms < self.v_min
        sin_d = math.sin(2 * math.pi * freq / rate) if freq > 0 else 0.0
        for c in range(self.nch):
            a = K.A_CH + 4 * c
            mi = s[a] / n
            gain = self.v_gain * self.i_gain[c]
            irms = math.sqrt(max(s[a + 1] / n - mi * mi, 0.0)) * self.i_gain[c]
            p = (s[a + 2] / n - mv * mi) * gain
            qf = s[a + 3] / n / (2 * sin_d) * gain if sin_d > 0 else 0.0
            co = self.cos[c]
            si = self.sin[c]
            p, qf = p * co - qf * si, qf * co + p * si
            va = vrms * irms
            if p > va:
                p = va
            elif p < -va:
                p = -va
            q = math.sqrt(max(va * va - p * p, 0.0))
            if qf < 0:
                q = -q
            r = self.ch[c]
            r[R_V] = vrms
            r[R_I] = irms
            r[R_P] = p
            r[R_S] = va
            r[R_Q] = q
            r[R_PF] = p / va if va > 0 else 1.0
        self.windows += 1
        return moved
