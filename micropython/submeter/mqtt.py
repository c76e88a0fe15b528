# A minimal MQTT 3.1.1 client for a superloop: non-blocking socket, every operation
# bounded in time (connect, CONNACK, each send, PINGRESP), exponential back-off between
# attempts. QoS 1 publishing with PUBACKs reported to a callback; no subscriptions.
# A last will marks the device "offline" (retained) when the link dies.
import errno
import select
import socket
import time

from micropython import const

from submeter.netserve import send_all

TYPE_CHECKING = const(0)  # folded away by MicroPython's compiler; mypy reads it as true
if TYPE_CHECKING:
    from typing import Any

DOWN = const(0)
CONNECTING = const(1)  # TCP connect in progress
HANDSHAKE = const(2)  # CONNECT sent, waiting for CONNACK
UP = const(3)

_CONNECT_MS = const(5000)
_SEND_MS = const(2000)
_BACKOFF_MIN_MS = const(1000)
_BACKOFF_MAX_MS = const(60000)
_POLLFAIL = select.POLLERR | select.POLLHUP


def _str(s):
    b = s.encode() if isinstance(s, str) else s
    return bytes((len(b) >> 8, len(b) & 0xFF)) + b


def _length(n):
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        out.append(byte | 0x80 if n else byte)
        if not n:
            return out


def connect_packet(client_id, keepalive_s, user, password, will_topic, will_message):
    flags = 0x02  # clean session
    payload = _str(client_id)
    if will_topic:
        flags |= 0x04 | 0x08 | 0x20  # will, QoS 1, retained
        payload += _str(will_topic) + _str(will_message)
    if user:
        flags |= 0x80
        payload += _str(user)
        if password:
            flags |= 0x40
            payload += _str(password)
    body = b"\x00\x04MQTT\x04" + bytes((flags, keepalive_s >> 8, keepalive_s & 0xFF)) + payload
    return b"\x10" + _length(len(body)) + body


def publish_packet(topic, payload, pid, retain=False):
    """PUBLISH at QoS 1 (pid > 0) or QoS 0 (pid 0)."""
    head = 0x30 | (0x02 if pid else 0) | (0x01 if retain else 0)
    var = _str(topic) + (bytes((pid >> 8, pid & 0xFF)) if pid else b"")
    return bytes((head,)) + _length(len(var) + len(payload)) + var + payload


