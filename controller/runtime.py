"""The gateway runtime: one supervised scheduler task per line, one reading bus.

``Gateway.run(stop)`` runs every line (and any extra services) in one
``asyncio.TaskGroup`` with named tasks. A task that fails is logged and restarted with
exponential backoff by :func:`supervise`; only cancellation ends it. When ``stop`` is set
(SIGINT/SIGTERM in the CLI), every task is cancelled, connections are closed, and ``run``
returns — no "task exception was never retrieved".
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

from controller.bus import ReadingBus
from controller.lines import line_for
from controller.scheduler import DeviceHealth, LineScheduler, WriteResult
from drivers.devices import Write
from drivers.points import Value
from drivers.site import DeviceSpec, LineKind, SiteSpec

log = logging.getLogger("pedf.runtime")

Service = Callable[[], Awaitable[None]]


async def supervise(name: str, service: Service, *, backoff_s: float = 1.0,
                    backoff_max_s: float = 60.0, reset_after_s: float = 60.0) -> None:
    """Run ``service`` forever: restart it after a failure, waiting 1, 2, 4 … s, back to
    ``backoff_s`` after a run longer than ``reset_after_s``; the log line says the wait
    that follows. Returns when it returns normally; cancellation propagates."""
    delay = backoff_s
    while True:
        started = time.monotonic()
        try:
            await service()
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            if time.monotonic() - started > reset_after_s:  # a long run: start afresh
                delay = backoff_s
            log.exception("task %s failed; restarting in %.3g s", name, delay)
        await asyncio.sleep(delay)
        delay = min(delay * 2, backoff_max_s)


async def _cancel_all(tasks: Sequence[asyncio.Task[None]]) -> None:
    """Cancel ``tasks`` and wait for them, cancelling again any that lives on: Python
    3.11's ``asyncio.wait_for`` (used inside libraries) can swallow a cancellation."""
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=1.0)
        if pending:
            log.warning("%d task(s) ignored cancellation; cancelling again", len(pending))


def with_serial_ports(site: SiteSpec, ports: Mapping[str, str]) -> SiteSpec:
    """The site with serial ports renamed (e.g. to the simulator's pseudo-terminals)."""
    lines = {name: dataclasses.replace(line, serial_port=ports[line.serial_port])
             if line.kind is LineKind.SERIAL and line.serial_port in ports else line
             for name, line in site.lines.items()}
    devices = {name: dataclasses.replace(device, line=lines[device.line.name])
               for name, device in site.devices.items()}
    return dataclasses.replace(site, lines=lines, devices=devices)


@dataclass
class Gateway:
    """Every line of a site, its reading bus, and the write path."""

    site: SiteSpec
    bus: ReadingBus = field(default_factory=ReadingBus)
    wall_clock: Callable[[], float] = time.time
    lines: dict[str, LineScheduler] = field(default_factory=dict)
    _by_device: dict[str, LineScheduler] = field(default_factory=dict)

    def __post_init__(self) -> None:
        members: dict[str, list[DeviceSpec]] = {}
        for device in self.site.devices.values():
            members.setdefault(device.line.name, []).append(device)
        start = time.monotonic()  # one phase origin for every line (scheduler.PHASE_SLOTS)
        for name, devices in members.items():
            line = line_for(devices[0].line, connect_delay_s=max(
                d.pacing.connect_delay_s for d in devices))
            scheduler = LineScheduler.for_devices(line, devices, self.bus, self.wall_clock,
                                                  start=start)
            self.lines[name] = scheduler
            for device in devices:
                self._by_device[device.name] = scheduler

    async def run(self, stop: asyncio.Event, services: Sequence[tuple[str, Service]] = ()
                  ) -> None:
        """Run until ``stop`` is set. ``services`` are extra supervised tasks. On stop the
        services end first, while the lines still run, so the control loop can hand back
        what does not revert by itself; then the lines close."""
        try:
            async with asyncio.TaskGroup() as group:
                lines = [group.create_task(supervise(f"line {scheduler.name}", scheduler.run),
                                           name=f"line {scheduler.name}")
                         for scheduler in self.lines.values()]
                others = [group.create_task(supervise(name, service), name=name)
                          for name, service in services]
                await stop.wait()
                await _cancel_all(others)
                await _cancel_all(lines)
        finally:
            for scheduler in self.lines.values():
                await scheduler.line.close()

    # -- writes -------------------------------------------------------------------------

    def scheduler_of(self, device: str) -> LineScheduler:
        try:
            return self._by_device[device]
        except KeyError:
            raise KeyError(f"no device named {device!r}") from None

    async def write(self, device: str, point: str, value: Value, *,
                    timeout_s: float = 10.0) -> WriteResult:
        """Write ``value`` (engineering units) to ``point`` of ``device`` and verify it."""
        try:
            future = self.scheduler_of(device).write(device, point, value)
        except KeyError as exc:
            return WriteResult(device, point, value, False, str(exc.args[0]))
        return await _await_result(future, device, point, value, timeout_s)

    async def execute(self, device: str, writes: Sequence[Write], *,
                      timeout_s: float = 10.0) -> list[WriteResult]:
        """Execute writes (from :mod:`drivers.devices` setters and recipes) in order;
        stops at the first failure of a write that is not optional (later writes are
        reported as not attempted)."""
        scheduler = self.scheduler_of(device)
        results: list[WriteResult] = []
        stopped = False
        for write in writes:
            if stopped:
                results.append(WriteResult(device, write.point, write.value, False,
                                           "not attempted: an earlier write failed"))
                continue
            future = scheduler.submit(device, write)
            result = await _await_result(future, device, write.point, write.value, timeout_s)
            results.append(result)
            stopped = not result.ok and not write.optional
        return results

    def capability(self, device: str, name: str) -> float | None:
        """The latest good numeric value behind a device's capability, else None."""
        spec = self.site.devices.get(device)
        point = None if spec is None else spec.device_map.capabilities.get(name)
        return None if point is None else self.bus.latest.value(device, point)

    def health(self) -> dict[str, DeviceHealth]:
        return {device.spec.name: device.health for scheduler in self.lines.values()
                for device in scheduler.devices}


async def _await_result(future: asyncio.Future[WriteResult], device: str, point: str,
                        value: Value, timeout_s: float) -> WriteResult:
    try:
        async with asyncio.timeout(timeout_s):
            return await asyncio.shield(future)
    except TimeoutError:
        return WriteResult(device, point, value, False, f"no result within {timeout_s:g} s")
