"""The ``[openadr]`` section: where the VTN is, how to trust it, and the opt-out policy.

Every error names the file, the key and what was expected (``ConfigError``)."""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

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


_KEYS = ("enabled", "vtn_url", "ven_name", "ven_id", "poll_interval_s", "report_interval_s",
         "cert_file", "key_file", "ca_file", "vtn_fingerprint", "check_hostname",
         "sign_messages", "participate", "opt_out_above_kw", "check_flexibility",
         "market_contexts", "act_on_test_events", "simple_levels_kw", "capacity_kw")


def openadr_settings(site: SiteSpec) -> OpenAdrSettings | None:
    """The ``[openadr]`` section, or None when the site has none. Relative paths are
    relative to the site file. Raises ConfigError naming the file, key and expectation."""
    node = site.section("openadr")
    if node is None:
        return None
    node.only(_KEYS)
    base = Path(site.file).resolve().parent if site.file and not site.file.startswith("<") \
        else Path.cwd()

    def opt(key: str) -> Node | None:
        return node.get(key) if node is not None else None

    def path_of(key: str) -> str | None:
        child = opt(key)
        if child is None:
            return None
        path = Path(child.str())
        path = path if path.is_absolute() else base / path
        if not path.is_file():
            raise child.error("an existing file")
        return str(path)

    url_node = node.req("vtn_url")
    url = url_node.str()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise url_node.error('the VTN\'s URL, e.g. "https://vtn.example.com/OpenADR2/Simple/2.0b"')
    url = url.rstrip("/")
    cert, key, ca = path_of("cert_file"), path_of("key_file"), path_of("ca_file")
    if (cert is None) != (key is None):
        raise node.error("cert_file and key_file together (the VEN's client certificate)")
    if parts.scheme == "http" and (cert is not None or ca is not None):
        raise url_node.error("an https:// URL (cert_file / ca_file are TLS settings)")
    if cert is not None and key is not None:
        _check_key_pair(node, cert, key)
    if ca is not None:
        try:
            ssl.create_default_context(cafile=ca)
        except (ssl.SSLError, ValueError) as exc:
            raise node.req("ca_file").error(f"a PEM file of CA certificates ({exc})") from None
    fingerprint = None
    if opt("vtn_fingerprint") is not None:
        fp_node = node.req("vtn_fingerprint")
        fingerprint = fp_node.str().strip().upper()
        if not _FINGERPRINT.match(fingerprint):
            raise fp_node.error("the VTN's OpenADR fingerprint: 10 hex bytes separated by ':' "
                                "(the last 10 bytes of the certificate's SHA-256)")
    sign = True
    if opt("sign_messages") is not None:
        sign = node.req("sign_messages").bool()
        if sign and cert is None:
            raise node.req("sign_messages").error("false, or cert_file and key_file to sign with")
    levels = (10.0, 20.0, 30.0)
    if opt("simple_levels_kw") is not None:
        items = node.req("simple_levels_kw").list()
        if len(items) != 3:
            raise node.req("simple_levels_kw").error("[kW at level 1, level 2, level 3]")
        values = [item.float(min=0.0, max=1e6) for item in items]
        if not values[0] <= values[1] <= values[2]:
            raise node.req("simple_levels_kw").error("kW that do not decrease from level 1 to 3")
        levels = (values[0], values[1], values[2])
    contexts: tuple[str, ...] = ()
    if opt("market_contexts") is not None:
        contexts = tuple(item.str() for item in node.req("market_contexts").list())

    def number(key: str, low: float, high: float, *, exclusive: bool = False) -> float | None:
        child = opt(key)
        return None if child is None else child.float(min=low, max=high,
                                                      min_exclusive=exclusive)

    def flag(key: str, default: bool) -> bool:
        child = opt(key)
        return default if child is None else child.bool()

    ven_name = opt("ven_name")
    ven_id = opt("ven_id")
    report = number("report_interval_s", 1.0, 86400.0)
    return OpenAdrSettings(
        vtn_url=url,
        ven_name=site.site_id if ven_name is None else ven_name.str(),
        ven_id=None if ven_id is None else ven_id.str(),
        enabled=flag("enabled", True),
        poll_interval_s=number("poll_interval_s", 1.0, 86400.0),
        report_interval_s=60.0 if report is None else report,
        cert_file=cert, key_file=key, ca_file=ca, vtn_fingerprint=fingerprint,
        check_hostname=flag("check_hostname", True),
        sign_messages=sign and cert is not None,
        participate=flag("participate", True),
        opt_out_above_kw=number("opt_out_above_kw", 0.0, 1e6, exclusive=True),
        check_flexibility=flag("check_flexibility", True),
        market_contexts=contexts,
        act_on_test_events=flag("act_on_test_events", False),
        simple_levels_kw=levels,
        capacity_kw=number("capacity_kw", 0.0, 1e6, exclusive=True),
    )


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
