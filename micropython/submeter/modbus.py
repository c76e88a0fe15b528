# Modbus, sans I/O: request PDUs -> response PDUs against a register image, Modbus TCP
# (MBAP) and RTU (address + PDU + CRC) framing, and the two master-side helpers the
# DDSU666 reader needs. Bytes in, bytes out; the sockets and the UART live in netserve.py.
# Imports nothing but the register image, so host tests run it on CPython as well.
import micropython
from micropython import const

from submeter.image import ILLEGAL_ADDRESS, ILLEGAL_FUNCTION, ILLEGAL_VALUE

_READ_HOLDING = const(3)
_READ_INPUT = const(4)
_WRITE_SINGLE = const(6)
_WRITE_MULTIPLE = const(16)
GATEWAY_NO_RESPONSE = const(0x0B)
MAX_PDU = const(253)


@micropython.viper
def crc16(data: ptr8, n: int) -> int:
    """Modbus CRC-16 (poly 0xA001, init 0xFFFF) of data[:n]; the wire order is lo, hi.
    Viper: a 255-byte response is 2040 shift-and-xor steps, bytecode would spend
    milliseconds of the ESP32's time on them."""
    crc = 0xFFFF
    k = 0
    while k < n:
        crc ^= int(data[k])
        b = 0
        while b < 8:
            if crc & 1:
                crc = (crc >> 1) ^ 0xA001
            else:
                crc = crc >> 1
            b += 1
        k += 1
    return crc


def _exception(out, o, fc, code):
    out[o] = fc | 0x80
    out[o + 1] = code
    return 2


def handle_pdu(image, req, r, n, out, o):
    """Serve the request PDU req[r:r+n] into out[o:]; returns the response length."""
    if n < 1:
        return 0
    fc = req[r]
    if fc == _READ_HOLDING or fc == _READ_INPUT:
        if n != 5:
            return _exception(out, o, fc, ILLEGAL_VALUE)
        first = req[r + 1] << 8 | req[r + 2]
        count = req[r + 3] << 8 | req[r + 4]
        if not 1 <= count <= 125:
            return _exception(out, o, fc, ILLEGAL_VALUE)
        holding = fc == _READ_HOLDING
        if not image.readable(holding, first, count):
            return _exception(out, o, fc, ILLEGAL_ADDRESS)
        table = image.table(holding)
        out[o] = fc
        out[o + 1] = 2 * count
        out[o + 2:o + 2 + 2 * count] = table[2 * first:2 * (first + count)]
        return 2 + 2 * count
    if fc == _WRITE_SINGLE:
        if n != 5:
            return _exception(out, o, fc, ILLEGAL_VALUE)
        first = req[r + 1] << 8 | req[r + 2]
        err = image.write(first, req, r + 3, 1)
        if err:
            return _exception(out, o, fc, err)
        out[o:o + 5] = req[r:r + 5]
        return 5
    if fc == _WRITE_MULTIPLE:
        if n < 6:
            return _exception(out, o, fc, ILLEGAL_VALUE)
        first = req[r + 1] << 8 | req[r + 2]
        count = req[r + 3] << 8 | req[r + 4]
        if not 1 <= count <= 123 or req[r + 5] != 2 * count or n != 6 + 2 * count:
            return _exception(out, o, fc, ILLEGAL_VALUE)
        err = image.write(first, req, r + 6, count)
        if err:
            return _exception(out, o, fc, err)
        out[o:o + 5] = req[r:r + 5]
        return 5
    return _exception(out, o, fc, ILLEGAL_FUNCTION)


# -- Modbus TCP -------------------------------------------------------------------------


def tcp_frame_length(buf, n):
    """Length of the first MBAP frame in buf[:n]: >0 complete, 0 need more, -1 invalid."""
    if n < 7:
        return 0
    if buf[2] or buf[3]:  # protocol id must be 0
        return -1
    length = buf[4] << 8 | buf[5]
    if length < 2 or length > MAX_PDU + 1:
        return -1
    return 6 + length if n >= 6 + length else 0


