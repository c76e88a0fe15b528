"""Polling and writing, one scheduler task per line, whatever protocol each device speaks.

Each device's poll groups run at their intervals on monotonic time, without drift: a
group due at ``t`` is next due at ``t + interval``; when the line falls behind, missed
cycles are skipped (and counted), never bunched up. Exchanges on one line never overlap,
so Modbus RTU slaves and DL/T 645 meters can share an RS-485 bus with the same serial
settings. Writes jump the queue.

What is said on the wire is the device's protocol driver's business
(:mod:`drivers.protocol`: a read or write *operation* as a sequence of exchanges); the
scheduler owns when, how often, and what failure means. Per device:

* an exchange is retried ``retries`` times at once; if it still fails, the rest of the
  group is abandoned and its points are published with quality STALE (no answer:
  timeout, connection refused or lost) or ERROR (the device answered, but refused — a
  Modbus exception, a DL/T 645 error reply — or with a malformed frame) and value None,
  never the last good value repeated;
* the device then backs off: it is retried after 1, 2, 4 … s up to ``backoff_max_s``, so
  a dead device costs its line little and never stalls the other devices;
* the first successful poll resets the backoff.

Writes (:meth:`LineScheduler.write`, :meth:`LineScheduler.submit`) are range-checked
before they are queued, encoded by the device's driver when they run, rate-limited per
device (token bucket: ``write_burst``, then ``writes_per_s``) and verified by reading
back where the protocol allows. A failed write is reported in its :class:`WriteResult`,
never swallowed.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import zlib
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from controller.bus import ReadingBus
from controller.latency import LatencyHistogram
from controller.lines import BadFrameError, Line, LinkError, LinkTimeoutError
from controller.wakeup import Wakeup
from drivers.devices import Write
from drivers.points import PollGroup, Value, WriteRangeError
from drivers.protocol import DeviceAnswerError, Driver, Exchange, FrameError, Operation
from drivers.reading import Quality, Reading
from drivers.sessions import driver_for
from drivers.site import DeviceSpec

log = logging.getLogger("pedf.scheduler")

BACKOFF_BASE_S = 1.0

__all__ = ["DeviceHealth", "DevicePoller", "GroupSchedule", "LineScheduler", "WriteResult"]


#: Polls start in one of this many slots per second (per interval, when shorter), at
#: the same instants on every line of a gateway: each slot's devices wake the event loop
#: once, together, instead of once each. At 1 Hz, wake-ups rather than polls are most
#: of the gateway's CPU (benchmarks/bench_controller.py).
PHASE_SLOTS = 10


@dataclass
class GroupSchedule:
    group: PollGroup
    next_due: float
    polls: int = 0
    skipped: int = 0  # cycles missed because the line was busy


@dataclass
class DeviceHealth:
    """What the live view and the uplink report about a device."""

    state: str = "starting"  # ok, stale, error, starting
    polls_ok: int = 0
    polls_failed: int = 0
    consecutive_failures: int = 0
    backoff_until: float = 0.0  # monotonic
    last_ok_wall: float | None = None
    last_error: str = ""
    latency_ms: float = 0.0  # exponentially weighted mean of exchange round trips
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)  # every round trip
    writes_ok: int = 0
    writes_failed: int = 0


@dataclass
class WriteResult:
    device: str
    point: str
    value: Value
    ok: bool
    error: str = ""
    duration_ms: float = 0.0


@dataclass
class _PendingWrite:
    device: DevicePoller
    write: Write
    future: asyncio.Future[WriteResult]
    queued: float


@dataclass
class Pace:
    """When a station (a unit id, an address) was last spoken to: request pacing counts
    from there. Devices that are parts of one physical device at one unit (maps with one
    ``shared_unit``) share it, because the device paces its requests, not the maps'."""

    last_request: float = -math.inf  # monotonic, end of the last exchange


