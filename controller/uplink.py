"""The MQTT uplink: telemetry out through a durable outbox, signed commands in.

Three cooperating tasks (all supervised by the gateway):

* :class:`TelemetryRecorder` turns every reading batch into one telemetry message,
  device state changes into events, and a periodic health message, and writes them to
  the outbox (:class:`~controller.store.Store`) before anything is sent;
* :class:`Publisher` keeps a connection to the broker (reconnecting with backoff),
  publishes the outbox at QoS 1 with up to ``max_inflight`` messages in flight, and
  deletes a message only after its PUBACK. After a reconnect the backlog drains
  **interleaved** with new messages (one old, one new), so live data is never starved;
  each stream stays in sequence order;
* :class:`CommandChannel` checks incoming commands (``controller.commands``), enforces
  the persistent replay window, audits every decision, hands accepted commands to the
  :class:`~controller.inbox.CommandInbox`, and replies through the outbox.

The retained status message and the last will (``online``/``offline``) and Home Assistant
discovery configs describe the connection, not data: they are published directly on
connect, not sequenced. Topics and payloads: ``docs/mqtt.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
import ssl
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiomqtt
from paho.mqtt.client import MQTT_CLEAN_START_FIRST_ONLY
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from controller.bus import Batch, ReadingBus
from controller.commands import CommandRejectedError, Verifier, validate
from controller.config import UplinkSettings
from controller.inbox import CommandInbox
from controller.store import Dropped, OutboxMessage, Outgoing, Store
from drivers.reading import Quality
from drivers.site import SiteSpec

log = logging.getLogger("pedf.uplink")

PROTOCOL_VERSION = "1"


@dataclass(frozen=True, slots=True)
class Topics:
    prefix: str

    @property
    def status(self) -> str:
        return f"{self.prefix}/status"

    def telemetry(self, device: str) -> str:
        return f"{self.prefix}/telemetry/{device}"

    @property
    def events(self) -> str:
        return f"{self.prefix}/events"

    @property
    def health(self) -> str:
        return f"{self.prefix}/health"

    @property
    def commands(self) -> str:
        return f"{self.prefix}/commands"

    @property
    def replies(self) -> str:
        return f"{self.prefix}/replies"

    def metering(self, kind: str) -> str:
        return f"{self.prefix}/metering/{kind}"


@dataclass
class UplinkStats:
    connected: bool = False
    connects: int = 0
    published: int = 0
    acknowledged: int = 0
    last_error: str = ""
    commands: dict[str, int] = field(default_factory=lambda: {"accepted": 0, "rejected": 0,
                                                              "duplicate": 0})
    dropped: int = 0  # outbox quota drops in this run (the store keeps the total)


# -- telemetry --------------------------------------------------------------------------


def telemetry_body(batch: Batch) -> dict[str, object]:
    """One device's readings: values (None unless ok), units, and any bad qualities."""
    first = batch[0]
    values: dict[str, object] = {}
    units: dict[str, str] = {}
    bad: dict[str, str] = {}
    for reading in batch:
        value = reading.value
        if isinstance(value, float) and not math.isfinite(value):
            value = None
        values[reading.point] = value
        if reading.unit:
            units[reading.point] = reading.unit
        if reading.quality is not Quality.OK:
            bad[reading.point] = reading.quality.value
    body: dict[str, object] = {"ts": round(first.timestamp, 3), "device": first.device,
                               "values": values, "units": units}
    if bad:
        body["quality"] = bad
    return body


