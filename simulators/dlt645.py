"""Simulated DL/T 645-2007 meters, served through the same data maps the gateway reads.

A :class:`Dlt645Meter` answers, from its map and the live physics:

* read (11H) of every data identifier of its map and of its declared blocks, with
  follow-up frames (B1H, then 12H/92H) when the data is longer than ``max_reply_bytes``;
  an identifier it does not have gets an error reply "no requested data" (D1H, ERR 02H);
* read address (13H) to the wildcard address, with its real address;
* write (14H) with the meter's password (level and password, e.g. ``02000000``); a wrong
  password gets "password error or unauthorised" (ERR 04H), a value outside the point's
  limits "other error" (ERR 01H); the date and time identifiers set its clock;
* broadcast time sync (08H to 999999999999): sets its clock, never answered;
* relay control (1CH, the grid companies' extension): acknowledged, state kept.

The servers (:class:`Dlt645SerialServer` on a pseudo-terminal of a virtual RS-485 line,
:class:`Dlt645TcpServer` on a TCP port) frame with :mod:`drivers.dlt645` and apply the
device's faults (:mod:`simulators.faults`) in one place, :meth:`Dlt645Responder.answer`:
latency, no answer, an error reply with code N (``exception=N``), a corrupt checksum,
frozen values, reboots; on TCP, closing the connection and single-client endpoints.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import termios
import time
import tty
from collections.abc import Callable, Sequence
from datetime import datetime, tzinfo

from drivers import dlt645
from drivers.dlt645_driver import data_map, decode_point, di_sizes, encode_point
from drivers.points import AnyMap, DataPoint, DeviceMap, Value, WriteRangeError
from drivers.site import SerialSettings
from simulators.bindings import Binding
from simulators.faults import Faults
from simulators.served import SimulatedDevice

log = logging.getLogger("pedf.sim.dlt645")

__all__ = ["ADDRESS_DI", "DATE_DI", "TIME_DI", "Dlt645Meter", "Dlt645Responder",
           "Dlt645SerialServer", "Dlt645TcpServer"]

#: Date and week (YYMMDDWW) and time (hhmmss): answered from the meter's clock.
DATE_DI = 0x04000101
TIME_DI = 0x04000102
#: The communication address (NNNNNNNNNNNN): the meter's own.
ADDRESS_DI = 0x04000401


class Dlt645Meter(SimulatedDevice):
    """One simulated meter at one address. ``clock`` gives the simulation's UNIX time;
    the meter's own clock runs ``clock_offset_s`` from it (time sync sets it)."""

    def __init__(self, name: str, device_map: AnyMap, binding: Binding, address: str, *,
                 refresh: Callable[[], None] = lambda: None, faults: Faults | None = None,
                 clock: Callable[[], float] = time.time, zone: tzinfo | None = None,
                 password: str = "02000000", max_reply_bytes: int = 200) -> None:
        super().__init__(name, device_map, binding, refresh, faults or Faults())
        self.data_map: DeviceMap[DataPoint] = data_map(device_map)
        self.address = dlt645.parse_address(address)
        self.sizes = di_sizes(self.data_map)
        self.clock = clock
        self.zone = zone
        self.clock_offset_s = 0.0
        self.password = password
        self.max_reply_bytes = max_reply_bytes
        self.relay: dlt645.RelayCommand | None = None
        self._by_di: dict[int, list[DataPoint]] = {}
        for point in self.data_map.points.values():
            self._by_di.setdefault(point.di, []).append(point)

    def meter_time(self) -> datetime:
        return datetime.fromtimestamp(self.clock() + self.clock_offset_s, self.zone)

    def set_time(self, moment: datetime) -> None:
        aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=self.zone)
        self.clock_offset_s = aware.timestamp() - self.clock()

    def data(self, di: int) -> bytes | None:
        """The data the meter answers for ``di`` now (a block: its members' data in
        order), or None when it has no such identifier."""
        members = self.data_map.blocks.get(di, (di,))
        if any(member not in self.sizes for member in members):
            return None
        values = self._values_now()
        return b"".join(self._member_data(member, values) for member in members)

    def _values_now(self) -> dict[str, Value]:
        values = self.point_values()
        now = self.meter_time()
        for point in self._by_di.get(DATE_DI, []):
            values[point.name] = now.strftime("%Y-%m-%d")
        for point in self._by_di.get(TIME_DI, []):
            values[point.name] = now.strftime("%H:%M:%S")
        for point in self._by_di.get(ADDRESS_DI, []):
            values[point.name] = self.address
        return values

    def _member_data(self, di: int, values: dict[str, Value]) -> bytes:
        data = bytearray(self.sizes[di])
        for point in self._by_di[di]:
            value = values.get(point.name)
            if value is None:
                continue  # not measured: zeros, as a meter reports "never" / nothing
            try:
                encoded = encode_point(point, value)
            except WriteRangeError:
                log.warning("%s: cannot encode %s = %r", self.name, point.name, value)
                encoded = bytes(point.size)
            data[point.offset:point.end] = encoded
        return bytes(data)

    def write(self, request: dlt645.WriteRequest) -> int | None:
        """Apply a write (14H); the error word to answer, or None."""
        if request.password != self.password:
            return dlt645.ErrorCode.UNAUTHORISED
        if request.di in (DATE_DI, TIME_DI):
            return self._write_clock(request)
        points = self._by_di.get(request.di)
        if not points or len(points) != 1 or not points[0].access.writable:
            return dlt645.ErrorCode.NO_DATA
        point = points[0]
        try:
            value = decode_point(point, request.value[:point.size])
        except dlt645.Dlt645FrameError:
            return dlt645.ErrorCode.OTHER
        return None if self.write_value(point.name, value) is None else dlt645.ErrorCode.OTHER

    def _write_clock(self, request: dlt645.WriteRequest) -> int | None:
        points = self._by_di.get(request.di)
        if not points:
            return dlt645.ErrorCode.NO_DATA
        try:
            text = str(decode_point(points[0], request.value[:points[0].size]))
        except dlt645.Dlt645FrameError:
            return dlt645.ErrorCode.OTHER
        now = self.meter_time()
        if request.di == DATE_DI:
            day = datetime.fromisoformat(text[:10])
            moment = now.replace(year=day.year, month=day.month, day=day.day)
        else:
            hour, minute, second = (int(part) for part in text.split(":"))
            moment = now.replace(hour=hour, minute=minute, second=second)
        self.set_time(moment)
        return None


