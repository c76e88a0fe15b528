"""``pedf sim device`` / ``pedf sim site`` as a user runs them: a real process, real
ports, Ctrl-C to stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pyModbusTCP.client import ModbusClient
from tests_support import example_on_free_ports, free_port

PEDF = [sys.executable, "-m", "controller.cli"]


def start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([*PEDF, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def wait_for_line(process: subprocess.Popen[str], text: str, timeout: float = 20.0) -> str:
    assert process.stdout is not None
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        seen.append(line)
        if text in line:
            return "".join(seen)
    process.kill()
    raise AssertionError(f"{text!r} not printed; output:\n{''.join(seen)}")


def stop(process: subprocess.Popen[str]) -> tuple[int, str]:
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=15)
    return process.returncode, output


def test_sim_device_serves_and_stops_on_ctrl_c() -> None:
    port = free_port()
    process = start("sim", "device", "sg-ready-heatpump", "--port", str(port), "--unit", "3")
    banner = wait_for_line(process, "Ctrl-C stops.")
    assert f"tcp://127.0.0.1:{port}" in banner
    assert "unit 3 " in banner
    assert "sg-ready-heatpump" in banner
    client = ModbusClient(host="127.0.0.1", port=port, unit_id=3, timeout=2.0)
    assert client.read_holding_registers(0, 1) == [2]  # SG-Ready: normal
    client.close()
    code, output = stop(process)
    assert code == 0, output
    assert "simulator stopped" in output
    assert "Traceback" not in output
    assert "never retrieved" not in output


def test_sim_device_with_a_fault() -> None:
    port = free_port()
    process = start("sim", "device", "sdm630", "--port", str(port), "--fault", "exception=4")
    wait_for_line(process, "Ctrl-C stops.")
    client = ModbusClient(host="127.0.0.1", port=port, unit_id=1, timeout=2.0)
    assert client.read_input_registers(0, 2) is None
    assert client.last_except == 4
    client.close()
    assert stop(process)[0] == 0


def test_sim_site_prints_every_endpoint(tmp_path: Path) -> None:
    site = example_on_free_ports(tmp_path)
    process = start("sim", "site", str(site), "--speed", "60")
    banner = wait_for_line(process, "Ctrl-C stops.")
    for device in ("grid_meter", "heat_pump_meter", "pv_inverter", "battery", "heat_pump",
                   "dc_bus", "relay_a", "relay_b", "submeter_1"):
        assert device in banner
    assert "(virtual RS-485 line)" in banner
    assert f"{tmp_path / 'rs485-0'} (linked) → /dev/pts/" in banner
    code, output = stop(process)
    assert code == 0, output


@pytest.mark.parametrize(("args", "message"), [
    (["sim", "device", "sdm630", "--port", "1502", "--fault", "melt"], "unknown fault 'melt'"),
    (["sim", "site", "/nonexistent/site.toml"], "/nonexistent/site.toml: expected an existing"),
    (["sim", "device", "sdm630", "--port", "99999"], "--port must be 1–65535"),
])
def test_sim_rejects_bad_input_with_a_clear_message(args: list[str], message: str) -> None:
    result = subprocess.run([*PEDF, *args], capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


def test_port_in_use_is_reported() -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run([*PEDF, "sim", "device", "sdm630", "--port", str(port),
                                 "--duration", "2"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert f"pedf sim: cannot serve: cannot listen on tcp://127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr


def test_maps_lists_and_shows() -> None:
    listing = subprocess.run([*PEDF, "maps"], capture_output=True, text=True, timeout=30)
    assert "sdm630" in listing.stdout
    assert "sunspec-inverter" in listing.stdout
    # The vendors' models, each with its manufacturer and the document it follows:
    lines = listing.stdout.splitlines()
    for model, vendor, document in [
        ("huawei-sun2000", "Huawei", "Solar Inverter Modbus Interface Definitions, Issue 05"),
        ("huawei-luna2000", "Huawei", "Solar Inverter Modbus Interface Definitions, Issue 05"),
        ("huawei-smartlogger", "Huawei", "SmartLogger3000 MODBUS Interface Definitions"),
        ("sungrow-sg", "Sungrow", "PV Grid-Connected String Inverters, V1.1.53"),
        ("sungrow-sh-battery", "Sungrow", "Residential Hybrid Inverter, V1.1.5"),
        ("goodwe-et-battery", "GoodWe", "hybrid inverter Modbus protocol (ARM), v1.9"),
    ]:
        at = next(i for i, line in enumerate(lines) if line.startswith(model + " "))
        assert f" {vendor}: " in lines[at], lines[at]
        assert "document: " in lines[at + 1]
        assert document in lines[at + 1], lines[at + 1]
    shown = subprocess.run([*PEDF, "maps", "huawei-luna2000"], capture_output=True,
                           text=True, timeout=30)
    assert "part of a huawei-sun2000" in shown.stdout
    assert "pacing: 0.05 s between requests, 1 s after connecting, one client at a time" \
        in shown.stdout
    assert "control power_setpoint: 5 write(s), fail-safe device_reverts" in shown.stdout
    shown = subprocess.run([*PEDF, "maps", "dtsu666"], capture_output=True, text=True,
                           timeout=30)
    assert "8210" in shown.stdout
    assert "total_power" in shown.stdout