@dataclass
class TelemetryRecorder:
    """Reading bus → outbox, batched; device state events; periodic health."""

    store: Store
    topics: Topics
    bus: ReadingBus
    notify: asyncio.Event
    stats: UplinkStats
    health: Callable[[], dict[str, Any]] = dict
    health_interval_s: float = 60.0
    _device_state: dict[str, str] = field(default_factory=dict)

    async def run(self) -> None:
        subscription = self.bus.subscribe("uplink", maxsize=100_000)
        next_health = time.monotonic() + self.health_interval_s
        try:
            while True:
                messages: list[Outgoing] = []
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(0.0, next_health - time.monotonic())):
                        batch = await subscription.get()
                        messages += self._messages(batch)
                while len(messages) < 500 and (more := subscription.get_nowait()) is not None:
                    messages += self._messages(more)
                if time.monotonic() >= next_health:
                    next_health += self.health_interval_s
                    messages.append(Outgoing(self.topics.health, self._health_body(
                        subscription.dropped)))
                if messages:
                    await self.record(messages)
        finally:
            self.bus.unsubscribe(subscription)

    async def record(self, messages: list[Outgoing]) -> list[int]:
        seqs, dropped = await asyncio.to_thread(self.store.append, messages)
        if dropped is not None:
            await self._report_overflow(dropped)
        self.notify.set()
        return seqs

    async def _report_overflow(self, dropped: Dropped) -> None:
        self.stats.dropped += dropped.count
        log.warning("outbox quota reached: dropped %d oldest messages (seq %d–%d)",
                    dropped.count, dropped.first_seq, dropped.last_seq)
        event = Outgoing(self.topics.events, {
            "ts": round(time.time(), 3), "type": "outbox_overflow", "dropped": dropped.count,
            "first_seq": dropped.first_seq, "last_seq": dropped.last_seq,
            "dropped_total": self.store.dropped_total})
        _, again = await asyncio.to_thread(self.store.append, [event])
        if again is not None:
            self.stats.dropped += again.count

    def _messages(self, batch: Batch) -> list[Outgoing]:
        if not batch:
            return []
        device = batch[0].device
        messages = [Outgoing(self.topics.telemetry(device), telemetry_body(batch))]
        qualities = {r.quality for r in batch}
        state = ("ok" if qualities == {Quality.OK} else
                 Quality.ERROR.value if Quality.ERROR in qualities else Quality.STALE.value)
        previous = self._device_state.get(device)
        if previous != state and (previous is not None or state != "ok"):
            messages.append(Outgoing(self.topics.events, {
                "ts": round(batch[0].timestamp, 3), "type": "device_state", "device": device,
                "state": state, "previous": previous or "starting"}))
        self._device_state[device] = state
        return messages

    def _health_body(self, bus_dropped: int) -> dict[str, object]:
        waiting, stored_bytes = self.store.depth()
        return {"ts": round(time.time(), 3), "devices": self.health(),
                "outbox": {"waiting": waiting, "bytes": stored_bytes,
                           "dropped_total": self.store.dropped_total},
                "uplink": {"connects": self.stats.connects, "published": self.stats.published,
                           "commands": dict(self.stats.commands)},
                "bus_dropped": bus_dropped}


# -- commands ---------------------------------------------------------------------------


@dataclass
class CommandChannel:
    site: SiteSpec
    store: Store
    topics: Topics
    inbox: CommandInbox
    verifier: Verifier
    ratings: Callable[[str, str], float | None]
    stats: UplinkStats
    max_skew_s: float = 30.0
    replay_window_s: float = 7 * 86400.0
    clock: Callable[[], float] = time.time

    def handle(self, payload: bytes, *, response_topic: str | None = None,
               correlation: bytes | None = None, source: str = "mqtt") -> list[Outgoing]:
        """Decide on one command; returns the reply messages to store and send."""
        now = self.clock()
        try:
            command = validate(payload, site=self.site, verifier=self.verifier, now_s=now,
                               max_skew_s=self.max_skew_s, ratings=self.ratings)
        except CommandRejectedError as exc:
            self.stats.commands["rejected"] += 1
            self.store.audit(command_id=exc.command_id, command_type=exc.command_type,
                             source=source, result="rejected", reason=exc.reason,
                             payload=payload.decode("utf-8", errors="replace"))
            log.warning("command %s rejected: %s", exc.command_id or "?", exc.reason)
            return self._replies({"command_id": exc.command_id, "status": "rejected",
                                  "reason": exc.reason}, response_topic, correlation, now)
        seen = self.store.seen_command(command.id)
        if seen is not None:
            seen_digest, seen_reply = seen
            if seen_digest == command.digest:  # the same command again: same answer
                self.stats.commands["duplicate"] += 1
                self.store.audit(command_id=command.id, command_type=command.type,
                                 source=source, result="duplicate", reason=seen_reply,
                                 payload=payload.decode())
                return self._replies({"command_id": command.id, "status": seen_reply,
                                      "duplicate": True}, response_topic, correlation, now)
            self.stats.commands["rejected"] += 1
            reason = "replayed id: a different command was received with this id"
            self.store.audit(command_id=command.id, command_type=command.type, source=source,
                             result="rejected", reason=reason, payload=payload.decode())
            return self._replies({"command_id": command.id, "status": "rejected",
                                  "reason": reason}, response_topic, correlation, now)
        try:
            self.inbox.submit(command)
        except CommandRejectedError as exc:
            self.stats.commands["rejected"] += 1
            self.store.audit(command_id=command.id, command_type=command.type, source=source,
                             result="rejected", reason=exc.reason, payload=payload.decode())
            return self._replies({"command_id": command.id, "status": "rejected",
                                  "reason": exc.reason}, response_topic, correlation, now)
        self.store.remember_command(command.id, command.digest, "accepted")
        self.store.audit(command_id=command.id, command_type=command.type, source=source,
                         result="accepted", reason="queued for the control loop",
                         payload=payload.decode())
        self.stats.commands["accepted"] += 1
        log.info("command %s (%s) accepted", command.id, command.type)
        return self._replies({"command_id": command.id, "status": "accepted"},
                             response_topic, correlation, now)

    def _replies(self, body: dict[str, object], response_topic: str | None,
                 correlation: bytes | None, now: float) -> list[Outgoing]:
        body = {"ts": round(now, 3), **body}
        replies = [Outgoing(self.topics.replies, body)]
        if response_topic and response_topic != self.topics.replies:
            replies.append(Outgoing(response_topic, body, correlation=correlation))
        return replies

    def forget_old(self) -> None:
        self.store.forget_commands_before(self.clock() - self.replay_window_s)


