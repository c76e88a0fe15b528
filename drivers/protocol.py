"""The protocol-neutral face of a device protocol, sans-I/O.

A *line* (the controller's byte transport: a TCP connection, an RS-485 port, a TCP
connection to a serial device server) moves bytes and owns timing; a *protocol* turns
what the gateway wants into bytes and bytes back into values. This module is the
contract between the two, the way pymodbus splits transports from framers:

* an :class:`Exchange` is one request on the wire and the collection of its answer:
  ``encode(transaction)`` gives the bytes to send, ``receive(buffer)`` consumes bytes
  from the line's buffer and says when the answer is complete (raising
  :class:`FrameError` for bytes that cannot be it);
* an :class:`Operation` is one conversation with one device — a poll group read, or a
  verified write — as a sequence of exchanges; the device's refusal raises
  :class:`DeviceAnswerError`;
* a :class:`Driver` is one device's protocol session: it plans operations from the
  device's map (:mod:`drivers.modbus` for Modbus, :mod:`drivers.dlt645_driver` for
  DL/T 645-2007).

Nothing here does I/O: every byte is handed in and out by the caller.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from drivers.errors import DeviceAnswerError, FrameError, StreamDesyncError
from drivers.points import AnyMap, Value

if TYPE_CHECKING:
    from drivers.devices import Write

__all__ = ["DeviceAnswerError", "Driver", "Exchange", "FrameError", "Framing", "Operation",
           "ReadOperation", "StreamDesyncError", "WriteOperation"]


class Framing(enum.Enum):
    """How a line delimits frames. ``STREAM``: a native TCP connection (Modbus TCP's
    MBAP header; DL/T 645 frames as they are). ``SERIAL``: a serial line or a serial
    device server in transparent mode (Modbus RTU frames with CRC; DL/T 645 frames)."""

    STREAM = "stream"
    SERIAL = "serial"


class Exchange(ABC):
    """One request and its answer. ``answer`` holds the checked answer once ``receive``
    returned True; ``stale_frames`` counts late answers to earlier requests it skipped.
    ``correlated``: an answer says which request it answers (Modbus TCP's transaction
    id), so a late answer to an earlier request is recognised; without that (DL/T 645) a
    native TCP line drops its connection after a timeout, so the late answer never
    arrives."""

    expects_answer: bool = True
    stale_frames: int = 0
    correlated: bool = True

    @abstractmethod
    def encode(self, transaction: int) -> bytes:
        """The request's bytes; ``transaction`` is the line's running number (used where
        the framing carries one). Resets the answer: an exchange may be retried."""

    @abstractmethod
    def receive(self, buffer: bytearray) -> bool:
        """Look at the bytes received so far (consuming those this exchange used or
        skipped); True once the whole answer is in. Raises :class:`FrameError` for bytes
        that cannot be the answer (:class:`StreamDesyncError` when the stream is lost)."""

    def describe(self) -> str:
        """What this exchange asks, for error messages."""
        return type(self).__name__


class Operation(ABC):
    """A conversation with one device: ``next_exchange()`` until None, calling
    ``complete()`` after each exchange's answer arrived."""

    @abstractmethod
    def next_exchange(self) -> Exchange | None:
        """The next exchange to run, or None when the operation is finished."""

    @abstractmethod
    def complete(self) -> None:
        """The current exchange's answer is in: take it. Raises
        :class:`DeviceAnswerError` when the device refused."""


class ReadOperation(Operation):
    """Reads a set of points. ``values`` holds what was decoded so far (None for "not
    implemented"), so a failure half-way still yields the points already read."""

    @property
    @abstractmethod
    def values(self) -> dict[str, Value]:
        """Decoded values by point name (the points read, and any they depend on)."""

    @property
    @abstractmethod
    def covering(self) -> tuple[str, ...]:
        """The points the current exchange reads (for reporting a failed exchange)."""


class WriteOperation(Operation):
    """Writes one point and verifies it where the protocol allows. ``mismatch`` is set
    when the read-back differs from what was written."""

    mismatch: str = ""


class Driver(ABC):
    """One device's protocol session: plans reads and writes from its map. Sans-I/O."""

    device_map: AnyMap

    @abstractmethod
    def read(self, points: Sequence[str]) -> ReadOperation:
        """An operation reading ``points`` (plans are cached per point set). Raises
        KeyError for an unknown point."""

    @abstractmethod
    def write(self, write: Write, latest: Mapping[str, Value]) -> WriteOperation:
        """An operation writing ``write.value`` to ``write.point`` and verifying it;
        ``latest`` holds the device's latest values (scale factors). Raises
        :class:`~drivers.points.WriteRangeError` when it cannot be encoded."""

    def describe(self) -> str:
        """The device's address on its line, for messages."""
        return self.device_map.model
