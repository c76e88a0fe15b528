"""The security settings at work: TLS with client certificates both ways, signed messages,
and the VTN's certificate fingerprint pinned by the VEN.

The VTN (openleadr, in-process) serves HTTPS with a server certificate from a test CA,
requires a client certificate from the same CA, checks that the VEN's certificate has the
fingerprint it was given out of band, and verifies the VEN's XML signatures; it signs its
own messages, which the VEN accepts only from the pinned fingerprint.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from oadr_support import building, running_utility, serving, until
from openleadr import utils
from tests_support import _write_cert_chain


def section(url: str, certs: dict[str, Path], fingerprint: str) -> str:
    return f"""
vtn_url = "{url}"
ven_name = "jinan-office"
cert_file = "{certs['client_cert']}"
key_file = "{certs['client_key']}"
ca_file = "{certs['ca']}"
vtn_fingerprint = "{fingerprint}"
"""


async def test_tls_client_certificate_signatures_and_pinned_vtn(tmp_path: Path) -> None:
    certs = _write_cert_chain(_folder(tmp_path / "pki"))
    other = _write_cert_chain(_folder(tmp_path / "other-pki"))  # a stranger's CA and keys
    vtn_fingerprint = utils.certificate_fingerprint(certs["server_cert"].read_text())
    ven_fingerprint = utils.certificate_fingerprint(certs["client_cert"].read_text())
    async with running_utility(tls=certs) as utility:
        assert utility.url.startswith("https://")
        with building(tmp_path / "ok", section(utility.url, certs, vtn_fingerprint)) as site:
            async with serving(site.ven.run):
                await until(lambda: site.ven.registered, what="registered over TLS")
                # the VTN saw our client certificate (the fingerprint it knows us by)
                assert utility.registrations[0]["fingerprint"] == ven_fingerprint
                utility.add("EVT-S", "SIMPLE", "level", [1.0])
                await until(lambda: ("optIn", 0) in utility.answers("EVT-S"),
                            what="signed optIn")
                assert site.event("EVT-S").value == 10.0
        # a VEN pinned to another fingerprint ignores the (genuine) VTN's answers; a VEN
        # that trusts another CA does not get past the TLS handshake
        wrong_pin = utils.certificate_fingerprint(other["server_cert"].read_text())
        wrong_ca = {**certs, "ca": other["ca"]}
        with building(tmp_path / "pin", section(utility.url, certs, wrong_pin)) as pinned, \
                building(tmp_path / "ca", section(utility.url, wrong_ca, vtn_fingerprint)
                         ) as untrusting:
            registrations = len(utility.registrations)
            async with serving(pinned.ven.run), serving(untrusting.ven.run):
                await until(lambda: pinned.ven.last_failure is not None
                            and untrusting.ven.last_failure is not None,
                            what="both registrations failed")
                await asyncio.sleep(0)
            assert not pinned.ven.registered
            assert not untrusting.ven.registered
            # the pinned VEN reached the VTN, which answered — but not with the pinned key
            assert len(utility.registrations) == registrations + 1
            assert "no registration" in (pinned.ven.last_failure or "")


def _folder(path: Path) -> Path:
    path.mkdir(parents=True)
    return path
