"""DL/T 645-2007 frames and values, sans-I/O: requests to bytes, bytes to checked replies.

Follows DL/T 645-2007 《多功能电能表通信协议》 (multi-function watt-hour meter communication
protocol). Clause numbers are those of the 2007 text:

* Clause 5 数据链路层 (data link layer) — the frame
  ``68H A0..A5 68H C L DATA CS 16H``. The address is 12 BCD digits sent least significant
  byte first (A0 = the last two digits printed on the label); AAH bytes in the high
  positions are wildcards (缩位寻址: the whole ``AAAAAAAAAAAA`` reads the address of the one
  meter on a point-to-point line); ``999999999999`` is the broadcast address (time sync,
  freeze), which no meter answers. The control code C: D7 direction (1 = reply from the
  meter), D6 abnormal reply (1 = error reply, DATA is the error word ERR), D5 follow-up
  frames exist, D4..D0 function code. L is the DATA length (the standard limits reads to
  200 and writes to 50 bytes; this module only enforces the byte limit of 255). Every
  DATA byte is sent plus 33H (mod 256) and taken minus 33H on receipt; CS is the sum mod
  256 of every byte from the first 68H through the last DATA byte. Before a frame the
  master sends four FEH wake-up bytes; every multi-byte item goes least significant byte
  first. Frames here always hold the *plain* DATA (offset removed).
* Clause 6 数据标识 — a data identifier is DI3 DI2 DI1 DI0 as printed (``02-01-01-00`` =
  phase A voltage), sent DI0 first. Here a DI is the int ``DI3<<24 | DI2<<16 | DI1<<8 | DI0``.
* Clause 7 应用层 (application layer) — 7.1 read (11H; replies 91H, B1H with follow-ups,
  D1H error), 7.2 read follow-up (12H, DI + frame sequence SEQ; the reply carries SEQ
  last), 7.3 write (14H: DI, password PA P0 P1 P2, operator code C0..C3, value), 7.4 read
  address (13H to AAAAAAAAAAAA, L = 0; the reply carries the real address), 7.5 write
  address (15H), 7.6 broadcast time sync (08H to 999999999999, DATA ``ssmmhhDDMMYY``,
  never answered), 7.7 freeze (16H), 7.8 change baud rate (17H), 7.9 change password
  (18H), 7.10 maximum-demand reset (19H), 7.11 meter reset (1AH), 7.12 event reset (1BH).
* Appendix A 数据编码 — values are packed BCD, least significant byte first; numbers that
  can be negative (current, power, power factor, combined energy …) carry the sign in the
  most significant bit of the most significant byte (1 = negative) and the magnitude in
  the remaining BCD digits, so ``XXX.XXX`` spans -799.999..799.999. Dates and times are
  one BCD byte per field, written most significant field first (``YYMMDDhhmm``) and sent
  the other way round (mm first).
* Appendix C 错误信息字 ERR — one byte of error bits, see :class:`ErrorCode`.
* Relay control 1CH (跳合闸、报警、保电) is *not* part of DL/T 645-2007: it comes from the grid
  companies' extensions (State Grid smart-meter specifications, China Southern Grid
  Q/CSG 1209006-2015 "关于 DL/T 645-2007 … 的扩展协议"). DATA is PA P0 P1 P2, C0..C3, N1 =
  command (:class:`RelayCommand`), N2 = 00H (reserved), N3..N8 = valid-until time
  ``ssmmhhDDMMYY``; the meter acknowledges with 9CH (L = 0) or refuses with DCH + ERR.
  This is the plain-text form (password levels 02/03/04, depending on the meter); meters
  with an ESAM security module want level 96H/98H and ciphertext, which is out of scope.

Common data formats (appendix A), also in :data:`FORMATS`:

=================  ==============  =====  ======  =============================
quantity           format          bytes  signed  unit
=================  ==============  =====  ======  =============================
energy             XXXXXX.XX       4      no      kWh, kvarh
voltage            XXX.X           2      no      V
current            XXX.XXX         3      yes     A
power              XX.XXXX         3      yes     kW, kvar, kVA
power factor       X.XXX           2      yes     —
frequency          XX.XX           2      no      Hz
maximum demand     XX.XXXX         3      no      kW (followed by its time)
demand time        YYMMDDhhmm      5      —       local time
date               YYMMDDWW        4      —       WW = weekday, 0 = Sunday
time               hhmmss          3      —       local time
address            NNNNNNNNNNNN    6      —       12 digits
=================  ==============  =====  ======  =============================

A maximum-demand item is 8 bytes: the demand value then its time; decode it with
``decode_values((FORMATS["demand"], FORMATS["demand_time"]), data)``. Status words
(``XXXX`` bit fields in appendix C) are not BCD: read them as
``int.from_bytes(data, "little")``.

Failure behaviour: everything that parses bytes from the wire (:class:`FrameReceiver`,
:func:`check_reply`, :func:`decode_value`, :func:`parse_read`, :func:`parse_write`)
raises :class:`Dlt645FrameError` with the reason, and nothing else; a meter's error reply
raises :class:`Dlt645DeviceError`. Builders raise ``ValueError`` for arguments that do not
fit (:class:`Dlt645FrameError`, itself a ``ValueError``, for addresses and frame sizes).
The module does no I/O, keeps no global state and logs nothing.
"""

from __future__ import annotations

import datetime
import enum
import functools
import math
import re
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from types import MappingProxyType
from typing import Final

from drivers.errors import FrameError

__all__ = [
    "BROADCAST_ADDRESS",
    "FORMATS",
    "WILDCARD_ADDRESS",
    "DataFormat",
    "Dlt645DeviceError",
    "Dlt645FrameError",
    "ErrorCode",
    "Frame",
    "FrameReceiver",
    "Function",
    "ReadReply",
    "RelayCommand",
    "WriteRequest",
    "ack_reply",
    "address_reply",
    "check_reply",
    "decode_value",
    "decode_values",
    "describe_error",
    "di_text",
    "encode_frame",
    "encode_value",
    "encode_values",
    "error_reply",
    "expects_reply",
    "parse_address",
    "parse_di",
    "parse_format",
    "parse_read",
    "parse_write",
    "read_address_request",
    "read_follow_request",
    "read_reply",
    "read_request",
    "relay_request",
    "time_sync_request",
    "write_request",
]

