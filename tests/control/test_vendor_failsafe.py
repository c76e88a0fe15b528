"""Fail-safe on the Chinese vendors' maps: what stays when the gateway dies, and who undoes
it (socket-free closed loop on the site variants in ``tests/sites``).

* Huawei's active-power derating, Sungrow's power limitation and forced mode, GoodWe's EMS
  mode are settings that do not revert (fail-safe "gateway"): when the control loop dies
  without its hand-back they stay as last written — as on the real devices — and the
  next start of the loop releases them.
* Huawei's forcible charge/discharge is given by duration (fail-safe "device_reverts"):
  the battery ends it by itself once the period the gateway programmed has run out.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path

import pytest
from closed_loop import ClosedLoop
from tests_support import eventually
from vendor_sites import vendor_site

from controller.control.events import DrEvent, EventKind
from controller.control.loop import ControlLoop
from controller.control.settings import ControlSettings
from controller.inbox import CommandInbox
from controller.store import Store

SETTINGS = ControlSettings(cycle_s=5.0, export_limit_kw=0.0, battery_mode="idle",
                           battery_revert_s=30, relay_watchdog_s=60)


def advance_without_controller(loop: ClosedLoop, seconds: float) -> None:
    """The gateway is dead: the building goes on, nobody writes."""
    model = loop.simulated.model
    end = loop.clock.now() + seconds
    while loop.clock.now() < end:
        loop.clock.advance(5.0)
        model.advance(loop.clock.now())


async def restart(loop: ClosedLoop, store: Path, released: Callable[[], bool],
                  what: str) -> None:
    """Start a new control loop on the same store — the export limit no longer wanted —
    and wait until ``released()``."""
    settings = ControlSettings(cycle_s=5.0, battery_mode="idle", relay_watchdog_s=60)
    second = ControlLoop(loop.plant, settings, CommandInbox(), Store(store),
                         clock=loop.clock.now)
    task = asyncio.create_task(second.run())
    try:
        await eventually(released, what=what)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.mark.parametrize(("site", "inverter"), [("huawei-shop", "inverter"),
                                                ("sungrow-workshop", "string_inverter")])
async def test_an_output_limit_left_by_a_dead_gateway_stays_until_the_next_start(
        tmp_path: Path, site: str, inverter: str) -> None:
    store = tmp_path / "state.sqlite"
    loop = ClosedLoop.build("2026-06-21T11:40:00", SETTINGS,
                            site=vendor_site(site), store=Store(store))
    await loop.run(600)  # zero export: the inverter is limited
    pv = loop.simulated.model.pv[inverter]
    assert pv.limit_active
    # The process dies (cycles only: no hand-back). An hour later the limit still holds,
    # although the export limit is long gone from anybody's mind.
    advance_without_controller(loop, 3600)
    assert pv.limit_active
    assert pv.available_w > pv.power_w + 200
    await restart(loop, store, lambda: not pv.limit_enabled or pv.limit_pct >= 100.0,
                  f"{inverter}'s limit released at the next start")


@pytest.mark.parametrize("site", ["sungrow-workshop", "goodwe-office"])
async def test_a_forced_battery_left_by_a_dead_gateway_stays_until_the_next_start(
        tmp_path: Path, site: str) -> None:
    store = tmp_path / "state.sqlite"
    loop = ClosedLoop.build("2026-06-22T10:00:00", SETTINGS,
                            site=vendor_site(site), store=Store(store),
                            soc_pct=50.0)
    loop.event(DrEvent("bat", EventKind.BATTERY, "battery", loop.clock.now() + 10, 600.0, -3000.0))
    await loop.run(120)
    battery = loop.simulated.model.batteries["battery"]
    assert battery.forced_w == pytest.approx(-3000.0)
    advance_without_controller(loop, 1800)  # the event is long over; nobody is in charge
    assert battery.forced_w == pytest.approx(-3000.0)  # forced mode keeps charging
    assert battery.power_w == pytest.approx(-3000.0, abs=10)
    await restart(loop, store, lambda: battery.forced_w is None,
                  "the forced charge released at the next start")


async def test_a_huawei_forcible_charge_ends_by_itself_when_the_gateway_dies() -> None:
    loop = ClosedLoop.build("2026-06-22T10:00:00", SETTINGS,
                            site=vendor_site("huawei-shop"), soc_pct=50.0)
    loop.event(DrEvent("bat", EventKind.BATTERY, "battery", loop.clock.now() + 10, 3600.0, -3000.0))
    await loop.run(120)
    battery = loop.simulated.model.batteries["battery"]
    binding = loop.plant.devices["battery"]
    assert battery.forced_w == pytest.approx(-3000.0)
    values = binding.point_values()
    assert values["forcible_command"] == 1  # charge
    assert values["forcible_period"] == 60  # battery_revert_s 30 s → one whole minute
    # The gateway dies mid-event. Within the period the battery still charges …
    advance_without_controller(loop, 30)
    assert battery.forced_w == pytest.approx(-3000.0)
    # … then the inverter ends the forcible charge by itself, and 47100 reads "stop".
    advance_without_controller(loop, 60)
    assert battery.forced_w is None
    assert abs(battery.power_w) < 1.0
    assert binding.point_values()["forcible_command"] == 0
