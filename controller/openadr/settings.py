"""The ``[openadr]`` section: where the VTN is, how to trust it, and the opt-out policy.

Every error names the file, the key and what was expected (``ConfigError``)."""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

from controller.sections import (
    Context,
    Key,
    Spec,
    apply,
    existing_file,
    flag,
    number,
    read,
    text,
    texts,
)
from drivers.schema import Node
from drivers.site import SiteSpec

_FINGERPRINT = re.compile(r"^([0-9A-F]{2}:){9}[0-9A-F]{2}$")


@dataclass(frozen=True, slots=True)
class OpenAdrSettings:
    """``[openadr]`` (docs/openadr.md). Paths are absolute."""

    vtn_url: str
    ven_name: str
    ven_id: str | None = None
    enabled: bool = True
    poll_interval_s: float | None = None  # None: what the VTN asks for at registration
    report_interval_s: float = 60.0  # the fastest telemetry sampling offered to the VTN
    cert_file: str | None = None
    key_file: str | None = None
    ca_file: str | None = None
    vtn_fingerprint: str | None = None
    check_hostname: bool = True
    sign_messages: bool = True
    participate: bool = True
    opt_out_above_kw: float | None = None
    check_flexibility: bool = True
    market_contexts: tuple[str, ...] = ()
    act_on_test_events: bool = False
    simple_levels_kw: tuple[float, float, float] = (10.0, 20.0, 30.0)
    capacity_kw: float | None = None

    @property
    def tls(self) -> bool:
        return self.vtn_url.startswith("https://")


def _vtn_url(node: Node, _: Context) -> str:
    url = node.str()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise node.error('the VTN\'s URL, e.g. "https://vtn.example.com/OpenADR2/Simple/2.0b"')
    return url.rstrip("/")


def _fingerprint(node: Node, _: Context) -> str:
    fingerprint = node.str().strip().upper()
    if not _FINGERPRINT.match(fingerprint):
        raise node.error("the VTN's OpenADR fingerprint: 10 hex bytes separated by ':' "
                         "(the last 10 bytes of the certificate's SHA-256)")
    return fingerprint


def _ca_file(node: Node, context: Context) -> str:
    ca = existing_file()(node, context)
    assert isinstance(ca, str)
    try:
        ssl.create_default_context(cafile=ca)
    except (ssl.SSLError, ValueError) as exc:
        raise node.error(f"a PEM file of CA certificates ({exc})") from None
    return ca


def _levels(node: Node, _: Context) -> tuple[float, float, float]:
    items = node.list()
    if len(items) != 3:
        raise node.error("[kW at level 1, level 2, level 3]")
    low, middle, high = (item.float(min=0.0, max=1e6) for item in items)
    if not low <= middle <= high:
        raise node.error("kW that do not decrease from level 1 to 3")
    return (low, middle, high)


#: ``[openadr]``, one rule per key (docs/openadr.md).
OPENADR: Spec = {
    "enabled": Key(flag()),
    "vtn_url": Key(_vtn_url, required=True),
    "ven_name": Key(text()),
    "ven_id": Key(text()),
    "poll_interval_s": Key(number(1.0, 86400.0)),
    "report_interval_s": Key(number(1.0, 86400.0)),
    "cert_file": Key(existing_file()),
    "key_file": Key(existing_file()),
    "ca_file": Key(_ca_file),
    "vtn_fingerprint": Key(_fingerprint),
    "check_hostname": Key(flag()),
    "sign_messages": Key(flag()),
    "participate": Key(flag()),
    "opt_out_above_kw": Key(number(0.0, 1e6, above=True)),
    "check_flexibility": Key(flag()),
    "market_contexts": Key(texts()),
    "act_on_test_events": Key(flag()),
    "simple_levels_kw": Key(_levels),
    "capacity_kw": Key(number(0.0, 1e6, above=True)),
}


def openadr_settings(site: SiteSpec) -> OpenAdrSettings | None:
    """The ``[openadr]`` section, or None when the site has none. Relative paths are
    relative to the site file. Raises ConfigError naming the file, key and expectation."""
    node = site.section("openadr")
    if node is None:
        return None
    given = read(node, OPENADR, Context.of(site))
    values = given.values
    url = str(values["vtn_url"])
    cert, key, ca = (values.get(name) for name in ("cert_file", "key_file", "ca_file"))
    if (cert is None) != (key is None):
        raise node.error("cert_file and key_file together (the VEN's client certificate)")
    if url.startswith("http://") and (cert is not None or ca is not None):
        raise given.error("an https:// URL (cert_file / ca_file are TLS settings)", "vtn_url")
    if isinstance(cert, str) and isinstance(key, str):
        _check_key_pair(node, cert, key)
    if values.get("sign_messages") and cert is None:
        raise given.error("false, or cert_file and key_file to sign with", "sign_messages")
    settings = apply(OpenAdrSettings(vtn_url=url, ven_name=site.site_id), values)
    return apply(settings, {"sign_messages": settings.sign_messages and cert is not None})


def _check_key_pair(node: Node, cert: str, key: str) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        context.load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        raise node.req("key_file").error(
            f"the unencrypted PEM private key of cert_file ({exc.reason or exc})") from None


def check_openadr(site: SiteSpec) -> None:
    """Validate the ``[openadr]`` section, if any (for ``controller.config.check_site``).
    Raises ConfigError."""
    openadr_settings(site)