class Dlt645Responder:
    """The meters of one line or endpoint: a request frame in, the reply bytes out."""

    def __init__(self, meters: Sequence[Dlt645Meter]) -> None:
        self.meters = list(meters)
        self.by_address = {meter.address: meter for meter in meters}
        self._follow: dict[tuple[str, int], bytes] = {}  # data still to send

    def faults_for(self, frame: dlt645.Frame) -> Faults | None:
        """The faults of the meter ``frame`` addresses (None: nobody answers it)."""
        meter = self.by_address.get(frame.address)
        return None if meter is None else meter.faults

    def answer(self, frame: dlt645.Frame) -> bytes | None:
        """The bytes to send back for a request, or None (no answer: not ours, a
        broadcast, a fault)."""
        if frame.is_reply:
            return None
        if frame.function == dlt645.Function.BROADCAST_TIME and \
                frame.address == dlt645.BROADCAST_ADDRESS:
            self._time_sync(frame)
            return None
        if frame.function == dlt645.Function.READ_ADDRESS:
            return self._read_address(frame)
        meter = self.by_address.get(frame.address)
        if meter is None:
            return None
        faults = meter.faults
        if faults.offline or faults.no_response:
            return None
        if faults.exception is not None:
            reply = dlt645.error_reply(meter.address, frame.function, faults.exception & 0xFF)
        else:
            reply = self._reply(meter, frame)
        data = dlt645.encode_frame(reply, preamble=0)
        if faults.corrupt:
            data = data[:-2] + bytes((data[-2] ^ 0xFF,)) + data[-1:]
        return data

    def _time_sync(self, frame: dlt645.Frame) -> None:
        if len(frame.data) != 6:
            return
        second, minute, hour, day, month, year = (int(f"{b:02x}") for b in frame.data)
        for meter in self.meters:
            try:
                meter.set_time(datetime(2000 + year, month, day, hour, minute, second))
            except ValueError:
                log.info("%s: bad time sync %s", meter.name, frame.data.hex())

    def _read_address(self, frame: dlt645.Frame) -> bytes | None:
        answering = [m for m in self.meters if not m.faults.offline
                     and not m.faults.no_response]
        if frame.address != dlt645.WILDCARD_ADDRESS or not answering:
            return None
        replies = [dlt645.encode_frame(dlt645.address_reply(m.address), preamble=0)
                   for m in answering]
        if len(replies) == 1:
            return replies[0]
        # several meters answer at once on a multi-drop line: the replies collide
        collided = bytearray(max(len(r) for r in replies))
        for reply in replies:
            for index, byte in enumerate(reply):
                collided[index] |= byte
        return bytes(collided)

    def _reply(self, meter: Dlt645Meter, frame: dlt645.Frame) -> dlt645.Frame:
        function = frame.function
        try:
            if function == dlt645.Function.READ:
                di, _ = dlt645.parse_read(frame)
                return self._read(meter, di)
            if function == dlt645.Function.READ_FOLLOW:
                di, seq = dlt645.parse_read(frame)
                return self._read(meter, di, seq or 0)
            if function == dlt645.Function.WRITE:
                error = meter.write(dlt645.parse_write(frame))
                return dlt645.ack_reply(meter.address, function) if error is None \
                    else dlt645.error_reply(meter.address, function, int(error))
            if function == dlt645.Function.RELAY:
                return self._relay(meter, frame)
        except dlt645.Dlt645FrameError:
            return dlt645.error_reply(meter.address, function, dlt645.ErrorCode.OTHER)
        return dlt645.error_reply(meter.address, function, dlt645.ErrorCode.OTHER)

    def _read(self, meter: Dlt645Meter, di: int, seq: int | None = None) -> dlt645.Frame:
        """A read (``seq`` None) or follow-up read: up to ``max_reply_bytes`` of the data,
        the rest kept for the follow-up frames."""
        function = dlt645.Function.READ if seq is None else dlt645.Function.READ_FOLLOW
        data = meter.data(di) if seq is None else self._follow.pop((meter.address, di), None)
        if data is None:
            return dlt645.error_reply(meter.address, function, dlt645.ErrorCode.NO_DATA)
        chunk, rest = data[:meter.max_reply_bytes], data[meter.max_reply_bytes:]
        if rest:
            self._follow[(meter.address, di)] = rest
        return dlt645.read_reply(meter.address, di, chunk, more=bool(rest), function=function,
                                 seq=seq)

    def _relay(self, meter: Dlt645Meter, frame: dlt645.Frame) -> dlt645.Frame:
        data = frame.data
        if len(data) < 16:
            raise dlt645.Dlt645FrameError("relay control data too short")
        password = f"{data[0]:02X}" + data[1:4][::-1].hex().upper()  # PA, then P2 P1 P0
        if password != meter.password:
            return dlt645.error_reply(meter.address, frame.function,
                                      dlt645.ErrorCode.UNAUTHORISED)
        try:
            meter.relay = dlt645.RelayCommand(data[8])
        except ValueError:
            return dlt645.error_reply(meter.address, frame.function, dlt645.ErrorCode.OTHER)
        return dlt645.ack_reply(meter.address, frame.function)