@dataclass
class DevicePoller:
    """A device's driver, schedule, health and write budget (state only; the line's
    scheduler does the I/O)."""

    spec: DeviceSpec
    driver: Driver
    groups: list[GroupSchedule]
    health: DeviceHealth = field(default_factory=DeviceHealth)
    pace: Pace = field(default_factory=Pace)
    write_tokens: float = 0.0
    write_tokens_at: float = 0.0

    @property
    def last_request(self) -> float:
        return self.pace.last_request

    @classmethod
    def create(cls, spec: DeviceSpec, driver: Driver, now: float,
               pace: Pace | None = None) -> DevicePoller:
        # A fixed slot per device spreads the polls over PHASE_SLOTS instants a second
        # (or an interval, if shorter), instead of every device asking in the same one.
        slot = zlib.crc32(spec.name.encode()) * PHASE_SLOTS // 0x1_0000_0000 / PHASE_SLOTS
        groups = [GroupSchedule(group, next_due=now + slot * min(group.interval_s, 1.0))
                  for group in spec.groups.values()]
        for schedule in groups:
            driver.read(schedule.group.points)  # plan now: a bad map fails at start-up
        return cls(spec, driver, groups, pace=pace or Pace(),
                   write_tokens=float(spec.write_burst), write_tokens_at=now)

    def next_poll(self) -> tuple[float, GroupSchedule]:
        """When this device may next be polled, and which group."""
        schedule = min(self.groups, key=lambda g: g.next_due)
        earliest = max(schedule.next_due, self.health.backoff_until,
                       self.last_request + self.spec.pacing.request_interval_s)
        return earliest, schedule

    def take_write_token(self, now: float) -> float:
        """0 if a write may go now (and takes the token), else seconds to wait."""
        rate, burst = self.spec.writes_per_s, float(self.spec.write_burst)
        self.write_tokens = min(burst, self.write_tokens + (now - self.write_tokens_at) * rate)
        self.write_tokens_at = now
        if self.write_tokens >= 1.0:
            self.write_tokens -= 1.0
            return 0.0
        return (1.0 - self.write_tokens) / rate


