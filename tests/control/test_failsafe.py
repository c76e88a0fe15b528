"""Fail-safe: what happens when the controller dies or restarts mid-event."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from pathlib import Path

from closed_loop import EXAMPLE, ClosedLoop
from tests_support import eventually

from controller.control.events import DrEvent, EventKind
from controller.control.loop import ControlLoop
from controller.control.settings import ControlSettings
from controller.inbox import CommandInbox
from controller.store import Store
from drivers.site import load_site

SETTINGS = ControlSettings(cycle_s=5.0, relay_watchdog_s=60, battery_revert_s=30,
                           restore_step_kw=50.0, restore_step_s=10.0)


def advance_without_controller(loop: ClosedLoop, seconds: float) -> None:
    loop.advance_without_controller(seconds)


def shed_count(loop: ClosedLoop) -> int:
    return sum(1 for load in loop.simulated.model.loads.values() if not load.switched_on)


async def test_a_dead_controller_lets_relays_and_battery_fall_back() -> None:
    loop = ClosedLoop.build("2026-06-22T10:00:00", SETTINGS, soc_pct=8.0)
    start = loop.clock.now() + 10
    loop.event(DrEvent("dr-1", EventKind.REDUCTION, "site", start, 3600.0, 70.0))
    await loop.run(300)
    assert shed_count(loop) >= 3
    battery = loop.simulated.model.batteries["battery"]
    assert battery.charge_limited or battery.discharge_limited
    # The controller dies mid-event: nobody refreshes the watchdog or the setpoint.
    advance_without_controller(loop, 90)
    assert shed_count(loop) == 0  # the relay watchdog switched every load back on
    assert not battery.charge_limited
    assert not battery.discharge_limited
    assert loop.simulated.model.relays["relay_a"].trips >= 1


async def test_a_restart_resumes_the_event_and_ends_it_on_schedule(tmp_path: Path) -> None:
    store_path = tmp_path / "state.sqlite"
    first = ClosedLoop.build("2026-06-22T10:00:00", SETTINGS, store=Store(store_path),
                             soc_pct=8.0)
    start = first.clock.now() + 10
    first.loop.book.add(DrEvent("dr-2", EventKind.REDUCTION, "site", start, 1200.0, 70.0))
    await first.run(300)
    shed_before = shed_count(first)
    assert shed_before >= 3
    baseline = first.loop.book.events["dr-2"].baseline_kw
    # The process dies; it restarts 20 s later (the utility may be unreachable meanwhile).
    advance_without_controller(first, 20)
    second_loop = ControlLoop(first.plant, SETTINGS, CommandInbox(), Store(store_path),
                              clock=first.clock.now)
    first.loop = second_loop
    assert second_loop.book.events["dr-2"].status == "active"
    assert second_loop.book.events["dr-2"].baseline_kw == baseline  # not re-measured
    assert set(second_loop.memory.shed_by) >= {
        n for n, load in first.simulated.model.loads.items() if not load.switched_on}
    await first.run(600)
    assert shed_count(first) >= 3  # still holding the event
    await first.run(300 + 120)  # past the scheduled end (10 + 1200 s) and the restore
    assert second_loop.book.events["dr-2"].status == "completed"
    assert shed_count(first) == 0
    assert not second_loop.memory.shed_by


async def test_no_load_stays_shed_past_its_maximum_even_across_a_restart(
        tmp_path: Path) -> None:
    site = load_site(EXAMPLE)
    short = {name: dataclasses.replace(load, max_shed_s=300.0, min_off_s=0.0)
             for name, load in site.loads.items()}
    site = dataclasses.replace(site, loads=short)
    store_path = tmp_path / "state.sqlite"
    loop = ClosedLoop.build("2026-06-22T09:00:00", SETTINGS, site=site,
                            store=Store(store_path), soc_pct=6.0)
    start = loop.clock.now() + 3600  # an hour of history for the pre-event baseline
    loop.event(DrEvent("dr-3", EventKind.REDUCTION, "site", start, 1800.0, 40.0))
    await loop.run(3600)
    shed_since: dict[str, float] = {}
    longest: dict[str, float] = {}
    restarted = False
    for _ in range(1800 // 5):
        await loop.run(5.0)
        now = loop.clock.now()
        for name, load in loop.simulated.model.loads.items():
            if not load.switched_on:
                shed_since.setdefault(name, now)
                longest[name] = max(longest.get(name, 0.0), now - shed_since[name])
            else:
                shed_since.pop(name, None)
        if not restarted and now - start > 400:  # restart mid-event
            loop.loop = ControlLoop(loop.plant, SETTINGS, CommandInbox(), Store(store_path),
                                    clock=loop.clock.now)
            restarted = True
    assert longest, "nothing was shed"
    # Loads rotate: none stays off longer than its 300 s plus one restore step and cycle.
    assert max(longest.values()) <= 300.0 + SETTINGS.restore_step_s + 2 * SETTINGS.cycle_s
    assert len(longest) > 4  # others took over when the first ones came back


# -- controls that do not revert by themselves (fail-safe "gateway") ------------------------


async def test_what_does_not_revert_is_handed_back_when_control_stops(tmp_path: Path) -> None:
    """The SG-Ready register keeps what was written (the map says failsafe = "gateway"):
    when the control loop stops, it writes the release steps — normal operation."""
    loop = ClosedLoop.build("2026-06-22T10:00:00", SETTINGS, store=Store(tmp_path / "s.db"))
    heat_pump = loop.simulated.model.heat_pumps["heat_pump"]
    loop.event(DrEvent("sg-4", EventKind.SG_READY, "heat_pump", loop.clock.now() + 10, 3600.0, 1))
    await loop.run(60)
    assert heat_pump.sg_ready_state == 1  # blocked by the utility's command
    task = asyncio.create_task(loop.loop.run())
    # the running loop takes over from the manual cycles
    await eventually(lambda: loop.loop.cycles >= 13, what="a cycle of the running loop")
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert heat_pump.sg_ready_state == 2  # released: normal operation


async def test_a_setting_left_held_by_a_crash_is_released_at_the_next_start(
        tmp_path: Path) -> None:
    store_path = tmp_path / "state.sqlite"
    first = ClosedLoop.build("2026-06-22T10:00:00", SETTINGS, store=Store(store_path))
    heat_pump = first.simulated.model.heat_pumps["heat_pump"]
    first.event(DrEvent("sg-5", EventKind.SG_READY, "heat_pump", first.clock.now() + 10, 600.0, 1))
    await first.run(60)  # cycles only: the process "dies" without running its hand-back
    assert heat_pump.sg_ready_state == 1
    advance_without_controller(first, 1200)  # the event is long over; nobody is in charge
    assert heat_pump.sg_ready_state == 1  # a register that keeps what it was told
    second = ControlLoop(first.plant, SETTINGS, CommandInbox(), Store(store_path),
                         clock=first.clock.now)
    task = asyncio.create_task(second.run())
    await eventually(lambda: heat_pump.sg_ready_state == 2, what="SG-Ready released")
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
