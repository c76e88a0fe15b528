# The HAL on the ESP32: machine (ADC, UART, Pin, WDT, RTC), network and the flash
# filesystem (littlefs), behind the same small interface as hal_unix.py.
#
# Wiring (see micropython/README.md): the voltage reference (AC-AC adapter, divider,
# mid-rail bias) and the CT burden resistors on ADC1 pins (ADC2 cannot be used while
# Wi-Fi is on), 11 dB attenuation; RS-485 transceivers on UART1/UART2 with an optional
# driver-enable pin.
import gc
import os
import time

import machine
import micropython
import network
from micropython import const

TYPE_CHECKING = const(0)  # folded away by MicroPython's compiler; mypy reads it as true
if TYPE_CHECKING:
    from typing import Any


@micropython.native
def _sample(reads, buf, frames, period_us):
    """Fill buf with ``frames`` interleaved frames, one read per ADC (12-bit counts),
    a frame every ``period_us`` (or as fast as the ADC goes, if that is slower)."""
    j = 0
    due = time.ticks_us()
    for _ in range(frames):
        while time.ticks_diff(time.ticks_us(), due) < 0:
            pass
        due = time.ticks_add(due, period_us)
        for read in reads:
            buf[j] = read() >> 4
            j += 1


class _Uart:
    def __init__(self, uart_id, baudrate, tx, rx, de):
        self.uart = machine.UART(uart_id, baudrate=baudrate, tx=tx, rx=rx, timeout=0,
                                 rxbuf=512)
        self.de = machine.Pin(de, machine.Pin.OUT, value=0) if de >= 0 else None

    def read(self):
        return self.uart.read()

    def write(self, data):
        if self.de is None:
            self.uart.write(data)
            return
        self.de.on()
        self.uart.write(data)
        self.uart.flush()  # wait until the last stop bit left before releasing the bus
        self.de.off()


class Hal:
    name = "esp32"
    stats_every = 0

    def __init__(self):
        self._wdt = None  # type: Any
        self._wlan = None  # type: Any
        self._net_try = time.ticks_ms()
        self._reads = ()  # type: tuple
        self._period_us = 400
        self._clock_set = False

    # -- clock ----------------------------------------------------------------------

    def ticks_ms(self):
        return time.ticks_ms()

    def sleep_ms(self, ms):
        time.sleep_ms(ms)

    def stop(self):
        return False

    # -- ADC ------------------------------------------------------------------------

    def adc_start(self, v_pin, ct_pins, rate):
        self._period_us = 1000000 // rate
        adcs = []
        for pin in [v_pin] + list(ct_pins):
            adcs.append(machine.ADC(machine.Pin(pin), atten=machine.ADC.ATTN_11DB))
        self._reads = tuple(adc.read_u16 for adc in adcs)

    def adc_read(self, buf, frames):
        """Sample ``frames`` frames; returns (measured frames per second, contiguous).
        Blocks are not contiguous: the loop serves the network between them."""
        t0 = time.ticks_us()
        _sample(self._reads, buf, frames, self._period_us)
        elapsed = time.ticks_diff(time.ticks_us(), t0)
        return frames * 1000000 / max(elapsed, 1), False

    # -- pulse inputs -------------------------------------------------------------------

    def pulse_start(self, pins, debounce_ms):
        """Count falling edges on ``pins`` (pulled up: a meter's open-collector or reed
        contact closes to ground), edges closer than ``debounce_ms`` ignored. The
        interrupt handler only increments a counter (no allocation)."""
        from array import array

        self._edges = array("L", [0] * len(pins))
        self._last_edge = [time.ticks_ms()] * len(pins)  # type: list[Any]
        self._debounce = debounce_ms
        self._pins = []
        for index, number in enumerate(pins):
            pin = machine.Pin(number, machine.Pin.IN, machine.Pin.PULL_UP)
            pin.irq(trigger=machine.Pin.IRQ_FALLING, handler=self._edge_handler(index))
            self._pins.append(pin)
        self._taken = array("L", [0] * len(pins))

    def _edge_handler(self, index):
        edges, last, debounce = self._edges, self._last_edge, self._debounce

        def handler(_pin):
            now = time.ticks_ms()
            if time.ticks_diff(now, last[index]) >= debounce:
                last[index] = now
                edges[index] += 1
        return handler

    def pulse_take(self):
        """Edges counted since the last call, per input."""
        new = []
        for p in range(len(self._edges)):
            count = self._edges[p]  # one word: read atomically
            new.append((count - self._taken[p]) & 0xFFFFFFFF)
            self._taken[p] = count
        return new

    # -- UART, network, watchdog ------------------------------------------------------

    def uart(self, uart_id, baudrate, tx, rx, de):
        return _Uart(uart_id, baudrate, tx, rx, de)

    def net_start(self, ssid, password):
        wlan = network.WLAN(network.STA_IF)
        wlan.active(True)
        self._wlan = wlan
        self._ssid = ssid
        self._password = password
        self._connect()

    def _connect(self):
        self._net_try = time.ticks_ms()
        try:
            self._wlan.connect(self._ssid, self._password)  # returns at once
        except OSError as exc:
            self.log("wifi: %s" % exc)

    def net_up(self):
        wlan = self._wlan
        if wlan is None:
            return False
        if wlan.isconnected():
            if not self._clock_set:  # once per boot: the RTC from NTP (1 s UDP timeout)
                self._clock_set = True
                try:
                    import ntptime

                    ntptime.settime()
                except (ImportError, OSError) as exc:
                    self.log("ntp: %s" % exc)
            return True
        if time.ticks_diff(time.ticks_ms(), self._net_try) > 30000:
            self._connect()
        return False

    def wdt_start(self, timeout_s):
        self._wdt = machine.WDT(timeout=timeout_s * 1000)

    def wdt_feed(self):
        if self._wdt is not None:
            self._wdt.feed()

    def time(self):
        """Unix time from the RTC, or None while it has not been set."""
        if machine.RTC().datetime()[0] < 2024:
            return None
        return time.time() + (946684800 if time.gmtime(0)[0] == 2000 else 0)

    def log(self, message):
        print(message)

    # -- filesystem ---------------------------------------------------------------------

    def open(self, name, mode):
        return open("/" + name, mode)

    def read_file(self, name):
        try:
            with open("/" + name, "rb") as f:
                return f.read()
        except OSError:
            return None

    def write_file(self, name, data):
        with open("/" + name, "wb") as f:
            f.write(data)

    def append_file(self, name, data):
        with open("/" + name, "ab") as f:
            f.write(data)

    def remove(self, name):
        try:
            os.remove("/" + name)
        except OSError:
            pass

    def listdir(self, name):
        return os.listdir("/" + name)

    def mkdir(self, name):
        try:
            os.mkdir("/" + name)
        except OSError:
            pass

    def size(self, name):
        return os.stat("/" + name)[6]


def main():
    from submeter import app

    gc.collect()
    hal = Hal()
    try:
        app.run(hal)
    except Exception as exc:  # never stay down: log, then reboot into a clean state
        import sys

        sys.print_exception(exc)
        time.sleep_ms(2000)
        machine.reset()
