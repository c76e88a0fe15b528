"""``pedf run / demo / read / scan / check`` as a user runs them."""

from __future__ import annotations

import atexit
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests_support import EXAMPLE, example_on_free_ports, free_port

PEDF = [sys.executable, "-m", "controller.cli"]
#: The commands keep their state (the store of `pedf run`) in a folder of this test run,
#: not the user's ~/.local/state/pedf, which other checkouts with another schema share.
STATE_HOME = tempfile.mkdtemp(prefix="pedf-cli-state-")
atexit.register(shutil.rmtree, STATE_HOME, True)
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "160", "XDG_STATE_HOME": STATE_HOME}


def pedf(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PEDF, *args], capture_output=True, text=True, timeout=timeout,
                          env=ENV)


def start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([*PEDF, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=ENV)


def wait_for(process: subprocess.Popen[str], text: str, timeout: float = 20) -> list[str]:
    assert process.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        if text in line:
            return lines
    process.kill()
    raise AssertionError(f"{text!r} not seen in:\n{''.join(lines)}")


def test_check_accepts_the_example() -> None:
    result = pedf("check", str(EXAMPLE))
    assert result.returncode == 0, result.stderr
    assert "ok — site jinan-office: 13 devices on 9 line(s), 28 loads" in result.stdout
    assert "line serial:///tmp/pedf-rs485-1?2400-8E1: lighting_meter_1 (dlt645-3phase, " \
        "address 202400000101)" in result.stdout
    assert "simulation sections: ok" in result.stdout


def test_check_names_file_key_and_expectation(tmp_path: Path) -> None:
    broken = tmp_path / "site.toml"
    broken.write_text(EXAMPLE.read_text(encoding="utf-8").replace("port = 15023",
                                                                  'port = "50a"', 1))
    result = pedf("check", str(broken))
    assert result.returncode == 2
    assert f'{broken}: devices[6].port: expected an integer 1–65535, got "50a"' in result.stderr
    assert "Traceback" not in result.stderr


@pytest.fixture
def simulated_site(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen[str]]]:
    """The example site on free ports, served by ``pedf sim site`` in another process."""
    site = example_on_free_ports(tmp_path)
    process = start("sim", "site", str(site), "--start", "2026-06-22T11:00:00")
    wait_for(process, "Ctrl-C stops.")
    yield site, process
    process.send_signal(signal.SIGINT)
    process.communicate(timeout=15)


def test_read_prints_a_table_with_units(simulated_site: tuple[Path, object]) -> None:
    site, _ = simulated_site
    result = pedf("read", str(site), "heat_pump")
    assert result.returncode == 0, result.stderr
    for expected in ("sg_ready_state", "2 (normal)", "flow_setpoint", "°C", "electric_power",
                     " W "):
        assert expected in result.stdout, result.stdout
    one = pedf("read", str(site), "pv_inverter", "inverter_three_phase.W")
    assert one.returncode == 0
    assert "inverter_three_phase.W " in one.stdout
    assert "inverter_three_phase.WH" not in one.stdout
    unknown = pedf("read", str(site), "toaster")
    assert unknown.returncode == 2
    assert "no device named 'toaster'; devices: grid_meter" in unknown.stderr


def test_read_reports_an_unreachable_device(tmp_path: Path) -> None:
    site = example_on_free_ports(tmp_path)  # nothing is serving it
    result = pedf("read", str(site), "battery")
    assert result.returncode == 1
    assert "cannot connect" in result.stdout
    assert "Traceback" not in result.stderr


def port_of(site_text: str, device: str) -> str:
    match = re.search(rf'name = "{device}"\n(?:.*\n)*?port = (\d+)', site_text)
    assert match is not None
    return match.group(1)


def test_scan_finds_units_and_sunspec_models(simulated_site: tuple[Path, object]) -> None:
    site, _ = simulated_site
    text = site.read_text(encoding="utf-8")
    relay_port = port_of(text, "relay_a")
    result = pedf("scan", "--host", "127.0.0.1", "--port", relay_port, "--units", "1-4")
    assert result.returncode == 0, result.stderr
    assert "2 device(s) answering" in result.stdout
    inverter_port = port_of(text, "pv_inverter")
    result = pedf("scan", "--host", "127.0.0.1", "--port", inverter_port, "--units", "1")
    assert "40000" in result.stdout
    assert "1 103 120 121 122 123 160" in result.stdout
    refused = pedf("scan", "--host", "127.0.0.1", "--port", str(free_port()), "--units", "1")
    assert refused.returncode == 1
    assert "cannot connect" in refused.stderr
    bad = pedf("scan", "--host", "127.0.0.1", "--units", "1-300")
    assert bad.returncode == 2
    assert "not within 0–255" in bad.stderr