BROADCAST_ADDRESS: Final = "999999999999"
"""Broadcast address (time sync, freeze): every meter acts, none answers."""
WILDCARD_ADDRESS: Final = "AAAAAAAAAAAA"
"""Whole-wildcard address: read (or write) the address of the single meter on a line."""

_START: Final = 0x68
_END: Final = 0x16
_WAKE_UP: Final = 0xFE
_OFFSET: Final = 0x33
_MAX_DATA: Final = 255
_OVERHEAD: Final = 12  # 68 A0..A5 68 C L … CS 16
_REPLY_BIT: Final = 0x80
_ERROR_BIT: Final = 0x40
_MORE_BIT: Final = 0x20
_FUNCTION_MASK: Final = 0x1F

_ADD_OFFSET: Final = bytes((i + _OFFSET) & 0xFF for i in range(256))
_REMOVE_OFFSET: Final = bytes((i - _OFFSET) & 0xFF for i in range(256))


# --------------------------------------------------------------------------- errors


class Dlt645FrameError(FrameError):
    """A frame is malformed or does not answer its request."""


class ErrorCode(enum.IntFlag):
    """Bits of the error word ERR in an abnormal reply (appendix C, 错误信息字).

    ========  ====  ==================================  =================
    bit       mask  reason                              standard
    ========  ====  ==================================  =================
    0         01H   other error                         其他错误
    1         02H   no requested data                   无请求数据
    2         04H   password error or unauthorised      密码错/未授权
    3         08H   baud rate cannot be changed         通信速率不能更改
    4         10H   too many yearly time zones          年时区数超
    5         20H   too many daily time periods         日时段数超
    6         40H   too many tariffs                    费率数超
    7         80H   reserved                            保留
    ========  ====  ==================================  =================
    """

    OTHER = 0x01
    NO_DATA = 0x02
    UNAUTHORISED = 0x04
    BAUD_UNCHANGEABLE = 0x08
    TOO_MANY_ZONES = 0x10
    TOO_MANY_PERIODS = 0x20
    TOO_MANY_TARIFFS = 0x40


_ERROR_REASONS: Final[Mapping[ErrorCode, str]] = MappingProxyType({
    ErrorCode.OTHER: "other error",
    ErrorCode.NO_DATA: "no requested data",
    ErrorCode.UNAUTHORISED: "password error or unauthorised",
    ErrorCode.BAUD_UNCHANGEABLE: "baud rate cannot be changed",
    ErrorCode.TOO_MANY_ZONES: "too many yearly time zones",
    ErrorCode.TOO_MANY_PERIODS: "too many daily time periods",
    ErrorCode.TOO_MANY_TARIFFS: "too many tariffs",
})


def describe_error(code: int) -> str:
    """The named reasons of an error word, e.g. ``"no requested data"``; several set bits
    are joined with ``", "``; bit 7 is ``"reserved bit 7"``; 0 is ``"no error bits set"``."""
    reasons = [text for bit, text in _ERROR_REASONS.items() if code & bit]
    if code & 0x80:
        reasons.append("reserved bit 7")
    return ", ".join(reasons) if reasons else "no error bits set"


class Dlt645DeviceError(Exception):
    """The meter answered with an error reply (C has bit 40H set).

    ``code`` is the error byte (ERR, see :class:`ErrorCode`), ``function`` the request's
    function code, ``reason`` the named reasons of the set bits."""

    code: int
    function: int
    reason: str

    def __init__(self, code: int, function: int) -> None:
        self.code = code
        self.function = function
        self.reason = describe_error(code)
        super().__init__(
            f"meter refused function {function:02X}H: {self.reason} (ERR {code:02X}H)")

    def __reduce__(self) -> tuple[type[Dlt645DeviceError], tuple[int, int]]:
        return type(self), (self.code, self.function)


# --------------------------------------------------------------------------- enums


class Function(enum.IntEnum):
    """Function codes, bits D4..D0 of the control code (clause 7)."""

    BROADCAST_TIME = 0x08
    READ = 0x11
    READ_FOLLOW = 0x12
    READ_ADDRESS = 0x13
    WRITE = 0x14
    WRITE_ADDRESS = 0x15
    FREEZE = 0x16
    CHANGE_BAUD = 0x17
    CHANGE_PASSWORD = 0x18
    DEMAND_RESET = 0x19
    METER_RESET = 0x1A
    EVENT_RESET = 0x1B
    RELAY = 0x1C


class RelayCommand(enum.IntEnum):
    """N1 of the relay-control request 1CH (grid-company extension, see module doc)."""

    TRIP = 0x1A  # 拉闸 / 跳闸
    CLOSE_ALLOWED = 0x1B  # 合闸允许: the customer closes by hand
    CLOSE_DIRECT = 0x1C  # 直接合闸 (2013 specifications)
    ALARM = 0x2A  # 报警
    ALARM_RELEASE = 0x2B  # 报警解除
    KEEP_POWER = 0x3A  # 保电: never trip until released
    KEEP_POWER_RELEASE = 0x3B  # 保电解除


# --------------------------------------------------------------------------- addresses

_ADDRESS_FORM: Final = re.compile(r"(?:AA)*[0-9]*")


def parse_address(text: str) -> str:
    """Validate a meter address as printed on its label and return it in upper case.

    An address is 12 characters: 12 decimal digits, most significant first, or a
    wildcard form whose leading (most significant) bytes are ``AA`` — ``"AAAA12345678"``
    or the whole ``"AAAAAAAAAAAA"`` (clause 5, 缩位寻址). Raises :class:`Dlt645FrameError`
    naming what was expected."""
    if not isinstance(text, str):
        raise Dlt645FrameError(f"address must be a str of 12 characters, got {text!r}")
    address = text.upper()
    if len(address) != 12 or not _ADDRESS_FORM.fullmatch(address):
        raise Dlt645FrameError(
            f"address {text!r} is not 12 decimal digits, optionally led by whole AA "
            f"wildcard bytes (e.g. '123456789012', 'AAAA56789012', {WILDCARD_ADDRESS!r})")
    return address


def _concrete_address(text: str) -> str:
    """A meter's own address: 12 digits, no wildcard. Raises Dlt645FrameError."""
    address = parse_address(text)
    if not address.isdigit():
        raise Dlt645FrameError(f"address {text!r} is a wildcard, a meter's own is expected")
    return address


