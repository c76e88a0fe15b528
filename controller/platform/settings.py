"""``[platform]``: where and how the gateway reports to the city's energy-monitoring
platform (see docs/energy-monitoring.md)."""

from __future__ import annotations

from dataclasses import dataclass

from controller.platform.wire import Dialect, dialects
from controller.sections import (
    Context,
    Key,
    Spec,
    apply,
    choice,
    file_bytes,
    flag,
    integer,
    number,
    read,
    text,
)
from drivers.schema import Node
from drivers.site import SiteSpec


@dataclass(frozen=True, slots=True)
class PlatformSettings:
    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 9006
    building_id: str = ""
    gateway_id: str = "01"
    key: bytes = b""
    dialect: Dialect | None = None
    timeout_s: float = 10.0  # for every answer the gateway waits for
    backoff_max_s: float = 300.0  # the longest wait between connection attempts
    backlog_days: float = 31.0  # how far back missed periods are resent
    name: str = "city"  # the store's delivery records are per platform name

    @property
    def period_s(self) -> int:
        assert self.dialect is not None
        return self.dialect.period_s


def _key(node: Node, _: Context) -> bytes:
    value = node.str().encode()
    if len(value) != 16:
        raise node.error("the 16-character AES-128 key the platform issued")
    return value


def _key_file(node: Node, context: Context) -> bytes:
    value = file_bytes(strip=True)(node, context)
    assert isinstance(value, bytes)
    if len(value) != 16:
        raise node.error("a file holding the 16-character AES-128 key")
    return value


def _period(node: Node) -> int:
    value = node.int()
    if value not in (600, 900, 3600):
        raise node.error("600, 900 or 3600 (10 min, 15 min or 1 h)")
    return value


PLATFORM: Spec = {
    "enabled": Key(flag()),
    "host": Key(text()),
    "port": Key(integer(1, 65535)),
    "building_id": Key(text(), required=True),
    "gateway_id": Key(text()),
    "key": Key(_key),
    "key_file": Key(_key_file, field="key"),
    "dialect": Key(choice(*dialects())),
    "period_s": Key(lambda node, _: _period(node)),
    "aes_mode": Key(choice("cbc", "ecb")),
    "padding": Key(choice("pkcs7", "zero")),
    "heartbeat_s": Key(number(1.0, 3600.0)),
    "timeout_s": Key(number(0.1, 600.0)),
    "backoff_max_s": Key(number(0.1, 86400.0)),
    "backlog_days": Key(number(0.01, 3660.0)),
    "name": Key(text()),
}


def platform_settings(site: SiteSpec, window_s: int = 900) -> PlatformSettings:
    """``[platform]`` (absent: not enabled). ``period_s`` must be a multiple of the
    metering window ``window_s``. Raises ConfigError naming the key."""
    node = site.section("platform")
    if node is None:
        return PlatformSettings()
    given = read(node, PLATFORM, Context.of(site))
    values = dict(given.values)
    if "key" not in values:
        raise given.error("a key or key_file (the platform's AES-128 key)")
    dialect = dialects()[str(values.pop("dialect", "jianshe-2009"))]
    period = values.pop("period_s", None)
    dialect = dialect.with_overrides(
        period_s=period,
        aes_mode=values.pop("aes_mode", None), padding=values.pop("padding", None),
        heartbeat_s=values.pop("heartbeat_s", None))
    if dialect.period_s % window_s:
        raise given.error(f"a report period that is a multiple of the metering window "
                          f"({window_s} s)", "period_s", "dialect")
    values.setdefault("enabled", True)
    return apply(PlatformSettings(dialect=dialect), values)
