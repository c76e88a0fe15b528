"""The demo building, accelerated, against the reference data centre: every 15-min
period of the 分项 tree is delivered and the platform's totals equal the gateway's."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
from datetime import datetime
from pathlib import Path

import pytest
from tests_support import eventually, example_on_free_ports

from controller import streams
from controller.app import assemble
from controller.config import uplink_settings
from controller.platform.receiver import Receiver
from controller.platform.uploader import group_periods
from controller.platform.wire import dialects
from drivers.site import load_site
from simulators.clock import ScaledClock
from simulators.runner import SiteRunner
from simulators.sitefile import build_site

START = 1_782_093_600.0 - 900 + 60  # a minute into a window, June, 09:46 in Jinan


async def test_demo_delivers_every_period_and_totals_agree(tmp_path: Path) -> None:
    path = example_on_free_ports(tmp_path)
    text = path.read_text(encoding="utf-8")
    platform = text[text.index("[platform]"):]
    port = int(re.search(r"^port = (\d+)$", platform, flags=re.M).group(1))  # type: ignore[union-attr]
    path.write_text(text.replace("enabled = false\nhost", "enabled = true\nhost"),
                    encoding="utf-8")
    spec = load_site(path)
    site = build_site(spec, start_s=START)
    clock = ScaledClock(start=START, speed=240.0)  # a 15-min window every 3.75 s
    settings = dataclasses.replace(uplink_settings(spec), enabled=True, host="127.0.0.1",
                                   port=1, store_path=str(tmp_path / "state.sqlite"))
    receiver = Receiver(dialects()["jianshe-2009"], b"jinan-demo-key16", port=port)
    async with receiver, SiteRunner(site, clock) as runner, \
            assemble(spec, serial_ports=runner.serial_ports, settings=settings,
                     wall_clock=clock.now) as app:
        assert app.store is not None
        assert app.platform is not None
        store = app.store
        stop = asyncio.Event()
        task = asyncio.create_task(app.gateway.run(stop, [
            (name, service) for name, service in app.services
            if name in ("metering", "platform uploader")]))
        # three periods at the platform, and their acknowledgements back at the gateway
        # (stopped between the two, the gateway would resend the last at its next start)
        await eventually(lambda: len(receiver.periods("370100A001")) >= 3
                         and len(store.delivered("city", 0)) >= len(
                             receiver.periods("370100A001")),
                         timeout_s=90, what="three periods delivered and acknowledged")
        stop.set()
        await task
        rows = store.energy_periods("900s", 0, 1e12)
        last = store.last_energy_period("900s")
        summaries = [json.loads(m.payload) for m in store.pending(limit=1000)
                     if m.stream == streams.metering("window")]
        delivered = store.delivered("city", 0)
    assert last is not None
    gateway = {datetime.fromtimestamp(p.start_s, spec.zone).strftime("%Y%m%d%H%M%S"): p
               for p in group_periods(rows, 900, last + 900)}
    at_platform = receiver.periods("370100A001")
    # every period the platform acknowledged is one the gateway recorded, value for value
    assert {p.start_s for p in gateway.values()} >= delivered
    assert len(delivered) == len(at_platform) >= 3
    for stamp, energy in at_platform.items():
        assert energy == pytest.approx(gateway[stamp].energy, abs=1e-4)
    totals = receiver.totals("370100A001")
    # the metered codes (lifts are switched, not metered: no 01C10 series, so no row)
    assert "01C10" not in totals
    for code in ("01000", "01A00", "01A10", "01B00", "01B10", "01D00", "01D20", "06000",
                 "02000"):
        assert code in totals
        assert totals[code] == pytest.approx(sum(gateway[s].energy[code] for s in at_platform),
                                             abs=1e-3)
    # the tree adds up: 01000 is its items (the remainder is booked to 01A10)
    for energy in at_platform.values():
        assert energy["01000"] == pytest.approx(
            energy["01A00"] + energy["01B00"] + energy["01D00"], abs=1e-3)
    # the water meter's m³ (12 m³ a day in office hours; read every 10 s of real time,
    # so at 240 × the water of several windows may land in one)
    assert sum(e["02000"] for e in at_platform.values()) > 0
    # the window summaries carry the codes and the reconciliation with the main meter
    coded = [s for s in summaries if "energy" in s]
    assert coded
    check = coded[-1]["energy"]["reconciliation"]
    assert check["main_kwh"] > 0
    assert check["remainder_kwh"] >= 0
    assert not check["alarm"]
