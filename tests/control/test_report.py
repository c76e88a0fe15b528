"""`pedf report`: a stored event's performance as a table and a PNG."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from closed_loop import ClosedLoop

from controller.control.events import DrEvent
from controller.control.settings import ControlSettings
from controller.store import Store
from tests_support import with_uplink


async def test_report_prints_the_event_and_writes_a_plot(tmp_path: Path) -> None:
    store_path = tmp_path / "state.sqlite"
    loop = ClosedLoop.build("2026-06-22T13:00:00", ControlSettings(cycle_s=10.0),
                            store=Store(store_path), soc_pct=40.0)
    start = loop.clock.now() + 3600
    loop.event(DrEvent("dr-report", "reduction", "site", start, 1800.0, 50.0))
    await loop.run(3600 + 1800 + 60)
    site = tmp_path / "site.toml"
    site.write_text(Path("examples/jinan-office.toml").read_text(encoding="utf-8"))
    with_uplink(site, f'[uplink]\n[uplink.outbox]\npath = "{store_path}"\n')
    png = tmp_path / "event.png"
    result = subprocess.run([sys.executable, "-m", "controller.cli", "report", str(site),
                             "dr-report", "--png", str(png)], capture_output=True, text=True,
                            timeout=60, env={**os.environ, "COLUMNS": "140"})
    assert result.returncode == 0, result.stderr
    assert "event dr-report" in result.stdout
    delivered = re.search(r"mean requested 50\.0 kW, delivered [\d.]+ kW \((\d+) %\)",
                          result.stdout)
    assert delivered is not None, result.stdout
    assert int(delivered.group(1)) >= 95
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    listing = subprocess.run([sys.executable, "-m", "controller.cli", "report", str(site)],
                             capture_output=True, text=True, timeout=60)
    assert listing.stdout.strip() == "dr-report"