def _address_bytes(address: str) -> bytes:
    return bytes.fromhex(parse_address(address))[::-1]


def _address_from_wire(raw: bytes) -> str:
    try:
        return parse_address(raw[::-1].hex().upper())
    except Dlt645FrameError:
        raise Dlt645FrameError(f"address bytes {raw.hex(' ').upper()} are not BCD") from None


def _answers_address(request_address: str, reply_address: str) -> bool:
    """Whether a reply from ``reply_address`` can answer a request to ``request_address``:
    the same address, or the real address matching the digits a wildcard kept."""
    if not reply_address.isdigit():
        return False
    kept = request_address.lstrip("A")
    return reply_address.endswith(kept) if kept else True


# --------------------------------------------------------------------------- frames


@dataclass(frozen=True, slots=True)
class Frame:
    """One DL/T 645 frame.

    ``address`` is the 12-character address as printed (most significant digit first),
    ``control`` the whole C byte, ``data`` the DATA field after removing the 33H offset.
    Not validated on construction: :func:`encode_frame` checks it."""

    address: str
    control: int
    data: bytes = b""

    @property
    def function(self) -> int:
        """Function code, C & 1FH."""
        return self.control & _FUNCTION_MASK

    @property
    def is_reply(self) -> bool:
        """D7: sent by the meter."""
        return bool(self.control & _REPLY_BIT)

    @property
    def is_error(self) -> bool:
        """D6: abnormal reply; DATA is the error word."""
        return bool(self.control & _ERROR_BIT)

    @property
    def has_more(self) -> bool:
        """D5: follow-up frames exist (read them with :func:`read_follow_request`)."""
        return bool(self.control & _MORE_BIT)


def _checksum(data: bytes | bytearray) -> int:
    return sum(data) & 0xFF


def encode_frame(frame: Frame, *, preamble: int = 4) -> bytes:
    """The bytes on the wire: ``preamble`` × FEH, 68H, A0..A5, 68H, C, L, DATA + 33H, CS,
    16H.

    Raises :class:`Dlt645FrameError` for a bad address, a control byte outside 0..255 or
    DATA over 255 bytes; ``ValueError`` for a preamble outside 0..4."""
    if not 0 <= preamble <= 4:
        raise ValueError(f"preamble of {preamble} wake-up bytes, expected 0..4")
    if not 0 <= frame.control <= 0xFF:
        raise Dlt645FrameError(f"control code {frame.control} does not fit a byte")
    data = bytes(frame.data)
    if len(data) > _MAX_DATA:
        raise Dlt645FrameError(f"{len(data)} data bytes, at most {_MAX_DATA} fit a frame")
    body = (bytes([_START]) + _address_bytes(frame.address)
            + bytes([_START, frame.control, len(data)]) + data.translate(_ADD_OFFSET))
    return bytes([_WAKE_UP]) * preamble + body + bytes([_checksum(body), _END])


def _decode_checked(raw: bytes) -> Frame:
    """A Frame from one delimited frame whose checksum was verified."""
    return Frame(_address_from_wire(raw[1:7]), raw[8], raw[10:-2].translate(_REMOVE_OFFSET))


class FrameReceiver:
    """Reassembles frames from a byte stream (serial or TCP), in any chunking.

    ``feed()`` bytes as they arrive, then call :meth:`next_frame` until it returns None.
    FEH wake-up bytes and garbage before a plausible start (68H with 68H seven bytes
    later) are skipped. A candidate that proves bad raises :class:`Dlt645FrameError` from
    :meth:`next_frame`, in stream order, after it was discarded, so the next call goes on
    with later bytes: a frame that ends in 16H where its L says but fails its checksum
    (or has a non-BCD address) is dropped whole; a candidate without its 16H, or with L
    over ``max_data``, is dropped by its first byte only, so that a real frame inside it
    is still found. A header still waiting for its bytes is dropped as garbage as soon
    as a complete, valid frame starting within its first eight bytes is in the buffer (a
    stray 68H up to seven bytes before a real frame would otherwise hold that frame back
    until L more bytes came).

    Bounded memory: bytes are parsed as they are fed, so at most one incomplete frame
    (≤ 267 bytes) is held unparsed; garbage is dropped at once and counted in
    :attr:`discarded` (every dropped byte except FEH). At most 16 errors wait to be
    raised; later ones are only counted. Frames wait until taken."""

    MAX_PENDING_ERRORS: Final = 16

    def __init__(self, *, max_data: int = _MAX_DATA) -> None:
        """``max_data``: the largest L accepted (255 = any; 200 is the standard's read
        limit)."""
        if not 0 <= max_data <= _MAX_DATA:
            raise ValueError(f"max_data {max_data}, expected 0..{_MAX_DATA}")
        self.max_data = max_data
        self.discarded = 0
        self._buffer = bytearray()
        self._ready: deque[Frame | Dlt645FrameError] = deque()
        self._errors_waiting = 0

    @property
    def buffered(self) -> int:
        """Bytes held that are not yet a frame (at most one incomplete frame)."""
        return len(self._buffer)

    def feed(self, data: bytes) -> None:
        """Append received bytes and parse what is complete."""
        self._buffer += data
        self._parse()

    def next_frame(self) -> Frame | None:
        """The next complete, checked frame, or None while more bytes are needed.

        Raises :class:`Dlt645FrameError` for a candidate that was discarded as bad."""
        if not self._ready:
            return None
        item = self._ready.popleft()
        if isinstance(item, Dlt645FrameError):
            self._errors_waiting -= 1
            raise item
        return item

    def clear(self) -> None:
        """Forget buffered bytes and waiting frames and errors (``discarded`` stays)."""
        self._buffer.clear()
        self._ready.clear()
        self._errors_waiting = 0

    def _drop(self, count: int) -> None:
        self.discarded += count - self._buffer.count(_WAKE_UP, 0, count)
        del self._buffer[:count]

    def _reject(self, count: int, reason: str) -> None:
        self._drop(count)
        if self._errors_waiting < self.MAX_PENDING_ERRORS:
            self._ready.append(Dlt645FrameError(reason))
            self._errors_waiting += 1

    def _parse(self) -> None:
        buffer = self._buffer
        while True:
            start = buffer.find(_START)
            if start < 0:
                self._drop(len(buffer))
                return
            self._drop(start)
            if len(buffer) < 8:
                return
            if buffer[7] != _START:
                self._drop(1)
                continue
            if len(buffer) < 10:
                return
            length = buffer[9]
            if length > self.max_data:
                self._reject(1, f"data length L={length} over the limit of {self.max_data}")
                continue
            size = _OVERHEAD + length
            if len(buffer) >= size:
                self._take(bytes(buffer[:size]))
                continue
            later = self._later_frame()
            if later is None:
                return
            self._drop(later)  # an incomplete header before a whole frame was garbage

    def _later_frame(self) -> int | None:
        """Where a complete, valid frame starts inside the header of the incomplete
        candidate at 0 (positions 1..7, up to its second 68H), if one does.

        Only there: a frame that starts at or before the second 68H of a stray header is
        what such a header can hold back, and looking no further never mistakes a frame
        carried inside another frame's DATA for the real one."""
        buffer = self._buffer
        start = buffer.find(_START, 1, 8)
        while start > 0:
            if self._is_whole_frame(start):
                return start
            start = buffer.find(_START, start + 1, 8)
        return None

    def _is_whole_frame(self, start: int) -> bool:
        buffer = self._buffer
        if len(buffer) < start + _OVERHEAD or buffer[start + 7] != _START:
            return False
        end = start + _OVERHEAD + buffer[start + 9]
        return (buffer[start + 9] <= self.max_data and len(buffer) >= end
                and buffer[end - 1] == _END
                and buffer[end - 2] == _checksum(buffer[start:end - 2]))

    def _take(self, raw: bytes) -> None:
        if raw[-1] != _END:
            self._reject(1, f"no end byte 16H where L={raw[9]} puts it (found {raw[-1]:02X}H)")
            return
        if raw[-2] != _checksum(raw[:-2]):
            self._reject(len(raw), f"checksum {raw[-2]:02X}H, the bytes sum to "
                                   f"{_checksum(raw[:-2]):02X}H")
            return
        try:
            frame = _decode_checked(raw)
        except Dlt645FrameError as exc:
            self._reject(len(raw), str(exc))
            return
        del self._buffer[:len(raw)]
        self._ready.append(frame)


