"""A virtual RS-485 line between pseudo-terminals, with the wire's timing.

The gateway — or ``mbpoll`` — opens ``gateway_port``; the simulated devices open the
``device_ports`` (one per protocol server on the line: a multi-drop bus, where every
device hears what the gateway sends, and the gateway hears every device). Bytes are
relayed in order and delivered no earlier than they would arrive over a real line at
``baud``: a 125-register response (255 bytes) takes about 290 ms at 9600 baud 8N1, so
frame count costs what it costs on a real bus.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import termios
import time
import tty
from collections import deque


class VirtualSerialLine:
    """Pty pairs joined by a byte relay: one for the gateway, ``drops`` for devices. Use
    as ``async with`` or start()/close()."""

    def __init__(self, *, baud: int = 9600, bits_per_char: int = 10,
                 time_scale: float = 1.0, drops: int = 1) -> None:
        if baud <= 0:
            raise ValueError("baud must be > 0")
        if drops < 1:
            raise ValueError("a line needs at least one device port")
        self.char_time_s = bits_per_char / baud * time_scale
        self.drops = drops
        self._fds: list[int] = []
        self._gateway_pty = -1
        self._masters: list[int] = []
        self.gateway_port = ""
        self.device_ports: list[str] = []
        self._queues: dict[int, deque[tuple[float, bytes]]] = {}
        self._line_free_at: dict[int, float] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._wakeups: dict[int, asyncio.Event] = {}
        self.bytes_relayed = 0

    @property
    def device_port(self) -> str:
        """The first device port (a line with one protocol server has only this one)."""
        return self.device_ports[0]

    async def start(self) -> VirtualSerialLine:
        pairs = [os.openpty() for _ in range(1 + self.drops)]
        for pair in pairs:
            for fd in pair:
                tty.setraw(fd, termios.TCSANOW)
                os.set_blocking(fd, False)
                self._fds.append(fd)
        gateway_master = pairs[0][0]
        self._gateway_pty = pairs[0][1]
        device_masters = [master for master, _ in pairs[1:]]
        self._masters = [gateway_master, *device_masters]
        self.gateway_port = os.ttyname(pairs[0][1])
        self.device_ports = [os.ttyname(slave) for _, slave in pairs[1:]]
        loop = asyncio.get_running_loop()
        for target in self._masters:
            self._queues[target] = deque()
            self._line_free_at[target] = 0.0
            self._wakeups[target] = asyncio.Event()
            self._tasks.append(asyncio.create_task(self._deliver(target),
                                                   name=f"serial-line-{target}"))
        loop.add_reader(gateway_master, self._on_readable, gateway_master, device_masters)
        for master in device_masters:
            loop.add_reader(master, self._on_readable, master, [gateway_master])
        return self

    def _on_readable(self, source: int, targets: list[int]) -> None:
        try:
            data = os.read(source, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # the other side closed its end; keep the line up for reopening
            return
        if not data:
            return
        if source == self._masters[0]:
            self._forget_speed()
        now = time.monotonic()
        for target in targets:  # one transmission: every listener hears it at once
            start = max(now, self._line_free_at[target])
            done = start + len(data) * self.char_time_s
            self._line_free_at[target] = done
            self._queues[target].append((done, data))
            self._wakeups[target].set()

    def _forget_speed(self) -> None:
        """Set the gateway's pty to 50 baud once its client has talked. A pty ignores the
        speed and drops PARENB, and Linux refuses (EINVAL) a configuration whose only
        change is a parity bit the pty cannot keep: without this, a client opening the
        port a second time at 8E1, or pyserial applying a new timeout (it reconfigures the
        whole port), would fail. With it, every configuration changes the speed too."""
        with contextlib.suppress(OSError, termios.error):
            attributes = termios.tcgetattr(self._gateway_pty)
            if attributes[4] != termios.B50 or attributes[5] != termios.B50:
                attributes[4] = attributes[5] = termios.B50
                termios.tcsetattr(self._gateway_pty, termios.TCSANOW, attributes)

    async def _deliver(self, target: int) -> None:
        queue, wakeup = self._queues[target], self._wakeups[target]
        while True:
            while not queue:
                wakeup.clear()
                await wakeup.wait()
            due, data = queue[0]
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            queue.popleft()
            view = memoryview(data)
            while view:
                try:
                    written = os.write(target, view)
                    view = view[written:]
                    self.bytes_relayed += written
                except BlockingIOError:
                    await asyncio.sleep(0.001)
                except OSError:
                    break

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        for fd in self._masters:
            loop.remove_reader(fd)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for fd in self._fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds = []
        self._masters = []

    async def __aenter__(self) -> VirtualSerialLine:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


class SerialServerBridge:
    """A serial device server in transparent mode: a TCP port whose bytes go onto a
    :class:`VirtualSerialLine` as the gateway side, and back. One client at a time, as
    most such servers do by default (a new connection replaces the old one)."""

    def __init__(self, line: VirtualSerialLine, host: str, port: int) -> None:
        self.line = line
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._done: asyncio.Event = asyncio.Event()
        self._done.set()

    async def start(self) -> SerialServerBridge:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._writer is not None:
            self._writer.close()  # the previous client's loop ends on its closed stream
            await self._done.wait()
        self._writer = writer
        self._done.clear()
        fd = os.open(self.line.gateway_port, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        tty.setraw(fd, termios.TCSANOW)
        loop = asyncio.get_running_loop()

        def readable() -> None:
            with contextlib.suppress(BlockingIOError, InterruptedError, OSError):
                data = os.read(fd, 4096)
                if data and not writer.is_closing():
                    writer.write(data)

        loop.add_reader(fd, readable)
        try:
            while data := await reader.read(4096):
                view = memoryview(data)
                while view:
                    try:
                        view = view[os.write(fd, view):]
                    except BlockingIOError:
                        await asyncio.sleep(0.001)
        except OSError:
            pass
        finally:
            loop.remove_reader(fd)
            os.close(fd)
            writer.close()
            if self._writer is writer:
                self._writer = None
            self._done.set()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2.0):
                    await self._done.wait()
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2.0):
                    await self._server.wait_closed()
            self._server = None
