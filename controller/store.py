"""The gateway's durable state in one SQLite file: the MQTT outbox, the per-gateway
sequence number, the command replay window and the command audit trail.

Durability: WAL journal. ``synchronous = "full"`` (the default) fsyncs the WAL at every
commit, so a power cut loses nothing that was committed; ``"normal"`` fsyncs only at
checkpoints — faster on slow SD cards, but a power cut may lose the last few seconds of
commits (a process crash or SIGKILL loses nothing in either mode). Telemetry is committed
in batches (one transaction per poll batch), so "full" costs one fsync per batch, not per
message.

Outbox semantics: every outgoing message is stored with the next sequence number before
it is published, and deleted only after the broker acknowledged it (PUBACK). The
sequence never goes backwards, also across restarts and an emptied outbox. When the
stored payloads exceed the quota, the **oldest** messages are deleted, counted, and the
loss is reported (an ``outbox_overflow`` event and the ``dropped`` counters).
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL,
    retain INTEGER NOT NULL,
    created REAL NOT NULL,
    correlation BLOB
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
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
    payload TEXT NOT NULL
);
"""

#: Per-row overhead counted against the quota on top of topic and payload bytes.
ROW_OVERHEAD_BYTES = 48


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A message to store: ``body`` gets its ``seq`` added when it is stored."""

    topic: str
    body: dict[str, object]
    qos: int = 1
    retain: bool = False
    correlation: bytes | None = None  # MQTT 5 correlation data of a reply


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    seq: int
    topic: str
    payload: bytes
    qos: int
    retain: bool
    correlation: bytes | None = None


@dataclass(frozen=True, slots=True)
class Dropped:
    """Messages the quota removed in one insert: how many and their sequence range."""

    count: int
    first_seq: int
    last_seq: int


class Store:
    """Thread-safe (one connection, one lock): the uplink may call it from a worker."""

    def __init__(self, path: Path | str, *, quota_bytes: int = 256 * 1024 * 1024,
                 synchronous: str = "full") -> None:
        if synchronous not in ("full", "normal"):
            raise ValueError(f"synchronous must be 'full' or 'normal', got {synchronous!r}")
        if quota_bytes < 4096:
            raise ValueError("quota_bytes must be at least 4096")
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self.quota_bytes = quota_bytes
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={synchronous.upper()}")
        self._db.executescript(SCHEMA)
        self._next_seq = max(int(self._meta("next_seq", "1")), self._max_seq() + 1)
        self._stored_bytes = self._db.execute(
            "SELECT COALESCE(SUM(LENGTH(topic) + LENGTH(payload)), 0) + ? * COUNT(*) "
            "FROM outbox", (ROW_OVERHEAD_BYTES,)).fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()

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

    # -- outbox -------------------------------------------------------------------------

    def append(self, messages: Sequence[Outgoing]) -> tuple[list[int], Dropped | None]:
        """Store messages in one transaction.

        Each body gets ``"seq"``, the next sequence number, before it is serialised
        (NaN/inf are refused: ValueError). Returns the sequence numbers and what the
        quota dropped, if anything.
        """
        with self._lock:
            rows = []
            seqs = []
            added = 0
            for message in messages:
                seq = self._next_seq
                payload = json.dumps({"seq": seq, **message.body}, separators=(",", ":"),
                                     ensure_ascii=False, allow_nan=False).encode()
                self._next_seq += 1
                rows.append((seq, message.topic, payload, message.qos, int(message.retain),
                             time.time(), message.correlation))
                seqs.append(seq)
                added += len(message.topic.encode()) + len(payload) + ROW_OVERHEAD_BYTES
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    "INSERT INTO outbox(seq, topic, payload, qos, retain, created, correlation)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
                self._set_meta("next_seq", str(self._next_seq))
                self._stored_bytes += added
                dropped = self._enforce_quota()
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            return seqs, dropped

    def _enforce_quota(self) -> Dropped | None:
        if self._stored_bytes <= self.quota_bytes:
            return None
        cursor = self._db.execute(
            "SELECT seq, LENGTH(topic) + LENGTH(payload) FROM outbox ORDER BY seq")
        doomed: list[int] = []
        excess = self._stored_bytes - self.quota_bytes
        freed = 0
        for seq, size in cursor:
            if freed >= excess:
                break
            doomed.append(seq)
            freed += size + ROW_OVERHEAD_BYTES
        self._db.execute("DELETE FROM outbox WHERE seq <= ?", (doomed[-1],))
        self._stored_bytes -= freed
        total = int(self._meta("dropped_total", "0")) + len(doomed)
        self._set_meta("dropped_total", str(total))
        return Dropped(len(doomed), doomed[0], doomed[-1])

    def pending(self, *, after_seq: int = 0, limit: int = 100,
                exclude: Iterable[int] = ()) -> list[OutboxMessage]:
        """Unacknowledged messages with seq > ``after_seq``, oldest first."""
        skip = set(exclude)
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, topic, payload, qos, retain, correlation FROM outbox "
                "WHERE seq > ? ORDER BY seq LIMIT ?", (after_seq, limit + len(skip))).fetchall()
        return [OutboxMessage(seq, topic, bytes(payload), qos, bool(retain),
                              None if correlation is None else bytes(correlation))
                for seq, topic, payload, qos, retain, correlation in rows
                if seq not in skip][:limit]

    def acknowledge(self, seqs: Iterable[int]) -> None:
        """Delete acknowledged messages (after PUBACK)."""
        seq_list = list(seqs)
        if not seq_list:
            return
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                freed = self._db.execute(
                    f"SELECT COALESCE(SUM(LENGTH(topic) + LENGTH(payload)), 0), COUNT(*) "
                    f"FROM outbox WHERE seq IN ({','.join('?' * len(seq_list))})",
                    seq_list).fetchone()
                self._db.execute(
                    f"DELETE FROM outbox WHERE seq IN ({','.join('?' * len(seq_list))})",
                    seq_list)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._stored_bytes -= int(freed[0]) + ROW_OVERHEAD_BYTES * int(freed[1])

    def depth(self) -> tuple[int, int]:
        """(messages waiting, bytes counted against the quota)."""
        with self._lock:
            count = int(self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
            return count, int(self._stored_bytes)

    def max_seq(self) -> int:
        with self._lock:
            return self._max_seq()

    # -- state and history ----------------------------------------------------------------

    def get_state(self, key: str) -> str | None:
        """A saved blob of another component's state (e.g. the metering totals)."""
        with self._lock:
            value = self._meta(f"state:{key}", "")
        return value or None

    def set_state(self, key: str, value: str) -> None:
        with self._lock:
            self._set_meta(f"state:{key}", value)

    def record_windows(self, rows: Iterable[tuple[float, str, float]]) -> None:
        """Demand-window history: (window start s, series, average kW)."""
        with self._lock:
            self._db.executemany(
                "INSERT OR REPLACE INTO metering_windows(window_start, series, demand_kw) "
                "VALUES (?, ?, ?)",
                [(start, name, kw if math.isfinite(kw) else None) for start, name, kw in rows])

    def windows(self, series: str, since_s: float, until_s: float) -> list[tuple[float, float]]:
        """(window start, kW) of ``series`` with ``since_s <= start < until_s``."""
        with self._lock:
            rows = self._db.execute(
                "SELECT window_start, demand_kw FROM metering_windows WHERE series = ? AND "
                "window_start >= ? AND window_start < ? AND demand_kw IS NOT NULL "
                "ORDER BY window_start", (series, since_s, until_s)).fetchall()
        return [(float(start), float(kw)) for start, kw in rows]

    def record_performance(self, record: dict[str, object]) -> None:
        """One interval of a DR event's performance (see controller.control.loop)."""
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO dr_performance(event_id, interval_start, record) "
                "VALUES (?, ?, ?)", (record["event_id"], record["interval_start"],
                                     json.dumps(record, allow_nan=False)))

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
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO commands_seen(id, digest, received, reply) "
                             "VALUES (?, ?, ?, ?)", (command_id, digest, time.time(), reply))

    def forget_commands_before(self, cutoff: float) -> int:
        with self._lock:
            return self._db.execute("DELETE FROM commands_seen WHERE received < ?",
                                    (cutoff,)).rowcount

    def audit(self, *, command_id: str | None, command_type: str | None, source: str,
              result: str, reason: str, payload: str) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO audit(ts, command_id, command_type, source, result, reason, "
                "payload) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (time.time(), command_id, command_type, source, result, reason, payload[:65536]))

    def audit_rows(self, limit: int = 100) -> list[dict[str, object]]:
        with self._lock:
            cursor = self._db.execute(
                "SELECT ts, command_id, command_type, source, result, reason FROM audit "
                "ORDER BY id DESC LIMIT ?", (limit,))
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
