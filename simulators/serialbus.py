"""A virtual RS-485 line between two pseudo-terminals, with the wire's timing.

The simulated devices open one end (``device_port``), the gateway — or ``mbpoll`` — the
other (``gateway_port``). Bytes are relayed in order and delivered no earlier than they
would arrive over a real line at ``baud``: a 125-register response (255 bytes) takes
about 290 ms at 9600 baud 8N1, so frame count costs what it costs on a real bus.
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
    """Two pty pairs joined by a byte relay. Use as ``async with`` or start()/close()."""

    def __init__(self, *, baud: int = 9600, bits_per_char: int = 10,
                 time_scale: float = 1.0) -> None:
        if baud <= 0:
            raise ValueError("baud must be > 0")
        self.char_time_s = bits_per_char / baud * time_scale
        self._fds: list[int] = []
        self._masters: tuple[int, int] | None = None
        self.gateway_port = ""
        self.device_port = ""
        self._queues: dict[int, deque[tuple[float, bytes]]] = {}
        self._line_free_at: dict[int, float] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._wakeups: dict[int, asyncio.Event] = {}
        self.bytes_relayed = 0

    async def start(self) -> VirtualSerialLine:
        gateway_master, gateway_slave = os.openpty()
        device_master, device_slave = os.openpty()
        for fd in (gateway_master, gateway_slave, device_master, device_slave):
            tty.setraw(fd, termios.TCSANOW)
            os.set_blocking(fd, False)
        self._fds = [gateway_master, gateway_slave, device_master, device_slave]
        self._masters = (gateway_master, device_master)
        self.gateway_port = os.ttyname(gateway_slave)
        self.device_port = os.ttyname(device_slave)
        loop = asyncio.get_running_loop()
        for source, target in ((gateway_master, device_master), (device_master, gateway_master)):
            self._queues[target] = deque()
            self._line_free_at[target] = 0.0
            self._wakeups[target] = asyncio.Event()
            loop.add_reader(source, self._on_readable, source, target)
            self._tasks.append(asyncio.create_task(self._deliver(target),
                                                   name=f"serial-line-{target}"))
        return self

    def _on_readable(self, source: int, target: int) -> None:
        try:
            data = os.read(source, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # the other side closed its end; keep the line up for reopening
            return
        if not data:
            return
        now = time.monotonic()
        start = max(now, self._line_free_at[target])
        done = start + len(data) * self.char_time_s
        self._line_free_at[target] = done
        self._queues[target].append((done, data))
        self._wakeups[target].set()

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
        if self._masters is not None:
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
        self._masters = None

    async def __aenter__(self) -> VirtualSerialLine:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
