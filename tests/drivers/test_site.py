"""Site files: typed, validated, every error naming file, key path and expectation."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from drivers.points import Protocol
from drivers.protocol import Framing
from drivers.schema import ConfigError
from drivers.site import LineKind, SerialSettings, load_site

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "jinan-office.toml"


def test_example_site_loads() -> None:
    site = load_site(EXAMPLE)
    assert site.site_id == "jinan-office"
    assert len(site.loads) >= 20
    assert sum(1 for load in site.loads.values() if load.device) >= 20
    grid = site.devices["grid_meter"]
    assert grid.line.kind is LineKind.SERIAL
    assert grid.line.framing is Framing.SERIAL
    # Several devices on one RS-485 line, and several units behind one TCP endpoint:
    on_bus = [d for d in site.devices.values() if d.line == grid.line]
    assert len(on_bus) == 2
    relays = [d for d in site.devices.values() if d.model == "relay16"]
    assert len({d.line for d in relays}) == 1
    assert len({d.unit for d in relays}) == 2
    assert relays[0].line.kind is LineKind.TCP
    # The lighting boards' DL/T 645 meters on their own line, at the protocol's defaults:
    meters = [d for d in site.devices.values() if d.protocol is Protocol.DLT645]
    assert {d.line.name for d in meters} == {"rs485_lighting"}
    assert meters[0].line.serial == SerialSettings(2400, "E", 1, 8)
    assert {d.meter_address for d in meters} == {"202400000101", "202400000102"}
    assert {d.device_map.kind for d in site.devices.values()} >= {
        "meter", "inverter", "battery", "heat_pump", "relay", "dc_bus"}


BASE = '''
[site]
id = "test"

[[devices]]
name = "meter"
model = "sdm630"
transport = "tcp"
host = "127.0.0.1"
port = 5020
unit = 1

[[devices]]
name = "relay"
model = "relay16"
transport = "tcp"
host = "127.0.0.1"
port = 5021
unit = 1

[[loads]]
name = "lights"
device = "relay"
channel = 1
rated_w = 1000.0
'''


@pytest.mark.parametrize(("change", "message"), [
    (("port = 5020", 'port = "50a"'), 'devices[0].port: expected an integer 1–65535, got "50a"'),
    (('model = "sdm630"', 'model = "sdm631"'), "devices[0].model: expected a shipped device"),
    (('transport = "tcp"', 'transport = "udp"'), 'devices[0].transport: expected "tcp"'),
    (('transport = "tcp"', 'transport = "rtu"'), 'devices[0].transport: expected "tcp"'),
    (("unit = 1\n\n[[devices]]", "unit = 300\n\n[[devices]]"),
     "devices[0].unit: expected an integer 0–255, got 300"),
    (("channel = 1", "channel = 17"), "loads[0].channel: expected an integer 1–16, got 17"),
    (('device = "relay"', 'device = "meter"'),
     "loads[0].device: expected the name of a relay device"),
    (("rated_w = 1000.0", "rated_w = -1.0"), "loads[0].rated_w: expected a number > 0"),
    (('name = "lights"', 'name = "Lights!"'), "loads[0].name: expected a name of lowercase"),
    (("port = 5021", "port = 5020"), "devices[1].unit: expected a unit not used by meter"),
    (('id = "test"', 'id = "test"\ncolour = "red"'), "site.colour: expected one of the keys"),
    (('host = "127.0.0.1"\nport = 5020', 'host = "127.0.0.1"\nport = 5020\nbaud = 9600'),
     "devices[0].baud: expected no serial setting here: serial settings belong to a [[lines]]"),
    (('model = "sdm630"', 'model = "sdm630"\nprotocol = "dlt645"'),
     'devices[0].protocol: expected "modbus" (sdm630 speaks modbus'),
    (('model = "sdm630"', 'model = "dlt645-3phase"'),
     "devices[0].unit: expected no unit (DL/T 645 meters have an address)"),
    (('transport = "tcp"\nhost = "127.0.0.1"\nport = 5020', 'line = "bus"'),
     "devices[0].line: expected the name of a [[lines]] entry (this file has none)"),
])
def test_malformed_site_names_file_key_and_expectation(tmp_path: Path, change: tuple[str, str],
                                                       message: str) -> None:
    old, new = change
    assert old in BASE
    path = tmp_path / "site.toml"
    path.write_text(BASE.replace(old, new, 1), encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_site(path)
    assert str(caught.value).startswith(f"{path}: "), caught.value
    assert message in str(caught.value), caught.value


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=re.escape(str(tmp_path / "nope.toml"))):
        load_site(tmp_path / "nope.toml")


LINES = '''
[site]
id = "lines"

[[lines]]
name = "bus"
transport = "serial"
serial_port = "/dev/ttyS0"

[[lines]]
name = "remote"
transport = "serial_server"
host = "10.0.0.7"
port = 8899
baud = 9600
parity = "E"

[[devices]]
name = "meter_a"
model = "dlt645-3phase"
line = "bus"
address = "000000000001"

[[devices]]
name = "meter_b"
model = "dlt645-1phase"
line = "bus"
address = "000000000002"

[[devices]]
name = "sdm"
model = "sdm630"
line = "remote"
unit = 1

[[devices]]
name = "dtsu"
model = "dtsu666"
line = "remote"
unit = 2
'''


def test_lines_carry_the_serial_settings_and_default_by_protocol(tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_text(LINES, encoding="utf-8")
    site = load_site(path)
    bus, remote = site.lines["bus"], site.lines["remote"]
    assert bus.serial == SerialSettings(2400, "E", 1, 8)  # only DL/T 645 meters on it
    assert str(bus) == "serial:///dev/ttyS0?2400-8E1"
    assert remote.kind is LineKind.SERIAL_SERVER
    assert remote.framing is Framing.SERIAL  # RTU frames through the server, not MBAP
    assert remote.serial == SerialSettings(9600, "E", 1, 8)
    assert str(remote) == "serial-server://10.0.0.7:8899?9600-8E1"
    assert site.devices["sdm"].line is remote or site.devices["sdm"].line == remote
    assert site.devices["meter_b"].station == "address 000000000002"


@pytest.mark.parametrize(("change", "message"), [
    (('address = "000000000002"', 'address = "000000000001"'),
     "devices[1].address: expected a address not used by meter_a on the same line"),
    (('address = "000000000002"', 'address = "12345"'),
     "devices[1].address: expected the meter's address: 12 decimal digits"),
    (('address = "000000000002"', 'address = "000000000002"\nbaud = 2400'),
     "devices[1].baud: expected no serial setting here: serial settings belong to a [[lines]]"),
    (('serial_port = "/dev/ttyS0"', 'serial_port = "/dev/ttyS0"\nhost = "x"'),
     'lines[0].host: expected no host or port for transport = "serial"'),
    (('parity = "E"', 'parity = "X"'), 'lines[1].parity: expected one of "E", "N", "O"'),
    (('line = "bus"\naddress = "000000000001"',
      'line = "bus"\nport = 1\naddress = "000000000001"'),
     "devices[0].port: expected no port (the device is on line 'bus'"),
])
def test_malformed_lines_name_file_key_and_expectation(tmp_path: Path, change: tuple[str, str],
                                                       message: str) -> None:
    old, new = change
    assert old in LINES
    path = tmp_path / "site.toml"
    path.write_text(LINES.replace(old, new, 1), encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_site(path)
    assert message in str(caught.value), caught.value


def test_serial_silence_is_three_and_a_half_characters() -> None:
    settings = SerialSettings(9600)
    assert settings.char_time_s == pytest.approx(10 / 9600)
    assert settings.silence_s == pytest.approx(3.5 * 10 / 9600)
    assert SerialSettings(115200).silence_s == 0.00175
    assert SerialSettings(2400, "E").char_time_s == pytest.approx(11 / 2400)


# -- parts of one device at one unit id ---------------------------------------------------


def _unit_site(models: list[str]) -> str:
    devices = "".join(f'''
[[devices]]
name = "part_{index}"
model = "{model}"
transport = "tcp"
host = "127.0.0.1"
port = 5030
unit = 1
''' for index, model in enumerate(models))
    return '[site]\nid = "parts"\n' + devices


def test_parts_of_one_device_share_its_unit(tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_text(_unit_site(["huawei-sun2000", "huawei-luna2000", "huawei-sun2000-meter"]),
                    encoding="utf-8")
    site = load_site(path)
    assert {d.unit for d in site.devices.values()} == {1}
    assert len({d.line for d in site.devices.values()}) == 1


@pytest.mark.parametrize(("models", "message"), [
    (["huawei-sun2000", "sunspec-battery"], "only other parts of a huawei-sun2000"),
    (["sungrow-sh", "huawei-luna2000"], "only other parts of a sungrow-sh"),
    (["huawei-sun2000", "huawei-sun2000"], "one device of each model at a shared unit"),
    (["sdm630", "huawei-sun2000-meter"], "a unit not used by part_0"),
])
def test_only_parts_of_one_device_share_a_unit(tmp_path: Path, models: list[str],
                                               message: str) -> None:
    path = tmp_path / "site.toml"
    path.write_text(_unit_site(models), encoding="utf-8")
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_site(path)


def test_parts_of_one_device_may_not_claim_the_same_register(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses

    import drivers.site
    from drivers.maploader import get_map
    from drivers.points import Point

    battery = get_map("huawei-luna2000")
    soc = battery.points["soc"]
    assert isinstance(soc, Point)
    clash = dataclasses.replace(soc, address=32064)  # the inverter's input power
    overlapping = dataclasses.replace(battery, points={**battery.points, "soc": clash})
    monkeypatch.setattr(drivers.site, "get_map", lambda model: overlapping
                        if model == "huawei-luna2000" else get_map(model))
    path = tmp_path / "site.toml"
    path.write_text(_unit_site(["huawei-sun2000", "huawei-luna2000"]), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"do not overlap those of part_0 \(soc at "
                                          r"holding 32064\)"):
        load_site(path)
