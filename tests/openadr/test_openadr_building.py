"""The utility's VTN drives the simulated building through the gateway's VEN.

The whole gateway as ``pedf run`` builds it (``assemble``: Modbus polling of the simulated
devices over real sockets and the RS-485 pseudo-terminal, the control loop, the VEN from
the site's ``[openadr]`` section), on a simulated clock running 10× real time, against a
real openleadr VTN in-process over plain HTTP. The VTN's times are wall-clock times; the
VEN places them on the simulated clock (docs/openadr.md), so an event "from now for ten
minutes" lasts ten simulated minutes.
"""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path

from oadr_support import Utility, site_with_openadr, until

from controller.app import App, assemble
from controller.config import uplink_settings
from controller.control.model import Level
from drivers.site import load_site
from simulators.clock import ScaledClock
from simulators.runner import SiteRunner
from simulators.sitefile import build_site

START = 1_782_093_600.0 + 3600  # 2026-06-22 11:00 in Jinan: office hours, sunny
SPEED = 10.0


def grid_kw(app: App) -> float:
    grid = app.site.grid_meter()
    assert grid is not None
    value = app.gateway.capability(grid.name, "power_w")
    assert value is not None
    return value / 1000.0


def acting(app: App) -> set[str]:
    """What the control loop does for events now: shed loads (also those waiting for
    their restore step), battery and heat-pump claims at the event level."""
    loop = app.control
    assert loop is not None
    doing = set(loop.memory.shed_by)
    if loop.last_decision is not None:
        doing |= {f"{actuator.kind} {actuator.name}"
                  for actuator, proposal in loop.last_decision.claims.items()
                  if proposal.level == Level.EVENT}
    return doing


async def test_vtn_event_sheds_the_building_reports_and_cancels(
        tmp_path: Path, utility: Utility) -> None:
    spec = load_site(site_with_openadr(tmp_path, f"""
        [openadr]
        vtn_url = "{utility.url}"
        ven_name = "jinan-office"
        report_interval_s = 1
        opt_out_above_kw = 50
        """.replace("        ", ""), free_ports=True))
    clock = ScaledClock(start=START, speed=SPEED)
    settings = dataclasses.replace(uplink_settings(spec), host="127.0.0.1", port=1,
                                   store_path=str(tmp_path / "state.sqlite"))
    async with SiteRunner(build_site(spec, start_s=START), clock,
                          serial_time_scale=0.05) as runner, \
            assemble(spec, serial_ports=runner.serial_ports, settings=settings,
                     wall_clock=clock.now) as app:
        assert app.openadr is not None
        assert app.control is not None
        assert app.store is not None
        loop, ven = app.control, app.openadr
        services = [(name, run) for name, run in app.services if name in ("control", "openadr")]
        stop = asyncio.Event()
        task = asyncio.create_task(app.gateway.run(stop, services))
        try:
            # registration, and the telemetry report the VEN offers
            await until(lambda: ven.registered, what="VEN registered")
            assert utility.registrations[0]["ven_name"] == "jinan-office"
            assert utility.offered == [{"resource_id": "grid_meter", "measurement": "RealPower",
                                        "unit": "W", "scale": "k",
                                        "min": timedelta(seconds=1),
                                        "max": timedelta(hours=1)}]
            await until(lambda: len(loop.grid_history) >= 4, what="pre-event samples")
            before_kw = grid_kw(app)

            # an event with a target: 30 kW less than the baseline, from now on
            utility.add("EVT-1", "LOAD_DISPATCH", "delta", [-30.0], scale="k")
            await until(lambda: utility.answers("EVT-1") == [("optIn", 0)], what="optIn")
            event = loop.book.events["oadr:EVT-1"]
            assert (event.kind, event.value, event.source) == ("reduction", 30.0, "openadr")
            await until(lambda: loop.book.events["oadr:EVT-1"].baseline_kw is not None,
                        what="event started")
            baseline = loop.book.events["oadr:EVT-1"].baseline_kw
            assert baseline is not None
            assert abs(baseline - before_kw) < 25  # the import before the event
            limit = baseline - 30.0
            await until(lambda: grid_kw(app) <= limit + 3.0, timeout_s=15,
                        what=f"grid import down to {limit:.1f} kW")
            assert acting(app)  # loads shed / battery / heat pump did it
            shed_at = datetime.now(UTC)

            # telemetry at the VTN: the gateway's grid readings, before and during the shed
            await until(lambda: any(t > shed_at + timedelta(seconds=1) for t, _ in
                                    utility.reports), what="reports during the event")
            values = [kw for _, kw in utility.reports]
            assert all(-150.0 < kw < 300.0 for kw in values)
            assert max(values) > limit + 10  # before the event
            during = [kw for t, kw in utility.reports if t > shed_at + timedelta(seconds=1)]
            assert min(during) <= limit + 5

            # the utility cancels: the loop lets go and the building comes back
            utility.cancel("EVT-1")
            await until(lambda: loop.book.events["oadr:EVT-1"].status == "cancelled",
                        what="event cancelled")
            await until(lambda: not acting(app), timeout_s=20, what="everything restored")
            await until(lambda: grid_kw(app) > limit + 10, what="import back up")
            assert utility.answers("EVT-1")[-1] == ("optIn", 1)  # the cancellation, answered

            # more than the policy allows: opt out, shed nothing
            utility.add("EVT-2", "LOAD_DISPATCH", "delta", [-80.0], scale="k")
            await until(lambda: utility.answers("EVT-2") == [("optOut", 0)], what="optOut")
            assert loop.book.events["oadr:EVT-2"].status == "opted_out"
            cycles = loop.cycles
            await until(lambda: loop.cycles >= cycles + 3, what="three more cycles")
            assert not acting(app)
            assert not loop.book.running(clock.now())
        finally:
            stop.set()
            await task
        audit = [(row["command_id"], row["command_type"], row["result"])
                 for row in app.store.audit_rows() if row["source"] == "openadr"]
    assert ("oadr:EVT-1", "openadr_event", "optIn") in audit
    assert ("oadr:EVT-1", "openadr_cancel", "cancelled") in audit
    assert ("oadr:EVT-2", "openadr_event", "optOut") in audit
    assert (None, "openadr_registration", "registered") in audit
