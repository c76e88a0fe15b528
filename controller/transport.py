"""Modbus links: one TCP connection per endpoint, one serial line per RS-485 bus.

A link executes one request at a time (the endpoint's scheduler never overlaps them) and
returns a checked :class:`~drivers.frames.Response` or raises a :class:`LinkError`:

* :class:`LinkTimeoutError` — no complete answer within ``timeout_s``;
* :class:`LinkDownError` — cannot connect, or the peer closed / reset the connection;
* :class:`BadFrameError` — an answer arrived but is malformed or answers something else.

Every wait has a timeout. TCP: ``TCP_NODELAY`` and keepalive are set; frames are matched
by transaction id, and late answers to timed-out requests are dropped as stale. A stream
that desynchronises (bad header) is closed and reopened. RTU: before each request the
line must have been silent for 3.5 characters plus the device's turnaround; after a
timeout or bad frame every byte is discarded until the line stays silent for a guard time
as long as the request timeout, so a late answer can never be taken for the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from dataclasses import dataclass, field

from drivers.frames import (
    FrameError,
    Request,
    Response,
    RtuReceiver,
    TcpReceiver,
    encode_rtu,
    encode_tcp,
    parse_pdu,
)
from drivers.site import RtuEndpoint, TcpEndpoint

log = logging.getLogger("pedf.transport")

__all__ = ["BadFrameError", "LinkDownError", "LinkError", "LinkStats", "LinkTimeoutError",
           "RtuLink", "TcpLink"]


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


# -- TCP ------------------------------------------------------------------------------


@dataclass
class TcpLink:
    """A Modbus TCP connection shared by every unit behind one host:port."""

    endpoint: TcpEndpoint
    connect_timeout_s: float = 3.0
    connect_delay_s: float = 0.0  # wait after connecting before the first request
    keepalive_s: int = 10
    stats: LinkStats = field(default_factory=LinkStats)
    _reader: asyncio.StreamReader | None = None
    _writer: asyncio.StreamWriter | None = None
    _receiver: TcpReceiver = field(default_factory=TcpReceiver)
    _transaction: int = 0
    _silent_timeouts: int = 0

    @property
    def connected(self) -> bool:
        return self._writer is not None and not self._writer.is_closing()

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._reader is not None and self._writer is not None and self.connected:
            return self._reader, self._writer
        await self.close()
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                reader, writer = await asyncio.open_connection(self.endpoint.host,
                                                               self.endpoint.port)
        except (OSError, TimeoutError) as exc:
            raise LinkDownError(f"{self.endpoint}: cannot connect: {exc or 'timeout'}") from None
        sock = writer.get_extra_info("socket")
        if sock is not None:
            _tune_socket(sock, self.keepalive_s)
        self._reader, self._writer = reader, writer
        self._receiver.clear()
        self._silent_timeouts = 0
        self.stats.connects += 1
        log.info("connected to %s", self.endpoint)
        if self.connect_delay_s > 0:
            await asyncio.sleep(self.connect_delay_s)
        return reader, writer

    async def execute(self, request: Request, timeout_s: float) -> Response:
        reader, writer = await self._connect()
        self._transaction = (self._transaction + 1) & 0xFFFF
        transaction = self._transaction
        self.stats.requests += 1
        try:
            writer.write(encode_tcp(transaction, request))
            async with asyncio.timeout(timeout_s):
                await writer.drain()
        except (OSError, TimeoutError) as exc:
            await self._drop(f"send failed: {exc or 'timeout'}")
            raise LinkDownError(f"{self.endpoint}: send failed") from None
        deadline = time.monotonic() + timeout_s
        received_any = False
        while True:
            try:
                frame = self._receiver.next_frame()
            except FrameError as exc:
                self.stats.bad_frames += 1
                await self._drop(f"stream out of sync: {exc}")
                raise BadFrameError(f"{self.endpoint}: {exc}") from None
            if frame is not None:
                received_any = True
                frame_transaction, unit, pdu = frame
                if frame_transaction != transaction:
                    self.stats.stale_frames += 1  # a late answer to an earlier request
                    continue
                try:
                    response = parse_pdu(request, unit, pdu)
                except FrameError as exc:
                    self.stats.bad_frames += 1
                    raise BadFrameError(f"{self.endpoint} unit {request.unit}: {exc}") from None
                self._silent_timeouts = 0
                return response
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                async with asyncio.timeout(remaining):
                    data = await reader.read(4096)
            except TimeoutError:
                break
            except OSError as exc:
                await self._drop(f"receive failed: {exc}")
                raise LinkDownError(f"{self.endpoint}: {exc}") from None
            if not data:
                await self._drop("closed by peer")
                raise LinkDownError(f"{self.endpoint}: connection closed by the device")
            try:
                self._receiver.feed(data)
            except FrameError as exc:
                self.stats.bad_frames += 1
                await self._drop(str(exc))
                raise BadFrameError(f"{self.endpoint}: {exc}") from None
        self.stats.timeouts += 1
        self._silent_timeouts = 0 if received_any else self._silent_timeouts + 1
        if self._silent_timeouts >= 3:  # nothing at all for three requests: half-open?
            await self._drop("three silent timeouts in a row")
        raise LinkTimeoutError(f"{self.endpoint} unit {request.unit}: no answer in {timeout_s:g} s")

    async def _drop(self, reason: str) -> None:
        if self._writer is not None:
            log.info("closing %s: %s", self.endpoint, reason)
            self.stats.disconnects += 1
        await self.close()

    async def close(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        self._receiver.clear()
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await writer.wait_closed()


def _tune_socket(sock: socket.socket, keepalive_s: int) -> None:
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        if hasattr(socket, "TCP_KEEPIDLE"):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, keepalive_s)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, max(1, keepalive_s // 3))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3)


# -- RTU ------------------------------------------------------------------------------


@dataclass
class RtuLink:
    """A serial RS-485 line shared by every unit on it (this gateway is the master)."""

    endpoint: RtuEndpoint
    stats: LinkStats = field(default_factory=LinkStats)
    _fd: int | None = None
    _serial: object | None = None
    _buffer: bytearray = field(default_factory=bytearray)
    _data_event: asyncio.Event = field(default_factory=asyncio.Event)
    _last_activity: float = 0.0  # monotonic time of the last byte seen or sent
    _guard_s: float = 0.0  # silence required before the next request (after trouble)

    def _open(self) -> int:
        if self._fd is not None:
            return self._fd
        import serial  # pyserial

        parity = {"N": serial.PARITY_NONE, "E": serial.PARITY_EVEN, "O": serial.PARITY_ODD}
        try:
            port = serial.Serial(self.endpoint.serial_port, baudrate=self.endpoint.baud,
                                 bytesize=self.endpoint.bytesize,
                                 parity=parity[self.endpoint.parity],
                                 stopbits=self.endpoint.stop_bits, timeout=0,
                                 write_timeout=0, exclusive=True)
        except (OSError, ValueError, serial.SerialException) as exc:
            raise LinkDownError(f"{self.endpoint}: cannot open: {exc}") from None
        self._serial = port
        self._fd = port.fileno()
        os.set_blocking(self._fd, False)
        asyncio.get_running_loop().add_reader(self._fd, self._on_readable)
        self.stats.connects += 1
        self._last_activity = time.monotonic()
        log.info("opened %s", self.endpoint)
        return self._fd

    def _on_readable(self) -> None:
        if self._fd is None:
            return
        try:
            data = os.read(self._fd, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            log.warning("%s: read failed: %s", self.endpoint, exc)
            self._close_now()
            return
        if data:
            self._buffer += data
            self._last_activity = time.monotonic()
            self._data_event.set()

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

    async def execute(self, request: Request, timeout_s: float, *,
                      turnaround_s: float = 0.0) -> Response:
        fd = self._open()
        await self._wait_for_silence(max(self.endpoint.silence_s + turnaround_s, self._guard_s))
        self._guard_s = 0.0
        frame = encode_rtu(request)
        self.stats.requests += 1
        try:
            written = os.write(fd, frame)
        except OSError as exc:
            self._close_now()
            raise LinkDownError(f"{self.endpoint}: write failed: {exc}") from None
        if written != len(frame):
            self._close_now()
            raise LinkDownError(f"{self.endpoint}: short write")
        send_time = len(frame) * self.endpoint.char_time_s
        self._last_activity = time.monotonic() + send_time
        receiver = RtuReceiver(request)
        deadline = time.monotonic() + send_time + timeout_s
        while True:
            if self._buffer:
                data = bytes(self._buffer)
                self._buffer.clear()
                try:
                    response = receiver.feed(data)
                except FrameError as exc:
                    self.stats.bad_frames += 1
                    self._guard_s = max(timeout_s, 5 * self.endpoint.silence_s)
                    raise BadFrameError(f"{self.endpoint} unit {request.unit}: {exc}") from None
                if response is not None:
                    return response
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._data_event.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._data_event.wait()
            if self._fd is None:
                raise LinkDownError(f"{self.endpoint}: line closed")
        self.stats.timeouts += 1
        self._guard_s = timeout_s
        raise LinkTimeoutError(f"{self.endpoint} unit {request.unit}: no answer in {timeout_s:g} s")

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
