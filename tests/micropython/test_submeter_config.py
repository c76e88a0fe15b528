"""The JSON config file is validated at boot, on the device: a bad value is reported with
the file, the key, what was expected and what was found, and replaced by its default;
the rest of the file still applies, and the device meters regardless."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from mp_support import (
    MAP,
    Device,
    free_port,
    number,
    poll,
    run_script,
    running,
    sine_wave,
)
from pymodbus.client import AsyncModbusTcpClient

SCRIPT = Path(__file__).parent / "mp_scripts" / "config_cases.py"


def validate(build: Path, tmp_path: Path, texts: list[str | None]) -> list[dict[str, Any]]:
    cases = tmp_path / "texts.json"
    cases.write_text(json.dumps(texts))
    return [json.loads(line) for line in run_script(build, SCRIPT, str(cases)).splitlines()]


@pytest.fixture
def defaults(build: Path, tmp_path: Path) -> dict[str, Any]:
    result = validate(build, tmp_path, ["{}"])[0]
    assert result["errors"] == []
    config: dict[str, Any] = result["config"]
    return config


def test_bad_values_get_clear_messages_and_their_defaults(
        build: Path, tmp_path: Path, defaults: dict[str, Any]) -> None:
    text = json.dumps({
        "device_id": "boiler-room",
        "metering": {"cycles": 1000, "kernel": "turbo", "v_gain": "0.19"},
        "modbus_tcp": {"port": 15020, "unit_id": 0},
        "mqtt": {"enabled": True, "host": "10.0.0.2", "port": "1883", "colour": "red"},
        "channels": [{"i_gain": 0.05, "phase_deg": 45}, {"i_gain": -1}],
        "pins": {"ct": [39]},
        "demand_window_s": 900.5,
    })
    result = validate(build, tmp_path, [text])[0]
    config, errors = result["config"], result["errors"]
    expected = [
        'config.json: metering.cycles: expected an integer 2..100, got 1000 -- using 10',
        'config.json: metering.kernel: expected one of "viper", "python", got "turbo" '
        '-- using "viper"',
        'config.json: metering.v_gain: expected a number, got "0.19" -- using 0.1887',
        'config.json: modbus_tcp.unit_id: expected an integer 1..247, got 0 -- using 1',
        'config.json: mqtt.colour: unknown key (ignored)',
        'config.json: mqtt.port: expected an integer, got "1883" -- using 1883',
        'config.json: channels: expected 3 channel objects, got 2 -- using defaults for '
        'the missing ones',
        'config.json: channels[0].phase_deg: expected a number -30.0..30.0, got 45 -- '
        'using 0.0',
        'config.json: channels[1].i_gain: expected a number 1e-06..100.0, got -1 -- using '
        '0.0488',
        'config.json: pins.ct: expected 3 pins, got [39] -- using [39, 34, 35]',
        'config.json: demand_window_s: expected an integer, got 900.5 -- using 900',
    ]
    assert sorted(errors) == sorted(expected)
    # what was valid applies; what was not has its default
    assert config["device_id"] == "boiler-room"
    assert config["modbus_tcp"]["port"] == 15020
    assert config["mqtt"]["host"] == "10.0.0.2"
    assert config["mqtt"]["enabled"] is True
    assert config["metering"] == defaults["metering"]
    assert config["channels"][0] == {"i_gain": 0.05, "phase_deg": 0.0}
    assert config["channels"][1:] == defaults["channels"][1:]


def test_unreadable_files_mean_defaults(build: Path, tmp_path: Path,
                                        defaults: dict[str, Any]) -> None:
    missing, garbage, listed = validate(build, tmp_path, [None, '{"mqtt": {', "[1, 2]"])
    assert missing["errors"] == ["config.json: not found -- using defaults"]
    assert garbage["errors"][0].startswith("config.json: not valid JSON (")
    assert listed["errors"] == [
        'config.json: (top level): expected an object, got [1, 2] -- using "defaults"']
    for result in (missing, garbage, listed):
        assert result["config"] == defaults


async def test_a_bad_config_still_meters_and_says_so(build: Path, tmp_path: Path) -> None:
    wave = sine_wave()
    port = free_port()
    config = json.dumps({"modbus_tcp": {"port": port}, "metering": {"cycles": "many"},
                         "watchdog_s": 0})
    sim = {"wave": str(wave.write(tmp_path / "wave.bin", 1.0)), "rate": wave.rate,
           "speed": 20}
    with running(build, tmp_path / "root", config=config, sim=sim) as device:
        device.wait_for(r"config: config.json: metering.cycles: expected an integer")
        device.wait_for(r"config: config.json: watchdog_s: expected an integer 5..120")
        device.wait_for("modbus-tcp: listening")
        client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=3)
        assert await client.connect()
        try:
            for _ in range(100):
                values = await poll(client, MAP, ("frequency", "status", "ch1_voltage"))
                if values["frequency"]:
                    break
        finally:
            client.close()
    assert abs(number(values["frequency"]) - 50.0) < 0.1
    assert abs(number(values["ch1_voltage"]) - 230.0) < 1.0
    assert MAP.points["status"].bit_names(values["status"]) == [
        "wifi connected", "config defaults in use"]


def test_a_config_file_that_is_not_text_means_defaults(build: Path, tmp_path: Path) -> None:
    wave = sine_wave()
    sim = {"wave": str(wave.write(tmp_path / "wave.bin", 1.0)), "rate": wave.rate,
           "speed": 20, "stats": 5}
    root = tmp_path / "root"
    Device.prepare(root, config=None, sim=sim)
    (root / "config.json").write_bytes(b"\xff\xfe{\x00\x80")  # flash garbage
    with Device(build, root) as device:
        device.wait_for(r"config: config.json: not valid JSON")
        device.wait_for(r"stats: windows=([5-9]|\d\d+) ")


def test_no_config_file_at_all_boots_and_meters(build: Path, tmp_path: Path) -> None:
    wave = sine_wave()
    sim = {"wave": str(wave.write(tmp_path / "wave.bin", 1.0)), "rate": wave.rate,
           "speed": 20, "stats": 5}
    with running(build, tmp_path / "root", config=None, sim=sim) as device:
        device.wait_for("config: config.json: not found -- using defaults")
        device.wait_for(r"stats: windows=([5-9]|\d\d+) ")
