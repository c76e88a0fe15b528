"""When polls start, and the wait the hot path uses (no timings asserted: only what the
schedule says and what a wait returns)."""

from __future__ import annotations

import asyncio
import dataclasses
import zlib

import pytest

from controller.bus import ReadingBus
from controller.lines import line_for
from controller.scheduler import PHASE_SLOTS, LineScheduler
from controller.wakeup import Wakeup
from simulators.runner import single_device_site


def test_polls_start_in_slots_from_one_origin() -> None:
    site = single_device_site("sg-ready-heatpump", port=1)
    template = site.devices["device"]
    start = 1000.0
    dues: set[float] = set()
    for index in range(40):
        device = dataclasses.replace(template, name=f"hp_{index:03d}")
        scheduler = LineScheduler.for_devices(line_for(device.line), [device], ReadingBus(),
                                              start=start)
        (poller,) = scheduler.devices
        slot = zlib.crc32(device.name.encode()) / 2**32  # the device's old phase, floored
        for schedule in poller.groups:
            period = min(schedule.group.interval_s, 1.0)
            offset = (schedule.next_due - start) / period
            assert offset == pytest.approx(int(slot * PHASE_SLOTS) / PHASE_SLOTS)
            dues.add(round(schedule.next_due, 9))
    # 40 devices on 40 lines start at no more than PHASE_SLOTS instants
    assert 1 < len(dues) <= PHASE_SLOTS


async def test_a_wakeup_ends_early_when_woken() -> None:
    wakeup = Wakeup()
    waiter = asyncio.create_task(wakeup.wait(3600.0))
    await asyncio.sleep(0)
    wakeup.wake()
    async with asyncio.timeout(10):  # a bound for the test, not a timing under test
        await waiter
    wakeup.wake()  # nobody waits: nothing happens


async def test_a_wakeup_ends_by_itself() -> None:
    async with asyncio.timeout(10):
        await Wakeup().wait(0.001)


async def test_a_cancelled_wait_leaves_no_timer() -> None:
    loop = asyncio.get_running_loop()
    wakeup = Wakeup()
    waiter = asyncio.create_task(wakeup.wait(3600.0))
    await asyncio.sleep(0)
    timers = [h for h in loop._scheduled if not h.cancelled()]  # type: ignore[attr-defined]
    assert any(h.when() > loop.time() + 3000 for h in timers)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    timers = [h for h in loop._scheduled if not h.cancelled()]  # type: ignore[attr-defined]
    assert not any(h.when() > loop.time() + 3000 for h in timers)
    wakeup.wake()  # the cancelled wait is forgotten
