"""The order the publisher sends in (per stream by seq, streams in turn) and the waits
between connection attempts (jittered, capped)."""

from __future__ import annotations

import random
from pathlib import Path

from controller import streams
from controller.drain import Drain
from controller.store import OutboxMessage, Outgoing, Store
from controller.streams import Stream
from controller.uplink import Backoff

TELEMETRY = streams.telemetry("meter")


async def everything(drain: Drain) -> list[OutboxMessage]:
    sent = []
    while (message := await drain.next()) is not None:
        sent.append(message)
    return sent


async def test_each_stream_in_order_streams_in_turn(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite")
    store.append([Outgoing(TELEMETRY, {"n": n}) for n in range(300)])  # a long backlog
    store.append([Outgoing(streams.REPLIES, {"n": n}) for n in range(3)])
    drain = Drain(store)
    await drain.start()
    first = [await drain.next() for _ in range(6)]
    assert [m.stream for m in first if m] == [streams.REPLIES, TELEMETRY] * 3 or \
        [m.stream for m in first if m] == [TELEMETRY, streams.REPLIES] * 3
    store.append([Outgoing(streams.REPLIES, {"n": 3}), Outgoing(streams.EVENTS, {"n": 0})])
    drain.refresh()  # the recorder stored more
    rest = await everything(drain)
    sent = [m for m in first if m] + rest
    assert sorted(m.seq for m in sent) == list(range(1, 306))  # each exactly once
    by_stream: dict[Stream, list[int]] = {}
    for message in sent:
        by_stream.setdefault(message.stream, []).append(message.seq)
    assert all(seqs == sorted(seqs) for seqs in by_stream.values())
    position = {m.seq: index for index, m in enumerate(sent)}
    assert position[304] < 12
    assert position[305] < 12


async def test_acknowledged_and_dead_messages_are_not_sent_again(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite")
    seqs, _ = store.append([Outgoing(streams.EVENTS, {"n": n}) for n in range(200)])
    store.acknowledge(seqs[:50])
    store.dead_letter(seqs[60], "refused")
    drain = Drain(store)
    await drain.start()
    assert [m.seq for m in await everything(drain)] == [s for s in seqs[50:] if s != seqs[60]]


def test_reconnect_waits_are_jittered_and_capped() -> None:
    backoff = Backoff(base_s=0.5, cap_s=3.0, rng=random.Random(7))
    waits = [backoff.next() for _ in range(50)]
    assert 0.25 <= waits[0] <= 0.5
    assert all(wait <= 3.0 for wait in waits)  # delivery resumes soon after the broker
    assert all(wait >= 1.5 for wait in waits[3:])  # … but the broker is not hammered
    assert len(set(waits)) == len(waits)  # a fleet does not reconnect in step
    backoff.reset()
    assert backoff.next() <= 0.5
