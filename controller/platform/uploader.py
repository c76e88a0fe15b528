"""The gateway's side of the city platform: login, heartbeat, reports, resend, queries.

Reads the 分类分项 energy the metering feed recorded (``Store.energy_periods``, one row
per window and code) and reports each complete period (15 min by default) once the
platform acknowledges it: a period counts as delivered only after its ``report_ack``,
recorded in the store (``platform_delivered``). Periods missed while the platform was
unreachable — or while the gateway was down, or killed between sending and the
acknowledgement — are sent again, oldest first, as ``continuous`` (断点续传); the
platform keeps one copy per period, so a resend after a lost acknowledgement never
counts twice. Every wait on the network has a timeout; a broken packet, a wrong answer
or a refused login closes the connection and the next attempt comes after an
exponential, jittered backoff. Runs whether or not MQTT is configured.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

from controller.platform.settings import PlatformSettings
from controller.platform.wire import (
    TIME_FORMAT,
    Message,
    Operation,
    PacketReader,
    WireError,
    encode_packet,
    login_digest,
    parse_message,
)
from controller.store import Store

log = logging.getLogger("pedf.platform")


class LoginRefusedError(ConnectionError):
    """The platform answered the login with something else than ``pass``."""


@dataclass(frozen=True, slots=True)
class Period:
    """A complete report period: its start (UNIX s) and energy per code."""

    start_s: float
    energy: dict[str, float]


@dataclass
class UploaderStats:
    connects: int = 0
    logins: int = 0
    login_failures: int = 0
    reports_acked: int = 0
    queries: int = 0
    errors: int = 0
    last_error: str = ""


def group_periods(rows: list[tuple[float, str, float]], period_s: int,
                  complete_until_s: float) -> list[Period]:
    """Window rows (start, code, energy) summed into report periods that end by
    ``complete_until_s``, oldest first (rows of the site's own figures, ``site:…``, are
    left out). Periods align on multiples of ``period_s`` in
    UNIX time, which are local boundaries for any zone a whole number of hours from UTC
    (China: UTC+8)."""
    periods: dict[float, dict[str, float]] = {}
    for start, code, value in rows:
        if ":" in code:  # the site's own figures (site:…) are not codes of the guide
            continue
        begin = math.floor(start / period_s) * period_s
        if begin + period_s <= complete_until_s:
            bucket = periods.setdefault(begin, {})
            bucket[code] = bucket.get(code, 0.0) + value
    return [Period(start, energy) for start, energy in sorted(periods.items())]


@dataclass
class Uploader:
    settings: PlatformSettings
    store: Store
    window_level: str  # the store level of the metering windows ("900s")
    window_s: int
    zone: ZoneInfo
    clock: Callable[[], float] = time.time
    poll_s: float = 1.0
    stats: UploaderStats = field(default_factory=UploaderStats)

    # -- what to send -------------------------------------------------------------------

    def pending(self) -> list[Period]:
        """Complete periods within the backlog that the platform has not acknowledged."""
        last = self.store.last_energy_period(self.window_level)
        if last is None:
            return []
        complete_until = last + self.window_s
        since = complete_until - self.settings.backlog_days * 86400.0
        rows = self.store.energy_periods(self.window_level, since, complete_until)
        done = self.store.delivered(self.settings.name, since)
        return [p for p in group_periods(rows, self.settings.period_s, complete_until)
                if p.start_s not in done]

    def _stamp(self, start_s: float) -> str:
        return datetime.fromtimestamp(start_s, self.zone).strftime(TIME_FORMAT)

    def _parse_stamp(self, text: str) -> float:
        return datetime.strptime(text, TIME_FORMAT).replace(tzinfo=self.zone).timestamp()

    def _message(self, operation: Operation, fields: dict[str, str] | None = None,
                 items: tuple[tuple[str, float], ...] = ()) -> Message:
        return Message(self.settings.building_id, self.settings.gateway_id, operation,
                       fields or {}, items)

    def _report(self, period: Period, operation: Operation) -> Message:
        return self._message(operation, {"time": self._stamp(period.start_s),
                                         "period_s": str(self.settings.period_s)},
                             tuple(sorted(period.energy.items())))

    # -- the service --------------------------------------------------------------------

    async def run(self) -> None:
        """Connect, report, reconnect after trouble — until cancelled."""
        delay = 1.0
        while True:
            try:
                await self._session()
            except (OSError, WireError, TimeoutError, asyncio.IncompleteReadError) as exc:
                self.stats.errors += 1
                self.stats.last_error = f"{type(exc).__name__}: {exc}"
                if isinstance(exc, LoginRefusedError):
                    self.stats.login_failures += 1
                log.warning("city platform %s:%d: %s; retrying in %.1f s",
                            self.settings.host, self.settings.port, self.stats.last_error,
                            delay)
            if self.stats.logins and self._logged_in:
                delay = 1.0
            self._logged_in = False
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2.0, self.settings.backoff_max_s)

    _logged_in: bool = False

    async def _session(self) -> None:
        settings = self.settings
        assert settings.dialect is not None
        async with asyncio.timeout(settings.timeout_s):
            reader, writer = await asyncio.open_connection(settings.host, settings.port)
        self.stats.connects += 1
        session = _Session(self, reader, writer, PacketReader(settings.dialect, settings.key))
        try:
            await session.login()
            self._logged_in = True
            self.stats.logins += 1
            log.info("logged in to the city platform %s:%d as building %s gateway %s",
                     settings.host, settings.port, settings.building_id, settings.gateway_id)
            await session.serve()
        finally:
            writer.close()
            with contextlib.suppress(OSError, TimeoutError):
                async with asyncio.timeout(1.0):
                    await writer.wait_closed()


@dataclass
class _Session:
    """One connection: exchanges in order, queries from the data centre answered while
    the gateway waits."""

    owner: Uploader
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    packets: PacketReader
    inbox: list[Message] = field(default_factory=list)
    last_heartbeat: float = field(default_factory=time.monotonic)

    async def send(self, message: Message) -> None:
        settings = self.owner.settings
        assert settings.dialect is not None
        self.writer.write(encode_packet(settings.dialect, settings.key, message.to_xml()))
        async with asyncio.timeout(settings.timeout_s):
            await self.writer.drain()

    async def receive(self, timeout_s: float) -> Message | None:
        """The next message, or None when none came within ``timeout_s``. Raises
        WireError for bytes or XML that are not the protocol, ConnectionError at EOF."""
        deadline = time.monotonic() + timeout_s
        while not self.inbox:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                async with asyncio.timeout(left):
                    data = await self.reader.read(65536)
            except TimeoutError:
                return None
            if not data:
                raise ConnectionError("the platform closed the connection")
            for xml in self.packets.feed(data):
                self.inbox.append(parse_message(xml))
        return self.inbox.pop(0)

    async def expect(self, operation: Operation, check: Callable[[Message], bool]
                     = lambda _: True) -> Message:
        """Wait for ``operation`` (answering queries meanwhile). Raises TimeoutError."""
        settings = self.owner.settings
        deadline = time.monotonic() + settings.timeout_s
        while True:
            message = await self.receive(max(0.0, deadline - time.monotonic()))
            if message is None:
                raise TimeoutError(f"no {operation.attribute} from the platform within "
                                   f"{settings.timeout_s:g} s")
            if message.operation is operation and check(message):
                return message
            await self.handle(message)

    async def handle(self, message: Message) -> None:
        """A message the gateway did not wait for: queries are answered; heartbeat
        answers and late acknowledgements are fine; anything else is a protocol error."""
        if message.operation is Operation.QUERY:
            await self.answer_query(message)
        elif message.operation is Operation.REPORT_ACK:
            self.acknowledged(message)
        elif message.operation is not Operation.HEARTBEAT_TIME:
            raise WireError(f"unexpected {message.operation.element} "
                            f"{message.operation.attribute} from the platform")

    def acknowledged(self, message: Message) -> None:
        try:
            start = self.owner._parse_stamp(message.fields.get("time", ""))
        except ValueError:
            raise WireError("report_ack without a valid time") from None
        self.owner.store.mark_delivered(self.owner.settings.name, start)
        self.owner.stats.reports_acked += 1

    async def login(self) -> None:
        owner = self.owner
        await self.send(owner._message(Operation.LOGIN_REQUEST))
        challenge = await self.expect(Operation.LOGIN_SEQUENCE)
        sequence = challenge.fields.get("sequence", "")
        if not sequence:
            raise WireError("login sequence without a challenge")
        await self.send(owner._message(Operation.LOGIN_MD5, {
            "md5": login_digest(sequence, owner.settings.key)}))
        result = await self.expect(Operation.LOGIN_RESULT)
        if result.fields.get("result") != "pass":
            raise LoginRefusedError(f"login refused ({result.fields.get('result', '')!r}): "
                               "check building_id, gateway_id and key")

    async def serve(self) -> None:
        owner = self.owner
        settings = owner.settings
        assert settings.dialect is not None
        while True:
            pending = await asyncio.to_thread(owner.pending)
            for number, period in enumerate(pending, 1):
                # The newest complete period is a report; older ones are resends.
                operation = Operation.REPORT if number == len(pending) else \
                    Operation.CONTINUOUS
                stamp = owner._stamp(period.start_s)
                await self.send(owner._report(period, operation))
                ack = await self.expect(Operation.REPORT_ACK,
                                        lambda m, s=stamp: m.fields.get("time") == s)  # type: ignore[misc]
                self.acknowledged(ack)
            if time.monotonic() - self.last_heartbeat >= settings.dialect.heartbeat_s:
                await self.send(owner._message(Operation.HEARTBEAT))
                await self.expect(Operation.HEARTBEAT_TIME)
                self.last_heartbeat = time.monotonic()
            message = await self.receive(owner.poll_s)
            if message is not None:
                await self.handle(message)

    async def answer_query(self, query: Message) -> None:
        owner = self.owner
        owner.stats.queries += 1
        try:
            start = owner._parse_stamp(query.fields.get("start_time", ""))
            end = owner._parse_stamp(query.fields.get("end_time", ""))
        except ValueError:
            raise WireError("query without valid start_time and end_time") from None
        last = owner.store.last_energy_period(owner.window_level)
        complete_until = -math.inf if last is None else last + owner.window_s
        rows = owner.store.energy_periods(owner.window_level, start,
                                          min(end, complete_until))
        for period in group_periods(rows, owner.settings.period_s, complete_until):
            await self.send(owner._report(period, Operation.REPLY))
