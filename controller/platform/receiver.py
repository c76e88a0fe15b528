"""A reference data centre (``pedf platform serve``): plays the city platform for tests
and integrators, written from the same documents as the uploader.

It logs every message, stores reported periods in SQLite (one row per building,
gateway, period and code: a resend of a period already stored is acknowledged but not
counted again), answers logins with the MD5 challenge, heartbeats with its time, and
refuses what is wrong with the protocol's answers: a failed login gets ``result fail``
and the connection is closed; data before a login gets ``result fail``; a packet that
is not the dialect's (framing, CRC, decryption, XML) is logged with the reason and the
connection closed (after a broken frame the stream cannot be trusted).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from controller.platform.wire import (
    TIME_FORMAT,
    Dialect,
    Message,
    Operation,
    PacketReader,
    WireError,
    encode_packet,
    login_digest,
    parse_message,
)

log = logging.getLogger("pedf.platform.receiver")

SCHEMA = """
CREATE TABLE IF NOT EXISTS reports (
    building_id TEXT NOT NULL,
    gateway_id TEXT NOT NULL,
    period TEXT NOT NULL,
    code TEXT NOT NULL,
    energy REAL NOT NULL,
    kind TEXT NOT NULL,
    received REAL NOT NULL,
    PRIMARY KEY (building_id, gateway_id, period, code)
);
"""


@dataclass
class ReceiverStats:
    connections: int = 0
    logins: int = 0
    refused_logins: int = 0
    bad_packets: int = 0
    reports: int = 0  # report/continuous/reply messages received
    duplicates: int = 0  # of periods already stored
    last_error: str = ""


@dataclass
class Receiver:
    """The data centre. ``ack_delay_s`` delays acknowledgements (tests use it to kill a
    gateway between a report and its acknowledgement)."""

    dialect: Dialect
    key: bytes
    db_path: str = ":memory:"
    host: str = "127.0.0.1"
    port: int = 0
    zone: ZoneInfo = field(default_factory=lambda: ZoneInfo("Asia/Shanghai"))
    ack_delay_s: float = 0.0
    stats: ReceiverStats = field(default_factory=ReceiverStats)
    _server: asyncio.Server | None = None
    _sessions: dict[tuple[str, str], asyncio.StreamWriter] = field(default_factory=dict)
    _connections: dict[asyncio.StreamWriter, asyncio.Task[None]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.db_path != ":memory:":
            Path(self.db_path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.db_path, check_same_thread=False, isolation_level=None)
        self._db.executescript(SCHEMA)
        self._lock = threading.Lock()

    async def __aenter__(self) -> Receiver:
        self._server = await asyncio.start_server(self._connection, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("data centre listening on %s:%d (dialect %s)", self.host, self.port,
                 self.dialect.name)
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._connections):
                writer.close()  # each handler sees its connection end and returns
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2.0):
                    await asyncio.gather(*self._connections.values(),
                                         return_exceptions=True)
                    await self._server.wait_closed()
            self._server = None

    # -- what it holds ------------------------------------------------------------------

    def periods(self, building_id: str) -> dict[str, dict[str, float]]:
        """Stored periods of a building: {YYYYMMDDHHMMSS: {code: energy}}."""
        with self._lock:
            rows = self._db.execute("SELECT period, code, energy FROM reports WHERE "
                                    "building_id = ? ORDER BY period, code",
                                    (building_id,)).fetchall()
        result: dict[str, dict[str, float]] = {}
        for period, code, energy in rows:
            result.setdefault(str(period), {})[str(code)] = float(energy)
        return result

    def totals(self, building_id: str) -> dict[str, float]:
        """Energy per code summed over every stored period."""
        sums: dict[str, float] = {}
        for energy in self.periods(building_id).values():
            for code, value in energy.items():
                sums[code] = sums.get(code, 0.0) + value
        return sums

    def _store(self, message: Message) -> bool:
        """Store a period; False when it was stored before (nothing changes)."""
        period = message.fields["time"]
        with self._lock:
            seen = self._db.execute(
                "SELECT 1 FROM reports WHERE building_id = ? AND gateway_id = ? AND "
                "period = ? LIMIT 1", (message.building_id, message.gateway_id,
                                       period)).fetchone()
            if seen is not None:
                return False
            now = time.time()
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT INTO reports VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(message.building_id, message.gateway_id, period, code, value,
                  message.operation.attribute, now) for code, value in message.items])
            self._db.execute("COMMIT")
            return True

    # -- queries ------------------------------------------------------------------------

    async def query(self, building_id: str, gateway_id: str, start_s: float,
                    end_s: float) -> None:
        """Ask a connected gateway for the periods in [start, end) (answers arrive as
        ``reply`` messages and are stored). Raises LookupError when it is not
        connected."""
        writer = self._sessions.get((building_id, gateway_id))
        if writer is None:
            raise LookupError(f"building {building_id} gateway {gateway_id} not connected")
        await self._send(writer, Message(building_id, gateway_id, Operation.QUERY, {
            "start_time": self._stamp(start_s), "end_time": self._stamp(end_s)}))

    def _stamp(self, moment_s: float) -> str:
        return datetime.fromtimestamp(moment_s, self.zone).strftime(TIME_FORMAT)

    # -- connections --------------------------------------------------------------------

    async def _send(self, writer: asyncio.StreamWriter, message: Message) -> None:
        writer.write(encode_packet(self.dialect, self.key, message.to_xml()))
        async with asyncio.timeout(10.0):
            await writer.drain()

    async def _connection(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        self.stats.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._connections[writer] = task
        peer = writer.get_extra_info("peername")
        packets = PacketReader(self.dialect, self.key)
        challenge: str | None = None
        identity: tuple[str, str] | None = None
        try:
            while True:
                async with asyncio.timeout(600.0):
                    data = await reader.read(65536)
                if not data:
                    return
                for xml in packets.feed(data):
                    message = parse_message(xml)
                    log.info("%s: %s %s %s", peer, message.building_id,
                             message.operation.element, message.operation.attribute)
                    who = (message.building_id, message.gateway_id)
                    reply = self._reply(message)
                    op = message.operation
                    if op is Operation.LOGIN_REQUEST:
                        challenge = secrets.token_hex(8)
                        await self._send(writer, reply(Operation.LOGIN_SEQUENCE,
                                                       {"sequence": challenge}))
                    elif op is Operation.LOGIN_MD5:
                        good = challenge is not None and secrets.compare_digest(
                            message.fields.get("md5", ""), login_digest(challenge, self.key))
                        await self._send(writer, reply(Operation.LOGIN_RESULT,
                                                       {"result": "pass" if good else "fail"}))
                        if not good:
                            self.stats.refused_logins += 1
                            log.warning("%s: login of %s refused", peer, who)
                            return
                        identity = who
                        self._sessions[who] = writer
                        self.stats.logins += 1
                    elif identity != who:
                        self.stats.refused_logins += 1
                        await self._send(writer, reply(Operation.LOGIN_RESULT,
                                                       {"result": "fail"}))
                        log.warning("%s: %s before a login: refused", peer, op.attribute)
                        return
                    elif op is Operation.HEARTBEAT:
                        await self._send(writer, reply(Operation.HEARTBEAT_TIME, {
                            "time": datetime.now(self.zone).strftime(TIME_FORMAT)}))
                    elif op in (Operation.REPORT, Operation.CONTINUOUS, Operation.REPLY):
                        if "time" not in message.fields:
                            raise WireError(f"{op.attribute} without time")
                        self.stats.reports += 1
                        if not self._store(message):
                            self.stats.duplicates += 1
                        if op is not Operation.REPLY:
                            if self.ack_delay_s:
                                await asyncio.sleep(self.ack_delay_s)
                            await self._send(writer, reply(Operation.REPORT_ACK,
                                                           {"time": message.fields["time"]}))
                    else:
                        raise WireError(f"unexpected {op.element} {op.attribute}")
        except WireError as exc:
            self.stats.bad_packets += 1
            self.stats.last_error = str(exc)
            log.warning("%s: malformed packet (%s): connection closed", peer, exc)
        except (OSError, TimeoutError) as exc:
            log.info("%s: connection ended (%s)", peer, exc)
        finally:
            if identity is not None and self._sessions.get(identity) is writer:
                del self._sessions[identity]
            self._connections.pop(writer, None)
            writer.close()

    @staticmethod
    def _reply(message: Message) -> Callable[[Operation, dict[str, str]], Message]:
        def build(operation: Operation, fields: dict[str, str]) -> Message:
            return Message(message.building_id, message.gateway_id, operation, fields)
        return build