# --------------------------------------------------------------------------- data formats

_TEMPORAL_FORMATS: Final = ("YYMMDDhhmmss", "YYMMDDhhmm", "YYMMDDWW", "YYMMDD", "hhmmss", "hhmm")
_NUMBER_FORM: Final = re.compile(r"(X+)(?:\.(X+))?")
_DIGITS_FORM: Final = re.compile(r"N+")
_MAX_FLOAT_DIGITS: Final = 15  # below float's 15.9 significant decimal digits
_MAX_DIGITS: Final = 24  # within decimal's default 28-digit precision
_EXAMPLE_FIELDS: Final[Mapping[str, int]] = MappingProxyType(
    {"YY": 26, "MM": 12, "DD": 3, "WW": 4, "hh": 10, "mm": 15, "ss": 30})
_FORMAT_HELP: Final = (
    "expected a BCD number like 'XXXXXX.XX' or 'XXX.XXX' (an even count of X, at most "
    "one '.'), a digit string like 'NNNNNNNNNNNN' (an even count of N), or a date/time "
    "format: " + ", ".join(_TEMPORAL_FORMATS))


class _Kind(enum.Enum):
    NUMBER = "number"
    DIGITS = "digits"
    TEMPORAL = "date/time"


@functools.lru_cache(maxsize=256)
def _layout(text: str) -> tuple[int, int, _Kind]:
    """(size in bytes, decimals, kind) of a format text; ValueError if not accepted."""
    if text in _TEMPORAL_FORMATS:
        return len(text) // 2, 0, _Kind.TEMPORAL
    number = _NUMBER_FORM.fullmatch(text)
    if number:
        decimals = len(number.group(2) or "")
        digits = len(number.group(1)) + decimals
        if digits % 2 or digits > _MAX_DIGITS:
            raise ValueError(f"format {text!r}: {digits} digits; {_FORMAT_HELP}")
        if decimals and digits > _MAX_FLOAT_DIGITS:
            raise ValueError(f"format {text!r}: over {_MAX_FLOAT_DIGITS} digits with decimals "
                             "cannot be held exactly in a float")
        return digits // 2, decimals, _Kind.NUMBER
    if _DIGITS_FORM.fullmatch(text) and len(text) % 2 == 0 and len(text) <= _MAX_DIGITS:
        return len(text) // 2, 0, _Kind.DIGITS
    raise ValueError(f"format {text!r} not understood; {_FORMAT_HELP}")


@dataclass(frozen=True, slots=True)
class DataFormat:
    """A value format of appendix A.

    ``text`` as written in the standard, ``size`` bytes on the wire, ``decimals`` digits
    after the point (numbers), ``signed``: the top bit of the most significant byte is
    the sign. Build with :func:`parse_format`; direct construction is checked too
    (ValueError if the fields disagree with ``text``)."""

    text: str
    size: int
    decimals: int = 0
    signed: bool = False

    def __post_init__(self) -> None:
        size, decimals, kind = _layout(self.text)
        if (self.size, self.decimals) != (size, decimals):
            raise ValueError(f"format {self.text!r} is {size} bytes with {decimals} decimals, "
                             f"not {self.size} bytes with {self.decimals}")
        if self.signed and kind is not _Kind.NUMBER:
            raise ValueError(f"format {self.text!r} is not a number and cannot be signed")

    @property
    def _kind(self) -> _Kind:
        return _layout(self.text)[2]

    @property
    def is_number(self) -> bool:
        """A BCD number (as opposed to a digit string or a date/time)."""
        return self._kind is _Kind.NUMBER


def parse_format(text: str, *, signed: bool = False) -> DataFormat:
    """The :class:`DataFormat` of a format text of appendix A.

    Accepted: BCD numbers ``X…X[.X…X]`` (an even count of digits; at most 15 with
    decimals), digit strings ``N…N`` (even count), and the date/time formats
    ``YYMMDDhhmmss``, ``YYMMDDhhmm``, ``YYMMDDWW``, ``YYMMDD``, ``hhmmss``, ``hhmm``.
    ``signed`` only for numbers. Raises ``ValueError`` listing the accepted forms."""
    if not isinstance(text, str):
        raise ValueError(f"format must be a str; {_FORMAT_HELP}")
    size, decimals, _kind = _layout(text)
    return DataFormat(text, size, decimals, signed)


