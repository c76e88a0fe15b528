"""Readings: what the poller hands to every subscriber (metering, store, uplink, views)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from drivers.points import Value


class Quality(enum.Enum):
    """How far a reading can be trusted.

    ``OK``: read in the last poll. ``STALE``: the device stopped answering; the value is
    None, never the last good one repeated. ``ERROR``: the device answered but the value
    could not be obtained (Modbus exception, undecodable registers).
    """

    OK = "ok"
    STALE = "stale"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class Reading:
    """One point of one device at one time, in base units (W, Wh, V, A, Hz, °C, %)."""

    device: str
    point: str
    value: Value
    unit: str
    timestamp: float  # wall-clock UNIX time, s
    quality: Quality = Quality.OK
