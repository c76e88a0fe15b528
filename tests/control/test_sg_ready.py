"""SG-Ready in closed loop: a Midea heat pump driven by two relay contacts (and, as a
variant, by its own SG register): thermal storage in the cheap hours, blocking for a
DR event and hand-back, minimum dwell, the label's blocking limit, and a dead gateway
that leaves the contacts open (normal operation). Socket-free, on a manual clock."""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path
from typing import Any

from closed_loop import ClosedLoop, at

from controller.control.events import DrEvent, EventKind
from controller.control.facts import control_warnings
from controller.control.loop import sg_ready_state
from controller.control.model import Actuator
from controller.control.settings import ControlSettings
from controller.store import Store
from drivers.site import SgReadySpec, SiteSpec, load_site

SITE = Path(__file__).resolve().parent / "sites" / "sg-contacts.toml"
SETTINGS = ControlSettings(cycle_s=5.0, relay_watchdog_s=60)
CONTACT_1, CONTACT_2 = 13, 14  # relay_b channels wired to the heat pump's SG and EVU


def contacts_site() -> SiteSpec:
    return load_site(SITE)


def register_site(**changes: Any) -> SiteSpec:
    """The same building with SG-Ready through the heat pump's own register."""
    site = load_site(SITE)
    heat_pump = site.devices["heat_pump"]
    wiring = SgReadySpec(relay=None, contacts=None, min_dwell_s=600.0, max_blocked_s=7200.0)
    devices = dict(site.devices, heat_pump=dataclasses.replace(
        heat_pump, sg_ready=dataclasses.replace(wiring, **changes)))
    return dataclasses.replace(site, devices=devices)


def with_wiring(site: SiteSpec, **changes: Any) -> SiteSpec:
    heat_pump = site.devices["heat_pump"]
    assert heat_pump.sg_ready is not None
    devices = dict(site.devices, heat_pump=dataclasses.replace(
        heat_pump, sg_ready=dataclasses.replace(heat_pump.sg_ready, **changes)))
    return dataclasses.replace(site, devices=devices)


def contacts(loop: ClosedLoop) -> tuple[bool, bool]:
    relay = loop.simulated.model.relays["relay_b"]
    return relay.states[CONTACT_1 - 1], relay.states[CONTACT_2 - 1]


def changes(loop: ClosedLoop) -> list[tuple[float, int]]:
    """(time, new state) of every SG-Ready change the heat pump saw."""
    out: list[tuple[float, int]] = []
    for t, state in zip(loop.trace.t, loop.trace.sg, strict=True):
        if not out or out[-1][1] != state:
            out.append((t, state))
    return out


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


async def test_contacts_store_heat_block_for_a_reduction_and_hand_back() -> None:
    """Winter, Shandong calendar: 低谷 from 10:00 → boost (3) on the contacts; a 20 kW
    reduction at 12:00 blocks the heat pump (1) within a cycle; after the event it is
    released; every change of state dwells at least 600 s."""
    loop = ClosedLoop.build("2026-12-02T10:30:00", SETTINGS, site=contacts_site(),
                            soc_pct=10.0)
    heat_pump = loop.simulated.model.heat_pumps["heat_pump"]
    spec = loop.plant.site.devices["heat_pump"]
    event_at = at("2026-12-02T12:00:00")
    loop.event(DrEvent("dr-1", EventKind.REDUCTION, "site", event_at, 1800.0, 20.0))
    await loop.run(900)  # 10:45, 低谷
    decision = loop.loop.last_decision
    assert decision is not None
    assert decision.claims[Actuator("sg_ready", "heat_pump")].owner == "thermal_storage"
    assert contacts(loop) == (False, True)  # 0:1 — boost recommended
    assert heat_pump.sg_ready_state == 3
    assert sg_ready_state(loop.plant, spec) == 3  # the state as the relay reads back
    await loop.run(at("2026-12-02T12:00:00") - loop.clock.now())
    before = loop.between(event_at - 600, event_at)
    await loop.run(300)
    assert contacts(loop) == (True, False)  # 1:0 — blocked
    assert heat_pump.sg_ready_state == 1
    assert heat_pump.electric_w == 0.0
    during = loop.between(event_at + 60, event_at + 300)
    assert mean([loop.trace.grid_kw[i] for i in before]) - mean(
        [loop.trace.grid_kw[i] for i in during]) >= 19.0
    await loop.run(at("2026-12-02T13:00:00") - loop.clock.now())
    assert heat_pump.sg_ready_state != 1  # handed back after the event
    assert heat_pump.electric_w > 0
    seen = changes(loop)
    assert [state for _, state in seen][:4] == [2, 3, 4, 1]  # 4: pre-conditioning
    for (t0, _), (t1, _) in itertools.pairwise(seen[1:]):  # the gateway's changes
        assert t1 - t0 >= 600.0 - SETTINGS.cycle_s, seen


async def test_the_minimum_dwell_holds_a_state_the_strategies_want_changed() -> None:
    """A utility command blocks the heat pump for 2 minutes; comfort wants it back at
    once, but the block was set less than 600 s before: the contacts hold until then."""
    loop = ClosedLoop.build("2026-12-02T08:30:00", SETTINGS, site=contacts_site(),
                            soc_pct=50.0)
    heat_pump = loop.simulated.model.heat_pumps["heat_pump"]
    start = loop.clock.now() + 10
    loop.event(DrEvent("sg-1", EventKind.SG_READY, "heat_pump", start, 120.0, 1))
    await loop.run(30)
    assert heat_pump.sg_ready_state == 1
    blocked_at = next(t for t, state in changes(loop) if state == 1)
    await loop.run(blocked_at + 600.0 - 2 * SETTINGS.cycle_s - loop.clock.now())
    assert heat_pump.sg_ready_state == 1  # the command ended long ago; the block dwells
    assert contacts(loop) == (True, False)
    await loop.run(3 * SETTINGS.cycle_s)
    assert heat_pump.sg_ready_state == 2
    assert contacts(loop) == (False, False)


