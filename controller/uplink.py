"""The MQTT uplink: telemetry out through a durable outbox, signed commands in.

Cooperating tasks (all supervised by the gateway):

* :class:`TelemetryRecorder` turns every reading batch into one telemetry message,
  device state changes into events, and a periodic health message, and writes them to
  the outbox (:class:`~controller.store.Store`) before anything is sent; it reports
  what storage faults lost once the store can write again;
* :class:`Publisher` keeps a connection to the broker (reconnecting with a jittered,
  capped backoff), publishes the outbox — the streams it carries, on the topics
  :mod:`controller.topics` names — at QoS 1 with up to ``max_inflight`` messages in
  flight — per stream in sequence order, streams in turn (:mod:`controller.drain`) — and
  acknowledges a message to the outbox (its ``mqtt`` consumer) only after its PUBACK;
  a message that can never be published goes to the dead letters. It records incoming
  commands in the store before acknowledging them to the broker
  (:mod:`controller.mqttclient`);
* :class:`~controller.channel.CommandChannel` decides the recorded commands, audits and
  answers them, and hands accepted ones to the control loop.

The retained status message and the last will (``online``/``offline``) and Home Assistant
discovery configs describe the connection, not data: they are published directly on
connect, not sequenced. Topics and payloads: ``docs/mqtt.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiomqtt
from paho.mqtt.client import MQTT_CLEAN_START_FIRST_ONLY
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from controller import streams
from controller.bus import Batch, ReadingBus
from controller.config import UplinkSettings
from controller.drain import Drain
from controller.mqttclient import GatewayClient, packet_size
from controller.store import (
    Dropped,
    InboundCommand,
    OutboxMessage,
    Outgoing,
    Store,
    StoreWriteError,
)
from controller.topics import Topics
from drivers.reading import Quality

log = logging.getLogger("pedf.uplink")

PROTOCOL_VERSION = "1"
#: The retained status when the gateway is gone: its last will, and on a clean stop.
OFFLINE = b'{"state":"offline"}'


@dataclass
class UplinkStats:
    connected: bool = False
    subscribed: bool = False  # to the command topic, on the current connection
    connects: int = 0
    published: int = 0
    acknowledged: int = 0
    last_error: str = ""
    commands: dict[str, int] = field(default_factory=lambda: {"accepted": 0, "rejected": 0,
                                                              "duplicate": 0})
    dropped: int = 0  # outbox quota drops in this run (the store keeps the total)
    dead_letters: int = 0  # messages moved to the dead letters in this run
    redeliveries: int = 0  # commands the broker sent again that were recorded already
    response_topics_refused: int = 0  # MQTT 5 response topics not replied to


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
    bus: ReadingBus
    notify: asyncio.Event
    stats: UplinkStats
    health: Callable[[], dict[str, Any]] = dict
    health_interval_s: float = 60.0
    _device_state: dict[str, str] = field(default_factory=dict)
    _lost_reported: int = 0  # messages lost to storage faults, already reported

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
                    messages.append(Outgoing(streams.HEALTH, self._health_body(
                        subscription.dropped)))
                if messages:
                    await self.record(messages)
        finally:
            self.bus.unsubscribe(subscription)

    async def record(self, messages: list[Outgoing]) -> list[int]:
        """Store ``messages``; returns their sequence numbers ([] when a storage fault
        lost them: counted in the store's faults, reported once it can write again)."""
        seqs, dropped = await asyncio.to_thread(self.store.append, messages)
        if dropped is not None:
            self._count_overflow(dropped)
        if seqs and self.store.faults.lost_messages > self._lost_reported:
            await self._report_fault()
        self.notify.set()
        return seqs

    async def _report_fault(self) -> None:
        """A ``store_fault`` event: how many messages a storage fault (disk full,
        read-only file system…) lost while it lasted."""
        faults = self.store.faults
        lost = faults.lost_messages - self._lost_reported
        self._lost_reported = faults.lost_messages
        await asyncio.to_thread(self.store.append, [Outgoing(streams.EVENTS, {
            "ts": round(time.time(), 3), "type": "store_fault", "lost": lost,
            "lost_total": faults.lost_messages, "last_error": faults.last_error})])

    def _count_overflow(self, dropped: Dropped) -> None:
        """The store wrote the ``outbox_overflow`` event; count and log the loss."""
        self.stats.dropped += dropped.count
        log.warning("outbox quota reached: dropped %d oldest messages (seq %d–%d)",
                    dropped.count, dropped.first_seq, dropped.last_seq)

    def _messages(self, batch: Batch) -> list[Outgoing]:
        if not batch:
            return []
        device = batch[0].device
        messages = [Outgoing(streams.telemetry(device), telemetry_body(batch))]
        qualities = {r.quality for r in batch}
        state = ("ok" if qualities == {Quality.OK} else
                 Quality.ERROR.value if Quality.ERROR in qualities else Quality.STALE.value)
        previous = self._device_state.get(device)
        if previous != state and (previous is not None or state != "ok"):
            messages.append(Outgoing(streams.EVENTS, {
                "ts": round(batch[0].timestamp, 3), "type": "device_state", "device": device,
                "state": state, "previous": previous or "starting"}))
        self._device_state[device] = state
        return messages

    def _health_body(self, bus_dropped: int) -> dict[str, object]:
        store, stats = self.store, self.stats
        waiting, stored_bytes = store.depth()
        return {"ts": round(time.time(), 3), "devices": self.health(),
                "outbox": {"waiting": waiting, "bytes": stored_bytes,
                           "dropped_total": store.dropped_total,
                           "dead_letters": store.dead_letter_count(),
                           "consumers": {name: {"waiting": store.depth(name)[0],
                                                "dropped_total": store.dropped(name)}
                                         for name in store.consumers}},
                "store": store.faults.as_dict(),
                "uplink": {"connects": stats.connects, "published": stats.published,
                           "commands": dict(stats.commands),
                           "commands_waiting": store.inbound_depth(),
                           "redeliveries": stats.redeliveries,
                           "response_topics_refused": stats.response_topics_refused},
                "bus_dropped": bus_dropped}


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


class Backoff:
    """Waits between connection attempts: doubling from ``base_s`` up to ``cap_s``, each
    between half and all of that (so a fleet does not reconnect in step), back to
    ``base_s`` after a connection that worked."""

    def __init__(self, base_s: float = 0.5, cap_s: float = 3.0,
                 rng: random.Random | None = None) -> None:
        self.base_s, self.cap_s = base_s, cap_s
        self.rng = rng or random.Random()
        self.attempt = 0

    def reset(self) -> None:
        self.attempt = 0

    def next(self) -> float:
        ceiling = min(self.cap_s, self.base_s * 2 ** min(self.attempt, 30))
        self.attempt += 1
        return float(ceiling / 2 + self.rng.uniform(0, ceiling / 2))


@dataclass
class Publisher:
    """Outbox → broker, and the broker's commands → the store's inbound table.

    Incoming commands are recorded (:meth:`Store.record_inbound`) before the broker gets
    their PUBACK, in batches; ``on_recorded`` then wakes the command channel. While more
    than ``max_pending_commands`` recorded commands wait for a decision, nothing more is
    read (the broker keeps them). A message that can never be published — a topic MQTT
    cannot carry, larger than the broker accepts, or refused by the broker (MQTT 5
    PUBACK ≥ 0x80) — moves to the dead letters and never holds up the rest."""

    settings: UplinkSettings
    host: str
    port: int
    store: Store
    topics: Topics
    notify: asyncio.Event
    stats: UplinkStats
    on_recorded: Callable[[], None] | None = None  # None: commands are not subscribed
    decided: asyncio.Event | None = None  # set when recorded commands were decided
    on_connect: list[Callable[[aiomqtt.Client], Any]] = field(default_factory=list)
    publish_timeout_s: float = 15.0
    receive_maximum: int = 64  # MQTT 5: unacknowledged commands the broker may send
    #: The arrivals queue's size: mosquitto 2.0 was seen sending past the receive maximum
    #: (up to about twice it) while PUBACKs are under way; beyond the queue the session
    #: is ended so that the broker sends the rest again.
    incoming_queue: int = 1024
    backoff: Backoff | None = None
    consumer: str = "mqtt"  # its delivery state in the outbox (controller.store.Consumer)

    async def run(self) -> None:
        backoff = self.backoff or Backoff(cap_s=self.settings.reconnect_max_s)
        while True:
            connects = self.stats.connects
            try:
                await self._session()
            except* (aiomqtt.MqttError, OSError) as group:  # bare, or from the session's tasks
                exc = group.exceptions[0]
                self.stats.last_error = str(exc)
                if self.stats.connects != connects:  # it was up: start the backoff afresh
                    backoff.reset()
                delay = backoff.next()
                log.warning("MQTT %s:%d: %s; reconnecting in %.1f s", self.host, self.port,
                            exc, delay)
            else:
                delay = backoff.next()
            finally:
                self.stats.connected = self.stats.subscribed = False
            await asyncio.sleep(delay)

    def _client(self) -> GatewayClient:
        settings = self.settings
        v5 = settings.protocol == "5"
        will = aiomqtt.Will(self.topics.status, OFFLINE, qos=1, retain=True)
        properties = None
        if v5:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = 3600  # keep our command subscription a while
            properties.ReceiveMaximum = self.receive_maximum
        return GatewayClient(
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
            incoming_limit=self.incoming_queue,
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
            if self.on_recorded is not None:
                await client.subscribe(self.topics.commands, qos=1)
                self.stats.subscribed = True
            try:
                async with asyncio.TaskGroup() as group:
                    group.create_task(self._publish_loop(client), name="uplink publish")
                    if self.on_recorded is not None:
                        group.create_task(self._receive_loop(client), name="uplink commands")
            except asyncio.CancelledError:  # a clean stop: the will is not sent, so say it
                await self._say_offline(client)
                raise

    async def _say_offline(self, client: GatewayClient) -> None:
        """Publish the retained ``offline`` status before a clean disconnect (the broker
        sends the last will only when the connection is lost), within 2 s."""
        try:
            async with asyncio.timeout(2.0):
                await client.publish(self.topics.status, OFFLINE, qos=1, retain=True,
                                     timeout=2.0)
        except (TimeoutError, aiomqtt.MqttError, OSError) as exc:
            log.warning("could not publish the offline status: %s", exc)

    # -- outgoing -----------------------------------------------------------------------

    async def _publish_loop(self, client: GatewayClient) -> None:
        """Publish the outbox for as long as the connection lasts; when it ends (an
        error, or the session's other task), the publishes in flight end with it."""
        inflight: dict[asyncio.Task[str | None], int] = {}
        try:
            await self._publish_outbox(client, inflight)
        finally:
            for task in inflight:
                task.cancel()
            await asyncio.gather(*inflight, return_exceptions=True)

    async def _publish_outbox(self, client: GatewayClient,
                              inflight: dict[asyncio.Task[str | None], int]) -> None:
        drain = Drain(self.store, self.consumer)
        await drain.start()
        acked: list[int] = []
        while True:
            if self.notify.is_set():  # the recorder stored more: look for it
                self.notify.clear()
                drain.refresh()
            while len(inflight) < self.settings.max_inflight:
                message = await drain.next()
                if message is None:
                    break
                refusal = self._refusal(message, client)
                if refusal is not None:
                    await self._dead_letter(message.seq, refusal)
                    continue
                inflight[asyncio.create_task(self._publish(client, message))] = message.seq
            if acked:
                batch, acked = acked, []
                await asyncio.to_thread(self.store.acknowledge, batch, self.consumer)
                self.stats.acknowledged += len(batch)
            if inflight:
                done, _ = await asyncio.wait(inflight, timeout=1.0,
                                             return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    seq = inflight.pop(task)
                    exc = task.exception()
                    if isinstance(exc, ValueError):  # paho: not a topic or payload MQTT carries
                        await self._dead_letter(seq, f"MQTT cannot carry it: {exc}")
                    elif exc is not None:
                        raise exc  # the connection failed: the rest ends with it
                    elif (refused := task.result()) is not None:
                        await self._dead_letter(seq, f"the broker refused it: {refused}")
                    else:
                        acked.append(seq)
                continue
            with contextlib.suppress(TimeoutError):  # idle: wait for the recorder
                async with asyncio.timeout(1.0):
                    await self.notify.wait()
            drain.refresh()

    def _refusal(self, message: OutboxMessage, client: GatewayClient) -> str | None:
        """Why ``message`` can never be published on this connection, if it cannot."""
        limit = client.maximum_packet_size
        if limit is not None and packet_size(self.topics.of(message.stream), message.payload,
                                             message.correlation) > limit:
            return f"larger than the broker's maximum packet size ({limit} bytes)"
        return None

    async def _dead_letter(self, seq: int, reason: str) -> None:
        if await asyncio.to_thread(self.store.dead_letter, seq, reason, self.consumer):
            self.stats.dead_letters += 1

    async def _publish(self, client: GatewayClient, message: OutboxMessage) -> str | None:
        properties = None
        if message.correlation is not None and self.settings.protocol == "5":
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            properties.CorrelationData = message.correlation
        refused = await client.publish_checked(
            self.topics.of(message.stream), message.payload, qos=1, retain=False,
            properties=properties, timeout_s=self.publish_timeout_s)
        if refused is None:
            self.stats.published += 1
        return refused

    # -- incoming -----------------------------------------------------------------------

    async def _receive_loop(self, client: GatewayClient) -> None:
        """Record arriving commands, then acknowledge them to the broker; a batch at a
        time. A storage fault leaves them unacknowledged (the broker keeps them)."""
        assert self.on_recorded is not None
        while True:
            batch = [await client.arrivals.get()]
            while len(batch) < 256 and not client.arrivals.empty():
                batch.append(client.arrivals.get_nowait())
            await self._until_decided()
            arrivals = [(InboundCommand(a.payload, a.response_topic, a.correlation, "mqtt",
                                        time.time()), a.dup)
                        for a in batch if a.topic == self.topics.commands]
            while True:
                try:
                    recorded = await asyncio.to_thread(self.store.record_inbound, arrivals)
                    break
                except StoreWriteError as exc:
                    log.warning("commands not recorded (%s): not acknowledged yet", exc)
                    await asyncio.sleep(1.0)
            client.acknowledge(batch)
            self.stats.redeliveries += len(arrivals) - recorded
            self.on_recorded()
            if client.overflowed:
                raise aiomqtt.MqttError(
                    f"{client.overflowed} commands arrived beyond the incoming queue: "
                    "reconnecting so that the broker sends them again")


    async def _until_decided(self) -> None:
        """While too many recorded commands wait for a decision, read no more (the
        broker holds them)."""
        while await asyncio.to_thread(self.store.inbound_depth) >= \
                self.settings.max_pending_commands:
            if self.decided is not None:
                self.decided.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await (self.decided or asyncio.Event()).wait()


def _status_online() -> bytes:
    return (b'{"state":"online","protocol":"' + PROTOCOL_VERSION.encode() + b'","ts":'
            + str(round(time.time(), 3)).encode() + b"}")
