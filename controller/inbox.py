"""The hand-over point between the command channel and the control loop.

The uplink validates and authenticates a command, then calls :meth:`CommandInbox.submit`;
only when that returns is the command "accepted" (the reply says so). The control loop
takes commands with :meth:`CommandInbox.get` and owns what happens next (scheduling,
cancelling, releasing). The inbox is bounded: when the control loop falls that far
behind, new commands are refused with the reason "busy" rather than queued unseen.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from controller.commands import Command, CommandRejectedError


@dataclass
class CommandInbox:
    maxsize: int = 64
    accepted: int = 0
    #: Called after each accepted command (the control loop wakes up at once).
    on_submit: list[Callable[[], None]] = field(default_factory=list)
    _queue: asyncio.Queue[Command] = field(init=False)

    def __post_init__(self) -> None:
        self._queue = asyncio.Queue(self.maxsize)

    def submit(self, command: Command) -> None:
        """Queue ``command`` for the control loop; raises CommandRejectedError("busy")."""
        try:
            self._queue.put_nowait(command)
        except asyncio.QueueFull:
            raise CommandRejectedError("busy: the control loop has too many commands "
                                       "waiting", command.id, command.type) from None
        self.accepted += 1
        for callback in self.on_submit:
            callback()

    async def get(self) -> Command:
        return await self._queue.get()

    def get_nowait(self) -> Command | None:
        try:
            return self._queue.get_nowait()
        except asyncio.QueueEmpty:
            return None

    def qsize(self) -> int:
        return self._queue.qsize()