FORMATS: Final[Mapping[str, DataFormat]] = MappingProxyType({
    "energy": parse_format("XXXXXX.XX"),  # kWh, kvarh; 4 bytes
    "combined_energy": parse_format("XXXXXX.XX", signed=True),  # 组合有功/无功: can be < 0
    "voltage": parse_format("XXX.X"),  # V; 2 bytes
    "current": parse_format("XXX.XXX", signed=True),  # A; 3 bytes
    "power": parse_format("XX.XXXX", signed=True),  # kW, kvar, kVA; 3 bytes
    "power_factor": parse_format("X.XXX", signed=True),  # 2 bytes
    "frequency": parse_format("XX.XX"),  # Hz; 2 bytes
    "demand": parse_format("XX.XXXX"),  # kW; 3 bytes, then its demand_time
    "demand_time": parse_format("YYMMDDhhmm"),  # 5 bytes
    "date": parse_format("YYMMDDWW"),  # 4 bytes, weekday 0 = Sunday
    "time": parse_format("hhmmss"),  # 3 bytes
    "address": parse_format("NNNNNNNNNNNN"),  # 6 bytes
})
"""Common data formats of appendix A by quantity (see the module docstring for units)."""


def _bcd_digits(big_endian: bytes | bytearray) -> str:
    """The decimal digits of packed BCD bytes; Dlt645FrameError for a nibble over 9."""
    text = big_endian.hex()
    if not text.isdigit():
        bad = next(b for b in big_endian if b >> 4 > 9 or b & 0x0F > 9)
        raise Dlt645FrameError(f"byte {bad:02X}H is not BCD")
    return text


def _check_size(fmt: DataFormat, data: bytes) -> None:
    if len(data) != fmt.size:
        raise Dlt645FrameError(f"format {fmt.text} takes {fmt.size} bytes, got {len(data)}")


def decode_value(fmt: DataFormat, data: bytes) -> float | int | str:
    """A value from its bytes as received (least significant byte first, 33H removed).

    Numbers give a float, or an int when ``decimals == 0`` (signed formats give negative
    values for a set top bit). Date/time formats give ISO 8601 text in local meter time:
    ``"2026-12-03T10:15:30"`` (YYMMDDhhmmss), ``"2026-12-03T10:15"`` (YYMMDDhhmm),
    ``"2026-12-03"`` (YYMMDDWW, the weekday dropped unchecked, or YYMMDD), ``"10:15:30"``
    (hhmmss), ``"10:15"`` (hhmm); YY is 2000..2099; an all-zero date (meters report "never"
    so) gives ``""``. Digit strings give the digits, most significant first.

    Raises :class:`Dlt645FrameError` for a wrong length, a non-BCD nibble or an
    impossible date or time."""
    data = bytes(data)
    _check_size(fmt, data)
    kind = fmt._kind
    if kind is _Kind.NUMBER:
        return _decode_number(fmt, data)
    if kind is _Kind.DIGITS:
        return _bcd_digits(data[::-1])
    return _decode_temporal(fmt, data)


def _decode_number(fmt: DataFormat, data: bytes) -> float | int:
    big = bytearray(data[::-1])
    negative = fmt.signed and bool(big[0] & 0x80)
    if fmt.signed:
        big[0] &= 0x7F
    magnitude = int(_bcd_digits(big))
    value = -magnitude if negative else magnitude
    return value / 10**fmt.decimals if fmt.decimals else value


def _fields(fmt: DataFormat) -> tuple[str, ...]:
    return tuple(fmt.text[i:i + 2] for i in range(0, len(fmt.text), 2))


def _decode_temporal(fmt: DataFormat, data: bytes) -> str:
    values = dict(zip(_fields(fmt), (int(_bcd_digits(bytes([b]))) for b in data[::-1]),
                      strict=True))
    if "DD" in values and not any(data):
        return ""
    try:
        return _render_temporal(fmt, values)
    except ValueError as exc:
        raise Dlt645FrameError(f"{fmt.text} bytes {data.hex(' ').upper()}: {exc}") from None


def _render_temporal(fmt: DataFormat, values: Mapping[str, int]) -> str:
    """ISO 8601 text of the fields a format holds; ValueError for an impossible one."""
    parts = []
    if "DD" in values:
        parts.append(datetime.date(2000 + values["YY"], values["MM"], values["DD"]).isoformat())
    if "hh" in values:
        moment = datetime.time(values["hh"], values["mm"], values.get("ss", 0))
        parts.append(moment.isoformat("seconds" if "ss" in values else "minutes"))
    return "T".join(parts)


def encode_value(fmt: DataFormat, value: float | int | str) -> bytes:
    """The bytes of a value (least significant byte first, before the 33H offset); the
    inverse of :func:`decode_value`.

    Numbers (int or float) are rounded half up to the format's decimals; a date/time is
    the ISO text :func:`decode_value` gives (``""`` for an all-zero date); a digit string
    is its digits (or a non-negative int, zero-padded). Raises ``ValueError`` if the value
    does not fit: too many digits, negative in an unsigned format, a magnitude over the
    signed range (e.g. 799.999 for ``XXX.XXX``), a year outside 2000..2099, a text of
    another shape, or a value of the wrong type."""
    kind = fmt._kind
    if kind is _Kind.NUMBER:
        return _encode_number(fmt, value)
    if kind is _Kind.DIGITS:
        return _encode_digits(fmt, value)
    return _encode_temporal(fmt, value)


def _max_magnitude(fmt: DataFormat) -> int:
    top = 8 if fmt.signed else 10  # the sign takes the top bit of the first digit
    return int(top * 10 ** (fmt.size * 2 - 1)) - 1


