# The HAL on the MicroPython unix port: the identical firmware runs on a PC for tests.
#
#   micropython -X heapsize=100K -m submeter.hal_unix ROOT
#
# ROOT plays the device's flash filesystem (config.json, counters, ring) and holds
# sim.json, the settings of this HAL (not of the device):
#   wave      file of interleaved u16 frames [v, i1, .., iN] (native byte order) the ADC
#             returns, looped at its end; CPython tests synthesise it
#   rate      frames per second the wave was sampled at
#   speed     device time runs this many times faster than wall time (0: unpaced)
#   max_s     stop after this many seconds of device time (0: run until killed)
#   net       whether "Wi-Fi" is up (default true)
#   uart      {"1": "/dev/pts/N", ...}: pseudo-terminals standing in for the UARTs
#   cut_save  n > 0: the n-th counter save writes half its bytes and hangs, so a test
#             can kill the interpreter in the middle of the write (a power cut)
#   stats     log heap statistics every this many windows (0: never)
#   pulse_hz  [f1, f2, ...]: the pulse inputs see this many falling edges per second of
#             device time (deterministic: edge k of input p at k / f_p s)
#
# Device time is virtual: it advances with every frame the ADC returns (frames / rate)
# and with sleep_ms, so metering, energy and demand are deterministic whatever the load
# of the machine. Network timeouts use the wall clock (time.ticks_ms) as on the device.
import json
import os
import sys
import time

_VMIN = 6  # termios c_cc indices on Linux
_VTIME = 5


class _Uart:
    """A pseudo-terminal as a UART: non-blocking read() -> bytes or None, write()."""

    def __init__(self, path):
        import termios

        f = open(path, "r+b")
        fd = f.fileno()
        termios.setraw(fd)
        attrs = termios.tcgetattr(fd)
        attrs[6][_VMIN] = 0  # read() returns what is there, at once
        attrs[6][_VTIME] = 0
        termios.tcsetattr(fd, termios.TCSANOW, attrs)
        self.f = f

    def read(self):
        return self.f.read(256) or None

    def write(self, data):
        self.f.write(data)


class Hal:
    name = "unix"

    def __init__(self, root):
        self.root = root.rstrip("/")
        raw = self.read_file("sim.json")
        sim = json.loads(raw) if raw else {}
        self.sim = sim
        self.rate = float(sim.get("rate", 2000))
        self.speed = float(sim.get("speed", 1))
        self.max_ms = int(sim.get("max_s", 0) * 1000)
        self.stats_every = sim.get("stats", 0)
        self._net = sim.get("net", True)
        self._cut = sim.get("cut_save", 0)
        self._saves = 0
        self._frames = 0  # frames returned by the ADC
        self._slept_us = 0
        self._wave = None
        self._wall0 = time.ticks_ms()
        self._wdt_ms = 0
        self._fed = 0
        self._pulse_hz = sim.get("pulse_hz", [])
        self._pulse_taken = []  # edges handed out so far, per input
        self.wdt_late = 0  # feeds that came later than the watchdog timeout

    # -- clock ----------------------------------------------------------------------

    def _now_us(self):
        return self._frames * 1000000 // int(self.rate) + self._slept_us

    def ticks_ms(self):
        return self._now_us() // 1000

    def sleep_ms(self, ms):
        self._slept_us += ms * 1000
        self._pace()

    def _pace(self):
        if self.speed <= 0:
            return
        ahead = int(self._now_us() / 1000 / self.speed) - time.ticks_diff(
            time.ticks_ms(), self._wall0)
        if ahead > 0:
            time.sleep_ms(ahead)

    def stop(self):
        return self.max_ms > 0 and self.ticks_ms() >= self.max_ms

    # -- ADC ------------------------------------------------------------------------

    def adc_start(self, v_pin, ct_pins, rate):
        """The wave file is the ADC; its own rate (sim.json) applies, not ``rate``."""
        self._wave = open(self.sim["wave"], "rb")

    def adc_read(self, buf, frames):
        """Fill buf with ``frames`` frames; returns (frames per second, contiguous)."""
        mv = memoryview(buf)
        need = len(buf) * 2
        got = 0
        while got < need:
            n = self._wave.readinto(mv[got // 2:])
            if not n:
                self._wave.seek(0)
                continue
            got += n
        self._frames += frames
        self._pace()
        return self.rate, True

    # -- pulse inputs -------------------------------------------------------------------

    def pulse_start(self, pins, debounce_ms):
        """Edges come from sim.json's pulse_hz, one rate per configured pin."""
        self._pulse_taken = [0] * len(pins)

    def pulse_take(self):
        """Edges counted since the last call, per input (a list of ints)."""
        now_us = self._now_us()
        new = []
        for p in range(len(self._pulse_taken)):
            hz = self._pulse_hz[p] if p < len(self._pulse_hz) else 0
            edges = int(now_us * hz // 1000000)
            new.append(edges - self._pulse_taken[p])
            self._pulse_taken[p] = edges
        return new

    # -- UART, network, watchdog ------------------------------------------------------

    def uart(self, uart_id, baudrate, tx, rx, de):
        return _Uart(self.sim["uart"][str(uart_id)])

    def net_start(self, ssid, password):
        pass

    def net_up(self):
        return self._net

    def wdt_start(self, timeout_s):
        self._wdt_ms = timeout_s * 1000
        self._fed = time.ticks_ms()

    def wdt_feed(self):
        now = time.ticks_ms()
        if self._wdt_ms and time.ticks_diff(now, self._fed) > self._wdt_ms:
            self.wdt_late += 1
            self.log("watchdog: fed %d ms late" % (time.ticks_diff(now, self._fed)
                                                   - self._wdt_ms))
        self._fed = now

    def time(self):
        """No RTC: device time is virtual here, wall time would not match it."""
        return None

    def log(self, message):
        print(message)

    # -- filesystem (names relative to the device's root) --------------------------------

    def _path(self, name):
        return self.root + "/" + name

    def open(self, name, mode):
        return open(self._path(name), mode)

    def read_file(self, name):
        try:
            with open(self._path(name), "rb") as f:
                return f.read()
        except OSError:
            return None

    def write_file(self, name, data):
        if name.startswith("cnt"):
            self._saves += 1
            if self._saves == self._cut:
                with open(self._path(name), "wb") as f:
                    f.write(data[:len(data) // 2])
                self.log("CUT " + name)
                while True:  # the power is gone: wait for the test to kill us
                    time.sleep(1)
        with open(self._path(name), "wb") as f:
            f.write(data)

    def append_file(self, name, data):
        with open(self._path(name), "ab") as f:
            f.write(data)

    def remove(self, name):
        try:
            os.remove(self._path(name))
        except OSError:
            pass

    def listdir(self, name):
        return os.listdir(self._path(name))

    def mkdir(self, name):
        try:
            os.mkdir(self._path(name))
        except OSError:
            pass

    def size(self, name):
        return os.stat(self._path(name))[6]


def main(argv):
    from submeter import app

    app.run(Hal(argv[1] if len(argv) > 1 else "."))


if __name__ == "__main__":
    main(sys.argv)
