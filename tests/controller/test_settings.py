"""Site-file sections owned by the controller: every mistake is one line naming the file,
the key and what was expected; files that cannot be read are named too."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from tests_support import EXAMPLE

from controller.config import check_site, uplink_settings
from controller.control.settings import control_settings
from drivers.schema import ConfigError
from drivers.site import load_site


def site_with(tmp_path: Path, sections: str) -> Path:
    """The example site with its ``[uplink]`` block replaced by ``sections``."""
    text = EXAMPLE.read_text(encoding="utf-8")
    start, end = text.index("[uplink]"), text.index("[simulation]")
    path = tmp_path / "site.toml"
    path.write_text(text[:start] + sections.strip() + "\n\n" + text[end:], encoding="utf-8")
    return path


def test_uplink_keys_fill_their_fields(tmp_path: Path) -> None:
    (tmp_path / "op.secret").write_text("s3cret\n")
    (tmp_path / "metrics.secret").write_text("m-pass\n")
    path = site_with(tmp_path, """
        [uplink]
        embedded_host = "0.0.0.0"
        metrics_port = 9108
        metrics_host = "0.0.0.0"
        metrics_username = "prometheus"
        metrics_password_file = "metrics.secret"
        reconnect_max_s = 2
        [uplink.outbox]
        quota_mb = 1
        dead_letter_max_rows = 100
        [uplink.commands]
        hmac_key = "k"
        response_topic_prefix = "operator/replies"
        audit_max_rows = 50
        [[uplink.broker.users]]
        name = "operator"
        password_file = "op.secret"
        publish = ["pedf/jinan-office/commands"]
        subscribe = ["pedf/jinan-office/replies/#"]
        """.replace("        ", ""))
    settings = uplink_settings(load_site(path))
    assert settings.protocol == "3.1.1"  # the embedded broker's
    assert (settings.quota_bytes, settings.dead_letter_max_rows) == (1024 * 1024, 100)
    assert settings.response_topic_prefix == "operator/replies"
    assert settings.metrics_password == "m-pass"
    assert settings.reconnect_max_s == 2.0
    (user,) = settings.broker_users
    assert (user.name, user.password, user.subscribe) == (
        "operator", "s3cret", ("pedf/jinan-office/replies/#",))


def test_defaults_keep_everything_on_loopback() -> None:
    settings = uplink_settings(load_site(EXAMPLE))
    assert settings.embedded_host == settings.metrics_host == "127.0.0.1"
    assert settings.response_topic_prefix == "pedf/jinan-office/replies"
    assert settings.broker_users == ()


@pytest.mark.parametrize(("section", "where", "expected"), [
    ('[uplink]\nport = "x"', "uplink.port", "an integer 1–65535"),
    ('[uplink]\nprot = 1', "uplink.prot", "one of the keys"),
    ('[uplink]\npassword = "a"\npassword_file = "f"', "uplink.password_file",
     "either password or password_file, not both"),
    ('[uplink]\ntopic_prefix = "a/#"', "uplink.topic_prefix", "without wildcards"),
    ('[uplink.outbox]\nquota_mb = 0', "uplink.outbox.quota_mb", "a number 0.01–1000000"),
    ('[uplink.tls]\ncert_file = "site.toml"', "uplink.tls", "cert_file and key_file together"),
    ('[uplink.tls]\nca_file = "missing.pem"', "uplink.tls.ca_file", "an existing file"),
    ('[uplink.commands]\nhmac_key_file = "missing"', "uplink.commands.hmac_key_file",
     "a readable file"),
    ('[uplink.commands]\nresponse_topic_prefix = "x/+/y"',
     "uplink.commands.response_topic_prefix", "without wildcards"),
    ('[uplink]\nembedded_host = "0.0.0.0"', "uplink.embedded_host",
     "a loopback address (127.0.0.1, ::1, localhost), or [[uplink.broker.users]]"),
    ('[uplink]\nmetrics_port = 9108\nmetrics_host = "10.0.0.2"', "uplink.metrics_host",
     "a loopback address, or metrics_username and metrics_password_file"),
    ('[uplink]\nmetrics_username = "p"', "uplink.metrics_username",
     "metrics_username and metrics_password_file together"),
    ('[uplink]\nhost = "broker"\n[[uplink.broker.users]]\nname = "a"\npassword = "b"',
     "uplink.broker", "no [uplink.broker] with host set"),
    ('[[uplink.broker.users]]\nname = "a"', "uplink.broker.users[0].password",
     "a password (password or password_file), got nothing"),
    ('[[uplink.broker.users]]\nname = "a"\npassword = "b"\npublish = ["a/#/b"]',
     "uplink.broker.users[0].publish[0]", "an MQTT topic filter"),
    ('[[uplink.broker.users]]\nname = "a"\npassword = "b"\n'
     '[[uplink.broker.users]]\nname = "a"\npassword = "c"',
     "uplink.broker.users[1].name", "a user name not used before"),
])
def test_uplink_mistakes_are_named(tmp_path: Path, section: str, where: str,
                                   expected: str) -> None:
    site = load_site(site_with(tmp_path, section))
    with pytest.raises(ConfigError) as caught:
        uplink_settings(site)
    message = str(caught.value)
    assert message.startswith(f"{site.file}: {where}: expected "), message
    assert expected in message


@pytest.mark.parametrize(("section", "message"), [
    # used to read "control: expected relay_watchdog_s must be 0 or …, got a table"
    ("cycle_s = 5.0\nrelay_watchdog_s = 10",
     "control.relay_watchdog_s: expected 0 (off) or at least 3 × cycle_s (15 s), got 10"),
    ("cycle_s = 50.0\nbattery_revert_s = 600",
     "control.cycle_s: expected at most inverter_revert_s / 3 (20 s), got 50.0"),
    ("battery_revert_s = 12\ncycle_s = 5.0",
     "control.battery_revert_s: expected at least 3 × cycle_s (15 s), got 12"),
    ("min_soc_pct = 30", "control.min_soc_pct: expected at most reserve_soc_pct (20), got 30"),
    ("comfort_max_c = 30", "control.comfort_max_c: expected at most safety_max_c (28), got 30"),
    ("cycle_s = 0", "control.cycle_s: expected a number 0.1–60, got 0"),
])
def test_control_mistakes_name_the_key_given(tmp_path: Path, section: str,
                                             message: str) -> None:
    site = load_site(site_with(tmp_path, "[control]\n" + section))
    with pytest.raises(ConfigError) as caught:
        control_settings(site)
    assert str(caught.value) == f"{site.file}: {message}"


def pedf_check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "controller.cli", "check", str(path)],
                          capture_output=True, text=True, timeout=60)


def test_a_site_file_that_is_not_utf8_gets_one_line(tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_bytes(EXAMPLE.read_bytes().replace(b"Jinan office building",
                                                  b"Jinan caf\xe9 building"))
    result = pedf_check(path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"pedf check: {path}: expected UTF-8 text, got the byte 0xe9 at offset "
        f"{EXAMPLE.read_bytes().index(b'Jinan office') + 9}"]


def test_a_directory_given_as_site_file_gets_one_line(tmp_path: Path) -> None:
    result = pedf_check(tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"pedf check: {tmp_path}: expected a TOML file, got a directory"]
    with pytest.raises(ConfigError, match="expected a TOML file, got a directory"):
        check_site(tmp_path)