async def test_a_block_ends_at_its_limit_whatever_the_command() -> None:
    loop = ClosedLoop.build("2026-12-02T08:30:00", SETTINGS,
                            site=with_wiring(contacts_site(), max_blocked_s=900.0),
                            soc_pct=50.0)
    heat_pump = loop.simulated.model.heat_pumps["heat_pump"]
    loop.event(DrEvent("sg-2", EventKind.SG_READY, "heat_pump", loop.clock.now() + 10, 3600.0, 1))
    await loop.run(30)
    blocked_at = next(t for t, state in changes(loop) if state == 1)
    await loop.run(blocked_at + 900.0 - 2 * SETTINGS.cycle_s - loop.clock.now())
    assert heat_pump.sg_ready_state == 1
    await loop.run(3 * SETTINGS.cycle_s)
    assert heat_pump.sg_ready_state == 2  # the command still asks for 1
    await loop.run(600.0 - 3 * SETTINGS.cycle_s)
    assert heat_pump.sg_ready_state == 2  # and the normal state dwells


async def test_a_dead_gateway_leaves_the_contacts_open_and_the_loads_on() -> None:
    """The module lost its configuration (every channel would fall closed): the gateway
    programs the contacts' channels to fall open before it closes a contact. Then it
    dies mid-event: the contacts open (normal), the shed loads come back."""
    loop = ClosedLoop.build("2026-12-02T11:50:00", SETTINGS, site=contacts_site(),
                            soc_pct=6.0)
    heat_pump = loop.simulated.model.heat_pumps["heat_pump"]
    relay = loop.simulated.model.relays["relay_b"]
    relay.safe_states = [True] * 16
    await loop.run(10)
    assert relay.safe_states[CONTACT_1 - 1:CONTACT_2] == [False, False]
    assert all(relay.safe_states[:CONTACT_1 - 1])  # load channels still fall closed
    loop.event(DrEvent("dr-2", EventKind.REDUCTION, "site", loop.clock.now() + 900, 1800.0, 45.0))
    await loop.run(1400)  # the heat pump pre-conditions (4), dwells 600 s, then blocks
    assert heat_pump.sg_ready_state == 1
    assert not all(relay.states[:3])  # loads shed as well
    loop.advance_without_controller(90)  # the gateway dies: nobody refreshes the watchdog
    assert relay.trips >= 1
    assert contacts(loop) == (False, False)  # SG contacts fall open: normal
    assert heat_pump.sg_ready_state == 2
    assert all(relay.states[:3])  # the loads' channels fall closed: back on


async def test_stopping_control_hands_the_contacts_back(tmp_path: Path) -> None:
    loop = ClosedLoop.build("2026-12-02T10:30:00", SETTINGS, site=contacts_site(),
                            store=Store(tmp_path / "s.db"))
    heat_pump = loop.simulated.model.heat_pumps["heat_pump"]
    await loop.run(60)
    assert heat_pump.sg_ready_state == 3
    await loop.stop_running()
    assert contacts(loop) == (False, False)
    assert heat_pump.sg_ready_state == 2


async def test_the_midea_register_stores_heat_blocks_and_is_handed_back(
        tmp_path: Path) -> None:
    """The variant without contacts: SG-Ready through register 10 of the Midea map (SG
    bit 1, EVU bit 2), its state read back through the map's codes."""
    loop = ClosedLoop.build("2026-12-02T10:30:00", SETTINGS, site=register_site(),
                            store=Store(tmp_path / "s.db"), soc_pct=10.0)
    heat_pump = loop.simulated.model.heat_pumps["heat_pump"]
    served = loop.plant.devices["heat_pump"]
    event_at = at("2026-12-02T12:00:00")
    loop.event(DrEvent("dr-3", EventKind.REDUCTION, "site", event_at, 1800.0, 20.0))
    await loop.run(900)
    assert heat_pump.sg_ready_state == 3
    assert served.point_values()["sg_signals"] == 3
    assert contacts(loop) == (False, False)  # the relay channels are left as they were
    await loop.run(event_at + 300 - loop.clock.now())
    assert heat_pump.sg_ready_state == 1
    assert heat_pump.electric_w == 0.0
    seen = changes(loop)
    for (t0, _), (t1, _) in itertools.pairwise(seen[1:]):  # the gateway's changes
        assert t1 - t0 >= 600.0 - SETTINGS.cycle_s, seen
    await loop.stop_running()
    assert heat_pump.sg_ready_state == 2  # failsafe "gateway": released on stop


def test_check_warns_about_sg_contacts_that_fall_closed() -> None:
    site = contacts_site()
    assert not any("close when the module's watchdog trips" in w
                   for w in control_warnings(site))
    relay = dataclasses.replace(site.devices["relay_b"], safe_open=frozenset({13}))
    closing = dataclasses.replace(site, devices=dict(site.devices, relay_b=relay))
    warnings = control_warnings(closing)
    assert any("relay_b channel(s) 14 close when the module's watchdog trips" in w
               for w in warnings), warnings
    assert any("contacts stay as last set" in w for w in control_warnings(site, 0))