def tcp_respond(image, units, req, n, out):
    """Serve the MBAP frame req[:n] into out; returns the response length (0: none).
    ``units``: the unit ids answered; others get exception 0x0B like a TCP gateway's."""
    unit = req[6]
    if unit in units:
        m = handle_pdu(image, req, 7, n - 7, out, 7)
    else:
        m = _exception(out, 7, req[7], GATEWAY_NO_RESPONSE)
    if not m:
        return 0
    out[0:2] = req[0:2]
    out[2] = 0
    out[3] = 0
    out[4] = (m + 1) >> 8
    out[5] = (m + 1) & 0xFF
    out[6] = unit
    return 7 + m


# -- Modbus RTU -------------------------------------------------------------------------


def _request_length(buf, k, n):
    """Length of the RTU request starting at buf[k] (n bytes there): >0, 0 need more,
    -1 unknown function (length only known from the silence after it)."""
    if n < 2:
        return 0
    fc = buf[k + 1]
    if 1 <= fc <= 6:
        return 8
    if fc == 15 or fc == 16:
        return 9 + buf[k + 6] if n >= 7 else 0
    return -1


class RtuSlave:
    """RTU slave framing over a byte stream with no reliable inter-frame timing.

    Feed it what the UART delivered with ``feed(data, quiet)``: ``quiet`` says no byte
    arrived since the previous call (the line went silent). It hunts for frames addressed
    to ``unit`` (or broadcast 0) by length and CRC, skipping other devices' traffic and
    noise, and returns the response to send (bytes) or None.
    """

    def __init__(self, image, unit):
        self.image = image
        self.unit = unit
        self.buf = bytearray(260)
        self.n = 0
        self.out = bytearray(260)

    def feed(self, data, quiet):
        buf = self.buf
        if data:
            m = len(data)
            if self.n + m > len(buf):
                self.n = 0  # overrun: nothing in here is a frame
                m = min(m, len(buf))
            buf[self.n:self.n + m] = data[:m]
            self.n += m
        while self.n >= 4:
            length = _request_length(buf, 0, self.n)
            if length == 0:
                break
            if length < 0:
                if not quiet:
                    break
                length = self.n  # unknown function: the whole burst is the frame
            if length > self.n:
                break
            crc = crc16(buf, length - 2)  # type: ignore[arg-type]
            if crc == (buf[length - 2] | buf[length - 1] << 8):
                response = self._serve(length)
                self._drop(length)
                if response is not None:
                    return response
            else:
                self._drop(1)
        if quiet and self.n:
            self.n = 0  # an incomplete frame followed by silence is noise
        return None

    def _drop(self, k):
        buf = self.buf
        buf[0:self.n - k] = buf[k:self.n]
        self.n -= k

    def _serve(self, length):
        unit = self.buf[0]
        if unit != self.unit and unit != 0:
            return None
        out = self.out
        m = handle_pdu(self.image, self.buf, 1, length - 3, out, 1)
        if unit == 0 or not m:  # broadcast: act, never answer
            return None
        out[0] = unit
        crc = crc16(out, m + 1)  # type: ignore[arg-type]
        out[m + 1] = crc & 0xFF
        out[m + 2] = crc >> 8
        return bytes(out[:m + 3])


# -- master side (the DDSU666 reader) ---------------------------------------------------


def read_request(unit, fc, first, count):
    """An RTU read request frame."""
    frame = bytearray((unit, fc, first >> 8, first & 0xFF, count >> 8, count & 0xFF, 0, 0))
    crc = crc16(frame, 6)  # type: ignore[arg-type]
    frame[6] = crc & 0xFF
    frame[7] = crc >> 8
    return frame


def read_response(buf, n, unit, fc, count):
    """The register bytes of a complete, valid RTU read response in buf[:n]; None while
    incomplete; raises ValueError on an exception response or a corrupt frame."""
    if n < 5:
        return None
    if buf[0] != unit or buf[1] & 0x7F != fc:
        raise ValueError("unexpected frame")
    if buf[1] & 0x80:
        if crc16(buf, 3) != (buf[3] | buf[4] << 8):  # type: ignore[arg-type]
            raise ValueError("bad CRC")
        raise ValueError("exception %d" % buf[2])
    size = 5 + 2 * count
    if n < size:
        return None
    crc = crc16(buf, size - 2)  # type: ignore[arg-type]
    if buf[2] != 2 * count or crc != (buf[size - 2] | buf[size - 1] << 8):
        raise ValueError("bad frame")
    return bytes(buf[3:3 + 2 * count])
