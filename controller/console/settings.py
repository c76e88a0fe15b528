"""The ``[console]`` section of the site file: where the console listens and who may use
it. Checked by the section machinery (:mod:`controller.sections`): a bad value names the
file, the key and what was expected.

    [console]
    port = 8080                      # absent section: no console
    host = "127.0.0.1"               # the default; elsewhere TLS is required
    behind_proxy = false             # trust X-Forwarded-For / -Proto from a reverse proxy
    [console.tls]
    cert_file = "console.crt"
    key_file = "console.key"
    [[console.users]]
    name = "operator"
    role = "operator"                # viewer, operator or admin
    password_hash = "scrypt$14$8$1$…"  # pedf console hash-password
"""

from __future__ import annotations

from dataclasses import dataclass

from controller.console.auth import Role, User, is_password_hash
from controller.sections import (
    Context,
    Key,
    Spec,
    apply,
    existing_file,
    flag,
    integer,
    is_loopback,
    number,
    read,
    text,
)
from drivers.schema import ConfigError, Node
from drivers.site import SiteSpec


@dataclass(frozen=True, slots=True)
class ConsoleSettings:
    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 8080
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    behind_proxy: bool = False
    session_ttl_s: float = 8 * 3600.0
    login_attempts: int = 5  # failed logins per address or name per window
    login_window_s: float = 60.0
    users: tuple[User, ...] = ()


def _users(node: Node, context: Context) -> tuple[User, ...]:
    users: list[User] = []
    for item in node.list():
        read(item, _USER, context)
        name = item.req("name").str()
        role_node = item.req("role")
        role = Role.named(role_node.str(choices=("viewer", "operator", "admin")))
        hash_node = item.req("password_hash")
        if not is_password_hash(hash_node.str()):
            raise hash_node.error("a scrypt hash from `pedf console hash-password`")
        if any(user.name == name for user in users):
            raise item.req("name").error("a user name not used before")
        users.append(User(name, role, hash_node.str()))
    return tuple(users)


_USER: Spec = {"name": Key(text()), "role": Key(text()), "password_hash": Key(text())}

CONSOLE: Spec = {
    "enabled": Key(flag()),
    "host": Key(text()),
    "port": Key(integer(1, 65535)),
    "behind_proxy": Key(flag()),
    "session_ttl_min": Key(lambda n, _: n.float(min=1, max=7 * 24 * 60) * 60.0,
                           "session_ttl_s"),
    "login_attempts": Key(integer(1, 1000)),
    "login_window_s": Key(number(1, 86400)),
    "tls": {"cert_file": Key(existing_file(), "tls_cert_file"),
            "key_file": Key(existing_file(), "tls_key_file")},
    "users": Key(_users),
}


def console_settings(site: SiteSpec) -> ConsoleSettings:
    """The ``[console]`` section (absent: no console). Raises ConfigError."""
    node = site.section("console")
    if node is None:
        return ConsoleSettings()
    given = read(node, CONSOLE, Context.of(site))
    settings = apply(ConsoleSettings(enabled=True), given.values)
    if (settings.tls_cert_file is None) != (settings.tls_key_file is None):
        raise given.tables["tls"].error("cert_file and key_file together")
    if settings.enabled and not settings.users:
        raise ConfigError(node.file, node.child_path("users"),
                          "at least one [[console.users]] entry", missing=True)
    if settings.enabled and not is_loopback(settings.host) and \
            settings.tls_cert_file is None and not settings.behind_proxy:
        raise given.error("a loopback address, or [console.tls] (or behind_proxy = true "
                          "with TLS at the proxy) to listen beyond this machine", "host")
    return settings
