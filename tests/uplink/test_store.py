"""The SQLite outbox: sequence numbers, quota, acknowledgement, persistence."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.store import ROW_OVERHEAD_BYTES, Outgoing, Store


def message(size: int = 100) -> Outgoing:
    return Outgoing("pedf/t/telemetry/d", {"pad": "x" * size})


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
    one = len(b"pedf/t/telemetry/d") + len(store.pending()[0].payload) + ROW_OVERHEAD_BYTES
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
        store.append([Outgoing("t", {"v": float("nan")})])
    assert store.depth() == (0, 0)
    assert store.append([message()])[0] == [1]  # the refused one used no number


def test_bad_settings_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="synchronous"):
        Store(tmp_path / "s.sqlite", synchronous="off")
    with pytest.raises(ValueError, match="quota"):
        Store(tmp_path / "s.sqlite", quota_bytes=10)

