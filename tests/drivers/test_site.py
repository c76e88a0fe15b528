"""Site files: typed, validated, every error naming file, key path and expectation."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from drivers.schema import ConfigError
from drivers.site import RtuEndpoint, TcpEndpoint, load_site

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "jinan-office.toml"


def test_example_site_loads() -> None:
    site = load_site(EXAMPLE)
    assert site.site_id == "jinan-office"
    assert len(site.loads) >= 20
    assert sum(1 for load in site.loads.values() if load.device) >= 20
    grid = site.devices["grid_meter"]
    assert isinstance(grid.endpoint, RtuEndpoint)
    # Several devices on one RTU bus, and several units behind one TCP endpoint:
    on_bus = [d for d in site.devices.values() if d.endpoint == grid.endpoint]
    assert len(on_bus) == 2
    relays = [d for d in site.devices.values() if d.model == "relay16"]
    assert len({d.endpoint for d in relays}) == 1
    assert len({d.unit for d in relays}) == 2
    assert isinstance(relays[0].endpoint, TcpEndpoint)
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
    (('transport = "tcp"', 'transport = "udp"'), 'devices[0].transport: expected one of'),
    (("unit = 1\n\n[[devices]]", "unit = 300\n\n[[devices]]"),
     "devices[0].unit: expected an integer 0–255, got 300"),
    (("channel = 1", "channel = 17"), "loads[0].channel: expected an integer 1–16, got 17"),
    (('device = "relay"', 'device = "meter"'),
     "loads[0].device: expected the name of a relay device"),
    (("rated_w = 1000.0", "rated_w = -1.0"), "loads[0].rated_w: expected a number > 0"),
    (('name = "lights"', 'name = "Lights!"'), "loads[0].name: expected a name of lowercase"),
    (("port = 5021", "port = 5020"), "devices[1].unit: expected a unit id not used by meter"),
    (('id = "test"', 'id = "test"\ncolour = "red"'), "site.colour: expected one of the keys"),
    (('host = "127.0.0.1"\nport = 5020', 'host = "127.0.0.1"\nport = 5020\nbaud = 9600'),
     'devices[0].baud: expected no serial setting for transport = "tcp"'),
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


def test_rtu_devices_on_one_port_must_agree(tmp_path: Path) -> None:
    text = BASE.replace('transport = "tcp"\nhost = "127.0.0.1"\nport = 5020',
                        'transport = "rtu"\nserial_port = "/dev/ttyS0"\nbaud = 9600')
    text = text.replace('transport = "tcp"\nhost = "127.0.0.1"\nport = 5021',
                        'transport = "rtu"\nserial_port = "/dev/ttyS0"\nbaud = 19200')
    text = text.replace("unit = 1\n\n[[loads]]", "unit = 2\n\n[[loads]]")
    path = tmp_path / "site.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=r"devices\[1\].baud: expected the serial settings"):
        load_site(path)


def test_rtu_silence_is_three_and_a_half_characters() -> None:
    line = RtuEndpoint("/dev/ttyS0", baud=9600)
    assert line.char_time_s == pytest.approx(10 / 9600)
    assert line.silence_s == pytest.approx(3.5 * 10 / 9600)
    assert RtuEndpoint("/dev/ttyS0", baud=115200).silence_s == 0.00175
