# Reads a Chint DDSU666 single-phase meter on a UART (Modbus RTU master), for sites that
# already have meters: its values become channel 1 of the sub-meter.
#
# Registers (function 03, IEEE-754 float32, high word first), as read by OpenEMS'
# io.openems.edge.meter.chint.ddsu666 (U, I, P at 0x2000.., frequency at 0x200E, energy at
# 0x4000) and Tasmota's DDSU666 template (Q 0x2006, PF 0x200A, export energy 0x400A):
#   0x2000 U V      0x2002 I A      0x2004 P kW     0x2006 Q kvar   0x2008 S kVA
#   0x200A PF       0x200E f Hz     0x4000 import energy kWh        0x400A export kWh
# The block 0x2000-0x200F is read in one request (OpenEMS reads 0x2000-0x200D and
# 0x200E-0x2011), the two energies one by one. Non-blocking: one request in flight,
# answered within timeout_ms or counted as an error.
import time
from struct import unpack_from

from submeter import modbus

REQUESTS = ((0x2000, 16), (0x4000, 2), (0x400A, 2))


class Ddsu666:
    def __init__(self, uart, unit=1, interval_ms=1000, timeout_ms=500, log=None):
        self.uart = uart
        self.unit = unit
        self.interval_ms = interval_ms
        self.timeout_ms = timeout_ms
        self.log = log or (lambda *a: None)
        self.buf = bytearray(40)
        self.n = 0
        self.step = -1  # request in flight, -1 when idle
        self.sent_ms = 0
        self.next_ms = time.ticks_ms()
        self.values = [0.0] * 9  # V, A, W, var, VA, PF, Hz, import kWh, export kWh
        self.readings = 0
        self.errors = 0
        self.online = False
        self._new = [0.0] * 9

    def poll(self):
        """Advance the polling; True when a complete new set of values just arrived."""
        now_ms = time.ticks_ms()
        ticks_diff = time.ticks_diff
        if self.step < 0:
            if ticks_diff(now_ms, self.next_ms) < 0:
                return False
            self.next_ms = time.ticks_add(now_ms, self.interval_ms)
            self._send(0, now_ms)
            return False
        data = self.uart.read()
        if data:
            m = min(len(data), len(self.buf) - self.n)
            self.buf[self.n:self.n + m] = data[:m]
            self.n += m
        first, count = REQUESTS[self.step]
        try:
            payload = modbus.read_response(self.buf, self.n, self.unit, 3, count)
        except ValueError as exc:
            return self._fail("%s" % exc)
        if payload is None:
            if ticks_diff(now_ms, self.sent_ms) > self.timeout_ms:
                return self._fail("timeout")
            return False
        new = self._new
        if self.step == 0:
            for k, off in enumerate((0, 4, 8, 12, 16, 20, 28)):
                new[k] = unpack_from(">f", payload, off)[0]
        else:
            new[6 + self.step] = unpack_from(">f", payload, 0)[0]
        if self.step + 1 < len(REQUESTS):
            self._send(self.step + 1, now_ms)
            return False
        self.step = -1
        self.values, self._new = new, self.values
        self.readings += 1
        self.online = True
        return True

    def _send(self, step, now_ms):
        self.step = step
        self.n = 0
        first, count = REQUESTS[step]
        self.uart.read()  # drop stale bytes
        self.uart.write(modbus.read_request(self.unit, 3, first, count))
        self.sent_ms = now_ms

    def _fail(self, why):
        self.errors += 1
        if self.online or self.errors == 1:
            self.log("ddsu666: %s" % why)
        self.online = False
        self.step = -1
        return False
