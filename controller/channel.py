"""The command channel: recorded commands in, decisions, audit and replies out.

The broker's commands are recorded in the store before the broker is told they arrived
(:meth:`~controller.store.Store.record_inbound`, done by the publisher). This service
takes them from there in arrival order, a batch at a time:

1. :func:`~controller.commands.decide` — pure — answers each one (accepted, rejected
   with a reason, or a duplicate with the first answer);
2. one transaction writes every decision's audit row, replay-window entry and replies,
   and removes the commands from the inbound table (:meth:`Store.conclude`);
3. accepted commands go to the control loop's :class:`~controller.inbox.CommandInbox`.

So every recorded command gets exactly one decision and one set of replies, also after
a crash (what was recorded and not concluded is decided at the next start; an expired
one is answered "expired"). Nothing a payload holds can make this raise: a failure in
the decision itself becomes a rejection ("internal error"), and a storage fault leaves
the batch recorded, to be decided again when the store can write.

Replies go to ``<prefix>/replies``. An MQTT 5 response topic is honoured as well only
on a command whose signature was verified, without wildcards, and under
``response_topic_prefix``: anyone may publish a command, and the gateway must not
publish wherever a stranger asks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from controller import streams
from controller.commands import MAX_PAYLOAD_BYTES, Decision, Verifier, decide
from controller.inbox import CommandInbox
from controller.store import AuditEntry, Conclusion, InboundCommand, Outgoing, Store
from controller.topics import Topics
from controller.uplink import UplinkStats
from drivers.site import SiteSpec

log = logging.getLogger("pedf.commands")

#: Commands decided per transaction.
BATCH = 64
#: The MQTT limit on a topic's length, in UTF-8 bytes.
MAX_TOPIC_BYTES = 65535


def response_topic_refusal(topic: str, prefix: str) -> str | None:
    """Why ``topic`` may not be replied to (None: it may): wildcards, NUL, too long, or
    not ``prefix`` itself or below it."""
    if not topic or any(c in topic for c in "#+\0"):
        return "it is empty or has wildcards"
    if len(topic.encode("utf-8", "replace")) > MAX_TOPIC_BYTES:
        return "it is too long"
    if topic != prefix and not topic.startswith(prefix + "/"):
        return f"it is not under {prefix}"
    return None


@dataclass
class CommandChannel:
    """Decides recorded commands (see the module). ``run`` is the service."""

    site: SiteSpec
    store: Store
    topics: Topics
    inbox: CommandInbox
    verifier: Verifier
    ratings: Callable[[str, str], float | None]
    stats: UplinkStats
    max_skew_s: float = 30.0
    replay_window_s: float = 7 * 86400.0
    response_topic_prefix: str = ""  # "" means <prefix>/replies
    clock: Callable[[], float] = time.time
    busy_wait_s: float = 10.0  # how long a full inbox may hold up the next decision
    maintenance_interval_s: float = 3600.0
    #: Set by the publisher when it recorded commands; set here after each decided batch.
    recorded: asyncio.Event = field(default_factory=asyncio.Event)
    decided: asyncio.Event = field(default_factory=asyncio.Event)
    _room: asyncio.Event = field(default_factory=asyncio.Event)

    # -- the service --------------------------------------------------------------------

    async def run(self) -> None:
        """Decide recorded commands as they come (woken by :attr:`recorded`), and prune
        the store's tables now and then. A storage fault waits and tries again."""
        loop = asyncio.get_running_loop()

        def room_again() -> None:  # the control loop took a command (any thread)
            loop.call_soon_threadsafe(self._room.set)

        self.inbox.on_take.append(room_again)
        next_maintenance = 0.0
        while True:
            if time.monotonic() >= next_maintenance:
                next_maintenance = time.monotonic() + self.maintenance_interval_s
                await asyncio.to_thread(self.maintain)
            self.recorded.clear()
            batch = await asyncio.to_thread(self.store.pending_inbound, BATCH)
            if batch:
                await self._wait_for_room()
                room = self.inbox.room()
                if room > 0:  # no more than fit: the rest waits its turn, not refused
                    batch = batch[:room]
                try:
                    await asyncio.to_thread(self.process, batch)
                except OSError as exc:  # StoreWriteError: still recorded, try again
                    log.warning("commands not decided yet: %s", exc)
                    await asyncio.sleep(1.0)
                self.decided.set()
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await self.recorded.wait()

    async def _wait_for_room(self) -> None:
        """Until the control loop takes a command, at most ``busy_wait_s`` (then the
        commands that would be accepted are refused as busy)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.busy_wait_s):
                while self.inbox.room() == 0:
                    self._room.clear()
                    if self.inbox.room() == 0:
                        await self._room.wait()

    def maintain(self) -> None:
        self.store.forget_commands_before(self.clock() - self.replay_window_s)
        self.store.maintain(self.clock())

    def forget_old(self) -> None:
        self.store.forget_commands_before(self.clock() - self.replay_window_s)

    # -- deciding -----------------------------------------------------------------------

    def handle(self, payload: bytes, *, response_topic: str | None = None,
               correlation: bytes | None = None, source: str = "mqtt") -> list[Outgoing]:
        """Decide one command that is not in the store's inbound table (tests, local
        callers); returns the replies it stored. Raises StoreWriteError."""
        inbound = InboundCommand(payload, response_topic, correlation, source, self.clock())
        return self.process([inbound])[0]

    def process(self, batch: Sequence[InboundCommand]) -> list[list[Outgoing]]:
        """Decide ``batch``, write the decisions in one transaction, then hand accepted
        commands to the control loop. Returns each command's replies. Raises
        StoreWriteError (then nothing was decided: the batch stays recorded)."""
        now = self.clock()
        room = self.inbox.room()
        decided: dict[str, tuple[str, str]] = {}  # replay window entries of this batch
        decisions = []
        for inbound in batch:
            decision = self._decide(inbound, now, room, decided)
            if decision.result == "accepted":
                room -= 1
                assert decision.command is not None
                decided[decision.command.id] = (decision.command.digest, "accepted")
            decisions.append(decision)
        conclusions = [self._conclusion(inbound, decision, now)
                       for inbound, decision in zip(batch, decisions, strict=True)]
        self.store.conclude(conclusions)
        for decision in decisions:
            self._count(decision)
            if decision.command is not None and decision.result == "accepted":
                self.inbox.submit(decision.command)
        return [list(c.replies) for c in conclusions]

    def _decide(self, inbound: InboundCommand, now: float, room: int,
                decided: dict[str, tuple[str, str]]) -> Decision:
        def seen(command_id: str) -> tuple[str, str] | None:
            return decided.get(command_id) or self.store.seen_command(command_id)

        if inbound.full_size > MAX_PAYLOAD_BYTES:  # recorded as its prefix only
            return Decision("rejected", f"payload of {inbound.full_size} bytes exceeds "
                                        f"{MAX_PAYLOAD_BYTES}")
        try:
            return decide(inbound.payload, site=self.site, verifier=self.verifier, now_s=now,
                          max_skew_s=self.max_skew_s, ratings=self.ratings, seen=seen,
                          room=room > 0)
        except Exception as exc:  # a bug: the command is refused, the channel lives on
            log.exception("deciding a command failed")
            return Decision("rejected", f"internal error ({type(exc).__name__}): not applied")

    def _conclusion(self, inbound: InboundCommand, decision: Decision,
                    now: float) -> Conclusion:
        audit = AuditEntry(decision.command_id, decision.command_type, inbound.source,
                           decision.result, decision.reason, inbound.payload,
                           inbound.full_size, inbound.full_sha256)
        remember = None
        if decision.result == "accepted" and decision.command is not None:
            remember = (decision.command.id, decision.command.digest, "accepted")
        body: dict[str, object] = {"ts": round(now, 3), "command_id": decision.command_id,
                                   "status": decision.reply_status}
        if decision.result == "rejected":
            body["reason"] = decision.reason
        if decision.result == "duplicate":
            body["duplicate"] = True
        replies = [Outgoing(streams.REPLIES, body)]
        topic = inbound.response_topic
        if topic and topic != self.topics.replies:
            refusal = "its signature was not verified" if not decision.authenticated else \
                response_topic_refusal(topic, self.response_topic_prefix or
                                       self.topics.replies)
            if refusal is None:
                replies.append(Outgoing(streams.address(topic), body,
                                        correlation=inbound.correlation))
            else:
                self.stats.response_topics_refused += 1
                log.warning("command %s: response topic %r ignored: %s",
                            decision.command_id or "?", topic[:100], refusal)
        return Conclusion(audit, replies, remember, inbound.row)

    def _count(self, decision: Decision) -> None:
        self.stats.commands[decision.result] += 1
        if decision.result == "accepted":
            log.info("command %s (%s) accepted", decision.command_id, decision.command_type)
        elif decision.result == "rejected":
            log.warning("command %s rejected: %s", decision.command_id or "?", decision.reason)
