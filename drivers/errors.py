"""The errors every protocol codec shares (kept apart so codecs and the protocol
interface can import them without importing each other)."""

from __future__ import annotations

__all__ = ["DeviceAnswerError", "FrameError", "StreamDesyncError"]


class FrameError(ValueError):
    """Bytes on the line are malformed or do not answer the request they should answer."""


class StreamDesyncError(FrameError):
    """A byte stream lost its framing (e.g. a Modbus TCP header that cannot be one): the
    connection must be reopened, there is no resynchronising on it."""


class DeviceAnswerError(Exception):
    """The device answered, refusing: a Modbus exception, a DL/T 645 error reply."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
