"""TelemetryRecorder: every batch on the reading bus becomes one stored message."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from controller.bus import ReadingBus
from controller.store import Store
from controller.uplink import TelemetryRecorder, UplinkStats
from drivers.reading import Reading


def poll(device: str, value: float) -> tuple[Reading, ...]:
    return (Reading(device, "total_power", value, "W", 1_800_000_000.0),)


async def test_a_burst_larger_than_one_append_loses_no_batch(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.sqlite", synchronous="normal")
    bus = ReadingBus()
    stored_more = asyncio.Event()  # set by the recorder after each append
    recorder = TelemetryRecorder(store, bus, stored_more, UplinkStats())
    task = asyncio.create_task(recorder.run())
    await asyncio.sleep(0)  # subscribed
    polls = 1234  # more than the 500 messages one append takes
    for number in range(polls):
        bus.publish(poll(f"meter_{number % 7}", float(number)))
    async with asyncio.timeout(10):
        while store.depth()[0] < polls:
            await stored_more.wait()
            stored_more.clear()
    task.cancel()
    stored = store.pending(limit=2 * polls)
    values = [json.loads(m.payload)["values"]["total_power"] for m in stored]
    assert values == [float(n) for n in range(polls)]  # all, once, in order
    store.close()
