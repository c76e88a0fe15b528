# The I/O side of the Modbus servers: a non-blocking Modbus TCP server and an RTU slave on
# a UART. Both are polled from the superloop and never wait: sockets are non-blocking,
# a send gives up after SEND_MS, idle clients are closed after idle_ms.
import errno
import select
import socket
import time

from micropython import const

from submeter import modbus

SEND_MS = const(1000)
_FRAME = const(260)


def send_all(sock, data, timeout_ms=SEND_MS):
    """Send all of ``data`` on a non-blocking socket within ``timeout_ms``, or raise
    OSError(ETIMEDOUT)."""
    mv = memoryview(data)
    deadline = time.ticks_add(time.ticks_ms(), timeout_ms)
    poller = None
    while mv:
        try:
            n = sock.send(mv)
        except OSError as exc:
            if exc.errno != errno.EAGAIN:
                raise
            n = 0
        if n:
            mv = mv[n:]
            continue
        left = time.ticks_diff(deadline, time.ticks_ms())
        if left <= 0:
            raise OSError(errno.ETIMEDOUT)
        if poller is None:
            poller = select.poll()
            poller.register(sock, select.POLLOUT)
        poller.poll(min(left, 50))


class TcpServer:
    def __init__(self, image, port, units, max_clients=2, idle_ms=120000, log=None):
        self.image = image
        self.units = units
        self.max_clients = max_clients
        self.idle_ms = idle_ms
        self.log = log or (lambda *a: None)
        self.requests = 0
        addr = socket.getaddrinfo("0.0.0.0", port)[0][-1]
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(max_clients)
        sock.setblocking(False)
        self.sock = sock
        self.poller = select.poll()
        self.poller.register(sock, select.POLLIN)
        self.clients = []  # [socket, buffer, bytes in buffer, last activity ms]
        self.out = bytearray(_FRAME)

    def poll(self):
        for event in self.poller.poll(0):
            obj = event[0]
            if obj is self.sock:
                self._accept()
            else:
                self._serve(obj, event[1])
        now = time.ticks_ms()
        for client in self.clients[:]:  # _close removes from the list
            if time.ticks_diff(now, client[3]) > self.idle_ms:
                self._close(client, "idle")

    def _accept(self):
        try:
            conn, addr = self.sock.accept()
        except OSError:
            return
        conn.setblocking(False)
        if len(self.clients) >= self.max_clients:  # make room: drop the longest idle
            oldest = self.clients[0]
            for client in self.clients:
                if time.ticks_diff(client[3], oldest[3]) < 0:
                    oldest = client
            self._close(oldest, "replaced")
        self.clients.append([conn, bytearray(_FRAME), 0, time.ticks_ms()])
        self.poller.register(conn, select.POLLIN)

    def _close(self, client, why):
        try:
            self.poller.unregister(client[0])
        except (OSError, KeyError, ValueError):
            pass
        try:
            client[0].close()
        except OSError:
            pass
        if client in self.clients:
            self.clients.remove(client)
        self.log("modbus-tcp: client closed (%s)" % why)

    def _serve(self, sock, event):
        client = None
        for c in self.clients:
            if c[0] is sock:
                client = c
        if client is None:
            return
        buf = client[1]
        try:
            data = sock.recv(_FRAME - client[2])
        except OSError as exc:
            if exc.errno == errno.EAGAIN:
                return
            self._close(client, "error")
            return
        if not data:
            self._close(client, "peer closed")
            return
        n = client[2]
        buf[n:n + len(data)] = data
        n += len(data)
        client[3] = time.ticks_ms()
        while True:
            length = modbus.tcp_frame_length(buf, n)
            if length < 0:
                self._close(client, "bad frame")
                return
            if length == 0:
                break
            m = modbus.tcp_respond(self.image, self.units, buf, length, self.out)
            self.requests += 1
            if m:
                try:
                    send_all(sock, memoryview(self.out)[:m])
                except OSError:
                    self._close(client, "send failed")
                    return
            buf[0:n - length] = buf[length:n]
            n -= length
        client[2] = n


class RtuPort:
    """The RTU slave on a HAL UART (read() -> bytes or None, write(bytes))."""

    def __init__(self, image, uart, unit):
        self.uart = uart
        self.slave = modbus.RtuSlave(image, unit)
        self.requests = 0

    def poll(self):
        data = self.uart.read()
        response = self.slave.feed(data, not data)
        if response:
            self.requests += 1
            self.uart.write(response)
