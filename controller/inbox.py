"""The hand-over point between the command channel and the control loop.

The command channel (``controller.channel``) decides on a command and records the
decision, then calls :meth:`CommandInbox.submit` for an accepted one; it checks
:meth:`CommandInbox.room` first, so an accepted command always fits. The control loop
takes commands with :meth:`CommandInbox.get_nowait` at the start of each cycle and owns
what happens next (scheduling, cancelling, releasing). The inbox is bounded: when the
control loop falls that far behind, new commands are refused with the reason "busy"
rather than queued unseen.

Thread-safe: the command channel validates (with its SQLite work) in a worker thread and
submits from there. ``on_submit`` callbacks run in the submitting thread and must be
thread-safe themselves (the control loop's ``wake`` is).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from controller.commands import Command, CommandRejectedError


@dataclass
class CommandInbox:
    maxsize: int = 64
    accepted: int = 0
    #: Called after each accepted command (the control loop wakes up at once).
    on_submit: list[Callable[[], None]] = field(default_factory=list)
    #: Called after the control loop took a command (there is room again).
    on_take: list[Callable[[], None]] = field(default_factory=list)
    _queue: deque[Command] = field(default_factory=deque)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def submit(self, command: Command) -> None:
        """Queue ``command`` for the control loop; raises CommandRejectedError("busy")."""
        with self._lock:
            if len(self._queue) >= self.maxsize:
                raise CommandRejectedError("busy: the control loop has too many commands "
                                           "waiting", command.id, command.type)
            self._queue.append(command)
            self.accepted += 1
        for callback in self.on_submit:
            callback()

    def get_nowait(self) -> Command | None:
        with self._lock:
            command = self._queue.popleft() if self._queue else None
        if command is not None:
            for callback in self.on_take:
                callback()
        return command

    def qsize(self) -> int:
        with self._lock:
            return len(self._queue)

    def room(self) -> int:
        """How many more commands :meth:`submit` would take now."""
        with self._lock:
            return self.maxsize - len(self._queue)