async def _answer_later(responder: Dlt645Responder, frame: dlt645.Frame,
                        send: Callable[[bytes], None]) -> None:
    faults = responder.faults_for(frame)
    if faults is not None and faults.latency_s > 0:
        await asyncio.sleep(faults.latency_s)
    reply = responder.answer(frame)
    if reply is not None:
        send(reply)


def _frames(receiver: dlt645.FrameReceiver) -> list[dlt645.Frame]:
    """Every complete frame so far; malformed ones are dropped (a meter ignores them)."""
    frames: list[dlt645.Frame] = []
    while True:
        try:
            frame = receiver.next_frame()
        except dlt645.Dlt645FrameError:
            continue
        if frame is None:
            return frames
        frames.append(frame)


class Dlt645SerialServer:
    """The meters of a virtual RS-485 line, on the device side pseudo-terminal ``port``."""

    def __init__(self, meters: Sequence[Dlt645Meter], port: str,
                 serial: SerialSettings | None = None) -> None:
        self.responder = Dlt645Responder(meters)
        self.port = port
        self.serial = serial
        self._fd: int | None = None
        self._receiver = dlt645.FrameReceiver()
        self._tasks: set[asyncio.Task[None]] = set()

    async def serve_forever(self, *, background: bool = False) -> None:
        fd = os.open(self.port, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        tty.setraw(fd, termios.TCSANOW)
        self._fd = fd
        asyncio.get_running_loop().add_reader(fd, self._readable)
        if not background:
            await asyncio.Event().wait()

    def _readable(self) -> None:
        if self._fd is None:
            return
        try:
            data = os.read(self._fd, 4096)
        except (BlockingIOError, InterruptedError, OSError):
            return
        self._receiver.feed(data)
        for frame in _frames(self._receiver):
            task = asyncio.create_task(_answer_later(self.responder, frame, self._send))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _send(self, data: bytes) -> None:
        if self._fd is None:
            return
        view = memoryview(data)
        with contextlib.suppress(OSError):
            while view:
                view = view[os.write(self._fd, view):]

    async def shutdown(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._fd is not None:
            asyncio.get_running_loop().remove_reader(self._fd)
            os.close(self._fd)
            self._fd = None


class Dlt645TcpServer:
    """The meters of one TCP endpoint (DL/T 645 frames over TCP, as the ``dlt645``
    package's server and many protocol converters speak it)."""

    def __init__(self, meters: Sequence[Dlt645Meter], host: str, port: int, *,
                 single_client: bool = False) -> None:
        self.responder = Dlt645Responder(meters)
        self.host = host
        self.port = port
        self.single_client = single_client
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.StreamWriter] = set()

    async def serve_forever(self, *, background: bool = False) -> None:
        try:
            self._server = await asyncio.start_server(self._serve, self.host, self.port)
        except OSError as exc:
            raise RuntimeError(f"cannot listen on {self.host}:{self.port}: {exc}") from None
        if not background:
            await self._server.serve_forever()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.single_client and self._clients:
            log.info("tcp://%s:%d: refusing a second client", self.host, self.port)
            writer.close()
            return
        self._clients.add(writer)
        receiver = dlt645.FrameReceiver()
        try:
            while data := await reader.read(4096):
                receiver.feed(data)
                for frame in _frames(receiver):
                    faults = self.responder.faults_for(frame)
                    if faults is not None and (faults.disconnect or faults.offline):
                        return
                    await _answer_later(self.responder, frame, writer.write)
        except OSError:
            pass
        finally:
            self._clients.discard(writer)
            writer.close()

    async def shutdown(self) -> None:
        for writer in list(self._clients):
            writer.close()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2.0):
                    await self._server.wait_closed()
            self._server = None

