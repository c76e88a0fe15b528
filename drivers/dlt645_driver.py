"""DL/T 645-2007 as a device protocol (:mod:`drivers.protocol`): reads planned from the
data map by bytes on the wire, follow-up frames, verified writes. Sans-I/O.

A poll group's points name data identifiers (DIs); each DI is read with one read request
(11H), or several DIs with one *block* identifier when the map declares one (e.g.
``02-01-FF-00`` for the three phase voltages) and that costs fewer bytes on the line
than reading them one by one. On a 2400-baud line every byte is 4.6 ms, so the planner
counts bytes, not requests: a request is 20 bytes (four FEH wake-up bytes, the 16-byte
frame), a reply 16 bytes plus the data. A reply with follow-up frames (B1H) is
continued with read follow-up requests (12H) until the meter says there is no more. Not
every meter has the block identifiers: one that answers a block read with "no requested
data" has the block's members read one by one, then and in every later plan.

Writes (14H) carry the device's password and operator code; a written DI is read back
and must hold the bytes written.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import cast

from drivers import dlt645
from drivers.devices import Write
from drivers.errors import DeviceAnswerError
from drivers.points import AnyMap, DataPoint, DeviceMap, Protocol, Value, WriteRangeError
from drivers.protocol import Driver, Exchange, ReadOperation, WriteOperation

__all__ = ["DiRead", "Dlt645Driver", "Dlt645Exchange", "data_map", "decode_point",
           "di_sizes", "encode_point", "plan_dis"]

#: Bytes of a read request on the wire (4 FEH + 68H, address, 68H, C, L, DI, CS, 16H).
REQUEST_BYTES = 4 + 16
#: Bytes of a read reply on the wire without its data (no wake-up bytes assumed).
REPLY_OVERHEAD_BYTES = 16


def data_map(device_map: AnyMap) -> DeviceMap[DataPoint]:
    """``device_map`` as a DL/T 645 data map. Raises TypeError for another protocol."""
    if device_map.protocol is not Protocol.DLT645:
        raise TypeError(f"{device_map.model} speaks {device_map.protocol.value}, not dlt645")
    return cast(DeviceMap[DataPoint], device_map)


def di_sizes(device_map: DeviceMap[DataPoint]) -> dict[int, int]:
    """Bytes of data each data identifier of the map answers (its values' extent)."""
    sizes: dict[int, int] = {}
    for point in device_map.points.values():
        sizes[point.di] = max(sizes.get(point.di, 0), point.end)
    return sizes


@dataclass(frozen=True, slots=True)
class DiRead:
    """One read on the wire: ``di`` answers the data of ``members`` concatenated (a plain
    DI is its own only member)."""

    di: int
    members: tuple[int, ...]


def plan_dis(device_map: DeviceMap[DataPoint], dis: Sequence[int],
             refused: Collection[int] = ()) -> list[DiRead]:
    """The reads that cover ``dis`` with the fewest bytes on the wire: a declared block
    replaces reading two or more of its members when it costs fewer bytes, unless the
    meter ``refused`` it."""
    sizes = di_sizes(device_map)
    wanted = list(dict.fromkeys(dis))
    reads: list[DiRead] = []
    covered: set[int] = set()
    for block, members in device_map.blocks.items():
        needed = [m for m in members if m in wanted and m not in covered]
        if len(needed) < 2 or block in refused:
            continue
        alone = sum(REQUEST_BYTES + REPLY_OVERHEAD_BYTES + sizes[m] for m in needed)
        together = REQUEST_BYTES + REPLY_OVERHEAD_BYTES + sum(sizes[m] for m in members)
        if together < alone:
            reads.append(DiRead(block, members))
            covered.update(members)
    reads += [DiRead(di, (di,)) for di in wanted if di not in covered]
    return reads


class Dlt645Exchange(Exchange):
    """One DL/T 645 request. ``answer`` is what :func:`~drivers.dlt645.check_reply` gives
    (a read reply, the meter's address, or None for an acknowledgement); a meter's error
    reply is kept in ``refusal`` and raised by the operation."""

    answer: dlt645.ReadReply | str | None = None
    refusal: dlt645.Dlt645DeviceError | None = None
    correlated = False  # no transaction id: a late reply to the same read looks the same

    def __init__(self, request: dlt645.Frame) -> None:
        self.request = request
        self.expects_answer = dlt645.expects_reply(request)
        self._receiver = dlt645.FrameReceiver()

    def describe(self) -> str:
        what = dlt645.Function(self.request.function).name.lower().replace("_", " ") \
            if self.request.function in dlt645.Function.__members__.values() else \
            f"function {self.request.function:02X}"
        data = self.request.data
        di = f" DI {dlt645.di_text(int.from_bytes(data[:4], 'little'))}" if len(data) >= 4 \
            and self.request.function in (dlt645.Function.READ, dlt645.Function.READ_FOLLOW,
                                          dlt645.Function.WRITE) else ""
        return f"address {self.request.address} {what}{di}"

    def encode(self, transaction: int) -> bytes:
        self.answer = None
        self.refusal = None
        self._receiver.clear()
        return dlt645.encode_frame(self.request)

    def receive(self, buffer: bytearray) -> bool:
        self._receiver.feed(bytes(buffer))
        buffer.clear()
        while (frame := self._receiver.next_frame()) is not None:
            if not frame.is_reply:
                continue  # our own request echoed by the adapter, or another master's
            try:
                self.answer = dlt645.check_reply(self.request, frame)
            except dlt645.Dlt645DeviceError as exc:
                self.refusal = exc
            return True
        return False

    def checked(self) -> dlt645.ReadReply | str | None:
        """The answer, after raising :class:`DeviceAnswerError` for an error reply."""
        if self.refusal is not None:
            raise DeviceAnswerError(self.refusal.code, f"{self.describe()}: {self.refusal}")
        return self.answer


class _Read(ReadOperation):
    def __init__(self, driver: Dlt645Driver, reads: list[DiRead],
                 points: tuple[DataPoint, ...]) -> None:
        self._driver = driver
        self._reads = list(reads)
        self._points = points
        self._index = 0
        self._seq = 0
        self._data = bytearray()
        self._exchange: Dlt645Exchange | None = None
        self._pending = False  # an exchange was handed out and not completed
        self._values: dict[str, Value] = {}

    def next_exchange(self) -> Exchange | None:
        if self._pending:  # the last exchange failed: give up its read, go on with the next
            self._data.clear()
            self._seq = 0
            self._index += 1
        if self._index >= len(self._reads):
            return None
        di, address = self._reads[self._index].di, self._driver.address
        request = dlt645.read_request(address, di) if self._seq == 0 else \
            dlt645.read_follow_request(address, di, self._seq)
        self._exchange = Dlt645Exchange(request)
        self._pending = True
        return self._exchange

    def complete(self) -> None:
        assert self._exchange is not None
        read, refusal = self._reads[self._index], self._exchange.refusal
        if refusal is not None and refusal.code & dlt645.ErrorCode.NO_DATA \
                and len(read.members) > 1 and self._seq == 0:
            # A meter without this block identifier: read the members it covers one by
            # one, now and in later plans.
            self._driver.refuse_block(read.di)
            self._reads[self._index:self._index + 1] = [
                DiRead(m, (m,)) for m in read.members if any(p.di == m for p in self._points)]
            self._pending = False
            return
        reply = self._exchange.checked()
        assert isinstance(reply, dlt645.ReadReply)
        self._data += reply.data
        if reply.more:
            self._seq += 1
            self._pending = False
            return
        self._store(self._reads[self._index], bytes(self._data))
        self._data.clear()
        self._seq = 0
        self._index += 1
        self._pending = False

    def _store(self, read: DiRead, data: bytes) -> None:
        """Decode the points of ``read``'s members. Raises
        :class:`~drivers.dlt645.Dlt645FrameError` for a short reply or invalid bytes."""
        sizes = self._driver.sizes
        starts, start = {}, 0
        for member in read.members:
            starts[member] = start
            start += sizes[member]
        if len(data) < start:
            raise dlt645.Dlt645FrameError(f"{len(data)} data bytes, expected {start}")
        for point in self._points:
            if point.di in starts:
                at = starts[point.di] + point.offset
                self._values[point.name] = decode_point(point, data[at:at + point.size])

    @property
    def values(self) -> dict[str, Value]:
        """The values read so far; points with transformer ``ratios`` on the primary
        side."""
        return self._driver.device_map.primary(self._values)

    @property
    def covering(self) -> tuple[str, ...]:
        members = set(self._reads[self._index].members) if self._index < len(self._reads) \
            else set()
        return tuple(p.name for p in self._points if p.di in members)


def decode_point(point: DataPoint, data: bytes) -> Value:
    """The engineering value of ``point`` from its bytes (None for all-FFH, which meters
    answer for a value they do not have). Raises :class:`~drivers.dlt645.Dlt645FrameError`
    for bytes that are not valid in the point's format."""
    if data and all(byte == 0xFF for byte in data):
        return None
    value = dlt645.decode_value(point.format, data)
    if isinstance(value, str) or point.scale == 1.0:
        return value
    return value * point.scale


def encode_point(point: DataPoint, value: Value) -> bytes:
    """The bytes of ``value`` (engineering units) for ``point``. Raises
    :class:`WriteRangeError` when it does not fit the point's format."""
    if value is None or isinstance(value, bool):
        raise WriteRangeError(f"{point.name}: expected a value, got {value!r}")
    raw = value if isinstance(value, str) or point.scale == 1.0 else value / point.scale
    try:
        return dlt645.encode_value(point.format, raw)
    except ValueError as exc:
        raise WriteRangeError(f"{point.name}: {exc}") from None


class _Write(WriteOperation):
    """Write (14H), then read the DI back: it must hold the bytes written."""

    def __init__(self, driver: Dlt645Driver, point: DataPoint, data: bytes) -> None:
        address = driver.address
        self._data = data
        self._steps = [
            Dlt645Exchange(dlt645.write_request(address, point.di, data,
                                                password=driver.password,
                                                operator=driver.operator)),
            Dlt645Exchange(dlt645.read_request(address, point.di)),
        ]
        self._index = -1
        self._verify = point.access.readable

    def next_exchange(self) -> Exchange | None:
        self._index += 1
        if self._index == 1 and not self._verify:
            return None
        return self._steps[self._index] if self._index < len(self._steps) else None

    def complete(self) -> None:
        reply = self._steps[self._index].checked()
        if self._index == 1:
            assert isinstance(reply, dlt645.ReadReply)
            if reply.data[:len(self._data)] != self._data:
                self.mismatch = (f"read-back {reply.data.hex(' ')} differs from written "
                                 f"{self._data.hex(' ')}")


class Dlt645Driver(Driver):
    """A DL/T 645-2007 meter at ``address`` (12 digits); writes use ``password`` (level
    and password as printed, e.g. ``"02000000"``) and ``operator``."""

    def __init__(self, device_map: AnyMap, address: str, *, password: str = "02000000",
                 operator: str = "00000000") -> None:
        self.device_map: DeviceMap[DataPoint] = data_map(device_map)
        self.address = dlt645.parse_address(address)
        self.password = password
        self.operator = operator
        self.sizes = di_sizes(self.device_map)
        self.refused_blocks: set[int] = set()  # block DIs the meter answered "no data"
        self._plans: dict[tuple[str, ...], tuple[list[DiRead], tuple[DataPoint, ...]]] = {}

    def describe(self) -> str:
        return f"address {self.address}"

    def plan(self, points: Sequence[str]) -> list[DiRead]:
        """The reads that cover ``points`` and the transformer ratios they need."""
        return self._plan(tuple(points))[0]

    def _plan(self, names: tuple[str, ...]) -> tuple[list[DiRead], tuple[DataPoint, ...]]:
        plan = self._plans.get(names)
        if plan is None:
            points = tuple(self.device_map.point(name)
                           for name in self.device_map.with_ratios(names))
            plan = (plan_dis(self.device_map, [p.di for p in points], self.refused_blocks),
                    points)
            self._plans[names] = plan
        return plan

    def refuse_block(self, di: int) -> None:
        """The meter has no block identifier ``di``: plan its members one by one."""
        self.refused_blocks.add(di)
        self._plans.clear()

    def read(self, points: Sequence[str]) -> ReadOperation:
        reads, wanted = self._plan(tuple(points))
        return _Read(self, reads, wanted)

    def write(self, write: Write, latest: Mapping[str, Value]) -> WriteOperation:
        point = self.device_map.point(write.point)
        point.check_write(write.value)
        return _Write(self, point, encode_point(point, write.value))
