"""The MQTT topics of a gateway: the one module that names them (``docs/mqtt.md``).

Outgoing messages carry a :class:`~controller.streams.Stream`; :meth:`Topics.of` maps it
to its topic when the MQTT publisher sends it. The connection's own topics (status,
commands), the broker ACL's filters and Home Assistant's discovery topics are named here
too, so that no other module builds a topic string.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from controller.streams import KEYED, Kind, Stream

#: Home Assistant's discovery prefix (its default).
DISCOVERY_PREFIX = "homeassistant"


@dataclass(frozen=True, slots=True)
class Topics:
    prefix: str

    def of(self, stream: Stream) -> str:
        """The topic ``stream`` is published on: ``<prefix>/<kind>[/<key>]``, or the
        address itself for :attr:`Kind.ADDRESS`."""
        return _topic(self.prefix, stream)

    def stream_of(self, topic: str) -> Stream:
        """The stream :meth:`of` publishes on ``topic`` (its inverse): a topic that is not
        one of the prefix's streams is an address (:attr:`Kind.ADDRESS`)."""
        rest = topic.removeprefix(f"{self.prefix}/") if self.prefix else topic
        if rest != topic:
            for kind in Kind:
                if kind is Kind.ADDRESS:
                    continue
                if kind in KEYED:
                    key = rest.removeprefix(f"{kind.value}/")
                    if key != rest and key:
                        return Stream(kind, key)
                elif rest == kind.value:
                    return Stream(kind)
        return Stream(Kind.ADDRESS, topic)

    @property
    def everything(self) -> str:
        """The filter of every topic under the prefix."""
        return f"{self.prefix}/#"

    @property
    def status(self) -> str:
        return f"{self.prefix}/status"

    @property
    def commands(self) -> str:
        return f"{self.prefix}/commands"

    def telemetry(self, device: str) -> str:
        return self.of(Stream(Kind.TELEMETRY, device))

    @property
    def events(self) -> str:
        return self.of(Stream(Kind.EVENTS))

    @property
    def health(self) -> str:
        return self.of(Stream(Kind.HEALTH))

    @property
    def replies(self) -> str:
        return self.of(Stream(Kind.REPLIES))

    def metering(self, kind: str) -> str:
        return self.of(Stream(Kind.METERING, kind))


@functools.lru_cache(maxsize=4096)  # the publisher asks for every message it sends
def _topic(prefix: str, stream: Stream) -> str:
    if stream.kind is Kind.ADDRESS:
        return stream.key
    base = f"{prefix}/{stream.kind.value}"
    return f"{base}/{stream.key}" if stream.key else base


def discovery_topic(component: str, object_id: str) -> str:
    """Home Assistant's config topic of one entity."""
    return f"{DISCOVERY_PREFIX}/{component}/{object_id}/config"


#: The filter of every Home Assistant discovery topic.
DISCOVERY_FILTER = f"{DISCOVERY_PREFIX}/#"
