"""``[openadr]``: parsed, checked, and every mistake named by file, key and expectation."""

from __future__ import annotations

from pathlib import Path

import pytest
from oadr_support import site_with_openadr
from openleadr import utils
from tests_support import EXAMPLE, _write_cert_chain

from controller.openadr import check_openadr, openadr_settings
from drivers.schema import ConfigError
from drivers.site import load_site

URL = "https://vtn.example.com/OpenADR2/Simple/2.0b"


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Path]:
    folder = tmp_path / "pki"
    folder.mkdir()
    return _write_cert_chain(folder)


def test_no_section_no_ven() -> None:
    site = load_site(EXAMPLE)
    assert openadr_settings(site) is None
    check_openadr(site)


def test_a_full_section(tmp_path: Path, pki: dict[str, Path]) -> None:
    fingerprint = utils.certificate_fingerprint(pki["server_cert"].read_text())
    path = site_with_openadr(tmp_path, f"""
        [openadr]
        vtn_url = "{URL}/"
        ven_name = "jinan-office-ven"
        ven_id = "VEN-JINAN-01"
        poll_interval_s = 30
        report_interval_s = 60
        cert_file = "pki/client.pem"
        key_file = "pki/client.key"
        ca_file = "{pki['ca']}"
        vtn_fingerprint = "{fingerprint.lower()}"
        check_hostname = true
        opt_out_above_kw = 80
        check_flexibility = false
        market_contexts = ["oadr://sgcc-shandong/dr"]
        simple_levels_kw = [20, 40, 60]
        capacity_kw = 250
        """.replace("        ", ""))
    settings = openadr_settings(load_site(path))
    assert settings is not None
    assert settings.vtn_url == URL
    assert settings.tls
    assert (settings.ven_name, settings.ven_id) == ("jinan-office-ven", "VEN-JINAN-01")
    assert settings.cert_file == str(pki["client_cert"])  # relative to the site file
    assert settings.key_file == str(pki["client_key"])
    assert settings.vtn_fingerprint == fingerprint
    assert settings.sign_messages
    assert settings.simple_levels_kw == (20.0, 40.0, 60.0)
    assert settings.market_contexts == ("oadr://sgcc-shandong/dr",)
    assert (settings.poll_interval_s, settings.report_interval_s) == (30.0, 60.0)
    assert (settings.opt_out_above_kw, settings.capacity_kw) == (80.0, 250.0)
    assert not settings.check_flexibility


def test_defaults(tmp_path: Path) -> None:
    path = site_with_openadr(tmp_path, '[openadr]\nvtn_url = "http://10.0.0.5:8080/oadr"')
    settings = openadr_settings(load_site(path))
    assert settings is not None
    assert settings.ven_name == "jinan-office"  # the site id
    assert settings.ven_id is None
    assert settings.poll_interval_s is None  # what the VTN asks for
    assert settings.report_interval_s == 60.0
    assert not settings.tls
    assert not settings.sign_messages
    assert settings.participate
    assert settings.opt_out_above_kw is None
    assert settings.simple_levels_kw == (10.0, 20.0, 30.0)


@pytest.mark.parametrize(("lines", "where", "expected"), [
    ('vtn_url = "ftp://vtn.example.com"', "openadr.vtn_url", "the VTN's URL"),
    ('vtn_url = "https://"', "openadr.vtn_url", "the VTN's URL"),
    (f'vtn_url = "{URL}"\nvtn_adress = "x"', "openadr.vtn_adress", "one of the keys"),
    (f'vtn_url = "{URL}"\ncert_file = "pki/client.pem"', "openadr",
     "cert_file and key_file together"),
    ('vtn_url = "http://vtn.example.com"\ncert_file = "pki/client.pem"\n'
     'key_file = "pki/client.key"', "openadr.vtn_url", "an https:// URL"),
    (f'vtn_url = "{URL}"\ncert_file = "pki/client.pem"\nkey_file = "pki/server.key"',
     "openadr.key_file", "private key of cert_file"),
    (f'vtn_url = "{URL}"\nca_file = "pki/missing.pem"', "openadr.ca_file",
     "an existing file"),
    (f'vtn_url = "{URL}"\nca_file = "pki/client.key"', "openadr.ca_file",
     "CA certificates"),
    (f'vtn_url = "{URL}"\nvtn_fingerprint = "AB:CD:EF"', "openadr.vtn_fingerprint",
     "10 hex bytes"),
    (f'vtn_url = "{URL}"\nsign_messages = true', "openadr.sign_messages",
     "cert_file and key_file to sign with"),
    (f'vtn_url = "{URL}"\nsimple_levels_kw = [10, 20]', "openadr.simple_levels_kw",
     "level 1, level 2, level 3"),
    (f'vtn_url = "{URL}"\nsimple_levels_kw = [30, 20, 10]', "openadr.simple_levels_kw",
     "do not decrease"),
    (f'vtn_url = "{URL}"\nopt_out_above_kw = 0', "openadr.opt_out_above_kw", "> 0"),
    (f'vtn_url = "{URL}"\npoll_interval_s = 0.1', "openadr.poll_interval_s", "1–86400"),
    (f'vtn_url = "{URL}"\nmarket_contexts = "oadr://x"', "openadr.market_contexts",
     "an array"),
    ('ven_name = "x"', "openadr.vtn_url", "key missing"),
])
def test_mistakes_are_named(tmp_path: Path, pki: dict[str, Path], lines: str, where: str,
                            expected: str) -> None:
    site = load_site(site_with_openadr(tmp_path, "[openadr]\n" + lines))
    with pytest.raises(ConfigError) as caught:
        check_openadr(site)
    message = str(caught.value)
    assert message.startswith(f"{site.file}: {where}: expected ")
    assert expected in message