def _encode_number(fmt: DataFormat, value: float | int | str) -> bytes:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"format {fmt.text} takes a number, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"format {fmt.text} cannot hold {value}")
    exact = Decimal(value) if isinstance(value, int) else Decimal(repr(value))
    scaled = int(exact.scaleb(fmt.decimals).to_integral_value(rounding=ROUND_HALF_UP))
    limit = _max_magnitude(fmt)
    if scaled < 0 and not fmt.signed:
        raise ValueError(f"{value} is negative but format {fmt.text} is unsigned")
    if abs(scaled) > limit:
        raise ValueError(f"{value} does not fit {fmt.text} (at most {limit} in its last digit)")
    big = bytearray.fromhex(f"{abs(scaled):0{fmt.size * 2}d}")
    if scaled < 0:
        big[0] |= 0x80
    return bytes(big[::-1])


def _encode_digits(fmt: DataFormat, value: float | int | str) -> bytes:
    count = fmt.size * 2
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10**count:
        value = f"{value:0{count}d}"
    if not isinstance(value, str) or len(value) != count or not value.isascii() \
            or not value.isdigit():
        raise ValueError(f"format {fmt.text} takes {count} decimal digits, got {value!r}")
    return bytes.fromhex(value)[::-1]


def _encode_temporal(fmt: DataFormat, value: float | int | str) -> bytes:
    fields = _fields(fmt)
    if not isinstance(value, str):
        raise ValueError(f"format {fmt.text} takes ISO 8601 text, got {value!r}")
    if value == "" and "DD" in fields:
        return bytes(fmt.size)
    try:
        values = _parse_temporal(fields, value)
        if _render_temporal(fmt, values) != value:
            raise ValueError("another shape")
    except ValueError:
        example = _render_temporal(fmt, {field: _EXAMPLE_FIELDS[field] for field in fields})
        raise ValueError(f"{value!r} does not fit {fmt.text}; expected text like "
                         f"{example!r}") from None
    if "WW" in fields:
        values["WW"] = datetime.date(2000 + values["YY"], values["MM"],
                                     values["DD"]).isoweekday() % 7
    return bytes.fromhex("".join(f"{values[field]:02d}" for field in fields))[::-1]


def _parse_temporal(fields: Sequence[str], text: str) -> dict[str, int]:
    """Field values from ISO text (shape checked by the caller); ValueError if unreadable
    or the year is outside 2000..2099."""
    values: dict[str, int] = {}
    if "DD" in fields:
        day = datetime.datetime.fromisoformat(text) if "hh" in fields \
            else datetime.date.fromisoformat(text)
        if not 2000 <= day.year <= 2099:
            raise ValueError(f"year {day.year} outside 2000..2099")
        values.update(YY=day.year - 2000, MM=day.month, DD=day.day)
        if isinstance(day, datetime.datetime):
            values.update(hh=day.hour, mm=day.minute, ss=day.second)
    else:
        moment = datetime.time.fromisoformat(text)
        values.update(hh=moment.hour, mm=moment.minute, ss=moment.second)
    if "ss" not in fields:
        values.pop("ss", None)
    return values


def decode_values(formats: Sequence[DataFormat], data: bytes) -> tuple[float | int | str, ...]:
    """Several values sent back to back, the first format first on the wire (e.g. a
    maximum demand: ``(FORMATS["demand"], FORMATS["demand_time"])``). Raises
    :class:`Dlt645FrameError` unless ``data`` is exactly their total size."""
    data = bytes(data)
    total = sum(fmt.size for fmt in formats)
    if len(data) != total:
        raise Dlt645FrameError(f"{len(data)} bytes for values of {total} bytes")
    offsets = [0]
    for fmt in formats:
        offsets.append(offsets[-1] + fmt.size)
    return tuple(decode_value(fmt, data[offsets[i]:offsets[i + 1]])
                 for i, fmt in enumerate(formats))


def encode_values(formats: Sequence[DataFormat], values: Sequence[float | int | str]) -> bytes:
    """The inverse of :func:`decode_values`; ValueError as :func:`encode_value`, or for a
    count of values that differs from the count of formats."""
    if len(formats) != len(values):
        raise ValueError(f"{len(values)} values for {len(formats)} formats")
    return b"".join(encode_value(fmt, value) for fmt, value in zip(formats, values, strict=True))


# --------------------------------------------------------------------------- DIs and codes


