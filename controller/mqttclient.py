"""The gateway's MQTT client: aiomqtt with what the uplink's guarantees need.

aiomqtt 2.x acknowledges an incoming QoS 1 message the moment it arrives, drops what
overflows its queue, and does not tell a publisher that the broker refused a message.
:class:`GatewayClient` is an ``aiomqtt.Client`` that changes this through paho's own
API:

* **manual acknowledgement**: an incoming message is acknowledged (PUBACK) only when
  :meth:`GatewayClient.acknowledge` is called — after it was recorded;
* incoming messages go to :attr:`GatewayClient.arrivals`, a **bounded** queue, as
  :class:`Arrival` with paho's DUP flag and packet id. MQTT 5 ``Receive Maximum`` (set
  by the caller, well below the queue's size) keeps the broker from sending many more
  unacknowledged ones; if a broker sends past the queue anyway (MQTT 3.1.1 has no such
  limit), the surplus stays unacknowledged and :attr:`GatewayClient.overflowed` is set:
  the caller ends the session, and the broker sends the rest again on the next one;
* :meth:`GatewayClient.publish_checked` returns the broker's refusal (an MQTT 5 PUBACK
  reason code of 0x80 or more), so a refused message can be told from a delivered one;
* the broker's Maximum Packet Size (MQTT 5 CONNACK) is kept in
  :attr:`GatewayClient.maximum_packet_size`, so a message too large for the broker is
  known before it is sent (brokers drop the connection over it).

This leans on aiomqtt's private ``_client`` (the paho client), ``_on_message``,
``_on_publish``, ``_on_connect``, ``_pending_call``, ``_pending_publishes`` and
``_wait_for`` (aiomqtt is pinned below 3); the uplink tests exercise each against a real
mosquitto.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import aiomqtt
import paho.mqtt.client as paho
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

log = logging.getLogger("pedf.uplink")


@dataclass(frozen=True, slots=True)
class Arrival:
    """One incoming PUBLISH, not yet acknowledged."""

    topic: str
    payload: bytes
    mid: int
    qos: int
    dup: bool  # the broker sends it again (it was sent before, maybe recorded before)
    response_topic: str | None = None
    correlation: bytes | None = None


def packet_size(topic: str, payload: bytes, correlation: bytes | None = None) -> int:
    """An upper bound of a QoS 1 PUBLISH packet's size in bytes (MQTT 5)."""
    size = 1 + 4 + 2 + len(topic.encode()) + 2 + 4 + len(payload)
    if correlation is not None:
        size += 3 + len(correlation)
    return size


class GatewayClient(aiomqtt.Client):
    """An ``aiomqtt.Client`` with manual acknowledgement, a bounded queue of
    :class:`Arrival`, PUBACK reason codes and the broker's packet size limit (see the
    module). ``incoming_limit``: the size of :attr:`arrivals`."""

    def __init__(self, *args: Any, incoming_limit: int = 64, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._client.manual_ack_set(True)
        self.arrivals: asyncio.Queue[Arrival] = asyncio.Queue(maxsize=incoming_limit)
        self.overflowed = 0  # arrivals left unacknowledged because the queue was full
        self.maximum_packet_size: int | None = None
        self._refusals: dict[int, ReasonCode] = {}

    # -- incoming -----------------------------------------------------------------------

    def _on_message(self, client: paho.Client, userdata: Any,
                    message: paho.MQTTMessage) -> None:
        properties = message.properties
        try:
            arrival = Arrival(
                topic=message.topic, payload=bytes(message.payload), mid=message.mid,
                qos=message.qos, dup=bool(message.dup),
                response_topic=getattr(properties, "ResponseTopic", None),
                correlation=getattr(properties, "CorrelationData", None))
        except UnicodeDecodeError:  # a topic that is not UTF-8: not ours to decide on
            self.acknowledge_ids([(message.mid, message.qos)])
            return
        try:
            self.arrivals.put_nowait(arrival)
        except asyncio.QueueFull:
            self.overflowed += 1

    def acknowledge(self, arrivals: list[Arrival]) -> None:
        """Send the PUBACKs of ``arrivals`` (call this after they are recorded)."""
        self.acknowledge_ids([(a.mid, a.qos) for a in arrivals])

    def acknowledge_ids(self, ids: list[tuple[int, int]]) -> None:
        for mid, qos in ids:
            if qos > 0:
                self._client.ack(mid, qos)

    # -- outgoing -----------------------------------------------------------------------

    def _on_connect(self, client: paho.Client, userdata: Any, flags: paho.ConnectFlags,
                    reason_code: ReasonCode, properties: Properties | None = None) -> None:
        self.maximum_packet_size = getattr(properties, "MaximumPacketSize", None)
        super()._on_connect(client, userdata, flags, reason_code, properties)

    def _on_publish(self, client: paho.Client, userdata: Any, mid: int,
                    reason_code: ReasonCode, properties: Properties) -> None:
        if reason_code.is_failure:
            self._refusals[mid] = reason_code
        super()._on_publish(client, userdata, mid, reason_code, properties)

    async def publish_checked(self, topic: str, payload: bytes, *, qos: int, retain: bool,
                              properties: Properties | None,
                              timeout_s: float) -> str | None:
        """Publish and wait for the broker's answer: None when it took the message, else
        the reason it refused it (e.g. "Not authorized"). Raises ValueError for a topic
        or payload MQTT cannot carry, ``aiomqtt.MqttError`` when the connection fails."""
        info = self._client.publish(topic, payload, qos, retain, properties)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise aiomqtt.MqttCodeError(info.rc, "Could not publish message")
        if info.is_published():
            return None
        confirmation = asyncio.Event()
        try:
            with self._pending_call(info.mid, confirmation, self._pending_publishes):
                await self._wait_for(confirmation.wait(), timeout=timeout_s)
        finally:
            refusal = self._refusals.pop(info.mid, None)
        return None if refusal is None else f"{refusal.getName()} (0x{refusal.value:02x})"
