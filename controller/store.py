"""The gateway's durable state in one SQLite file: the outbox and its dead letters,
the per-gateway sequence number, incoming commands until they are decided, the command
replay window and audit trail, metering windows, DR performance and saved state.

Durability: WAL journal. ``synchronous = "full"`` (the default) fsyncs the WAL at every
commit, so a power cut loses nothing that was committed; ``"normal"`` fsyncs only at
checkpoints — faster on slow SD cards, but a power cut may lose the last few seconds of
commits (a process crash or SIGKILL loses nothing in either mode). Writes are batched:
telemetry one transaction per poll batch, commands one per batch of decisions (audit,
replay window, replies and the command's removal together).

Outbox semantics: every outgoing message is stored with its stream
(:class:`~controller.streams.Stream`, not a protocol's address) and the next sequence
number before it is sent, and for every :class:`Consumer` (an uplink protocol) that
carries its stream; it is deleted once each of them acknowledged it (MQTT: the PUBACK).
Each consumer has its own delivery state (a bit per message), so one that is down keeps
its messages while another delivers and acknowledges its own. The
sequence never goes backwards, also across restarts and an emptied outbox, and a number
is used only when its message was committed. When the stored payloads exceed the quota,
the **oldest** messages are deleted, counted, and the loss is reported: an
``outbox_overflow`` event written in the same transaction (the quota keeps room for
it) with the count per consumer, and the ``dropped`` counters (overall and per
consumer). A message that a consumer can never deliver moves to the dead-letter table
with the consumer and the reason.

Everything is bounded: the outbox by its quota; audit rows keep a SHA-256 and the first
:data:`AUDIT_PREFIX_BYTES` of a payload, and the audit and dead-letter tables a number of
rows and an age (:meth:`Store.maintain` prunes by age); incoming commands by the caller
(``max_pending_commands``).

Storage faults — disk full, read-only file system, I/O errors — never raise from the
outbox, state and history writes: they are counted in :attr:`Store.faults` (and the
messages as lost), logged once per fault, and cleared by the next successful write. The
command path (:meth:`Store.record_inbound`, :meth:`Store.conclude`) raises
:class:`StoreWriteError` instead, so a command is never acknowledged or answered unless
it was written.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import math
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from controller.streams import Kind, Stream

log = logging.getLogger("pedf.store")

#: ``stream``: :attr:`Stream.name`; ``waiting``: one bit per consumer that has not
#: acknowledged the message yet (the bits are in ``meta``, ``consumer_bit:<name>``).
OUTBOX_TABLE = """CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY,
    stream TEXT NOT NULL,
    payload BLOB NOT NULL,
    waiting INTEGER NOT NULL,
    created REAL NOT NULL,
    correlation BLOB
)"""

SCHEMA = OUTBOX_TABLE + """;
CREATE INDEX IF NOT EXISTS outbox_by_stream ON outbox(stream, seq);
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    seq INTEGER NOT NULL,
    consumer TEXT NOT NULL DEFAULT 'mqtt',
    stream TEXT NOT NULL,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    payload BLOB NOT NULL,
    reason TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS inbound (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    received REAL NOT NULL,
    source TEXT NOT NULL,
    payload BLOB NOT NULL,
    response_topic TEXT,
    correlation BLOB,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS inbound_seen (
    fingerprint BLOB PRIMARY KEY,
    received REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS commands_seen (
    id TEXT PRIMARY KEY,
    digest TEXT NOT NULL,
    received REAL NOT NULL,
    reply TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS metering_windows (
    window_start REAL NOT NULL,
    series TEXT NOT NULL,
    demand_kw REAL,
    PRIMARY KEY (series, window_start)
);
CREATE TABLE IF NOT EXISTS energy_periods (
    level TEXT NOT NULL,
    period_start REAL NOT NULL,
    code TEXT NOT NULL,
    energy REAL NOT NULL,
    PRIMARY KEY (level, period_start, code)
);
CREATE TABLE IF NOT EXISTS platform_delivered (
    platform TEXT NOT NULL,
    period_start REAL NOT NULL,
    delivered REAL NOT NULL,
    PRIMARY KEY (platform, period_start)
);
CREATE TABLE IF NOT EXISTS dr_performance (
    event_id TEXT NOT NULL,
    interval_start REAL NOT NULL,
    record TEXT NOT NULL,
    PRIMARY KEY (event_id, interval_start)
);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    command_id TEXT,
    command_type TEXT,
    source TEXT NOT NULL,
    result TEXT NOT NULL,
    reason TEXT NOT NULL,
    payload TEXT NOT NULL,
    payload_sha256 TEXT,
    payload_size INTEGER
);
"""

#: Per-row overhead counted against the quota on top of stream and payload bytes.
ROW_OVERHEAD_BYTES = 48
#: Room the quota keeps for the overflow report written with a loss.
OVERFLOW_REPORT_BYTES = 512
#: How much of a payload an audit row or dead letter keeps (the SHA-256 names the rest).
AUDIT_PREFIX_BYTES = 512
#: Audit reasons are cut to this many characters.
MAX_REASON_CHARS = 300
#: The largest command payload kept whole (``commands.MAX_PAYLOAD_BYTES``): a larger one
#: is rejected for its size alone, so only its prefix, size and SHA-256 are recorded.
MAX_RECORDED_BYTES = 16 * 1024
#: How long the fingerprint of a recorded command is kept to recognise the broker's
#: redelivery of it (longer than the MQTT session expiry of 1 h).
REDELIVERY_WINDOW_S = 2 * 3600.0

#: SQLite result codes (primary) that are storage faults, not bugs.
_FAULTS = {13: "disk full", 8: "read-only", 10: "I/O error", 14: "cannot open",
           5: "busy", 6: "locked"}

T = TypeVar("T")


class StoreWriteError(OSError):
    """The store could not write: ``kind`` is "disk full", "read-only", "I/O error"…"""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"store: {kind} ({detail})")
        self.kind = kind


@dataclass
class StoreFaults:
    """Storage faults so far: the current state ("ok" or the fault), since when (UNIX
    s), how many writes failed and how many outgoing messages were lost to them."""

    state: str = "ok"
    since: float | None = None
    errors: int = 0
    lost_messages: int = 0
    recoveries: int = 0  # faults that ended (a write succeeded again)
    last_error: str = ""

    def as_dict(self) -> dict[str, object]:
        return {"state": self.state, "since": self.since, "errors": self.errors,
                "lost_messages": self.lost_messages, "last_error": self.last_error}


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A message to store: ``body`` gets its ``seq`` added when it is stored."""

    stream: Stream
    body: dict[str, object]
    correlation: bytes | None = None  # the requester's correlation data of a reply


@dataclass(frozen=True, slots=True)
class Consumer:
    """An uplink protocol that delivers outbox messages: its ``name`` keys its delivery
    state in the store; ``kinds`` are the stream kinds it carries (None: every kind)."""

    name: str
    kinds: frozenset[Kind] | None = None

    def carries(self, stream: Stream) -> bool:
        return self.kinds is None or stream.kind in self.kinds


#: The MQTT publisher: it carries every stream.
MQTT = Consumer("mqtt")
#: How many consumers one store can keep delivery state for (bits of an integer).
MAX_CONSUMERS = 62


@dataclass(frozen=True, slots=True)
class EnergyWindow:
    """One metering window's energy per 分类分项 code (kWh for electricity, the code's
    unit otherwise): ``level`` names the window ("900s"), ``rollups`` the (level, start)
    of the hour, day, month and year it adds to."""

    level: str
    start_s: float
    energy: Mapping[str, float]
    rollups: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    seq: int
    stream: Stream
    payload: bytes
    correlation: bytes | None = None


@dataclass(frozen=True, slots=True)
class Dropped:
    """Messages the quota removed in one insert: how many, their sequence range, and how
    many of them each consumer had not delivered yet."""

    count: int
    first_seq: int
    last_seq: int
    by_consumer: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class InboundCommand:
    """A command as it arrived, before it is decided; ``row`` once it is recorded. A
    payload over :data:`MAX_RECORDED_BYTES` comes back from the store cut to its prefix,
    with the whole one's ``size`` and ``sha256``."""

    payload: bytes
    response_topic: str | None = None
    correlation: bytes | None = None
    source: str = "mqtt"
    received_s: float = 0.0
    row: int | None = None
    size: int = -1  # of the payload as it arrived (-1: len(payload))
    sha256: str = ""  # of the payload as it arrived ("": computed from payload)

    @property
    def full_size(self) -> int:
        return len(self.payload) if self.size < 0 else self.size

    @property
    def full_sha256(self) -> str:
        return self.sha256 or hashlib.sha256(self.payload).hexdigest()

    def fingerprint(self) -> bytes:
        """SHA-256 of everything that arrived (the same bytes again have the same one)."""
        digest = hashlib.sha256()
        for part in (self.payload, (self.response_topic or "").encode("utf-8", "replace"),
                     self.correlation or b""):
            digest.update(len(part).to_bytes(8, "big"))
            digest.update(part)
        return digest.digest()


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One decision for the audit table; the payload is kept as its prefix, size and
    SHA-256 (``size``/``sha256`` when ``payload`` is already a prefix)."""

    command_id: str | None
    command_type: str | None
    source: str
    result: str
    reason: str
    payload: bytes
    size: int | None = None
    sha256: str | None = None


@dataclass(frozen=True, slots=True)
class Conclusion:
    """Everything one decided command writes, in the same transaction: its audit row,
    its place in the replay window (id, digest, answer), its replies, and the removal of
    its inbound row."""

    audit: AuditEntry
    replies: Sequence[Outgoing] = ()
    remember: tuple[str, str, str] | None = None
    row: int | None = None


def _json(body: dict[str, object], seq: int) -> bytes:
    return json.dumps({"seq": seq, **body}, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode()


class Store:
    """Thread-safe (one connection, one lock): the uplink may call it from a worker."""

    def __init__(self, path: Path | str, *, quota_bytes: int = 256 * 1024 * 1024,
                 synchronous: str = "full", audit_max_rows: int = 100_000,
                 audit_max_age_s: float = 90 * 86400.0, dead_letter_max_rows: int = 10_000,
                 dead_letter_max_age_s: float = 30 * 86400.0,
                 report_overflow: bool = False,
                 consumers: Sequence[Consumer] | None = None,
                 stream_of_topic: Callable[[str], Stream] | None = None) -> None:
        if synchronous not in ("full", "normal"):
            raise ValueError(f"synchronous must be 'full' or 'normal', got {synchronous!r}")
        if quota_bytes < 4096:
            raise ValueError("quota_bytes must be at least 4096")
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self.quota_bytes = quota_bytes
        self.audit_max_rows = audit_max_rows
        self.audit_max_age_s = audit_max_age_s
        self.dead_letter_max_rows = dead_letter_max_rows
        self.dead_letter_max_age_s = dead_letter_max_age_s
        #: Whether an ``outbox_overflow`` event (stream ``events``) reports each quota loss.
        self.report_overflow = report_overflow
        #: The gateway's configured consumers: the store then releases the messages of
        #: any other it knew (a removed uplink). None (tools, tests): MQTT, others kept.
        authoritative = consumers is not None
        consumers = (MQTT,) if consumers is None else tuple(consumers)
        if not consumers or len({c.name for c in consumers}) != len(consumers):
            raise ValueError("consumers: at least one, each name once")
        self.consumers = {consumer.name: consumer for consumer in consumers}
        self._bits: dict[str, int] = {}  # consumer name → its bit in ``waiting``
        #: How rows of an MQTT-row outbox are read (None: each topic as an address).
        self._stream_of_topic = stream_of_topic or (lambda topic: Stream(Kind.ADDRESS, topic))
        self.faults = StoreFaults()
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA auto_vacuum=INCREMENTAL")  # new files give space back
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA journal_size_limit=4194304")  # the WAL shrinks back to 4 MiB
        self._db.execute(f"PRAGMA synchronous={synchronous.upper()}")
        self._next_seq = self._stored_bytes = 0  # set below, once the tables exist
        self._txn_seq = self._txn_bytes = 0
        self._migrate_audit()
        self._migrate_inbound()
        self._db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, "
                         "value TEXT NOT NULL)")
        retired = self._register(consumers)
        self._migrate_outbox()
        self._db.executescript(SCHEMA)
        if authoritative:
            self._retire(retired)
        self._next_seq = max(int(self._meta("next_seq", "1")), self._max_seq() + 1)
        self._stored_bytes = int(self._db.execute(
            "SELECT COALESCE(SUM(LENGTH(stream) + LENGTH(payload)), 0) + ? * COUNT(*) "
            "FROM outbox", (ROW_OVERHEAD_BYTES,)).fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- transactions and faults ----------------------------------------------------------

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """One write transaction (the caller holds the lock). Storage faults become
        :class:`StoreWriteError` and are recorded in :attr:`faults`."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise self._fault(exc) from None
        self._txn_seq, self._txn_bytes = self._next_seq, self._stored_bytes
        try:
            yield
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")
            raise self._fault(exc) from None
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")
            raise
        # Counters follow what was committed, never a rolled-back transaction.
        self._next_seq, self._stored_bytes = self._txn_seq, self._txn_bytes
        self._healthy()

    def _fault(self, exc: sqlite3.Error) -> Exception:
        kind = _FAULTS.get(getattr(exc, "sqlite_errorcode", 0) & 0xFF)
        if kind is None:
            return exc  # a bug, not the disk: let it show
        faults = self.faults
        faults.errors += 1
        faults.last_error = f"{kind}: {exc}"
        if faults.state != kind:
            faults.state, faults.since = kind, time.time()
            log.error("store %s: %s (%s); writes fail until it is fixed", self.path, kind, exc)
        return StoreWriteError(kind, str(exc))

    def _healthy(self) -> None:
        faults = self.faults
        if faults.state != "ok":
            log.warning("store %s writable again after %s for %.0f s (%d messages lost)",
                        self.path, faults.state, time.time() - (faults.since or time.time()),
                        faults.lost_messages)
            faults.state, faults.since = "ok", None
            faults.recoveries += 1

    def _execute_or_log(self, sql: str, rows: Sequence[Sequence[object]]) -> None:
        """One statement for each of ``rows``, in a transaction; a storage fault is
        recorded and logged, not raised."""
        def write() -> None:
            self._db.executemany(sql, rows)

        self._write_or(None, write)

    def _write_or(self, default: T, write: Callable[[], T]) -> T:
        """Run ``write`` in a transaction; on a storage fault return ``default``."""
        with self._lock:
            try:
                with self._transaction():
                    return write()
            except StoreWriteError:
                return default

    # -- meta ---------------------------------------------------------------------------

    def _meta(self, key: str, default: str) -> str:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else str(row[0])

    def _set_meta(self, key: str, value: str) -> None:
        self._db.execute("INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO "
                         "UPDATE SET value = excluded.value", (key, value))

    def _max_seq(self) -> int:
        return int(self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM outbox").fetchone()[0])

    @property
    def next_seq(self) -> int:
        return self._next_seq

    @property
    def dropped_total(self) -> int:
        with self._lock:
            return int(self._meta("dropped_total", "0"))

    # -- consumers ----------------------------------------------------------------------

    def _register(self, consumers: Sequence[Consumer]) -> dict[str, int]:
        """Give each consumer its bit in ``waiting``, the same one every time (kept in
        ``meta``); a consumer not seen before takes the lowest free bit. Returns the
        bits of consumers the store knew that are not among ``consumers``."""
        taken = {key.removeprefix("consumer_bit:"): int(value) for key, value in
                 self._db.execute("SELECT key, value FROM meta WHERE key LIKE "
                                  "'consumer_bit:%'")}
        for consumer in consumers:
            bit = taken.get(consumer.name)
            if bit is None:
                free = sorted(set(range(MAX_CONSUMERS)) - set(taken.values()))
                if not free:
                    raise ValueError(f"more than {MAX_CONSUMERS} outbox consumers")
                bit = taken[consumer.name] = free[0]
                self._set_meta(f"consumer_bit:{consumer.name}", str(bit))
            self._bits[consumer.name] = 1 << bit
        return {name: 1 << bit for name, bit in taken.items() if name not in self._bits}

    def _retire(self, retired: Mapping[str, int]) -> None:
        """Consumers no longer configured (an uplink removed from the site file): their
        messages are released, as if acknowledged, so that none waits for them forever."""
        for name, bit in retired.items():
            with self._transaction():
                released = self._db.execute("UPDATE outbox SET waiting = waiting & ~? "
                                            "WHERE waiting & ?", (bit, bit)).rowcount
                self._db.execute("DELETE FROM outbox WHERE waiting = 0")
                self._db.execute("DELETE FROM meta WHERE key = ?", (f"consumer_bit:{name}",))
            log.warning("store %s: outbox consumer %r is no longer configured: %d messages "
                        "no longer wait for it", self.path, name, released)

    def _bit(self, consumer: str) -> int:
        try:
            return self._bits[consumer]
        except KeyError:
            raise ValueError(f"no outbox consumer {consumer!r}") from None

    def _waiting_for(self, stream: Stream) -> int:
        """The bits of the consumers that carry ``stream``."""
        bits = 0
        for consumer in self.consumers.values():
            if consumer.carries(stream):
                bits |= self._bits[consumer.name]
        return bits

    def _migrate_outbox(self) -> None:
        """Stores written when the outbox held MQTT rows (topic, QoS, retain): each row
        becomes a message of the stream its topic is (``stream_of_topic``, e.g.
        :meth:`controller.topics.Topics.stream_of`; a topic it does not know is an
        address), so it is published on exactly that topic again, in order with the new
        messages of its stream, for the consumers that carry the stream. Those rows
        were all QoS 1 and not retained (the retained messages never went through the
        outbox), so nothing is lost. Dead letters keep their topic as an address."""
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(outbox)")}
        if "topic" not in columns:
            return
        with self._transaction():
            self._db.execute("DROP INDEX IF EXISTS outbox_by_topic")
            self._db.execute("ALTER TABLE outbox RENAME TO outbox_topics")
            self._db.execute(OUTBOX_TABLE)
            moved = 0
            rows = self._db.execute("SELECT seq, topic, payload, created, correlation "
                                    "FROM outbox_topics ORDER BY seq")
            while page := rows.fetchmany(1000):
                streams = [self._stream_of_topic(str(row[1])) for row in page]
                self._db.executemany(
                    "INSERT INTO outbox(seq, stream, payload, waiting, created, correlation)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    [(seq, stream.name, payload, self._waiting_for(stream), created, corr)
                     for (seq, _, payload, created, corr), stream in zip(page, streams,
                                                                         strict=True)])
                moved += len(page)
            self._db.execute("DELETE FROM outbox WHERE waiting = 0")  # nobody carries them
            self._db.execute("DROP TABLE outbox_topics")
            dead = {row[1] for row in self._db.execute("PRAGMA table_info(dead_letters)")}
            if "topic" in dead:
                self._db.execute("ALTER TABLE dead_letters RENAME COLUMN topic TO stream")
                self._db.execute("ALTER TABLE dead_letters ADD COLUMN consumer TEXT NOT "
                                 "NULL DEFAULT 'mqtt'")
                self._db.execute("UPDATE dead_letters SET stream = ? || stream",
                                 (f"{Kind.ADDRESS.value}:",))
        log.info("store %s: %d outbox rows of MQTT topics became messages of their "
                 "streams", self.path, moved)

    # -- outbox -------------------------------------------------------------------------

    def append(self, messages: Sequence[Outgoing]) -> tuple[list[int], Dropped | None]:
        """Store messages in one transaction, each for the consumers that carry its
        stream (a message no consumer carries is not stored and uses no number).

        Each body gets ``"seq"``, the next sequence number, before it is serialised
        (NaN/inf are refused: ValueError, and no number is used). Returns the sequence
        numbers and what the quota dropped, if anything. On a storage fault nothing is
        stored: ``([], None)``, and the messages are counted in ``faults.lost_messages``.
        """
        with self._lock:
            try:
                with self._transaction():
                    return self._append(messages)
            except StoreWriteError:
                self.faults.lost_messages += len(messages)
                return [], None

    def _append(self, messages: Sequence[Outgoing]) -> tuple[list[int], Dropped | None]:
        """Insert ``messages`` inside the caller's transaction (its counters become the
        store's when it commits)."""
        rows = []
        seq = self._txn_seq
        added = 0
        for message in messages:
            waiting = self._waiting_for(message.stream)
            if not waiting:
                continue
            payload = _json(message.body, seq)
            name = message.stream.name
            rows.append((seq, name, payload, waiting, time.time(), message.correlation))
            added += len(name.encode()) + len(payload) + ROW_OVERHEAD_BYTES
            seq += 1
        if not rows:
            return [], None
        self._db.executemany(
            "INSERT INTO outbox(seq, stream, payload, waiting, created, correlation)"
            " VALUES (?, ?, ?, ?, ?, ?)", rows)
        self._set_meta("next_seq", str(seq))
        dropped, freed = self._enforce_quota(self._txn_bytes + added)
        self._txn_seq = seq
        self._txn_bytes += added - freed
        if dropped is not None and self._reports_overflow():
            self._report(dropped)
        return [row[0] for row in rows], dropped

    def _reports_overflow(self) -> bool:
        return self.report_overflow and self._waiting_for(Stream(Kind.EVENTS)) != 0

    def _report(self, dropped: Dropped) -> None:
        """The ``outbox_overflow`` event, in the transaction that dropped the messages
        (so every loss is reported once, with the totals after it)."""
        seq = self._txn_seq
        events = Stream(Kind.EVENTS)
        payload = _json({"ts": round(time.time(), 3), "type": "outbox_overflow",
                         "dropped": dropped.count, "first_seq": dropped.first_seq,
                         "last_seq": dropped.last_seq,
                         "dropped_total": int(self._meta("dropped_total", "0")),
                         "consumers": {name: {"dropped": count, "dropped_total": int(
                             self._meta(f"dropped_total:{name}", "0"))}
                                       for name, count in dropped.by_consumer.items()}}, seq)
        self._db.execute("INSERT INTO outbox(seq, stream, payload, waiting, created) "
                         "VALUES (?, ?, ?, ?, ?)",
                         (seq, events.name, payload, self._waiting_for(events), time.time()))
        self._set_meta("next_seq", str(seq + 1))
        self._txn_seq = seq + 1
        self._txn_bytes += len(events.name) + len(payload) + ROW_OVERHEAD_BYTES

    def _enforce_quota(self, stored_bytes: int) -> tuple[Dropped | None, int]:
        """Delete the oldest messages until the outbox fits its quota — with room for
        the overflow report when there is one to write. Returns what went and the bytes
        freed."""
        if stored_bytes <= self.quota_bytes:
            return None, 0
        cursor = self._db.execute(
            "SELECT seq, LENGTH(stream) + LENGTH(payload), waiting FROM outbox ORDER BY seq")
        doomed: list[int] = []
        room = OVERFLOW_REPORT_BYTES if self._reports_overflow() else 0
        excess = stored_bytes - self.quota_bytes + room
        freed = 0
        lost = dict.fromkeys(self._bits, 0)
        for seq, size, waiting in cursor:
            if freed >= excess:
                break
            doomed.append(seq)
            freed += size + ROW_OVERHEAD_BYTES
            for name, bit in self._bits.items():
                lost[name] += bool(waiting & bit)
        self._db.execute("DELETE FROM outbox WHERE seq <= ?", (doomed[-1],))
        total = int(self._meta("dropped_total", "0")) + len(doomed)
        self._set_meta("dropped_total", str(total))
        for name, count in lost.items():
            key = f"dropped_total:{name}"
            self._set_meta(key, str(int(self._meta(key, "0")) + count))
        return Dropped(len(doomed), doomed[0], doomed[-1], lost), freed

    def dropped(self, consumer: str) -> int:
        """How many messages ``consumer`` had not delivered when the quota dropped them
        (all time)."""
        self._bit(consumer)
        with self._lock:
            return int(self._meta(f"dropped_total:{consumer}", "0"))

    def pending(self, *, consumer: str = MQTT.name, after_seq: int = 0, limit: int = 100,
                exclude: Iterable[int] = ()) -> list[OutboxMessage]:
        """Messages ``consumer`` has not acknowledged with seq > ``after_seq``, oldest
        first."""
        skip = set(exclude)
        bit = self._bit(consumer)
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, stream, payload, correlation FROM outbox "
                "WHERE seq > ? AND waiting & ? ORDER BY seq LIMIT ?",
                (after_seq, bit, limit + len(skip))).fetchall()
        return [_message(row) for row in rows if row[0] not in skip][:limit]

    def pending_in(self, stream: Stream, *, consumer: str = MQTT.name, after_seq: int,
                   upto_seq: int, limit: int) -> list[OutboxMessage]:
        """Messages of one stream ``consumer`` has not acknowledged with
        ``after_seq < seq <= upto_seq``, oldest first."""
        bit = self._bit(consumer)
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, stream, payload, correlation FROM outbox WHERE stream = ? AND "
                "seq > ? AND seq <= ? AND waiting & ? ORDER BY seq LIMIT ?",
                (stream.name, after_seq, upto_seq, bit, limit)).fetchall()
        return [_message(row) for row in rows]

    def pending_streams(self, consumer: str = MQTT.name) -> list[Stream]:
        """The streams ``consumer`` carries that have messages stored (an index walk,
        not a table scan; some may be waiting for other consumers only)."""
        carries = self.consumers[consumer].carries if consumer in self.consumers else None
        if carries is None:
            raise ValueError(f"no outbox consumer {consumer!r}")
        with self._lock:
            rows = self._db.execute(
                "WITH RECURSIVE t(stream) AS (SELECT MIN(stream) FROM outbox UNION ALL "
                "SELECT (SELECT MIN(stream) FROM outbox WHERE stream > t.stream) FROM t "
                "WHERE t.stream IS NOT NULL) SELECT stream FROM t WHERE stream IS NOT NULL"
            ).fetchall()
        streams = (_stream(str(row[0])) for row in rows)
        return [stream for stream in streams if carries(stream)]

    def _release(self, consumer: str, seqs: Sequence[int]) -> None:
        """``consumer`` is done with ``seqs`` (inside the caller's transaction): clear its
        bit; delete the messages no consumer waits for any more."""
        marks = ",".join("?" * len(seqs))
        bit = self._bit(consumer)
        # Those that waited for this consumer alone leave (one statement: the usual case);
        # the others only lose its bit.
        sizes = self._db.execute(
            f"DELETE FROM outbox WHERE waiting = ? AND seq IN ({marks}) "
            f"RETURNING LENGTH(stream) + LENGTH(payload)", (bit, *seqs)).fetchall()
        self._txn_bytes -= sum(int(row[0]) for row in sizes) + ROW_OVERHEAD_BYTES * len(sizes)
        if len(sizes) < len(seqs):
            self._db.execute(f"UPDATE outbox SET waiting = waiting & ~? WHERE seq IN "
                             f"({marks})", (bit, *seqs))

    def acknowledge(self, seqs: Iterable[int], consumer: str = MQTT.name) -> None:
        """``consumer`` delivered these messages (MQTT: after PUBACK); a message is
        deleted once every consumer that carries it did. On a storage fault they stay and
        are sent again later (receivers remove duplicates by ``seq``)."""
        seq_list = list(seqs)
        if seq_list:
            self._bit(consumer)
            self._write_or(None, lambda: self._release(consumer, seq_list))

    def depth(self, consumer: str | None = None) -> tuple[int, int]:
        """(messages waiting — for ``consumer``, or for any —, bytes counted against the
        quota by all of them)."""
        where, parameters = ("", ()) if consumer is None else \
            (" WHERE waiting & ?", (self._bit(consumer),))
        with self._lock:
            count = int(self._db.execute(f"SELECT COUNT(*) FROM outbox{where}",
                                         parameters).fetchone()[0])
            return count, int(self._stored_bytes)

    def max_seq(self) -> int:
        with self._lock:
            return self._max_seq()

    # -- dead letters -------------------------------------------------------------------

    def dead_letter(self, seq: int, reason: str, consumer: str = MQTT.name) -> bool:
        """``consumer`` can never deliver outbox message ``seq``: record it in the
        dead-letter table with ``reason`` (its SHA-256, size and a bounded prefix are
        kept) and release it as :meth:`acknowledge` does. False when it is gone already
        (for this consumer) or the store cannot write."""
        bit = self._bit(consumer)

        def move() -> bool:
            row = self._db.execute("SELECT stream, payload FROM outbox WHERE seq = ? AND "
                                   "waiting & ?", (seq, bit)).fetchone()
            if row is None:
                return False
            stream, payload = str(row[0]), bytes(row[1])
            self._db.execute(
                "INSERT INTO dead_letters(ts, seq, consumer, stream, size, sha256, payload, "
                "reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (time.time(), seq, consumer, stream[:AUDIT_PREFIX_BYTES], len(payload),
                 hashlib.sha256(payload).hexdigest(), payload[:AUDIT_PREFIX_BYTES],
                 reason[:MAX_REASON_CHARS]))
            self._release(consumer, [seq])
            self._db.execute("DELETE FROM dead_letters WHERE id <= "
                             "(SELECT MAX(id) FROM dead_letters) - ?",
                             (self.dead_letter_max_rows,))
            return True

        moved = self._write_or(False, move)
        if moved:
            log.error("outbox message %d can never be delivered by %s (%s): moved to the "
                      "dead letters", seq, consumer, reason)
        return moved

    def dead_letters(self, limit: int = 100) -> list[dict[str, object]]:
        """The newest dead letters: ts, seq, consumer, stream, size, sha256, reason."""
        return self._dicts("SELECT ts, seq, consumer, stream, size, sha256, reason FROM "
                           "dead_letters ORDER BY id DESC LIMIT ?", limit)

    def dead_letter_count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM dead_letters").fetchone()[0])

    # -- incoming commands --------------------------------------------------------------

    def record_inbound(self, arrivals: Sequence[tuple[InboundCommand, bool]]) -> int:
        """Record commands as they arrived, in one transaction, before the broker is
        told they were received. Each comes with ``redelivered`` (the broker's DUP
        flag): a redelivery of bytes recorded before is skipped. Returns how many were
        recorded. Raises :class:`StoreWriteError` (then nothing was recorded)."""
        now = time.time()
        with self._lock, self._transaction():
            recorded = 0
            for command, redelivered in arrivals:
                fingerprint = command.fingerprint()
                if redelivered and self._db.execute(
                        "SELECT 1 FROM inbound_seen WHERE fingerprint = ?",
                        (fingerprint,)).fetchone() is not None:
                    continue
                payload = command.payload
                kept = payload if len(payload) <= MAX_RECORDED_BYTES else \
                    payload[:AUDIT_PREFIX_BYTES]
                self._db.execute(
                    "INSERT INTO inbound(received, source, payload, response_topic, "
                    "correlation, size, sha256) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (command.received_s or now, command.source, kept,
                     command.response_topic, command.correlation, command.full_size,
                     command.full_sha256))
                self._db.execute("INSERT OR REPLACE INTO inbound_seen(fingerprint, received)"
                                 " VALUES (?, ?)", (fingerprint, now))
                recorded += 1
            return recorded

    def pending_inbound(self, limit: int = 64) -> list[InboundCommand]:
        """Recorded commands not decided yet, in arrival order."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, received, source, payload, response_topic, correlation, size, "
                "sha256 FROM inbound ORDER BY id LIMIT ?", (limit,)).fetchall()
        return [InboundCommand(bytes(payload), topic, None if corr is None else bytes(corr),
                               str(source), float(received), int(row), int(size), str(sha))
                for row, received, source, payload, topic, corr, size, sha in rows]

    def inbound_depth(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM inbound").fetchone()[0])

    def conclude(self, conclusions: Sequence[Conclusion]) -> list[list[int]]:
        """Write decided commands in one transaction: audit rows, replay window, replies
        (outbox), and the removal of their inbound rows. Returns each one's reply
        sequence numbers. Raises :class:`StoreWriteError` (then nothing was written)."""
        with self._lock, self._transaction():
            seqs: list[list[int]] = []
            for conclusion in conclusions:
                self._audit(conclusion.audit)
                if conclusion.remember is not None:
                    command_id, digest, reply = conclusion.remember
                    self._db.execute(
                        "INSERT OR REPLACE INTO commands_seen(id, digest, received, reply) "
                        "VALUES (?, ?, ?, ?)", (command_id, digest, time.time(), reply))
                if conclusion.replies:
                    seqs.append(self._append(conclusion.replies)[0])
                else:
                    seqs.append([])
                if conclusion.row is not None:
                    self._db.execute("DELETE FROM inbound WHERE id = ?", (conclusion.row,))
            self._prune_audit_rows()
            return seqs

    # -- state and history ----------------------------------------------------------------

    def get_state(self, key: str) -> str | None:
        """A saved blob of another component's state (e.g. the metering totals)."""
        with self._lock:
            value = self._meta(f"state:{key}", "")
        return value or None

    def set_state(self, key: str, value: str) -> None:
        """Save a blob of state; on a storage fault the previous one stays (logged)."""
        self._write_or(None, lambda: self._set_meta(f"state:{key}", value))

    def record_windows(self, rows: Iterable[tuple[float, str, float]]) -> None:
        """Demand-window history: (window start s, series, average kW)."""
        values = [(start, name, kw if math.isfinite(kw) else None) for start, name, kw in rows]
        self._execute_or_log("INSERT OR REPLACE INTO metering_windows(window_start, series, "
                             "demand_kw) VALUES (?, ?, ?)", values)

    def windows(self, series: str, since_s: float, until_s: float) -> list[tuple[float, float]]:
        """(window start, kW) of ``series`` with ``since_s <= start < until_s``."""
        with self._lock:
            rows = self._db.execute(
                "SELECT window_start, demand_kw FROM metering_windows WHERE series = ? AND "
                "window_start >= ? AND window_start < ? AND demand_kw IS NOT NULL "
                "ORDER BY window_start", (series, since_s, until_s)).fetchall()
        return [(float(start), float(kw)) for start, kw in rows]

    def record_energy_window(self, window: EnergyWindow,
                             state: Mapping[str, str]) -> bool:
        """One metering window's energy per 分类分项 code, added to its hour, day, month
        and year, and the metering state that follows it — in one transaction, so a
        restart never counts a window twice nor loses one the state already covers.
        Idempotent: a window already recorded adds nothing (returns False); the state
        is written either way. On a storage fault nothing is written (False, logged)."""
        def write() -> bool:
            fresh = self._db.execute(
                "SELECT 1 FROM energy_periods WHERE level = ? AND period_start = ? LIMIT 1",
                (window.level, window.start_s)).fetchone() is None
            if fresh:
                self._db.executemany(
                    "INSERT INTO energy_periods(level, period_start, code, energy) "
                    "VALUES (?, ?, ?, ?)",
                    [(window.level, window.start_s, code, value)
                     for code, value in window.energy.items()])
                self._db.executemany(
                    "INSERT INTO energy_periods(level, period_start, code, energy) VALUES "
                    "(?, ?, ?, ?) ON CONFLICT(level, period_start, code) DO UPDATE SET "
                    "energy = energy + excluded.energy",
                    [(level, start, code, value) for level, start in window.rollups
                     for code, value in window.energy.items()])
            for key, text in state.items():
                self._set_meta(f"state:{key}", text)
            return fresh

        return self._write_or(False, write)

    def energy_periods(self, level: str, since_s: float,
                       until_s: float) -> list[tuple[float, str, float]]:
        """(period start, code, energy) of ``level`` with ``since_s <= start < until_s``,
        by start then code."""
        with self._lock:
            rows = self._db.execute(
                "SELECT period_start, code, energy FROM energy_periods WHERE level = ? AND "
                "period_start >= ? AND period_start < ? ORDER BY period_start, code",
                (level, since_s, until_s)).fetchall()
        return [(float(start), str(code), float(value)) for start, code, value in rows]

    def last_energy_period(self, level: str) -> float | None:
        """The start of the newest recorded period of ``level`` (None: none yet)."""
        with self._lock:
            row = self._db.execute("SELECT MAX(period_start) FROM energy_periods WHERE "
                                   "level = ?", (level,)).fetchone()
        return None if row[0] is None else float(row[0])

    def mark_delivered(self, platform: str, period_start_s: float) -> None:
        """Remember that ``platform`` acknowledged the period (logged on a fault: the
        period is sent again later, and the platform keeps one copy per period)."""
        self._execute_or_log("INSERT OR IGNORE INTO platform_delivered(platform, "
                             "period_start, delivered) VALUES (?, ?, ?)",
                             [(platform, period_start_s, time.time())])

    def delivered(self, platform: str, since_s: float) -> set[float]:
        """Period starts ``platform`` acknowledged, from ``since_s`` on."""
        with self._lock:
            rows = self._db.execute("SELECT period_start FROM platform_delivered WHERE "
                                    "platform = ? AND period_start >= ?",
                                    (platform, since_s)).fetchall()
        return {float(row[0]) for row in rows}

    def record_performance(self, record: dict[str, object]) -> None:
        """One interval of a DR event's performance (see controller.control.loop)."""
        text = json.dumps(record, allow_nan=False)
        self._execute_or_log("INSERT OR REPLACE INTO dr_performance(event_id, interval_start, "
                             "record) VALUES (?, ?, ?)",
                             [(record["event_id"], record["interval_start"], text)])

    def performance(self, event_id: str) -> list[dict[str, object]]:
        with self._lock:
            rows = self._db.execute("SELECT record FROM dr_performance WHERE event_id = ? "
                                    "ORDER BY interval_start", (event_id,)).fetchall()
        return [json.loads(row[0]) for row in rows]

    def performance_events(self) -> list[str]:
        with self._lock:
            rows = self._db.execute("SELECT event_id, MIN(interval_start) FROM dr_performance "
                                    "GROUP BY event_id ORDER BY 2").fetchall()
        return [str(row[0]) for row in rows]

    # -- commands -----------------------------------------------------------------------

    def seen_command(self, command_id: str) -> tuple[str, str] | None:
        """(digest, reply) of a command id already handled, if within the window."""
        with self._lock:
            row = self._db.execute("SELECT digest, reply FROM commands_seen WHERE id = ?",
                                   (command_id,)).fetchone()
        return None if row is None else (str(row[0]), str(row[1]))

    def remember_command(self, command_id: str, digest: str, reply: str) -> None:
        self._execute_or_log("INSERT OR REPLACE INTO commands_seen(id, digest, received, "
                             "reply) VALUES (?, ?, ?, ?)",
                             [(command_id, digest, time.time(), reply)])

    def forget_commands_before(self, cutoff: float) -> int:
        return self._write_or(0, lambda: self._db.execute(
            "DELETE FROM commands_seen WHERE received < ?", (cutoff,)).rowcount)

    def audit(self, *, command_id: str | None, command_type: str | None, source: str,
              result: str, reason: str, payload: str | bytes) -> None:
        """One audit row (the command path writes its own in :meth:`conclude`)."""
        data = payload.encode("utf-8", "replace") if isinstance(payload, str) else payload
        entry = AuditEntry(command_id, command_type, source, result, reason, data)

        def write() -> None:
            self._audit(entry)
            self._prune_audit_rows()

        self._write_or(None, write)

    def _audit(self, entry: AuditEntry) -> None:
        self._db.execute(
            "INSERT INTO audit(ts, command_id, command_type, source, result, reason, "
            "payload, payload_sha256, payload_size) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (time.time(), entry.command_id, entry.command_type, entry.source, entry.result,
             entry.reason[:MAX_REASON_CHARS],
             entry.payload[:AUDIT_PREFIX_BYTES].decode("utf-8", "replace"),
             entry.sha256 or hashlib.sha256(entry.payload).hexdigest(),
             len(entry.payload) if entry.size is None else entry.size))

    def _prune_audit_rows(self) -> None:
        self._db.execute("DELETE FROM audit WHERE id <= (SELECT MAX(id) FROM audit) - ?",
                         (self.audit_max_rows,))

    def audit_rows(self, limit: int = 100) -> list[dict[str, object]]:
        """The newest audit rows: ts, command id and type, source, result, reason, and
        the payload's SHA-256, size and prefix."""
        return self._dicts("SELECT ts, command_id, command_type, source, result, reason, "
                           "payload_sha256, payload_size, payload FROM audit ORDER BY id DESC "
                           "LIMIT ?", limit)

    def _dicts(self, sql: str, *parameters: object) -> list[dict[str, object]]:
        """Rows as dicts by column name."""
        with self._lock:
            cursor = self._db.execute(sql, parameters)
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def audit_count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM audit").fetchone()[0])

    def _migrate_inbound(self) -> None:
        """Inbound tables written before payloads had their size and hash: add them (-1
        and "" mean "the payload's own")."""
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(inbound)")}
        if columns and "size" not in columns:
            self._db.execute("ALTER TABLE inbound ADD COLUMN size INTEGER NOT NULL DEFAULT -1")
            self._db.execute("ALTER TABLE inbound ADD COLUMN sha256 TEXT NOT NULL DEFAULT ''")

    def _migrate_audit(self) -> None:
        """Stores written before audit rows were bounded: add the hash and size, cut the
        payloads to their prefix (once)."""
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(audit)")}
        if not columns or "payload_sha256" in columns:
            return
        with self._transaction():
            self._db.execute("ALTER TABLE audit ADD COLUMN payload_sha256 TEXT")
            self._db.execute("ALTER TABLE audit ADD COLUMN payload_size INTEGER")
            rows = self._db.execute("SELECT id, payload FROM audit").fetchall()
            for row, payload in rows:
                data = str(payload).encode("utf-8", "replace")
                self._db.execute(
                    "UPDATE audit SET payload = ?, payload_sha256 = ?, payload_size = ? "
                    "WHERE id = ?", (data[:AUDIT_PREFIX_BYTES].decode("utf-8", "replace"),
                                     hashlib.sha256(data).hexdigest(), len(data), row))
        log.info("store %s: %d audit rows cut to their hash and prefix", self.path, len(rows))

    # -- housekeeping -------------------------------------------------------------------

    def maintain(self, now_s: float | None = None) -> None:
        """Prune by age: audit rows, dead letters, redelivery fingerprints; give free
        pages back to the file system (stores created by this version). Call now and
        then (the command service does, hourly)."""
        now = time.time() if now_s is None else now_s

        def prune() -> None:
            self._db.execute("DELETE FROM audit WHERE ts < ?", (now - self.audit_max_age_s,))
            self._db.execute("DELETE FROM dead_letters WHERE ts < ?",
                             (now - self.dead_letter_max_age_s,))
            self._db.execute("DELETE FROM inbound_seen WHERE received < ?",
                             (now - REDELIVERY_WINDOW_S,))

        self._write_or(None, prune)
        with self._lock, contextlib.suppress(sqlite3.Error):
            self._db.execute("PRAGMA incremental_vacuum(1000)").fetchall()


#: Stream names back to streams (a gateway has a few dozen: kinds × devices).
_stream = functools.lru_cache(maxsize=4096)(Stream.parse)


def _message(row: tuple[Any, ...]) -> OutboxMessage:
    seq, stream, payload, correlation = row
    return OutboxMessage(int(seq), _stream(str(stream)), bytes(payload),
                         None if correlation is None else bytes(correlation))