def test_run_polls_and_stops_cleanly_on_sigterm(simulated_site: tuple[Path, object]) -> None:
    site, _ = simulated_site
    process = start("--log-format", "json", "run", str(site))
    assert process.stderr is not None
    before: list[str] = []
    while not any("grid_meter: answering" in line for line in before):  # the log goes on
        line = process.stderr.readline()
        assert line, f"pedf run ended early: {''.join(before)}"
        before.append(line)
    process.send_signal(signal.SIGTERM)
    _, rest = process.communicate(timeout=20)
    errors = "".join(before) + rest
    assert process.returncode == 0, errors
    records = [json.loads(line) for line in errors.splitlines() if line.startswith("{")]
    assert any(r["msg"] == "grid_meter: answering" for r in records)
    assert all(r["level"] in ("info", "warning", "debug") for r in records), records
    assert "never retrieved" not in errors
    assert "Traceback" not in errors


def test_demo_headless_runs_and_stops_by_itself() -> None:
    result = pedf("demo", "--headless", "--duration", "7", "--speed", "30", timeout=90)
    assert result.returncode == 0, result.stderr
    assert "/tmp/pedf-rs485-0" in result.stdout
    assert "(virtual RS-485 line)" in result.stdout
    assert "pedf.summary: grid" in result.stderr
    assert "devices ok 13/13" in result.stderr
    assert "web console on http://127.0.0.1:" in result.stdout
    assert "operator / operator-demo" in result.stdout
    assert "Traceback" not in result.stderr
    assert "never retrieved" not in result.stderr


def test_scan_defaults_find_the_slowest_shipped_device() -> None:
    """The project's own ESP32 sub-meter answers in about 320 ms: the scan's default
    timeout must wait for it (it once stopped at 0.3 s and found nothing)."""
    port = free_port()
    device = start("sim", "device", "esp32-submeter", "--port", str(port), "--unit", "1",
                   "--fault", "latency=0.32")
    try:
        wait_for(device, "Ctrl-C stops.")
        result = pedf("scan", "--host", "127.0.0.1", "--port", str(port), "--units", "1")
        assert result.returncode == 0, result.stdout + result.stderr
        assert "1 device(s)" in result.stdout
    finally:
        device.send_signal(signal.SIGINT)
        device.communicate(timeout=20)


def test_scan_finds_a_dlt645_meter_behind_a_serial_server() -> None:
    port = free_port()
    meter = start("sim", "device", "dlt645-3phase", "--port", str(port), "--serial-server",
                  "--address", "202400000101")
    try:
        wait_for(meter, "Ctrl-C stops.")
        result = pedf("scan", "--host", "127.0.0.1", "--port", str(port), "--serial-server",
                      "--protocol", "dlt645")
        assert result.returncode == 0, result.stdout + result.stderr
        assert "address 202400000101" in result.stdout
        checked = pedf("scan", "--host", "127.0.0.1", "--port", str(port), "--serial-server",
                       "--protocol", "dlt645", "--addresses", "202400000101,202400000102")
        assert "1 device(s)" in checked.stdout, checked.stdout + checked.stderr
        assert "address 202400000101" in checked.stdout
        assert "202400000102" not in checked.stdout
    finally:
        meter.send_signal(signal.SIGINT)
        meter.communicate(timeout=20)


def test_maps_lists_every_model_with_its_vendor_and_document() -> None:
    result = pedf("maps")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    for model, vendor, document in (
            ("dtsu666", "Chint (CHNT)", "quick operation manual, Table 3"),
            ("dtsu666-dlt645", "Chint (CHNT)", "5 Communication (DL/T 645-2007 items)"),
            ("ddsu666", "Chint (CHNT)", "DDSU666 user manual"),
            ("adl400", "Acrel", "ADL400 Installation and operation instruction V1.4"),
            ("adw300", "Acrel", "ADW300 Installation and Use Manual V1.2")):
        at = next(i for i, line in enumerate(lines) if line.startswith(f"{model} "))
        assert vendor in lines[at]
        assert "document:" in lines[at + 1]
        assert document in lines[at + 1]


def test_plan_reads_the_site_once_and_prints_and_draws_a_day(
        simulated_site: tuple[Path, object], tmp_path: Path) -> None:
    site, _ = simulated_site
    png = tmp_path / "plan.png"
    result = pedf("plan", str(site), "--png", str(png))
    assert result.returncode == 0, result.stderr
    assert ": optimal, objective" in result.stdout
    for column in ("price CNY/kWh", "battery kW", "SoC kWh", "SG-Ready", "grid kW"):
        assert column in result.stdout
    rows = [line for line in result.stdout.splitlines() if re.match(r"^│ \d\d:\d\d ", line)]
    assert len(rows) == 24  # a day, hourly
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
