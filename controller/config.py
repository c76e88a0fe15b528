"""The controller's view of a site file: the shared part (``drivers.site``) plus the
sections the controller owns. ``check_site`` validates everything a file contains,
including the simulation section, so ``pedf check`` catches every mistake at once."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from drivers.schema import Node
from drivers.site import SiteSpec, load_site


@dataclass(frozen=True, slots=True)
class LoggingSettings:
    level: str = "INFO"
    format: str = "text"  # or "json"


def logging_settings(site: SiteSpec) -> LoggingSettings:
    node = site.section("logging")
    if node is None:
        return LoggingSettings()
    node.only(("level", "format"))
    level = node.get("level")
    fmt = node.get("format")
    return LoggingSettings(
        level="INFO" if level is None else level.str(
            choices=("DEBUG", "INFO", "WARNING", "ERROR")),
        format="text" if fmt is None else fmt.str(choices=("text", "json")),
    )


@dataclass(frozen=True, slots=True)
class TlsSettings:
    ca_file: str | None
    cert_file: str | None
    key_file: str | None
    check_hostname: bool = True


@dataclass(frozen=True, slots=True)
class UplinkSettings:
    """``[uplink]``: where telemetry goes and commands come from (docs/configuration.md)."""

    enabled: bool = True
    host: str | None = None  # None: run the embedded broker (amqtt)
    port: int = 1883
    embedded_host: str = "127.0.0.1"
    protocol: str = "5"  # "5" or "3.1.1"; the embedded broker speaks 3.1.1
    client_id: str = ""
    username: str | None = None
    password: str | None = None
    topic_prefix: str = ""
    keepalive_s: int = 30
    tls: TlsSettings | None = None
    store_path: str = ""
    quota_bytes: int = 256 * 1024 * 1024
    synchronous: str = "full"
    max_inflight: int = 32
    hmac_key: bytes | None = None
    ed25519_public_key_pem: bytes | None = None
    max_skew_s: float = 30.0
    replay_window_s: float = 7 * 86400.0
    health_interval_s: float = 60.0
    home_assistant: bool = False
    metrics_port: int | None = None


def default_store_path(site_id: str) -> str:
    state_home = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return os.path.join(state_home, "pedf", f"{site_id}.sqlite")


def uplink_settings(site: SiteSpec) -> UplinkSettings:
    """The ``[uplink]`` section (absent: defaults, with the embedded broker). Relative
    paths are relative to the site file. Raises ConfigError."""
    base = Path(site.file).resolve().parent if site.file and not site.file.startswith("<") \
        else Path.cwd()
    node = site.section("uplink")
    prefix = f"pedf/{site.site_id}"
    defaults = UplinkSettings(client_id=f"pedf-{site.site_id}", topic_prefix=prefix,
                              store_path=default_store_path(site.site_id))
    if node is None:
        return defaults
    node.only(("enabled", "host", "port", "embedded_host", "protocol", "client_id", "username",
               "password", "password_file", "topic_prefix", "keepalive_s", "tls", "outbox",
               "commands", "health_interval_s", "home_assistant", "metrics_port"))

    def opt(key: str) -> Node | None:
        return node.get(key) if node is not None else None

    def path_of(child: Node) -> str:
        path = Path(child.str())
        return str(path if path.is_absolute() else base / path)

    def read_file(child: Node) -> bytes:
        try:
            return Path(path_of(child)).read_bytes()
        except OSError as exc:
            raise child.error(f"a readable file ({exc.strerror})") from None

    host = opt("host")
    protocol = opt("protocol")
    password = opt("password")
    password_file = opt("password_file")
    if password is not None and password_file is not None:
        raise password_file.error("either password or password_file, not both")
    tls = None
    tls_node = opt("tls")
    if tls_node is not None:
        tls_node.only(("ca_file", "cert_file", "key_file", "check_hostname"))
        files = {k: (None if tls_node.get(k) is None else path_of(tls_node.req(k)))
                 for k in ("ca_file", "cert_file", "key_file")}
        for key, path in files.items():
            if path is not None and not os.path.isfile(path):
                raise tls_node.req(key).error("an existing file")
        if (files["cert_file"] is None) != (files["key_file"] is None):
            raise tls_node.error("cert_file and key_file together (client certificate)")
        check = tls_node.get("check_hostname")
        tls = TlsSettings(files["ca_file"], files["cert_file"], files["key_file"],
                          True if check is None else check.bool())
    outbox = opt("outbox")
    store_path, quota, synchronous, inflight = (defaults.store_path, defaults.quota_bytes,
                                                 defaults.synchronous, defaults.max_inflight)
    if outbox is not None:
        outbox.only(("path", "quota_mb", "synchronous", "max_inflight"))
        if outbox.get("path") is not None:
            store_path = path_of(outbox.req("path"))
        if outbox.get("quota_mb") is not None:
            quota = int(outbox.req("quota_mb").float(min=0.01, max=1_000_000) * 1024 * 1024)
        if outbox.get("synchronous") is not None:
            synchronous = outbox.req("synchronous").str(choices=("full", "normal"))
        if outbox.get("max_inflight") is not None:
            inflight = outbox.req("max_inflight").int(min=1, max=1000)
    hmac_key = ed_key = None
    skew, window = defaults.max_skew_s, defaults.replay_window_s
    commands = opt("commands")
    if commands is not None:
        commands.only(("hmac_key", "hmac_key_file", "ed25519_public_key_file", "max_skew_s",
                       "replay_window_s"))
        if commands.get("hmac_key") is not None:
            hmac_key = commands.req("hmac_key").str().encode()
        if commands.get("hmac_key_file") is not None:
            hmac_key = read_file(commands.req("hmac_key_file")).strip()
        if commands.get("ed25519_public_key_file") is not None:
            ed_key = read_file(commands.req("ed25519_public_key_file"))
            if b"BEGIN PUBLIC KEY" not in ed_key:
                raise commands.req("ed25519_public_key_file").error("a PEM public key file")
        if commands.get("max_skew_s") is not None:
            skew = commands.req("max_skew_s").float(min=0, max=3600)
        if commands.get("replay_window_s") is not None:
            window = commands.req("replay_window_s").float(min=3600, max=365 * 86400)
    metrics = opt("metrics_port")
    return UplinkSettings(
        enabled=True if opt("enabled") is None else node.req("enabled").bool(),
        host=None if host is None else host.str(),
        port=defaults.port if opt("port") is None else node.req("port").int(min=1, max=65535),
        embedded_host=defaults.embedded_host if opt("embedded_host") is None
        else node.req("embedded_host").str(),
        protocol=("3.1.1" if host is None else "5") if protocol is None
        else protocol.str(choices=("5", "3.1.1")),
        client_id=defaults.client_id if opt("client_id") is None
        else node.req("client_id").str(),
        username=None if opt("username") is None else node.req("username").str(),
        password=(password.str() if password is not None else
                  read_file(password_file).decode().strip() if password_file is not None
                  else None),
        topic_prefix=prefix if opt("topic_prefix") is None else _topic_prefix(
            node.req("topic_prefix")),
        keepalive_s=defaults.keepalive_s if opt("keepalive_s") is None
        else node.req("keepalive_s").int(min=5, max=3600),
        tls=tls,
        store_path=store_path,
        quota_bytes=quota,
        synchronous=synchronous,
        max_inflight=inflight,
        hmac_key=hmac_key,
        ed25519_public_key_pem=ed_key,
        max_skew_s=skew,
        replay_window_s=window,
        health_interval_s=defaults.health_interval_s if opt("health_interval_s") is None
        else node.req("health_interval_s").float(min=1, max=86400),
        home_assistant=False if opt("home_assistant") is None
        else node.req("home_assistant").bool(),
        metrics_port=None if metrics is None else metrics.int(min=1, max=65535),
    )


def _topic_prefix(node: Node) -> str:
    prefix = node.str()
    if any(c in prefix for c in "#+") or prefix.startswith("/") or prefix.endswith("/"):
        raise node.error("a topic prefix without wildcards or leading/trailing /")
    return prefix


def check_site(path: Path | str) -> SiteSpec:
    """Load ``path`` and validate every section the gateway owns. Raises ConfigError.
    (The ``[simulation]`` section belongs to the simulators: ``pedf check`` validates it
    too when they are installed.)"""
    from controller.control.settings import control_settings
    from controller.metering import metering_settings
    from controller.openadr import check_openadr

    site = load_site(path)
    logging_settings(site)
    uplink_settings(site)
    metering_settings(site)
    control_settings(site)
    check_openadr(site)
    return site