@dataclass
class LineScheduler:
    """Runs every exchange of one line: polls on schedule, writes on demand."""

    name: str
    line: Line
    devices: list[DevicePoller]
    bus: ReadingBus
    wall_clock: Callable[[], float] = time.time
    max_pending_writes: int = 64
    _writes: deque[_PendingWrite] = field(default_factory=deque)
    _wakeup: Wakeup = field(default_factory=Wakeup)  # woken when a write is queued
    _last_device: DevicePoller | None = None
    _by_name: dict[str, DevicePoller] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._by_name = {device.spec.name: device for device in self.devices}

    @classmethod
    def for_devices(cls, line: Line, specs: Sequence[DeviceSpec], bus: ReadingBus,
                    wall_clock: Callable[[], float] = time.time, *,
                    start: float | None = None) -> LineScheduler:
        """The scheduler of ``line`` for ``specs``, each with its protocol's driver.
        Polls are phased from ``start`` (monotonic s; default now): a gateway gives all
        its lines the same start, so that their slots coincide. Devices at one station
        (the parts of one device at one unit id) share their pacing."""
        now = time.monotonic() if start is None else start
        paces: dict[str, Pace] = {}
        return cls(str(line), line, [
            DevicePoller.create(s, driver_for(s), now, paces.setdefault(s.station, Pace()))
            for s in specs], bus, wall_clock)

    def device(self, name: str) -> DevicePoller:
        """The device ``name`` on this line; raises KeyError."""
        return self._by_name[name]

    # -- the loop -----------------------------------------------------------------------

    async def run(self) -> None:
        """Poll and write until cancelled. Never raises for device trouble."""
        try:
            while True:
                now = time.monotonic()
                pending = self._ready_write(now)
                if pending is not None:
                    await self._execute_write(pending)
                    continue
                due, device, schedule = self._next_due()
                wait = due - now
                if self._writes:
                    wait = min(wait, self._write_wait(now))
                if wait > 0:
                    await self._wakeup.wait(wait)
                    continue
                await self._poll(device, schedule)
        finally:
            for pending in self._writes:
                if not pending.future.done():
                    pending.future.set_result(self._failed(pending, "controller stopping"))
            self._writes.clear()
            await self.line.close()

    def _next_due(self) -> tuple[float, DevicePoller, GroupSchedule]:
        best: tuple[float, DevicePoller, GroupSchedule] | None = None
        for device in self.devices:
            due, schedule = device.next_poll()
            if best is None or due < best[0]:
                best = (due, device, schedule)
        assert best is not None
        return best

    # -- polling ------------------------------------------------------------------------

    async def _poll(self, device: DevicePoller, schedule: GroupSchedule) -> None:
        spec, health = device.spec, device.health
        operation = device.driver.read(schedule.group.points)
        failure = await self._run(device, operation)
        self._advance_schedule(schedule)
        wall = self.wall_clock()
        points = spec.device_map.points
        decoded = operation.values
        readings = [  # scale factors too: writes need their latest values
            Reading(spec.name, name, value, points[name].unit, wall, Quality.OK)
            for name, value in decoded.items()
        ]
        if failure is None:
            health.polls_ok += 1
            health.consecutive_failures = 0
            health.backoff_until = 0.0
            health.last_ok_wall = wall
            if health.state != "ok":
                log.info("%s: answering", spec.name)
            health.state = "ok"
        else:
            quality = Quality.ERROR if isinstance(
                failure, DeviceAnswerError | BadFrameError | FrameError) else Quality.STALE
            readings += [Reading(spec.name, name, None, points[name].unit, wall, quality)
                         for name in schedule.group.points if name not in decoded]
            self._record_failure(device, failure, quality)
        self.bus.publish(tuple(readings))

    def _advance_schedule(self, schedule: GroupSchedule) -> None:
        now = time.monotonic()
        interval = schedule.group.interval_s
        schedule.polls += 1
        schedule.next_due += interval
        if schedule.next_due <= now:  # fell behind: skip the missed cycles, keep the phase
            missed = math.floor((now - schedule.next_due) / interval) + 1
            schedule.skipped += missed
            schedule.next_due += missed * interval

    def _record_failure(self, device: DevicePoller, failure: Exception,
                        quality: Quality) -> None:
        health = device.health
        health.polls_failed += 1
        health.consecutive_failures += 1
        ceiling = device.spec.backoff_max_s
        backoff = min(min(BACKOFF_BASE_S, ceiling) * 2 ** (health.consecutive_failures - 1),
                      ceiling)
        health.backoff_until = time.monotonic() + backoff
        health.last_error = str(failure)
        state = "error" if quality is Quality.ERROR else "stale"
        if health.state != state or health.consecutive_failures == 1:
            log.warning("%s: %s (%s); retrying in %.0f s", device.spec.name, state, failure,
                        backoff)
        health.state = state

    async def _run(self, device: DevicePoller, operation: Operation
                   ) -> LinkError | DeviceAnswerError | FrameError | None:
        """Run ``operation``'s exchanges; the failure that stopped it, or None. An answer
        the protocol cannot decode (FrameError from ``complete``) counts as a bad frame."""
        try:
            while (exchange := operation.next_exchange()) is not None:
                await self._exchange(device, exchange)
                operation.complete()
        except (LinkError, DeviceAnswerError, FrameError) as exc:
            return exc
        return None

    async def _exchange(self, device: DevicePoller, exchange: Exchange) -> None:
        """One exchange with the device's retries, pacing and device-switch delay."""
        spec = device.spec
        attempts = spec.retries + 1
        for attempt in range(attempts):
            wait = device.last_request + spec.pacing.request_interval_s - time.monotonic()
            if self._last_device is not None and self._last_device is not device:
                wait = max(wait, spec.unit_switch_delay_s)
            if wait > 0:
                await asyncio.sleep(wait)
            started = time.monotonic()
            self._last_device = device
            try:
                await self.line.exchange(exchange, spec.timeout_s,
                                         turnaround_s=spec.turnaround_s)
            except LinkError:
                if attempt + 1 < attempts:
                    continue
                raise
            finally:  # pacing counts from the end of an exchange (connect delays included)
                device.pace.last_request = time.monotonic()
            elapsed_ms = (time.monotonic() - started) * 1000.0
            health = device.health
            health.latency_ms = elapsed_ms if health.latency_ms == 0 else (
                0.8 * health.latency_ms + 0.2 * elapsed_ms)
            health.latency.observe(elapsed_ms / 1000.0)
            return
        raise LinkTimeoutError("no attempt made")  # pragma: no cover - attempts >= 1

    # -- writing ------------------------------------------------------------------------

    def write(self, device_name: str, point_name: str, value: Value
              ) -> asyncio.Future[WriteResult]:
        """Queue a write of ``value`` (engineering units) to a point of a device.

        Range checks happen now: an invalid value resolves the returned future at once
        with a failed :class:`WriteResult`.
        """
        device = self.device(device_name)
        try:
            device.spec.device_map.point(point_name).check_write(value)
        except (KeyError, WriteRangeError) as exc:
            future: asyncio.Future[WriteResult] = asyncio.get_running_loop().create_future()
            future.set_result(WriteResult(device_name, point_name, value, False,
                                          str(exc).strip("'\"")))
            device.health.writes_failed += 1
            return future
        return self.submit(device_name, Write(point_name, value))

    def submit(self, device_name: str, write: Write) -> asyncio.Future[WriteResult]:
        """Queue a write (e.g. from a semantic device class's recipe)."""
        device = self.device(device_name)
        future: asyncio.Future[WriteResult] = asyncio.get_running_loop().create_future()
        pending = _PendingWrite(device, write, future, time.monotonic())
        if len(self._writes) >= self.max_pending_writes:
            future.set_result(self._failed(pending, "write queue full"))
            return future
        self._writes.append(pending)
        self._wakeup.wake()
        return future

    def _write_wait(self, now: float) -> float:
        device = self._writes[0].device
        rate = device.spec.writes_per_s
        tokens = min(float(device.spec.write_burst),
                     device.write_tokens + (now - device.write_tokens_at) * rate)
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / rate

    def _ready_write(self, now: float) -> _PendingWrite | None:
        if not self._writes:
            return None
        if self._writes[0].device.take_write_token(now) > 0:
            return None
        return self._writes.popleft()

    def _failed(self, pending: _PendingWrite, error: str) -> WriteResult:
        pending.device.health.writes_failed += 1
        return WriteResult(pending.device.spec.name, pending.write.point, pending.write.value,
                           False, error, (time.monotonic() - pending.queued) * 1000.0)

    async def _execute_write(self, pending: _PendingWrite) -> None:
        device, write = pending.device, pending.write
        try:
            operation = device.driver.write(
                write, self.bus.latest.device_values(device.spec.name))
        except (KeyError, WriteRangeError) as exc:
            result = self._failed(pending, str(exc).strip("'\""))
        else:
            failure = await self._run(device, operation)
            if failure is not None:
                result = self._failed(pending, str(failure))
            elif operation.mismatch:
                result = self._failed(pending, operation.mismatch)
            else:
                device.health.writes_ok += 1
                result = WriteResult(device.spec.name, write.point, write.value, True, "",
                                     (time.monotonic() - pending.queued) * 1000.0)
        if not result.ok:
            log.warning("%s: write %s = %r failed: %s", device.spec.name, write.point,
                        write.value, result.error)
        if not pending.future.done():
            pending.future.set_result(result)