def _int_in(value: int, low: int, high: int, what: str) -> int:
    """``value`` if it is an int (not a bool) in low..high, else ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{what} {value!r} is not an int in {low:02X}H..{high:02X}H")
    return value


def _check_di(di: int) -> int:
    return _int_in(di, 0, 0xFFFFFFFF, "DI")


def di_text(di: int) -> str:
    """A DI as the standard prints it, DI3 first: ``0x02010100`` → ``"02-01-01-00"``.
    Raises ``ValueError`` for a DI outside 32 bits."""
    return "-".join(f"{b:02X}" for b in _check_di(di).to_bytes(4, "big"))


_HEX_BYTE: Final = "([0-9A-Fa-f]{2})"
_DI_FORMS: Final = (re.compile("-".join([_HEX_BYTE] * 4)),
                    re.compile(r"(?:0[xX])?([0-9A-Fa-f]{8})"))


def parse_di(text: str | int) -> int:
    """A DI from ``"02-01-01-00"``, ``"0x02010100"``, ``"02010100"`` (hex, DI3 first) or an
    int. Raises ``ValueError`` naming the accepted forms."""
    if isinstance(text, int):
        return _check_di(text)
    if isinstance(text, str):
        for form in _DI_FORMS:
            match = form.fullmatch(text.strip())
            if match:
                return int("".join(match.groups()), 16)
    raise ValueError(f"DI {text!r}: expected '02-01-01-00', '0x02010100', '02010100' or an int")


def _di_bytes(di: int) -> bytes:
    return _check_di(di).to_bytes(4, "little")


def _code_bytes(text: str, what: str) -> bytes:
    """4 bytes of an 8-hex-digit code as printed, most significant byte first."""
    if not isinstance(text, str) or not re.fullmatch(r"[0-9A-Fa-f]{8}", text):
        raise ValueError(f"{what} {text!r}: expected 8 hex digits")
    return bytes.fromhex(text)


def _password_bytes(password: str) -> bytes:
    """PA P0 P1 P2 from "PAP2P1P0" as people print it ("02123456" = level 02, 123456)."""
    printed = _code_bytes(password, "password")
    return printed[:1] + printed[:0:-1]


def _password_text(wire: bytes) -> str:
    return (wire[:1] + wire[:0:-1]).hex().upper()


def _operator_bytes(operator: str) -> bytes:
    """C0..C3 from the operator code as printed, C3 first."""
    return _code_bytes(operator, "operator code")[::-1]


def _clock_bytes(moment: datetime.datetime) -> bytes:
    """``ssmmhhDDMMYY``: YYMMDDhhmmss sent seconds first; the wall-clock fields as given."""
    if not isinstance(moment, datetime.datetime):
        raise ValueError(f"{moment!r} is not a datetime")
    if not 2000 <= moment.year <= 2099:
        raise ValueError(f"year {moment.year} outside 2000..2099")
    fields = (moment.year - 2000, moment.month, moment.day, moment.hour, moment.minute,
              moment.second)
    return bytes.fromhex("".join(f"{field:02d}" for field in fields))[::-1]


# --------------------------------------------------------------------------- master side


def _request(address: str, function: Function, data: bytes = b"") -> Frame:
    return Frame(parse_address(address), int(function), data)


def read_request(address: str, di: int) -> Frame:
    """Read one data item (11H): DATA = DI0..DI3."""
    return _request(address, Function.READ, _di_bytes(di))


def read_follow_request(address: str, di: int, seq: int) -> Frame:
    """Read follow-up frame ``seq`` of a data item (12H): DATA = DI0..DI3 SEQ."""
    return _request(address, Function.READ_FOLLOW,
                    _di_bytes(di) + bytes([_int_in(seq, 0, 0xFF, "frame sequence SEQ")]))


def read_address_request() -> Frame:
    """Read the address of the single meter on a line (13H to AAAAAAAAAAAA, L = 0)."""
    return _request(WILDCARD_ADDRESS, Function.READ_ADDRESS)


def write_request(address: str, di: int, value: bytes, *, password: str = "00000000",
                  operator: str = "00000000") -> Frame:
    """Write a data item (14H): DATA = DI0..DI3, PA P0 P1 P2, C0..C3, value.

    ``value`` is the item's bytes, e.g. from :func:`encode_value`. ``password`` is 8 hex
    digits as people write it, level first: ``"02123456"`` = level 02, password 123456
    (sent 02 56 34 12). ``operator`` is the operator code, 8 hex digits as printed (sent
    least significant byte first). Raises ``ValueError`` for a malformed argument."""
    return _request(address, Function.WRITE, _di_bytes(di) + _password_bytes(password)
                    + _operator_bytes(operator) + bytes(value))


def time_sync_request(moment: datetime.datetime) -> Frame:
    """Broadcast time sync (08H to 999999999999): DATA = ``ssmmhhDDMMYY``.

    The meter's local civil time (Beijing time): the wall-clock fields of ``moment`` are
    sent as they are, any tzinfo is ignored; convert first. No meter answers (see
    :func:`expects_reply`). Raises ``ValueError`` for a year outside 2000..2099."""
    return _request(BROADCAST_ADDRESS, Function.BROADCAST_TIME, _clock_bytes(moment))


def relay_request(address: str, command: RelayCommand, valid_until: datetime.datetime, *,
                  password: str = "02000000", operator: str = "00000000") -> Frame:
    """Relay control (1CH, grid-company extension): trip, allow closing, close, alarm,
    keep power, or release those.

    DATA = PA P0 P1 P2, C0..C3, N1 = command, N2 = 00H, N3..N8 = ``valid_until`` as
    ``ssmmhhDDMMYY`` (the meter ignores the command once its clock is past that). The
    plain-text form: meters take it with a level 02, 03 or 04 password depending on the
    model; ESAM-secured meters need ciphertext (level 96H/98H), which this does not
    make. Raises ``ValueError`` for an unknown command or a malformed argument."""
    return _request(address, Function.RELAY,
                    _password_bytes(password) + _operator_bytes(operator)
                    + bytes([RelayCommand(command), 0x00]) + _clock_bytes(valid_until))


@dataclass(frozen=True, slots=True)
class ReadReply:
    """A checked answer to a read: the ``di`` read, the value bytes after the DI
    (without the SEQ of a follow-up reply), and ``more``: follow-up frames exist (C bit
    5); read them with ``read_follow_request(address, di, seq=n)``, n = 1, 2, …"""

    di: int
    data: bytes
    more: bool


def expects_reply(request: Frame) -> bool:
    """False for broadcast time sync and anything sent to the broadcast address."""
    return request.function != Function.BROADCAST_TIME and request.address != BROADCAST_ADDRESS


def check_reply(request: Frame, reply: Frame) -> ReadReply | str | None:
    """Check that ``reply`` answers ``request`` and return what it says.

    Checked: the direction bit, the function code, the address (a reply to a wildcard
    address carries the meter's real address, which must keep the digits given), and the
    content of each function: the DI for reads, the SEQ for follow-up reads, the address
    for read-address (in DATA and the address field), the new address for
    write-address, the echoed rate for change-baud.

    Returns a :class:`ReadReply` for READ and READ_FOLLOW, the meter's address for
    READ_ADDRESS, None for acknowledgements (WRITE, RELAY and the others; DATA other
    than for CHANGE_BAUD is not looked at). BROADCAST_TIME and anything to the broadcast
    address has no reply: passing one raises :class:`Dlt645FrameError`.

    Raises :class:`Dlt645DeviceError` for an error reply (C bit 6) to this request, and
    :class:`Dlt645FrameError` for anything that does not answer it; ``ValueError`` if
    ``request`` is itself a reply."""
    if request.is_reply:
        raise ValueError("request is a reply frame")
    if not expects_reply(request):
        raise Dlt645FrameError(f"function {request.function:02X}H to "
                               f"{request.address} has no reply")
    if not reply.is_reply:
        raise Dlt645FrameError(f"not a reply (C = {reply.control:02X}H)")
    if reply.function != request.function:
        raise Dlt645FrameError(f"reply to function {reply.function:02X}H, "
                               f"expected {request.function:02X}H")
    if not _answers_address(request.address, reply.address):
        raise Dlt645FrameError(f"reply from {reply.address}, request to {request.address}")
    if reply.is_error:
        if not reply.data:
            raise Dlt645FrameError("error reply without its error word")
        raise Dlt645DeviceError(reply.data[0], request.function)
    if request.function in (Function.READ, Function.READ_FOLLOW):
        return _check_read(request, reply)
    if request.function == Function.READ_ADDRESS:
        return _check_address(reply)
    _check_ack(request, reply)
    return None


def _check_read(request: Frame, reply: Frame) -> ReadReply:
    follow = request.function == Function.READ_FOLLOW
    needed = 5 if follow else 4
    if len(reply.data) < needed:
        raise Dlt645FrameError(f"read reply of {len(reply.data)} bytes, at least "
                               f"{needed} expected")
    di = int.from_bytes(reply.data[:4], "little")
    if reply.data[:4] != request.data[:4]:
        raise Dlt645FrameError(f"reply for DI {di_text(di)}, requested "
                               f"{di_text(int.from_bytes(request.data[:4], 'little'))}")
    if follow and reply.data[-1:] != request.data[4:5]:
        raise Dlt645FrameError(f"follow-up reply with SEQ {reply.data[-1]}, requested "
                               f"{request.data[4] if len(request.data) > 4 else 'none'}")
    value = reply.data[4:-1] if follow else reply.data[4:]
    return ReadReply(di, bytes(value), reply.has_more)


def _check_address(reply: Frame) -> str:
    if len(reply.data) != 6:
        raise Dlt645FrameError(f"read-address reply of {len(reply.data)} bytes, 6 expected")
    address = _address_from_wire(reply.data)
    if address != reply.address:
        raise Dlt645FrameError(f"read-address reply says {address} from {reply.address}")
    return address


def _check_ack(request: Frame, reply: Frame) -> None:
    if request.function == Function.WRITE_ADDRESS and len(request.data) == 6 \
            and reply.address != _address_from_wire(request.data):
        raise Dlt645FrameError(f"write-address acknowledged by {reply.address}, "
                               f"new address {_address_from_wire(request.data)}")
    if request.function == Function.CHANGE_BAUD and reply.data != request.data:
        raise Dlt645FrameError(f"change-baud reply echoes {reply.data.hex().upper()}H, "
                               f"requested {request.data.hex().upper()}H")


# --------------------------------------------------------------------------- slave side


def _function_code(function: int) -> int:
    return _int_in(function, 0, _FUNCTION_MASK, "function code")


def _reply(address: str, control: int, data: bytes = b"") -> Frame:
    return Frame(_concrete_address(address), control, data)


def read_reply(address: str, di: int, data: bytes, *, more: bool = False,
               function: int = Function.READ, seq: int | None = None) -> Frame:
    """A meter's normal answer to a read: C = 91H (B1H with ``more``) with DATA = DI +
    ``data``; for ``function=Function.READ_FOLLOW`` C = 92H/B2H and DATA ends with
    ``seq``, which a follow-up reply must carry (and a plain read must not). Raises
    ``ValueError`` for other functions or a missing/extra SEQ, :class:`Dlt645FrameError`
    for an address that is not a meter's own."""
    if function not in (Function.READ, Function.READ_FOLLOW):
        raise ValueError(f"read reply for function {function!r}, expected 11H or 12H")
    if (function == Function.READ_FOLLOW) != (seq is not None):
        raise ValueError("a follow-up reply carries a SEQ and a read reply does not")
    tail = b"" if seq is None else bytes([_int_in(seq, 0, 0xFF, "frame sequence SEQ")])
    control = _REPLY_BIT | (_MORE_BIT if more else 0) | function
    return _reply(address, control, _di_bytes(di) + bytes(data) + tail)


def ack_reply(address: str, function: int) -> Frame:
    """A normal reply without data (write, relay, freeze, resets …): C = 80H | function."""
    return _reply(address, _REPLY_BIT | _function_code(function))


def address_reply(address: str) -> Frame:
    """The answer to read-address (93H): the meter's address in the address field and in
    DATA (A0..A5)."""
    return _reply(address, _REPLY_BIT | Function.READ_ADDRESS, _address_bytes(address))


def error_reply(address: str, function: int, code: int) -> Frame:
    """An abnormal reply: C = C0H | function, DATA = the error word ``code``
    (:class:`ErrorCode` bits, 01H..FFH)."""
    return _reply(address, _REPLY_BIT | _ERROR_BIT | _function_code(function),
                  bytes([_int_in(code, 1, 0xFF, "error word")]))


@dataclass(frozen=True, slots=True)
class WriteRequest:
    """A parsed write request: ``password`` as people print it (level first,
    ``"02123456"``), ``operator`` as printed (C3 first), ``value`` the item's bytes."""

    di: int
    password: str
    operator: str
    value: bytes


def _check_request(frame: Frame, *functions: Function) -> None:
    if frame.is_reply:
        raise Dlt645FrameError(f"a reply (C = {frame.control:02X}H) where a request belongs")
    if frame.function not in functions:
        raise Dlt645FrameError(f"function {frame.function:02X}H, expected "
                               + " or ".join(f"{f:02X}H" for f in functions))


def parse_write(frame: Frame) -> WriteRequest:
    """The parts of a write request (14H). Raises :class:`Dlt645FrameError` for another
    function, a reply, or DATA shorter than DI + password + operator code (12 bytes)."""
    _check_request(frame, Function.WRITE)
    data = bytes(frame.data)
    if len(data) < 12:
        raise Dlt645FrameError(f"write request of {len(data)} bytes, at least 12 expected")
    return WriteRequest(int.from_bytes(data[:4], "little"), _password_text(data[4:8]),
                        data[8:12][::-1].hex().upper(), data[12:])


def parse_read(frame: Frame) -> tuple[int, int | None]:
    """``(di, seq)`` of a read (11H, L = 4, seq None) or follow-up read (12H, L = 5).

    Raises :class:`Dlt645FrameError` for another function, a reply, or another length —
    including the load-record reads of 7.1 (L = 5 or 10 with block count and time),
    which this module does not support."""
    _check_request(frame, Function.READ, Function.READ_FOLLOW)
    follow = frame.function == Function.READ_FOLLOW
    expected = 5 if follow else 4
    if len(frame.data) != expected:
        raise Dlt645FrameError(f"read request of {len(frame.data)} bytes, {expected} expected")
    return int.from_bytes(frame.data[:4], "little"), frame.data[4] if follow else None
