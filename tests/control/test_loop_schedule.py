"""The control loop's own rhythm: cycles a command wakes early are extra, and never push
the periodic cycle (safety, refreshes of what reverts by itself) away."""

from __future__ import annotations

import asyncio
import contextlib

from closed_loop import ClosedLoop
from tests_support import eventually

from controller.control.settings import ControlSettings


async def test_a_burst_of_commands_does_not_postpone_the_periodic_cycle() -> None:
    loop = ClosedLoop.build("2026-06-22T10:00:00", ControlSettings(cycle_s=0.5))
    control = loop.loop
    task = asyncio.create_task(control.run())
    try:
        await eventually(lambda: control.cycles >= 1, what="the first cycle")
        for woken in range(control.cycles, control.cycles + 40):
            control.wake()  # 40 commands, each waking a cycle at once (20 periods' worth)
            await eventually(lambda: control.cycles > woken, what="a woken cycle")  # noqa: B023
        after = control.cycles
        # No more commands: the next cycle comes on the 0.5 s schedule (it used to be
        # pushed 40 periods, 20 s, ahead).
        await eventually(lambda: control.cycles > after, timeout_s=5,
                         what="the next periodic cycle")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
