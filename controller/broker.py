"""The embedded MQTT broker (amqtt, MQTT 3.1.1) for the demo and sites without a broker,
with who may connect and what each client may publish and read.

* The gateway connects as its own user, ``pedf-gateway``, with a password made up at
  every start: it may publish and read everything under its topic prefix and
  ``homeassistant/``.
* Users from the site file (``[[uplink.broker.users]]``) get the topic filters listed
  for them (``publish``, ``subscribe``).
* Anonymous clients are let in only when no users are configured — and then the broker
  must listen on a loopback address (the settings refuse anything else): they may read
  the prefix and ``homeassistant/`` and publish commands (which must be signed), but
  publish nothing else: no fake status, telemetry or replies.

Subscriptions must lie within the allowed filters, and each delivered message is checked
against the receiver's filters again.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from amqtt.contexts import Action
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from amqtt.session import Session

from controller.config import BrokerUser
from controller.topics import DISCOVERY_FILTER, Topics

log = logging.getLogger("pedf.broker")

GATEWAY_USER = "pedf-gateway"
ANONYMOUS = "anonymous"


def matches(topic_filter: str, topic: str) -> bool:
    """Whether ``topic`` (no wildcards) matches ``topic_filter`` (MQTT rules, without
    the ``$``-topic exception: nothing here grants those)."""
    filters, levels = topic_filter.split("/"), topic.split("/")
    for index, level in enumerate(filters):
        if level == "#":
            return True
        if index >= len(levels) or (level != "+" and level != levels[index]):
            return False
    return len(filters) == len(levels)


def covers(allowed: str, requested: str) -> bool:
    """Whether every topic ``requested`` (a filter) matches also matches ``allowed``."""
    wide, narrow = allowed.split("/"), requested.split("/")
    for index, level in enumerate(wide):
        if level == "#":
            return True
        if index >= len(narrow) or narrow[index] == "#":
            return False
        if level != "+" and (narrow[index] == "+" or level != narrow[index]):
            return False
    return len(wide) == len(narrow)


@dataclass(frozen=True, slots=True)
class Access:
    """Who may connect (name → password) and what each may use (name → filters);
    :data:`ANONYMOUS` stands for clients without a user name."""

    passwords: dict[str, str] = field(default_factory=dict)
    publish: dict[str, tuple[str, ...]] = field(default_factory=dict)
    subscribe: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @classmethod
    def for_site(cls, prefix: str, users: tuple[BrokerUser, ...],
                 gateway_password: str) -> Access:
        topics = Topics(prefix)
        access = cls({GATEWAY_USER: gateway_password},
                     {GATEWAY_USER: (topics.everything, DISCOVERY_FILTER)},
                     {GATEWAY_USER: (topics.everything, DISCOVERY_FILTER)})
        for user in users:
            access.passwords[user.name] = user.password
            access.publish[user.name] = user.publish
            access.subscribe[user.name] = user.subscribe
        if not users:
            access.publish[ANONYMOUS] = (topics.commands,)
            access.subscribe[ANONYMOUS] = (topics.everything, DISCOVERY_FILTER)
        return access

    def authenticate(self, username: str | None, password: str | None) -> bool:
        if username is None:
            return ANONYMOUS in self.subscribe
        expected = self.passwords.get(username)
        return expected is not None and password is not None and hmac.compare_digest(
            expected.encode(), password.encode())

    def allows(self, username: str | None, action: Action, topic: str) -> bool:
        name = ANONYMOUS if username is None else username
        if action == Action.PUBLISH:
            return any(matches(f, topic) for f in self.publish.get(name, ()))
        if action == Action.SUBSCRIBE:
            return any(covers(f, topic) for f in self.subscribe.get(name, ()))
        return any(matches(f, topic) for f in self.subscribe.get(name, ()))  # RECEIVE


class SiteAuthPlugin(BaseAuthPlugin):  # type: ignore[misc]
    """amqtt: users of the site's :class:`Access`."""

    @dataclass
    class Config:
        access: Any = None  # an Access (amqtt builds the plugin from this config)

    async def authenticate(self, *, session: Session) -> bool | None:
        access = _access(self.context.config)
        allowed = access.authenticate(session.username, session.password)
        if not allowed:
            log.warning("embedded broker: refused client %s (user %s)", session.client_id,
                        session.username or "anonymous")
        return allowed


class SiteTopicPlugin(BaseTopicPlugin):  # type: ignore[misc]
    """amqtt: topic filters of the site's :class:`Access`."""

    @dataclass
    class Config:
        access: Any = None

    async def topic_filtering(self, *, session: Session | None = None,
                              topic: str | None = None,
                              action: Action | None = None) -> bool | None:
        if session is None or topic is None or action is None:
            return False
        access = _access(self.context.config)
        allowed = access.allows(session.username, action, topic)
        if not allowed and action != Action.RECEIVE:
            log.warning("embedded broker: %s may not %s %s", session.username or "anonymous",
                        action.value, topic)
        return allowed


def _access(config: object) -> Access:
    access = getattr(config, "access", None)
    if not isinstance(access, Access):
        raise TypeError("the broker plugin was configured without an Access")
    return access


@contextlib.asynccontextmanager
async def embedded_broker(host: str, port: int, *, prefix: str,
                          users: tuple[BrokerUser, ...] = ()) -> AsyncIterator[str]:
    """An amqtt broker on ``host:port`` with the site's access rules; yields the
    password the gateway connects with (as :data:`GATEWAY_USER`). Raises OSError if it
    cannot start."""
    from amqtt.broker import Broker

    logging.getLogger("amqtt").setLevel(logging.WARNING)
    logging.getLogger("transitions").setLevel(logging.WARNING)
    password = secrets.token_urlsafe(24)
    access = Access.for_site(prefix, users, password)
    broker = Broker({
        "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}},
        "plugins": {f"{__name__}.SiteAuthPlugin": {"access": access},
                    f"{__name__}.SiteTopicPlugin": {"access": access}},
    })
    try:
        await broker.start()
    except Exception as exc:
        raise OSError(f"cannot start the embedded MQTT broker on {host}:{port}: {exc}") from None
    try:
        yield password
    finally:
        with contextlib.suppress(Exception):
            await broker.shutdown()
