"""Every gateway control path on the Chinese vendors' maps, in closed loop over their
simulators (socket-free, manual clock): a site variant per vendor (``tests/sites``), each
built from the vendor's inverter, battery and grid-meter maps. What is asserted is what
the simulated building did (physics), not what the controller believes.

* export limit (zero export): the inverters' ``power_limit`` recipes — Huawei's
  active-power derating, Sungrow's power limitation on the SG and the SH — hold the
  export at the grid connection to zero; GoodWe's ET has no output limitation, and the
  loop leaves it alone;
* battery setpoint: each battery's ``power_setpoint`` recipe — Huawei's forcible
  charge/discharge, Sungrow's forced mode, GoodWe's EMS mode — holds the battery at the
  commanded power and hands it back when the event ends;
* DR shed: a reduction event cuts import by what was asked (the battery counts for what
  it can sustain, shed loads make up the rest).
"""

from __future__ import annotations

import statistics

import pytest
from closed_loop import ClosedLoop, at
from vendor_sites import VENDOR_SITES, vendor_site

from controller.control.events import DrEvent, EventKind
from controller.control.facts import control_warnings
from controller.control.settings import ControlSettings

#: The inverters whose output the gateway can limit, per site.
LIMITABLE = {"huawei-shop": ["inverter"], "sungrow-workshop": ["string_inverter", "hybrid"],
             "goodwe-office": []}


@pytest.mark.parametrize("name", VENDOR_SITES)
async def test_zero_export_holds_through_the_inverters_power_limit(name: str) -> None:
    """Sunday noon in June: PV exceeds the building's load. Zero export: the gateway
    limits the inverters' output until the grid meter reads no export."""
    settings = ControlSettings(cycle_s=5.0, export_limit_kw=0.0, battery_mode="idle")
    loop = ClosedLoop.build("2026-06-21T11:40:00", settings, site=vendor_site(name))
    await loop.run(120)
    limitable = LIMITABLE[name]
    if not limitable:  # GoodWe ET: nothing caps its output; the gateway says so
        warnings = control_warnings(loop.plant.site)
        assert any("inverter" in w and "no power_limit control" in w for w in warnings)
        assert not loop.loop.commanded
        return
    exporting = [i for i, g in enumerate(loop.trace.grid_kw) if g < -0.5]
    assert exporting, "the building should export at Sunday noon without a limit"
    await loop.run(600)
    recent = loop.between(loop.clock.now() - 300, loop.clock.now() + 1)
    # At most 0.5 kW of export, the tolerance of the demo's export test: with two
    # inverters each taking the whole excess off, the loop settles into a small cycle.
    assert all(loop.trace.grid_kw[i] >= -0.5 for i in recent), \
        min(loop.trace.grid_kw[i] for i in recent)
    model = loop.simulated.model
    limited = [model.pv[n] for n in limitable if model.pv[n].limit_active]
    assert limited, "no inverter was limited"
    assert all(inv.available_w > inv.power_w + 200 for inv in limited)  # PV held back
    assert loop.loop.write_failures == 0


@pytest.mark.parametrize("name", VENDOR_SITES)
@pytest.mark.parametrize("power_w", [-4000.0, 3000.0])
async def test_battery_setpoint_is_held_and_handed_back(name: str, power_w: float) -> None:
    """A ``battery_setpoint`` event: the battery follows the commanded power (charge,
    discharge) through the vendor's forced-mode recipe, then returns to its own
    logic when the event ends."""
    settings = ControlSettings(cycle_s=5.0, battery_mode="idle")
    loop = ClosedLoop.build("2026-06-22T10:00:00", settings, site=vendor_site(name), soc_pct=50.0)
    start = loop.clock.now() + 30
    loop.event(DrEvent("bat", EventKind.BATTERY, "battery", start, 900.0, power_w))
    await loop.run(30 + 900 + 60)
    battery = loop.simulated.model.batteries["battery"]
    held = loop.between(start + 60, start + 900)
    assert all(abs(loop.trace.battery_kw[i] * 1000 - power_w) < 150 for i in held), \
        [loop.trace.battery_kw[i] for i in held][:5]
    assert loop.loop.book.events["bat"].status == "completed"
    assert battery.forced_w is None  # released: the battery's own logic again
    assert abs(battery.power_w) < 1.0
    assert loop.loop.write_failures == 0


@pytest.mark.parametrize("name", VENDOR_SITES)
async def test_dr_shed_cuts_import_by_what_was_asked(name: str) -> None:
    """A 15 kW reduction for an hour on a winter weekday morning — more than any of the
    batteries gives: import falls by at least 95 % of it against the load before the
    event, the battery discharging and loads shed, and the loads come back after."""
    settings = ControlSettings(cycle_s=5.0, battery_mode="idle")
    loop = ClosedLoop.build("2026-12-02T09:00:00", settings, site=vendor_site(name), soc_pct=70.0)
    start = at("2026-12-02T09:30:00")
    loop.event(DrEvent("dr", EventKind.REDUCTION, "site", start, 3600.0, 15.0))
    await loop.run(30 * 60 + 3600 + 600)
    event = loop.loop.book.events["dr"]
    assert event.status == "completed"
    reference = event.reference_kw
    assert reference is not None
    assert reference > 20
    during = loop.between(start + 120, start + 3600)
    actual = statistics.fmean(loop.trace.grid_kw[i] for i in during)
    assert reference - actual >= 0.95 * 15.0, (reference, actual)
    assert statistics.fmean(loop.trace.battery_kw[i] for i in during) > 2.0  # discharging
    assert max(loop.trace.shed[i] for i in during) >= 1  # and loads went off
    after = loop.between(start + 3600 + 300, start + 3600 + 600)
    assert all(loop.trace.shed[i] == 0 for i in after)  # restored after the event
    assert loop.loop.write_failures == 0
