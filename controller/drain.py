"""The order in which a consumer sends the outbox: per stream by ``seq``, streams in turn.

Every stream's messages go out strictly in sequence order — also after an outage, when a
backlog and new messages of the same stream are both waiting — and the streams take
turns (round robin), so a long backlog on one stream (a device's telemetry) never holds
up another (a command's reply, an event). The store is read a page per stream at a time
(``outbox(stream, seq)`` index), only the messages this consumer has not acknowledged;
new messages are found by reading past the highest sequence number seen so far after
:meth:`Drain.refresh` (the recorder stored more). Memory: at most :attr:`Drain.PAGE`
messages per stream with messages waiting.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field

from controller.store import MQTT, OutboxMessage, Store
from controller.streams import Stream


@dataclass
class _Stream:
    buffer: deque[OutboxMessage] = field(default_factory=deque)
    cursor: int = 0  # the highest seq taken from the store into the buffer
    more: bool = False  # the store holds messages cursor < seq <= horizon not in buffer


class Drain:
    """Chooses the next message to publish (see the module). One per connection: a new
    connection starts again from the store, so what was in flight is sent again."""

    PAGE = 64

    def __init__(self, store: Store, consumer: str = MQTT.name) -> None:
        self.store = store
        self.consumer = consumer
        self.horizon = 0  # every stored message up to here is accounted for in _streams
        self._streams: dict[Stream, _Stream] = {}
        self._turn: deque[Stream] = deque()
        self._dirty = True

    async def start(self) -> None:
        """Learn the streams waiting and where the stored messages end."""
        self.horizon = await asyncio.to_thread(self.store.max_seq)
        for stream in await asyncio.to_thread(self.store.pending_streams, self.consumer):
            self._add(stream).more = True
        self._dirty = True

    def refresh(self) -> None:
        """The store holds new messages: look for them at the next :meth:`next`."""
        self._dirty = True

    def _add(self, stream: Stream) -> _Stream:
        state = self._streams.get(stream)
        if state is None:
            state = self._streams[stream] = _Stream()
            self._turn.append(stream)
        return state

    async def _scan(self) -> None:
        page = await asyncio.to_thread(self.store.pending, consumer=self.consumer,
                                       after_seq=self.horizon, limit=self.PAGE)
        for message in page:
            state = self._add(message.stream)
            if not state.more and len(state.buffer) < self.PAGE:
                state.buffer.append(message)
                state.cursor = message.seq
            else:
                state.more = True
            self.horizon = message.seq
        self._dirty = len(page) == self.PAGE  # a full page: there may be more

    async def _refill(self, stream: Stream, state: _Stream) -> None:
        page = await asyncio.to_thread(self.store.pending_in, stream, consumer=self.consumer,
                                       after_seq=state.cursor, upto_seq=self.horizon,
                                       limit=self.PAGE)
        state.buffer.extend(page)
        if page:
            state.cursor = page[-1].seq
        state.more = len(page) == self.PAGE

    async def next(self) -> OutboxMessage | None:
        """The next message, or None when everything stored was handed out."""
        if self._dirty:
            await self._scan()
        for _ in range(len(self._turn)):
            stream = self._turn[0]
            state = self._streams[stream]
            if not state.buffer and state.more:
                await self._refill(stream, state)
            if state.buffer:
                self._turn.rotate(-1)
                return state.buffer.popleft()
            self._turn.popleft()  # nothing left: forget it until it has messages again
            del self._streams[stream]
        return None
