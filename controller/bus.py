"""The reading bus: every poll's readings to every subscriber, through bounded queues.

Overflow policy: each subscriber has its own queue of at most ``maxsize`` batches (one
batch = the readings of one poll group of one device). When a subscriber falls behind and
its queue is full, the **oldest** batch is dropped to make room and counted in
``Subscription.dropped``: a slow consumer sees gaps, never stale data first, and never
slows the pollers or the other subscribers. Consumers that must not lose anything (the
store-and-forward outbox) keep up by design and report their drop counts.

``LatestValues`` is updated synchronously on publish: the newest reading of every point,
with its quality, for the live view and the control loop's snapshots.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field

from drivers.points import Value
from drivers.reading import Quality, Reading

Batch = tuple[Reading, ...]


@dataclass
class Subscription:
    name: str
    queue: asyncio.Queue[Batch]
    dropped: int = 0

    async def get(self) -> Batch:
        return await self.queue.get()

    def get_nowait(self) -> Batch | None:
        try:
            return self.queue.get_nowait()
        except asyncio.QueueEmpty:
            return None

    async def __aiter__(self) -> AsyncIterator[Batch]:
        while True:
            yield await self.queue.get()


@dataclass
class LatestValues:
    """The newest reading per (device, point), indexed by device."""

    by_device: dict[str, dict[str, Reading]] = field(default_factory=dict)

    def update(self, batch: Iterable[Reading]) -> None:
        for reading in batch:
            self.by_device.setdefault(reading.device, {})[reading.point] = reading

    def get(self, device: str, point: str) -> Reading | None:
        return self.by_device.get(device, {}).get(point)

    def value(self, device: str, point: str) -> float | None:
        """A numeric value of good quality, else None."""
        reading = self.get(device, point)
        if reading is None or reading.quality is not Quality.OK:
            return None
        value = reading.value
        if value is None or isinstance(value, str):
            return None
        return float(value)

    def device_values(self, device: str) -> Mapping[str, Value]:
        return {point: r.value for point, r in self.by_device.get(device, {}).items()
                if r.quality is Quality.OK}


@dataclass
class ReadingBus:
    latest: LatestValues = field(default_factory=LatestValues)
    subscriptions: list[Subscription] = field(default_factory=list)
    published: int = 0

    def subscribe(self, name: str, maxsize: int = 1000) -> Subscription:
        if maxsize < 1:
            raise ValueError("maxsize must be >= 1")
        subscription = Subscription(name, asyncio.Queue(maxsize))
        self.subscriptions.append(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self.subscriptions.remove(subscription)

    def publish(self, batch: Batch) -> None:
        """Hand a batch to every subscriber; never blocks (see the overflow policy)."""
        if not batch:
            return
        self.published += 1
        self.latest.update(batch)
        for subscription in self.subscriptions:
            queue = subscription.queue
            if queue.full():
                queue.get_nowait()
                subscription.dropped += 1
            queue.put_nowait(batch)