# -- publishing -------------------------------------------------------------------------


def tls_context(settings: UplinkSettings) -> ssl.SSLContext | None:
    if settings.tls is None:
        return None
    context = ssl.create_default_context(cafile=settings.tls.ca_file)
    if settings.tls.cert_file and settings.tls.key_file:
        context.load_cert_chain(settings.tls.cert_file, settings.tls.key_file)
    context.check_hostname = settings.tls.check_hostname
    if not settings.tls.check_hostname:
        log.warning("TLS hostname check disabled for %s", settings.host)
    return context


@dataclass
class Publisher:
    """Outbox → broker, and the broker's commands → :class:`CommandChannel`."""

    settings: UplinkSettings
    host: str
    port: int
    store: Store
    topics: Topics
    notify: asyncio.Event
    stats: UplinkStats
    commands: CommandChannel | None = None
    on_connect: list[Callable[[aiomqtt.Client], Any]] = field(default_factory=list)
    backoff_max_s: float = 30.0
    publish_timeout_s: float = 15.0

    async def run(self) -> None:
        delay = 1.0
        while True:
            connects = self.stats.connects
            try:
                await self._session()
            except* (aiomqtt.MqttError, OSError) as group:  # bare, or from the session's tasks
                exc = group.exceptions[0]
                self.stats.last_error = str(exc)
                log.warning("MQTT %s:%d: %s; reconnecting in %.0f s", self.host, self.port,
                            exc, delay if self.stats.connects == connects else 1.0)
            finally:
                self.stats.connected = False
            if self.stats.connects != connects:  # it was up: start the backoff afresh
                delay = 1.0
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.backoff_max_s)

    def _client(self) -> aiomqtt.Client:
        settings = self.settings
        v5 = settings.protocol == "5"
        will = aiomqtt.Will(self.topics.status, b'{"state":"offline"}', qos=1, retain=True)
        properties = None
        if v5:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = 3600  # keep our command subscription a while
        return aiomqtt.Client(
            self.host, self.port, identifier=settings.client_id,
            username=settings.username, password=settings.password,
            protocol=aiomqtt.ProtocolVersion.V5 if v5 else aiomqtt.ProtocolVersion.V311,
            will=will, keepalive=settings.keepalive_s, timeout=10.0,
            clean_session=None if v5 else False,
            clean_start=False if v5 else MQTT_CLEAN_START_FIRST_ONLY,
            properties=properties, tls_context=tls_context(settings),
            max_inflight_messages=settings.max_inflight,
            # Small replies must not wait behind the telemetry stream (Nagle).
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
        )

    async def _session(self) -> None:
        async with self._client() as client:
            self.stats.connected = True
            self.stats.connects += 1
            log.info("MQTT connected to %s:%d as %s", self.host, self.port,
                     self.settings.client_id)
            await client.publish(self.topics.status, _status_online(), qos=1, retain=True,
                                 timeout=self.publish_timeout_s)
            for hook in self.on_connect:
                await hook(client)
            if self.commands is not None:
                await client.subscribe(self.topics.commands, qos=1)
            async with asyncio.TaskGroup() as group:
                group.create_task(self._publish_loop(client), name="uplink publish")
                if self.commands is not None:
                    group.create_task(self._receive_loop(client), name="uplink commands")

    async def _publish_loop(self, client: aiomqtt.Client) -> None:
        watermark = await asyncio.to_thread(self.store.max_seq)
        drain = _Drain(self.store, watermark)
        inflight: dict[asyncio.Task[None], int] = {}
        acked: list[int] = []
        while True:
            if self.notify.is_set():  # the recorder stored more: look for it
                self.notify.clear()
                drain.refresh()
            while len(inflight) < self.settings.max_inflight:
                message = await drain.next()
                if message is None:
                    break
                task = asyncio.create_task(self._publish(client, message))
                inflight[task] = message.seq
            if acked:
                batch, acked = acked, []
                await asyncio.to_thread(self.store.acknowledge, batch)
                self.stats.acknowledged += len(batch)
            if inflight:
                done, _ = await asyncio.wait(inflight, timeout=1.0,
                                             return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    seq = inflight.pop(task)
                    exc = task.exception()
                    if exc is not None:
                        for other in inflight:
                            other.cancel()
                        raise exc
                    acked.append(seq)
                continue
            with contextlib.suppress(TimeoutError):  # idle: wait for the recorder
                async with asyncio.timeout(1.0):
                    await self.notify.wait()
            drain.refresh()

    async def _publish(self, client: aiomqtt.Client, message: OutboxMessage) -> None:
        properties = None
        if message.correlation is not None and self.settings.protocol == "5":
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            properties.CorrelationData = message.correlation
        await client.publish(message.topic, message.payload, qos=message.qos,
                             retain=message.retain, properties=properties,
                             timeout=self.publish_timeout_s)
        self.stats.published += 1

    async def _receive_loop(self, client: aiomqtt.Client) -> None:
        assert self.commands is not None
        async for message in client.messages:
            if not message.topic.matches(self.topics.commands):
                continue
            payload = message.payload if isinstance(message.payload, bytes | bytearray) \
                else str(message.payload).encode()
            response_topic = correlation = None
            if message.properties is not None:
                response_topic = getattr(message.properties, "ResponseTopic", None)
                correlation = getattr(message.properties, "CorrelationData", None)
            replies = await asyncio.to_thread(
                self.commands.handle, bytes(payload), response_topic=response_topic,
                correlation=correlation)
            await asyncio.to_thread(self.store.append, replies)
            self.notify.set()


def _status_online() -> bytes:
    return (b'{"state":"online","protocol":"' + PROTOCOL_VERSION.encode() + b'","ts":'
            + str(round(time.time(), 3)).encode() + b"}")


class _Drain:
    """Chooses what to publish next: backlog (seq ≤ watermark at connect) and live
    messages, alternating, each in sequence order. Reads the store a page at a time, and
    looks for new live messages only after :meth:`refresh` (the recorder stored some)."""

    PAGE = 256

    def __init__(self, store: Store, watermark: int) -> None:
        self.store = store
        self.watermark = watermark
        self.backlog: deque[OutboxMessage] = deque()
        self.live: deque[OutboxMessage] = deque()
        self.backlog_cursor = 0
        self.live_cursor = watermark
        self.backlog_done = watermark == 0
        self.live_dirty = True
        self.turn_backlog = True

    def refresh(self) -> None:
        self.live_dirty = True

    async def _fill(self) -> None:
        if not self.backlog and not self.backlog_done:
            page = await asyncio.to_thread(self.store.pending, after_seq=self.backlog_cursor,
                                           limit=self.PAGE)
            page = [m for m in page if m.seq <= self.watermark]
            if page:
                self.backlog.extend(page)
                self.backlog_cursor = page[-1].seq
            else:
                self.backlog_done = True
        if not self.live and self.live_dirty:
            page = await asyncio.to_thread(self.store.pending, after_seq=self.live_cursor,
                                           limit=self.PAGE)
            if page:
                self.live.extend(page)
                self.live_cursor = page[-1].seq
            if len(page) < self.PAGE:
                self.live_dirty = False  # all stored live messages are in hand

    async def next(self) -> OutboxMessage | None:
        if not self.backlog or not self.live:
            await self._fill()
        if self.backlog and (self.turn_backlog or not self.live):
            self.turn_backlog = False
            return self.backlog.popleft()
        if self.live:
            self.turn_backlog = True
            return self.live.popleft()
        return None


# -- the embedded broker ----------------------------------------------------------------


@contextlib.asynccontextmanager
async def embedded_broker(host: str, port: int) -> Any:
    """An amqtt broker (MQTT 3.1.1, anonymous) on ``host:port`` for the demo and for
    sites without a broker of their own."""
    from amqtt.broker import Broker

    logging.getLogger("amqtt").setLevel(logging.WARNING)
    logging.getLogger("transitions").setLevel(logging.WARNING)
    broker = Broker({
        "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}},
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin":
                    {"allow_anonymous": True}},
    })
    try:
        await broker.start()
    except Exception as exc:
        raise OSError(f"cannot start the embedded MQTT broker on {host}:{port}: {exc}") from None
    try:
        yield broker
    finally:
        with contextlib.suppress(Exception):
            await broker.shutdown()
