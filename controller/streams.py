"""What an outgoing message is, independent of the protocol that carries it.

Every message the gateway sends upstream belongs to a :class:`Stream`: a :class:`Kind`
(telemetry, events, health, a metering window, …) and, for the kinds that have one, a
key (the device of a telemetry stream, the window kind of a metering stream). The
outbox (:mod:`controller.store`) stores streams, not topics; each uplink protocol maps
the streams it carries to its own addresses — MQTT in :mod:`controller.topics`, the one
place that names topics. Messages of one stream are delivered in sequence order.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Kind(StrEnum):
    """The kinds of outgoing message (values are stable: the store keeps them)."""

    TELEMETRY = "telemetry"  # key: the device
    EVENTS = "events"
    HEALTH = "health"
    REPLIES = "replies"  # answers to commands
    ADDRESS = "address"  # key: an address the requester named (an MQTT 5 response topic)
    METERING = "metering"  # key: the window kind ("window")
    DCBUS = "dcbus"
    FLEXIBILITY = "flexibility"
    DR_PERFORMANCE = "dr/performance"
    DR_SETTLEMENT = "dr/settlement"


#: Kinds whose stream names something (a device, a window kind, an address).
KEYED = frozenset({Kind.TELEMETRY, Kind.ADDRESS, Kind.METERING})


@dataclass(frozen=True, slots=True)
class Stream:
    """One ordered stream of outgoing messages: a kind and, for :data:`KEYED` kinds, a
    key. Raises ValueError for a key on a kind without one, or none on a keyed kind."""

    kind: Kind
    key: str = ""

    def __post_init__(self) -> None:
        if (self.kind in KEYED) != bool(self.key):
            raise ValueError(f"stream {self.kind.value!r} "
                             f"{'needs' if self.kind in KEYED else 'takes no'} key")

    @property
    def name(self) -> str:
        """How the store keeps it: the kind, then ``:key`` for a keyed stream."""
        return f"{self.kind.value}:{self.key}" if self.key else self.kind.value

    @classmethod
    def parse(cls, name: str) -> Stream:
        """The stream :attr:`name` names (ValueError for an unknown kind)."""
        kind, _, key = name.partition(":")
        return cls(Kind(kind), key)


def telemetry(device: str) -> Stream:
    return Stream(Kind.TELEMETRY, device)


def metering(window: str) -> Stream:
    return Stream(Kind.METERING, window)


def address(destination: str) -> Stream:
    return Stream(Kind.ADDRESS, destination)


EVENTS = Stream(Kind.EVENTS)
HEALTH = Stream(Kind.HEALTH)
REPLIES = Stream(Kind.REPLIES)
DCBUS = Stream(Kind.DCBUS)
FLEXIBILITY = Stream(Kind.FLEXIBILITY)
DR_PERFORMANCE = Stream(Kind.DR_PERFORMANCE)
DR_SETTLEMENT = Stream(Kind.DR_SETTLEMENT)