class Client:
    def __init__(self, host, port, client_id, keepalive_s=60, user="", password="",
                 will_topic="", log=None):
        self.host = host
        self.port = port
        self.client_id = client_id
        self.keepalive_ms = keepalive_s * 1000
        self.keepalive_s = keepalive_s
        self.user = user
        self.password = password
        self.will_topic = will_topic
        self.log = log or (lambda *a: None)
        self.state = DOWN
        self.on_puback = None  # f(pid)
        self.on_up = None  # f()
        self.on_down = None  # f()
        self.connects = 0
        self._sock = None  # type: Any
        self._poll = None  # type: Any
        self._rx = bytearray(132)  # the longest packet parsed: 2 + 127 bytes
        self._rn = 0
        self._pid = 0
        self._next_try = time.ticks_ms()
        self._backoff = _BACKOFF_MIN_MS
        self._deadline = 0
        self._last_tx = time.ticks_ms()
        self._ping_due = 0  # deadline of the PINGRESP, 0 when none is outstanding

    @property
    def up(self):
        return self.state == UP

    def poll(self, net_up):
        """Advance the connection; never blocks for more than one send timeout."""
        now = time.ticks_ms()
        try:
            if self.state == DOWN:
                if net_up and time.ticks_diff(now, self._next_try) >= 0:
                    self._start(now)
            elif self.state == CONNECTING:
                self._connecting(now)
            else:
                self._receive(now)
                if self.state == UP:
                    self._keepalive(now)
        except OSError as exc:
            self.drop("socket error %s" % exc)

    def publish(self, topic, payload, qos=1, retain=False):
        """Send a PUBLISH; returns its packet id (QoS 1), 0 (QoS 0) or None when down."""
        if self.state != UP:
            return None
        pid = 0
        if qos:
            self._pid = self._pid % 65535 + 1
            pid = self._pid
        try:
            self._send(publish_packet(topic, payload, pid, retain))
        except OSError as exc:
            self.drop("publish failed: %s" % exc)
            return None
        return pid

    def drop(self, why):
        """Close the connection (or the attempt) and schedule the next one."""
        was_up = self.state == UP
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
        self._sock = None
        self._poll = None
        if self.state != DOWN:
            self.log("mqtt: down (%s), retry in %d ms" % (why, self._backoff))
        self.state = DOWN
        self._next_try = time.ticks_add(time.ticks_ms(), self._backoff)
        self._backoff = min(self._backoff * 2, _BACKOFF_MAX_MS)
        if was_up and self.on_down:
            self.on_down()

    # -- states ---------------------------------------------------------------------

    def _start(self, now):
        addr = socket.getaddrinfo(self.host, self.port)[0][-1]
        sock = socket.socket()
        sock.setblocking(False)
        self._sock = sock
        self._poll = select.poll()
        self._poll.register(sock, select.POLLOUT)
        self.state = CONNECTING
        self._deadline = time.ticks_add(now, _CONNECT_MS)
        try:
            sock.connect(addr)
        except OSError as exc:
            if exc.errno not in (errno.EINPROGRESS, errno.EAGAIN):
                raise

    def _connecting(self, now):
        events = self._poll.poll(0)
        if events:
            if events[0][1] & _POLLFAIL:
                self.drop("connect refused")
                return
            self._poll.modify(self._sock, select.POLLIN)
            will = self.will_topic
            self._send(connect_packet(self.client_id, self.keepalive_s, self.user,
                                      self.password, will, b"offline"))
            self.state = HANDSHAKE
            self._rn = 0
            self._deadline = time.ticks_add(now, _CONNECT_MS)
        elif time.ticks_diff(now, self._deadline) > 0:
            self.drop("connect timed out")

    def _receive(self, now):
        events = self._poll.poll(0)
        if events:
            if events[0][1] & _POLLFAIL and not events[0][1] & select.POLLIN:
                self.drop("connection lost")
                return
            room = len(self._rx) - self._rn
            data = self._sock.recv(room)
            if not data:
                self.drop("closed by broker")
                return
            self._rx[self._rn:self._rn + len(data)] = data
            self._rn += len(data)
            self._packets()
        if self.state == HANDSHAKE and time.ticks_diff(now, self._deadline) > 0:
            self.drop("no CONNACK")

    def _packets(self):
        rx = self._rx
        while self._rn >= 2:
            size = rx[1]
            if size & 0x80:  # none of the packets a publisher receives is that long
                self.drop("unexpected packet")
                return
            if self._rn < 2 + size:
                return
            kind = rx[0] >> 4
            if kind == 2:  # CONNACK
                if size != 2 or rx[3] != 0:
                    self.drop("refused, code %d" % (rx[3] if size >= 2 else -1))
                    return
                self.state = UP
                self.connects += 1
                self._backoff = _BACKOFF_MIN_MS
                self._ping_due = 0
                self.log("mqtt: up")
                if self.will_topic:
                    self._send(publish_packet(self.will_topic, b"online", 0, True))
                if self.on_up:
                    self.on_up()
            elif kind == 4 and size == 2:  # PUBACK
                if self.on_puback:
                    self.on_puback(rx[2] << 8 | rx[3])
            elif kind == 13:  # PINGRESP
                self._ping_due = 0
            n = 2 + size
            rx[0:self._rn - n] = rx[n:self._rn]
            self._rn -= n
            if self._sock is None:
                return

    def _keepalive(self, now):
        if self._ping_due:
            if time.ticks_diff(now, self._ping_due) > 0:
                self.drop("no PINGRESP")
        elif time.ticks_diff(now, self._last_tx) > self.keepalive_ms // 2:
            self._send(b"\xc0\x00")
            self._ping_due = time.ticks_add(now, self.keepalive_ms // 2)

    def _send(self, data):
        send_all(self._sock, data, _SEND_MS)
        self._last_tx = time.ticks_ms()
