"""`pedf report`: a stored event's performance as a table and a PNG."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

from closed_loop import ClosedLoop
from tests_support import EXAMPLE, with_uplink

from controller.control.events import DrEvent, EventKind
from controller.control.settings import ControlSettings
from controller.store import Store


async def simulate_event(store_path: Path) -> None:
    """An hour of normal operation, a 30-minute 50 kW reduction and a minute after."""
    loop = ClosedLoop.build("2026-06-22T13:00:00", ControlSettings(cycle_s=10.0),
                            store=Store(store_path), soc_pct=40.0)
    start = loop.clock.now() + 3600
    loop.event(DrEvent("dr-report", EventKind.REDUCTION, "site", start, 1800.0, 50.0))
    await loop.run(3600 + 1800 + 60)


def pedf_report(site: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "controller.cli", "report", str(site), *args],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "COLUMNS": "140"})


def test_report_prints_the_event_and_writes_a_plot(tmp_path: Path) -> None:
    store_path = tmp_path / "state.sqlite"
    asyncio.run(simulate_event(store_path))
    site = tmp_path / "site.toml"
    site.write_text(EXAMPLE.read_text(encoding="utf-8"))
    with_uplink(site, f'[uplink]\n[uplink.outbox]\npath = "{store_path}"\n')
    png = tmp_path / "event.png"
    result = pedf_report(site, "dr-report", "--png", str(png))
    assert result.returncode == 0, result.stderr
    assert "event dr-report" in result.stdout
    delivered = re.search(r"mean requested 50\.0 kW, delivered [\d.]+ kW \((\d+) %\)",
                          result.stdout)
    assert delivered is not None, result.stdout
    assert int(delivered.group(1)) >= 95
    assert "baseline realtime_15min (good quality)" in result.stdout
    assert "settlement estimate, event dr-report" in result.stdout
    ratio = re.search(r"response ratio\s+│\s+(\d+) %", result.stdout)
    assert ratio is not None, result.stdout
    assert int(ratio.group(1)) >= 95
    assert re.search(r"penalty\s+│\s+0\.00 CNY", result.stdout)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert pedf_report(site).stdout.strip() == "dr-report"
