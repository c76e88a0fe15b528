"""Lines: byte transports that own timing and exclusivity, whatever protocol runs on them.

A line runs one :class:`~drivers.protocol.Exchange` at a time (its scheduler never
overlaps them): it sends the exchange's bytes and feeds it what arrives until the
exchange has its answer, or raises a :class:`LinkError`:

* :class:`LinkTimeoutError` — no complete answer within ``timeout_s``;
* :class:`LinkDownError` — cannot connect or open, or the peer closed the connection;
* :class:`BadFrameError` — bytes arrived but are malformed or answer something else.

Three kinds (:class:`~drivers.site.LineKind`):

* :class:`TcpLine` for a native TCP connection (Modbus TCP, DL/T 645 over TCP): bytes are
  kept across exchanges, so a late answer to a timed-out request is recognised (by its
  transaction id) and skipped; a protocol without one (DL/T 645) has the connection
  closed after a timeout instead, so its late answer never arrives; a stream that loses
  its framing is closed and reopened; three silent timeouts in a row also reopen it (a
  half-open connection);
* :class:`SerialLine` for an RS-485 port; and :class:`TcpLine` to a serial device server
  in transparent mode (``spec.serial`` set): before each request the line must have been
  silent for 3.5 characters plus the device's turnaround, and whatever arrived is
  discarded; after a timeout or a bad frame the line must stay silent for a guard time
  as long as the request timeout, so a late answer is never taken for the next one.

Every wait has a timeout. ``TCP_NODELAY`` and keepalive are set on TCP connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import termios
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass

from controller.wakeup import Wakeup
from drivers.protocol import Exchange, FrameError, StreamDesyncError
from drivers.site import LineKind, LineSpec

log = logging.getLogger("pedf.lines")

__all__ = ["BadFrameError", "Line", "LinkDownError", "LinkError", "LinkStats",
           "LinkTimeoutError", "SerialLine", "TcpLine", "line_for"]


class LinkError(Exception):
    """A request did not get a usable answer."""


class LinkTimeoutError(LinkError):
    pass


class LinkDownError(LinkError):
    pass


class BadFrameError(LinkError):
    pass


@dataclass
class LinkStats:
    requests: int = 0
    timeouts: int = 0
    bad_frames: int = 0
    stale_frames: int = 0
    connects: int = 0
    disconnects: int = 0
    discarded_bytes: int = 0


class Line(ABC):
    """What every line shares: the receive buffer, the exchange loop, the timing."""

    def __init__(self, spec: LineSpec) -> None:
        self.spec = spec
        self.stats = LinkStats()
        self._buffer = bytearray()
        self._data = Wakeup()  # woken when bytes arrive or the connection goes
        self._last_activity = 0.0  # monotonic time of the last byte seen or sent
        self._guard_s = 0.0  # silence required before the next request (after trouble)
        self._transaction = 0
        self._silent_timeouts = 0

    def __str__(self) -> str:
        return str(self.spec)

    @property
    @abstractmethod
    def connected(self) -> bool:
        """Whether the port is open / the connection up."""

    @abstractmethod
    async def _open(self) -> None:
        """Open the port or connect if needed. Raises :class:`LinkDownError`."""

    @abstractmethod
    def _send(self, frame: bytes) -> None:
        """Hand ``frame`` to the transport. Raises :class:`LinkDownError`."""

    @abstractmethod
    async def close(self) -> None:
        """Close the port or connection (reopened by the next exchange)."""

    def _received(self, data: bytes) -> None:
        """Transport callback: bytes arrived."""
        self._buffer += data
        self._last_activity = time.monotonic()
        self._data.wake()

    async def _drop(self, reason: str) -> None:
        if self.connected:
            log.info("closing %s: %s", self, reason)
            self.stats.disconnects += 1
        await self.close()
        self._buffer.clear()

    async def _wait_for_silence(self, silence_s: float) -> None:
        """Discard bytes until the line has been quiet for ``silence_s``."""
        while True:
            quiet = time.monotonic() - self._last_activity
            if quiet >= silence_s:
                break
            await asyncio.sleep(silence_s - quiet)
        if self._buffer:
            self.stats.discarded_bytes += len(self._buffer)
            self._buffer.clear()

    async def exchange(self, exchange: Exchange, timeout_s: float, *,
                       turnaround_s: float = 0.0) -> None:
        """Send ``exchange``'s request and feed it bytes until its answer is complete
        (then ``exchange.answer`` holds it). Raises :class:`LinkError`."""
        await self._open()
        serial = self.spec.serial
        if serial is not None:
            await self._wait_for_silence(max(serial.silence_s + turnaround_s, self._guard_s))
            self._guard_s = 0.0
        self._transaction = (self._transaction + 1) & 0xFFFF
        frame = exchange.encode(self._transaction)
        self.stats.requests += 1
        self._send(frame)
        send_time = 0.0 if serial is None else len(frame) * serial.char_time_s
        if serial is not None:
            self._last_activity = time.monotonic() + send_time
        if not exchange.expects_answer:
            await asyncio.sleep(send_time)
            return
        stale_before = exchange.stale_frames
        try:
            await self._collect(exchange, time.monotonic() + send_time + timeout_s, timeout_s)
        finally:
            self.stats.stale_frames += exchange.stale_frames - stale_before

    async def _collect(self, exchange: Exchange, deadline: float, timeout_s: float) -> None:
        received_any = False
        while True:
            if self._buffer:
                received_any = True
                try:
                    if exchange.receive(self._buffer):
                        self._silent_timeouts = 0
                        return
                except StreamDesyncError as exc:
                    self.stats.bad_frames += 1
                    await self._drop(f"stream out of sync: {exc}")
                    raise BadFrameError(f"{self}: {exc}") from None
                except FrameError as exc:
                    self.stats.bad_frames += 1
                    self._trouble(timeout_s)
                    raise BadFrameError(f"{self} {exchange.describe()}: {exc}") from None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            await self._data.wait(remaining)
            if not self.connected:
                raise LinkDownError(f"{self}: connection closed by the device")
        self.stats.timeouts += 1
        self._trouble(timeout_s)
        self._silent_timeouts = 0 if received_any else self._silent_timeouts + 1
        if self.spec.kind is not LineKind.SERIAL and self._silent_timeouts >= 3:
            await self._drop("three silent timeouts in a row")  # half-open connection?
        elif self.spec.serial is None and not exchange.correlated:
            await self._drop("timeout: a late answer could not be told from the next one")
        raise LinkTimeoutError(f"{self} {exchange.describe()}: no answer in {timeout_s:g} s")

    def _trouble(self, timeout_s: float) -> None:
        """After a timeout or a bad frame, a serial line stays quiet for a guard time,
        counted from now: a device that said nothing yet may still be answering."""
        serial = self.spec.serial
        if serial is not None:
            self._guard_s = max(timeout_s, 5 * serial.silence_s)
            self._last_activity = max(self._last_activity, time.monotonic())


# -- TCP ------------------------------------------------------------------------------


class _TcpProtocol(asyncio.Protocol):
    def __init__(self, line: TcpLine) -> None:
        self.line = line

    def data_received(self, data: bytes) -> None:
        self.line._received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.line._lost(self)


class TcpLine(Line):
    """A TCP connection: to a Modbus TCP / DL/T 645 device or gateway, or to a serial
    device server in transparent mode (``spec.serial`` set)."""

    def __init__(self, spec: LineSpec, *, connect_delay_s: float = 0.0,
                 connect_timeout_s: float = 3.0, keepalive_s: int = 10) -> None:
        super().__init__(spec)
        self.connect_delay_s = connect_delay_s
        self.connect_timeout_s = connect_timeout_s
        self.keepalive_s = keepalive_s
        self._transport: asyncio.Transport | None = None
        self._protocol: _TcpProtocol | None = None

    @property
    def connected(self) -> bool:
        return self._transport is not None and not self._transport.is_closing()

    async def _open(self) -> None:
        if self.connected:
            return
        await self.close()
        self._buffer.clear()
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                transport, protocol = await loop.create_connection(
                    lambda: _TcpProtocol(self), self.spec.host, self.spec.port)
        except (OSError, TimeoutError) as exc:
            raise LinkDownError(f"{self}: cannot connect: {exc or 'timeout'}") from None
        sock = transport.get_extra_info("socket")
        if sock is not None:
            _tune_socket(sock, self.keepalive_s)
        self._transport, self._protocol = transport, protocol
        self._silent_timeouts = 0
        self._last_activity = time.monotonic()
        self.stats.connects += 1
        log.info("connected to %s", self)
        if self.connect_delay_s > 0:
            await asyncio.sleep(self.connect_delay_s)
            if not self.connected:
                raise LinkDownError(f"{self}: closed by the device right after connecting")

    def _send(self, frame: bytes) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            raise LinkDownError(f"{self}: not connected")
        transport.write(frame)

    def _lost(self, protocol: _TcpProtocol) -> None:
        if protocol is self._protocol:
            self._transport = None
            self._protocol = None
            self._data.wake()  # an exchange waiting for bytes learns the connection went

    async def close(self) -> None:
        transport, self._transport, self._protocol = self._transport, None, None
        if transport is not None:
            transport.close()


def _tune_socket(sock: socket.socket, keepalive_s: int) -> None:
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        if hasattr(socket, "TCP_KEEPIDLE"):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, keepalive_s)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, max(1, keepalive_s // 3))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3)


# -- serial ---------------------------------------------------------------------------


class SerialLine(Line):
    """An RS-485 port of the gateway (pyserial), this gateway being the master."""

    def __init__(self, spec: LineSpec) -> None:
        super().__init__(spec)
        self._fd: int | None = None
        self._serial: object | None = None

    @property
    def connected(self) -> bool:
        return self._fd is not None

    async def _open(self) -> None:
        if self._fd is not None:
            return
        import serial  # pyserial

        settings = self.spec.serial
        assert settings is not None
        parity = {"N": serial.PARITY_NONE, "E": serial.PARITY_EVEN, "O": serial.PARITY_ODD}
        try:
            port = serial.Serial(self.spec.serial_port, baudrate=settings.baud,
                                 bytesize=settings.bytesize, parity=parity[settings.parity],
                                 stopbits=settings.stop_bits, timeout=0, write_timeout=0,
                                 exclusive=True)
        except (OSError, ValueError, termios.error, serial.SerialException) as exc:
            raise LinkDownError(f"{self}: cannot open: {exc}") from None
        self._serial = port
        self._fd = port.fileno()
        os.set_blocking(self._fd, False)
        asyncio.get_running_loop().add_reader(self._fd, self._on_readable)
        self.stats.connects += 1
        self._last_activity = time.monotonic()
        log.info("opened %s", self)

    def _on_readable(self) -> None:
        if self._fd is None:
            return
        try:
            data = os.read(self._fd, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            log.warning("%s: read failed: %s", self, exc)
            self._close_now()
            self._data.wake()
            return
        if data:
            self._received(data)

    def _send(self, frame: bytes) -> None:
        if self._fd is None:
            raise LinkDownError(f"{self}: line closed")
        try:
            written = os.write(self._fd, frame)
        except OSError as exc:
            self._close_now()
            raise LinkDownError(f"{self}: write failed: {exc}") from None
        if written != len(frame):
            self._close_now()
            raise LinkDownError(f"{self}: short write")

    def _close_now(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._fd)
            self.stats.disconnects += 1
        if self._serial is not None:
            with contextlib.suppress(Exception):
                self._serial.close()  # type: ignore[attr-defined]
        self._fd = None
        self._serial = None
        self._buffer.clear()

    async def close(self) -> None:
        self._close_now()


def line_for(spec: LineSpec, *, connect_delay_s: float = 0.0) -> Line:
    """The line object for ``spec``."""
    if spec.kind is LineKind.SERIAL:
        return SerialLine(spec)
    return TcpLine(spec, connect_delay_s=connect_delay_s)
