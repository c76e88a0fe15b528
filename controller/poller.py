"""Polling and writing, one scheduler task per endpoint (TCP host:port or RS-485 bus).

Each device's poll groups run at their intervals on monotonic time, without drift: a
group due at ``t`` is next due at ``t + interval``; when the endpoint falls behind, missed
cycles are skipped (and counted), never bunched up. Requests on one endpoint never
overlap. Writes jump the queue.

Failure handling, per device:

* a request is retried ``retries`` times at once; if it still fails, the rest of the
  group is abandoned and its points are published with quality STALE (no answer: timeout,
  connection refused or lost) or ERROR (the device answered, but with a Modbus exception
  or a malformed frame) and value None — never the last good value repeated;
* the device then backs off: it is retried after 1, 2, 4 … s up to ``backoff_max_s``,
  so a dead device costs its bus little and never stalls the other devices;
* the first successful poll resets the backoff.

Writes (:meth:`EndpointScheduler.write`) are encoded with the codec's range checks
before they are queued, rate-limited per device (token bucket: ``write_burst``, then
``writes_per_s``), and verified by reading the registers back. A failed write is
reported in its :class:`WriteResult`, never swallowed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import zlib
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from controller.bus import ReadingBus
from controller.transport import BadFrameError, LinkError, LinkTimeoutError, RtuLink, TcpLink
from drivers.codec import RegisterImage, WriteRangeError, decode_points, encode_write
from drivers.codec import scale_factor_value as _sf
from drivers.devices import Write
from drivers.frames import ExceptionCode, Function, Request, Response
from drivers.planner import ReadRequest, plan_group
from drivers.points import Point, PollGroup, Table, Value
from drivers.reading import Quality, Reading
from drivers.site import DeviceSpec

log = logging.getLogger("pedf.poller")

READ_FUNCTION = {Table.COIL: Function.READ_COILS,
                  Table.DISCRETE_INPUT: Function.READ_DISCRETE_INPUTS,
                  Table.HOLDING: Function.READ_HOLDING_REGISTERS,
                  Table.INPUT: Function.READ_INPUT_REGISTERS}
BACKOFF_BASE_S = 1.0


class DeviceAnswerError(LinkError):
    """The device answered with a Modbus exception."""

    def __init__(self, code: int) -> None:
        super().__init__(ExceptionCode.describe(code))
        self.code = code


@dataclass
class GroupSchedule:
    group: PollGroup
    plan: list[ReadRequest]
    points: list[Point]  # the group's points plus the scale factors they need
    next_due: float
    polls: int = 0
    skipped: int = 0  # cycles missed because the endpoint was busy


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
    latency_ms: float = 0.0  # exponentially weighted mean of request round trips
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
class DevicePoller:
    """A device's schedule, health and write budget (state only; I/O is the endpoint's)."""

    spec: DeviceSpec
    groups: list[GroupSchedule]
    health: DeviceHealth = field(default_factory=DeviceHealth)
    last_request: float = -math.inf  # monotonic
    write_tokens: float = 0.0
    write_tokens_at: float = 0.0

    @classmethod
    def create(cls, spec: DeviceSpec, now: float) -> DevicePoller:
        groups = []
        # A fixed phase per device spreads the first polls (and so every later cycle)
        # over up to a second, instead of every device asking in the same instant.
        phase = zlib.crc32(spec.name.encode()) / 0xFFFF_FFFF
        for group in spec.groups.values():
            points = spec.device_map.with_dependencies(group.points)
            plan = plan_group(spec.device_map, group.points, max_registers=spec.max_registers)
            groups.append(GroupSchedule(group, plan, points,
                                        next_due=now + phase * min(group.interval_s, 1.0)))
        return cls(spec, groups, write_tokens=float(spec.write_burst), write_tokens_at=now)

    def next_poll(self, now: float) -> tuple[float, GroupSchedule]:
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
class EndpointScheduler:
    """Runs every request of one endpoint: polls on schedule, writes on demand."""

    name: str
    link: TcpLink | RtuLink
    devices: list[DevicePoller]
    bus: ReadingBus
    wall_clock: Callable[[], float] = time.time
    max_pending_writes: int = 64
    _writes: deque[_PendingWrite] = field(default_factory=deque)
    _wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    _last_unit: int | None = None

    @classmethod
    def create(cls, name: str, link: TcpLink | RtuLink, specs: Sequence[DeviceSpec],
               bus: ReadingBus, wall_clock: Callable[[], float] = time.time
               ) -> EndpointScheduler:
        now = time.monotonic()
        return cls(name, link, [DevicePoller.create(s, now) for s in specs], bus, wall_clock)

    def device(self, name: str) -> DevicePoller:
        for device in self.devices:
            if device.spec.name == name:
                return device
        raise KeyError(name)

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
                due, device, schedule = self._next_due(now)
                wait = due - now
                if self._writes:
                    wait = min(wait, self._write_wait(now))
                if wait > 0:
                    self._wakeup.clear()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(wait):
                            await self._wakeup.wait()
                    continue
                await self._poll(device, schedule)
        finally:
            for pending in self._writes:
                if not pending.future.done():
                    pending.future.set_result(self._failed(pending, "controller stopping"))
            self._writes.clear()
            await self.link.close()

    def _next_due(self, now: float) -> tuple[float, DevicePoller, GroupSchedule]:
        best: tuple[float, DevicePoller, GroupSchedule] | None = None
        for device in self.devices:
            due, schedule = device.next_poll(now)
            if best is None or due < best[0]:
                best = (due, device, schedule)
        assert best is not None
        return best

    # -- polling ------------------------------------------------------------------------

    async def _poll(self, device: DevicePoller, schedule: GroupSchedule) -> None:
        spec, health = device.spec, device.health
        image = RegisterImage()
        failure: LinkError | None = None
        failed_request: ReadRequest | None = None
        for request in schedule.plan:
            try:
                response = await self._request(device, Request(
                    spec.unit, READ_FUNCTION[request.table], request.address,
                    count=request.count))
            except LinkError as exc:
                failure, failed_request = exc, request
                break
            values = response.bits if request.table.is_bits else response.registers
            image.store(request.table, request.address, values)
        self._advance_schedule(schedule)
        wall = self.wall_clock()
        group_points = set(schedule.group.points)
        decoded = decode_points(spec.device_map, schedule.points, image)
        readings = [  # scale factors too: writes need their latest values
            Reading(spec.name, point.name, decoded[point.name], point.unit, wall, Quality.OK)
            for point in schedule.points if point.name in decoded
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
            quality = Quality.ERROR if isinstance(failure, DeviceAnswerError | BadFrameError) \
                else Quality.STALE
            readings += [
                Reading(spec.name, point.name, None, point.unit, wall, quality)
                for point in schedule.points
                if point.name in group_points and point.name not in decoded
            ]
            self._record_failure(device, failure, failed_request, quality)
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

    def _record_failure(self, device: DevicePoller, failure: LinkError,
                        request: ReadRequest | None, quality: Quality) -> None:
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

    async def _request(self, device: DevicePoller, request: Request) -> Response:
        """One request with the device's retries, pacing and unit-switch delay."""
        spec = device.spec
        attempts = spec.retries + 1
        for attempt in range(attempts):
            wait = device.last_request + spec.pacing.request_interval_s - time.monotonic()
            if self._last_unit is not None and self._last_unit != spec.unit:
                wait = max(wait, spec.unit_switch_delay_s)
            if wait > 0:
                await asyncio.sleep(wait)
            started = time.monotonic()
            self._last_unit = spec.unit
            try:
                if isinstance(self.link, RtuLink):
                    response = await self.link.execute(request, spec.timeout_s,
                                                       turnaround_s=spec.turnaround_s)
                else:
                    response = await self.link.execute(request, spec.timeout_s)
            except LinkError:
                if attempt + 1 < attempts:
                    continue
                raise
            finally:  # pacing counts from the end of an exchange (connect delays included)
                device.last_request = time.monotonic()
            elapsed_ms = (time.monotonic() - started) * 1000.0
            health = device.health
            health.latency_ms = elapsed_ms if health.latency_ms == 0 else (
                0.8 * health.latency_ms + 0.2 * elapsed_ms)
            if response.exception is not None:
                raise DeviceAnswerError(response.exception)
            return response
        raise LinkTimeoutError("no attempt made")  # pragma: no cover - attempts >= 1

    # -- writing ------------------------------------------------------------------------

    def write(self, device_name: str, point_name: str, value: Value) -> asyncio.Future[WriteResult]:
        """Queue a write of ``value`` (engineering units) to a point of a device.

        Encoding and range checks happen now: an invalid value resolves the returned
        future at once with a failed :class:`WriteResult`.
        """
        device = self.device(device_name)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[WriteResult] = loop.create_future()
        try:
            point = device.spec.device_map.point(point_name)
            write = Write(point.name, point.table, point.address,
                          tuple(encode_write(point, value, self._scale_factor(device, point))),
                          value)
        except (KeyError, WriteRangeError) as exc:
            future.set_result(WriteResult(device_name, point_name, value, False,
                                          str(exc).strip("'\"")))
            device.health.writes_failed += 1
            return future
        return self.submit(device_name, write, future)

    def submit(self, device_name: str, write: Write,
               future: asyncio.Future[WriteResult] | None = None
               ) -> asyncio.Future[WriteResult]:
        """Queue an already encoded write (e.g. from a semantic device class)."""
        device = self.device(device_name)
        if future is None:
            future = asyncio.get_running_loop().create_future()
        pending = _PendingWrite(device, write, future, time.monotonic())
        if len(self._writes) >= self.max_pending_writes:
            future.set_result(self._failed(pending, "write queue full"))
            return future
        self._writes.append(pending)
        self._wakeup.set()
        return future

    def _scale_factor(self, device: DevicePoller, point: Point) -> int | None:
        if point.scale_factor is None:
            return None
        reading = self.bus.latest.get(device.spec.name, point.scale_factor)
        value = None if reading is None else reading.value
        sf = _sf(value if isinstance(value, int) and not isinstance(value, bool) else None)
        if sf is None:
            raise WriteRangeError(f"{point.name}: scale factor {point.scale_factor} has not "
                                  "been read yet")
        return sf

    def _write_wait(self, now: float) -> float:
        pending = self._writes[0]
        device = pending.device
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
        unit = device.spec.unit
        if write.table is Table.COIL:
            if len(write.values) == 1:
                request = Request(unit, Function.WRITE_SINGLE_COIL, write.address,
                                  values=write.values)
            else:
                request = Request(unit, Function.WRITE_MULTIPLE_COILS, write.address,
                                  values=write.values)
            read_back = Request(unit, Function.READ_COILS, write.address,
                                count=len(write.values))
        elif write.table is Table.HOLDING:
            function = (Function.WRITE_SINGLE_REGISTER if len(write.values) == 1
                        else Function.WRITE_MULTIPLE_REGISTERS)
            request = Request(unit, function, write.address, values=write.values)
            read_back = Request(unit, Function.READ_HOLDING_REGISTERS, write.address,
                                count=len(write.values))
        else:
            result = self._failed(pending, f"{write.point}: {write.table.value} is read-only")
            pending.future.set_result(result)
            return
        try:
            await self._request(device, request)
            response = await self._request(device, read_back)
        except LinkError as exc:
            result = self._failed(pending, str(exc))
        else:
            got = tuple(int(b) for b in response.bits) if write.table is Table.COIL \
                else response.registers
            if got != write.values:
                result = self._failed(pending, f"read-back {list(got)} differs from written "
                                               f"{list(write.values)}")
            else:
                device.health.writes_ok += 1
                result = WriteResult(device.spec.name, write.point, write.value, True, "",
                                     (time.monotonic() - pending.queued) * 1000.0)
        if not result.ok:
            log.warning("%s: write %s = %r failed: %s", device.spec.name, write.point,
                        write.value, result.error)
        if not pending.future.done():
            pending.future.set_result(result)
