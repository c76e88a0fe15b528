"""Shared fixtures: free ports, a copy of the example site on free ports, a running
simulated building."""

from __future__ import annotations

import re
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from drivers.site import SiteSpec, load_site
from simulators.clock import ManualClock
from simulators.runner import SiteRunner
from simulators.sitefile import build_site

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "jinan-office.toml"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def example_on_free_ports(tmp_path: Path) -> Path:
    """The example site with every TCP port replaced by a free one and its RS-485 line
    linked inside ``tmp_path``."""
    text = EXAMPLE.read_text(encoding="utf-8")
    ports = sorted(set(re.findall(r"^port = (\d+)$", text, flags=re.M)))
    for port in ports:
        text = re.sub(rf"^port = {port}$", f"port = {free_port()}", text, flags=re.M)
    text = text.replace('serial_port = "/tmp/pedf-rs485-0"',
                        f'serial_port = "{tmp_path / "rs485-0"}"')
    path = tmp_path / "site.toml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def site_spec(tmp_path: Path) -> SiteSpec:
    return load_site(example_on_free_ports(tmp_path))


@pytest.fixture
async def running_site(site_spec: SiteSpec) -> AsyncIterator[SiteRunner]:
    """The Jinan building served on free ports, on a manual clock at 11:00 in June, with
    the RS-485 line 20× faster than real 9600 baud to keep tests quick."""
    from datetime import datetime

    start = datetime.fromisoformat("2026-06-22T11:00:00+08:00").timestamp()
    site = build_site(site_spec, start_s=start)
    clock = ManualClock(start)
    async with SiteRunner(site, clock, serial_time_scale=0.05) as runner:
        yield runner
