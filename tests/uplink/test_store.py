"""The store: outbox (sequence numbers, quota, acknowledgement, persistence), dead
letters, incoming commands, bounded audit, storage faults."""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
import time
from pathlib import Path

import pytest

from controller import streams
from controller.store import (
    AUDIT_PREFIX_BYTES,
    MAX_REASON_CHARS,
    ROW_OVERHEAD_BYTES,
    AuditEntry,
    Conclusion,
    InboundCommand,
    Outgoing,
    Store,
    StoreWriteError,
)


def message(size: int = 100) -> Outgoing:
    return Outgoing(streams.telemetry("d"), {"pad": "x" * size})


def test_sequence_survives_restarts_and_an_empty_outbox(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    store = Store(path)
    seqs, _ = store.append([message(), message()])
    assert seqs == [1, 2]
    store.acknowledge(seqs)
    assert store.depth() == (0, 0)
    store.close()
    reopened = Store(path)
    seqs, _ = reopened.append([message()])
    assert seqs == [3]  # never reused, though the outbox was empty
    assert reopened.pending()[0].payload.startswith(b'{"seq":3,')


def test_quota_drops_exactly_the_oldest_and_counts_them(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite", quota_bytes=4096)
    sizes = []
    dropped_total = 0
    for _ in range(40):
        _, dropped = store.append([message(200)])
        if dropped is not None:
            dropped_total += dropped.count
        sizes.append(store.depth()[1])
    waiting, stored = store.depth()
    assert stored <= 4096
    assert max(sizes) <= 4096
    remaining = [m.seq for m in store.pending(limit=1000)]
    assert remaining == list(range(41 - waiting, 41))  # the newest, contiguous
    assert dropped_total == 40 - waiting == store.dropped_total
    one = len(b"telemetry:d") + len(store.pending()[0].payload) + ROW_OVERHEAD_BYTES
    assert stored + one > 4096  # keeping one more would have broken the quota


def test_pending_and_acknowledge(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite")
    store.append([message(10) for _ in range(5)])
    assert [m.seq for m in store.pending(after_seq=2, limit=2)] == [3, 4]
    assert [m.seq for m in store.pending(exclude=[1, 2])] == [3, 4, 5]
    store.acknowledge([2, 4])
    assert [m.seq for m in store.pending()] == [1, 3, 5]


def test_nan_is_refused_before_it_is_stored(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite")
    with pytest.raises(ValueError, match="Out of range float"):
        store.append([Outgoing(streams.EVENTS, {"v": float("nan")})])
    assert store.depth() == (0, 0)
    assert store.append([message()])[0] == [1]  # the refused one used no number


def test_bad_settings_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="synchronous"):
        Store(tmp_path / "s.sqlite", synchronous="off")
    with pytest.raises(ValueError, match="quota"):
        Store(tmp_path / "s.sqlite", quota_bytes=10)



# -- bounded tables, dead letters, incoming commands, storage faults --------------------


def set_pragma(store: Store, pragma: str) -> None:
    """A real SQLite condition on the store's own connection: ``max_page_count`` makes
    the database full (SQLITE_FULL, as a full disk does), ``query_only`` read-only."""
    with store._lock:  # the store's connection is not shared otherwise
        store._db.execute(f"PRAGMA {pragma}").fetchall()


def test_audit_rows_keep_a_hash_and_a_prefix_within_a_quota(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite", audit_max_rows=50)
    payloads = [bytes([65 + n % 26]) * 65_000 for n in range(1000)]  # the 65 KB
    for number, payload in enumerate(payloads):
        store.audit(command_id=f"c{number}", command_type=None, source="mqtt",
                    result="rejected", reason="x" * 1000, payload=payload)
    rows = store.audit_rows(limit=1000)
    assert store.audit_count() == len(rows) == 50
    assert [row["command_id"] for row in rows] == [f"c{n}" for n in range(999, 949, -1)]
    newest = rows[0]
    assert newest["payload"] == payloads[999][:AUDIT_PREFIX_BYTES].decode()
    assert newest["payload_sha256"] == hashlib.sha256(payloads[999]).hexdigest()
    assert newest["payload_size"] == 65_000
    assert len(str(newest["reason"])) == MAX_REASON_CHARS


def test_audit_and_dead_letters_are_pruned_by_age(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite", audit_max_age_s=86400.0,
                  dead_letter_max_age_s=3600.0)
    store.audit(command_id="old", command_type=None, source="mqtt", result="rejected",
                reason="r", payload="p")
    seqs, _ = store.append([message(10)])
    assert store.dead_letter(seqs[0], "the broker refused it")
    store.maintain(time.time() + 2 * 3600)  # two hours later: the dead letter is too old
    assert (store.audit_count(), store.dead_letter_count()) == (1, 0)
    store.maintain(time.time() + 2 * 86400)
    assert store.audit_count() == 0


def test_dead_letters_leave_the_outbox_within_their_quota(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite", dead_letter_max_rows=10)
    seqs, _ = store.append([message(100) for _ in range(15)] + [message(5)])
    for seq in seqs[:15]:
        assert store.dead_letter(seq, f"reason {seq}")
    assert not store.dead_letter(seqs[0], "again")  # gone already
    assert [m.seq for m in store.pending()] == [seqs[15]]
    one = len(b"telemetry:d") + len(store.pending()[0].payload) + ROW_OVERHEAD_BYTES
    assert store.depth() == (1, one)  # the quota no longer counts them
    letters = store.dead_letters()
    assert store.dead_letter_count() == len(letters) == 10
    assert letters[0]["seq"] == seqs[14]
    assert letters[0]["reason"] == f"reason {seqs[14]}"


def test_a_redelivery_of_recorded_bytes_is_skipped(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite")
    first = InboundCommand(b'{"id":"a"}', "pedf/t/replies/x", b"\x01")
    assert store.record_inbound([(first, False)]) == 1
    assert store.record_inbound([(first, True)]) == 0  # the broker sent it again (DUP)
    assert store.record_inbound([(first, False)]) == 1  # the operator sent it again
    other = InboundCommand(b'{"id":"a"}', "pedf/t/replies/y", b"\x01")
    assert store.record_inbound([(other, True)]) == 1  # not the same arrival
    pending = store.pending_inbound()
    assert [(c.payload, c.response_topic, c.correlation) for c in pending] == [
        (b'{"id":"a"}', "pedf/t/replies/x", b"\x01")] * 2 + [
        (b'{"id":"a"}', "pedf/t/replies/y", b"\x01")]
    assert store.inbound_depth() == 3
    store.maintain(time.time() + 3 * 3600)  # the redelivery window has passed
    assert store.record_inbound([(first, True)]) == 1


def test_a_full_disk_loses_messages_but_no_sequence_number(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite")
    seqs, _ = store.append([message(100)])
    set_pragma(store, "max_page_count = 1")  # no page more than now: full
    lost = 0
    while store.faults.state == "ok":
        assert store.append([message(4000) for _ in range(5)])[1] is None
        lost += 5
        assert lost < 10_000, "the database never filled"
    assert store.faults.state == "disk full"
    assert store.append([message(4000)]) == ([], None)  # nothing raised
    store.set_state("k", "v" * 100_000)  # state writes fail quietly too
    with pytest.raises(StoreWriteError, match="disk full"):
        store.record_inbound([(InboundCommand(b"x" * 16_000), False)] * 8)
    assert store.faults.lost_messages >= 1
    set_pragma(store, "max_page_count = 1073741823")
    again, _ = store.append([message(100)])
    assert store.faults.state == "ok"
    assert store.faults.recoveries == 1
    committed = [m.seq for m in store.pending(limit=100_000)]
    assert again == [committed[-1]]
    assert committed == list(range(seqs[0], again[0] + 1))


def test_a_read_only_store_refuses_commands_loudly_and_the_rest_quietly(
        tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite")
    store.record_inbound([(InboundCommand(b'{"id":"a"}'), False)])
    set_pragma(store, "query_only = 1")
    assert store.append([message()]) == ([], None)
    assert store.faults.state == "read-only"
    (pending,) = store.pending_inbound()
    conclusion = Conclusion(AuditEntry(None, None, "mqtt", "rejected", "r", b"{}"),
                            [message()], row=pending.row)
    with pytest.raises(StoreWriteError, match="read-only"):
        store.conclude([conclusion])
    assert store.inbound_depth() == 1  # still there, to be decided later
    set_pragma(store, "query_only = 0")
    store.conclude([conclusion])
    assert store.inbound_depth() == 0
    assert store.audit_count() == 1
    assert store.faults.state == "ok"


def test_a_store_written_before_audit_rows_were_bounded_is_cut_once(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE audit (id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL,"
                   " command_id TEXT, command_type TEXT, source TEXT NOT NULL, result TEXT NOT "
                   "NULL, reason TEXT NOT NULL, payload TEXT NOT NULL)")
        db.execute("INSERT INTO audit(ts, source, result, reason, payload) VALUES "
                   "(1, 'mqtt', 'rejected', 'r', ?)", ("y" * 65_536,))
        db.commit()
    store = Store(path)
    (row,) = store.audit_rows()
    assert row["payload"] == "y" * AUDIT_PREFIX_BYTES
    assert row["payload_sha256"] == hashlib.sha256(b"y" * 65_536).hexdigest()
    assert row["payload_size"] == 65_536


def test_an_oversized_command_is_recorded_as_its_prefix(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite")
    payload = b'{"id":"big","pad":"' + b"x" * 65_000 + b'"}'
    store.record_inbound([(InboundCommand(payload), False)])
    (recorded,) = store.pending_inbound()
    assert recorded.payload == payload[:AUDIT_PREFIX_BYTES]
    assert recorded.full_size == len(payload)
    assert recorded.full_sha256 == hashlib.sha256(payload).hexdigest()
