"""The controller's view of a site file: the shared part (``drivers.site``) plus the
sections the controller owns. ``check_site`` validates everything a file contains,
including the simulation section, so ``pedf check`` catches every mistake at once."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from controller.sections import (
    Context,
    Given,
    Key,
    Spec,
    apply,
    choice,
    existing_file,
    file_bytes,
    file_path,
    flag,
    integer,
    is_loopback,
    megabytes,
    number,
    read,
    text,
    topic_prefix,
)
from controller.topics import Topics
from drivers.schema import ConfigError, Node
from drivers.site import SiteSpec, load_site

if TYPE_CHECKING:
    from controller.console.settings import ConsoleSettings


@dataclass(frozen=True, slots=True)
class LoggingSettings:
    level: str = "INFO"
    format: str = "text"  # or "json"


_LOGGING: Spec = {"level": Key(choice("DEBUG", "INFO", "WARNING", "ERROR")),
                  "format": Key(choice("text", "json"))}


def logging_settings(site: SiteSpec) -> LoggingSettings:
    """``[logging]`` (absent: INFO, text). Raises ConfigError."""
    node = site.section("logging")
    if node is None:
        return LoggingSettings()
    return apply(LoggingSettings(), read(node, _LOGGING, Context.of(site)).values)


@dataclass(frozen=True, slots=True)
class TlsSettings:
    ca_file: str | None
    cert_file: str | None
    key_file: str | None
    check_hostname: bool = True


@dataclass(frozen=True, slots=True)
class BrokerUser:
    """A client of the embedded broker and the topic filters it may use."""

    name: str
    password: str
    publish: tuple[str, ...] = ()
    subscribe: tuple[str, ...] = ()


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
    reconnect_max_s: float = 3.0  # the longest wait between two connection attempts
    tls: TlsSettings | None = None
    store_path: str = ""
    quota_bytes: int = 256 * 1024 * 1024
    synchronous: str = "full"
    max_inflight: int = 32
    dead_letter_max_rows: int = 10_000
    dead_letter_max_age_s: float = 30 * 86400.0
    hmac_key: bytes | None = None
    ed25519_public_key_pem: bytes | None = None
    max_skew_s: float = 30.0
    replay_window_s: float = 7 * 86400.0
    response_topic_prefix: str = ""  # MQTT 5 response topics must be under it
    max_pending_commands: int = 1000  # recorded, not yet decided: beyond, stop reading
    audit_max_rows: int = 100_000
    audit_max_age_s: float = 90 * 86400.0
    health_interval_s: float = 60.0
    home_assistant: bool = False
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    metrics_username: str | None = None
    metrics_password: str | None = None
    broker_users: tuple[BrokerUser, ...] = ()


def default_store_path(site_id: str) -> str:
    state_home = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return os.path.join(state_home, "pedf", f"{site_id}.sqlite")


def _secret(node: Node, context: Context) -> str:
    """A password kept in a file (first line, surrounding whitespace stripped)."""
    data = file_bytes(strip=True)(node, context)
    assert isinstance(data, bytes)
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise node.error("a UTF-8 text file") from None


def _pem_public_key(node: Node, context: Context) -> bytes:
    data = file_bytes()(node, context)
    assert isinstance(data, bytes)
    if b"BEGIN PUBLIC KEY" not in data:
        raise node.error("a PEM public key file")
    return data


def _topic_filters(node: Node, _: Context) -> tuple[str, ...]:
    filters = []
    for item in node.list():
        levels = item.str().split("/")
        wild = [level for level in levels if "#" in level or "+" in level]
        if any(level not in ("#", "+") for level in wild) or "#" in levels[:-1]:
            raise item.error("an MQTT topic filter (+ for one level, # only last)")
        filters.append(item.str())
    return tuple(filters)


_USER: Spec = {
    "name": Key(text()), "password": Key(text()), "password_file": Key(_secret, "password"),
    "publish": Key(_topic_filters), "subscribe": Key(_topic_filters),
}


def _broker_users(node: Node, context: Context) -> tuple[BrokerUser, ...]:
    users: list[BrokerUser] = []
    for item in node.list():
        given = read(item, _USER, context)
        name = item.req("name").str()
        if "password" not in given.values:
            raise ConfigError(item.file, item.child_path("password"),
                              "a password (password or password_file)", missing=True)
        if any(user.name == name for user in users):
            raise item.req("name").error("a user name not used before")
        users.append(apply(BrokerUser(name, ""), given.values))
    return tuple(users)


#: ``[uplink]``, one rule per key (docs/configuration.md).
UPLINK: Spec = {
    "enabled": Key(flag()),
    "host": Key(text()),
    "port": Key(integer(1, 65535)),
    "embedded_host": Key(text()),
    "protocol": Key(choice("5", "3.1.1")),
    "client_id": Key(text()),
    "username": Key(text()),
    "password": Key(text()),
    "password_file": Key(_secret, "password"),
    "topic_prefix": Key(topic_prefix()),
    "keepalive_s": Key(integer(5, 3600)),
    "reconnect_max_s": Key(number(0.5, 300)),
    "health_interval_s": Key(number(1, 86400)),
    "home_assistant": Key(flag()),
    "metrics_port": Key(integer(1, 65535)),
    "metrics_host": Key(text()),
    "metrics_username": Key(text()),
    "metrics_password_file": Key(_secret, "metrics_password"),
    "tls": {
        "ca_file": Key(existing_file(), "tls_ca_file"),
        "cert_file": Key(existing_file(), "tls_cert_file"),
        "key_file": Key(existing_file(), "tls_key_file"),
        "check_hostname": Key(flag(), "tls_check_hostname"),
    },
    "outbox": {
        "path": Key(file_path(), "store_path"),
        "quota_mb": Key(megabytes(0.01, 1_000_000), "quota_bytes"),
        "synchronous": Key(choice("full", "normal")),
        "max_inflight": Key(integer(1, 1000)),
        "dead_letter_max_rows": Key(integer(10, 10_000_000)),
        "dead_letter_max_age_s": Key(number(3600, 3650 * 86400)),
    },
    "commands": {
        "hmac_key": Key(lambda node, _: node.str().encode()),
        "hmac_key_file": Key(file_bytes(strip=True), "hmac_key"),
        "ed25519_public_key_file": Key(_pem_public_key, "ed25519_public_key_pem"),
        "max_skew_s": Key(number(0, 3600)),
        "replay_window_s": Key(number(3600, 365 * 86400)),
        "response_topic_prefix": Key(topic_prefix()),
        "max_pending": Key(integer(10, 1_000_000), "max_pending_commands"),
        "audit_max_rows": Key(integer(10, 100_000_000)),
        "audit_max_age_s": Key(number(86400, 3650 * 86400)),
    },
    "broker": {"users": Key(_broker_users, "broker_users")},
}


def uplink_settings(site: SiteSpec) -> UplinkSettings:
    """The ``[uplink]`` section (absent: defaults, with the embedded broker). Relative
    paths are relative to the site file. Raises ConfigError."""
    prefix = f"pedf/{site.site_id}"
    defaults = UplinkSettings(client_id=f"pedf-{site.site_id}", topic_prefix=prefix,
                              store_path=default_store_path(site.site_id),
                              response_topic_prefix=Topics(prefix).replies)
    node = site.section("uplink")
    if node is None:
        return defaults
    given = read(node, UPLINK, Context.of(site))
    values = dict(given.values)
    tls_values = {name.removeprefix("tls_"): values.pop(name) for name in list(values)
                  if name.startswith("tls_")}
    tls = None
    if "tls" in given.tables:
        if ("cert_file" in tls_values) != ("key_file" in tls_values):
            raise given.tables["tls"].error(
                "cert_file and key_file together (client certificate)")
        tls = apply(TlsSettings(None, None, None), tls_values)
    values.setdefault("protocol", "5" if values.get("host") else "3.1.1")
    if "topic_prefix" in values and "response_topic_prefix" not in values:
        values["response_topic_prefix"] = Topics(str(values["topic_prefix"])).replies
    settings = apply(defaults, {**values, "tls": tls})
    _check_listeners(settings, given)
    return settings


def _check_listeners(settings: UplinkSettings, given: Given) -> None:
    """What listens beyond this machine must ask who is there."""
    if given.tables.get("broker") is not None and settings.host is not None:
        raise given.tables["broker"].error(
            "no [uplink.broker] with host set (it configures the embedded broker)")
    if settings.host is None and not is_loopback(settings.embedded_host) \
            and not settings.broker_users:
        raise given.error("a loopback address (127.0.0.1, ::1, localhost), or "
                          "[[uplink.broker.users]] to authenticate clients", "embedded_host")
    if (settings.metrics_username is None) != (settings.metrics_password is None):
        raise given.error("metrics_username and metrics_password_file together",
                          "metrics_username", "metrics_password")
    if settings.metrics_port is not None and not is_loopback(settings.metrics_host) \
            and settings.metrics_username is None:
        raise given.error("a loopback address, or metrics_username and "
                          "metrics_password_file (basic auth)", "metrics_host")


def listeners(settings: UplinkSettings, console: ConsoleSettings | None = None
              ) -> list[tuple[str, str]]:
    """What ``pedf run`` will listen on: (host:port, what and who may use it)."""
    found: list[tuple[str, str]] = []
    if console is not None and console.enabled:
        tls = "TLS" if console.tls_cert_file else "no TLS"
        found.append((_address(console.host, console.port),
                      f"web console ({len(console.users)} user(s), {tls})"))
    if not settings.enabled:
        return found
    if settings.host is None:
        topics = Topics(settings.topic_prefix)
        who = (f"{len(settings.broker_users)} user(s) from the site file" if
               settings.broker_users else f"anonymous clients may read {topics.everything}"
               f" and publish {topics.commands}")
        found.append((_address(settings.embedded_host, settings.port),
                      f"MQTT broker (embedded): {who}"))
    if settings.metrics_port is not None:
        auth = "basic auth" if settings.metrics_username else "no auth"
        found.append((_address(settings.metrics_host, settings.metrics_port),
                      f"Prometheus metrics ({auth})"))
    return found


def _address(host: str, port: int) -> str:
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return where if is_loopback(host) else f"{where} (beyond this machine)"


def check_site(path: Path | str) -> SiteSpec:
    """Load ``path`` and validate every section the gateway owns. Raises ConfigError.
    (The ``[simulation]`` section belongs to the simulators: ``pedf check`` validates it
    too when they are installed.)"""
    from controller.console.settings import console_settings
    from controller.control.dcbus_config import dcbus_settings
    from controller.control.settings import control_settings
    from controller.energy import energy_settings
    from controller.metering import metering_settings
    from controller.openadr import check_openadr
    from controller.planner.settings import planner_settings
    from controller.platform import platform_settings

    site = load_site(path)
    logging_settings(site)
    uplink_settings(site)
    metering_settings(site)
    control_settings(site)
    dcbus_settings(site)
    check_openadr(site)
    energy_settings(site)
    platform_settings(site, metering_settings(site).demand_window_s)
    console_settings(site)
    planner_settings(site)
    return site
