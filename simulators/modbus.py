"""The thin pymodbus adapter: serves simulated devices through their ``drivers/`` maps.

One server per endpoint — a TCP port or a serial line — with one pymodbus ``SimDevice``
per unit id. Register values are encoded on demand from the live physics by the same
codec the controller decodes with, so simulator and driver cannot drift. Fault injection
(:mod:`simulators.faults`) is applied here, in the request handler, and nowhere else.

What a client sees:

* mapped registers read their live values, the map's reserved ranges (and gaps of at
  most ``max_gap`` between points) read zero, and the map's aliases answer what their
  source table answers (a meter whose FC 04 mirrors FC 03); anything else answers
  exception 02 (illegal data address); a read of more registers than the map's
  ``max_registers`` answers exception 03 (illegal data value);
* writes go through the map's checks: read-only registers answer 02, values outside a
  point's limits or refused by the physics answer 03 (illegal data value) and change
  nothing; a write must cover whole points;
* on TCP a request for a unit id the endpoint does not serve answers exception 0B
  (gateway target failed to respond); on a serial line it gets no answer, as on RS-485;
* the device's pacing (its map's ``[device.pacing]`` unless the site file says how this
  device behaves on its path — a SUN2000 behind a SmartLogger is not behind an
  SDongle): a request within ``connect_delay_s`` of a TCP connect gets no answer, and
  one arriving less than ``request_interval_s`` after the previous answer gets
  exception 06 (server device busy), as a Huawei SUN2000 answers;
* several maps naming one ``shared_unit`` at one unit id are one physical device
  (:class:`ServedUnit`): reads may span the parts, each write goes to its part.
"""

from __future__ import annotations

import asyncio
import bisect
import dataclasses
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pymodbus.constants import ExcCodes
from pymodbus.pdu import ExceptionResponse, ModbusPDU
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.server.requesthandler import ServerRequestHandler
from pymodbus.simulator import DataType, SimData, SimDevice

from drivers.codec import decode, decode_raw, encode, encode_write, register_map
from drivers.points import (
    AnyMap,
    DeviceMap,
    Pacing,
    Point,
    PointBase,
    Table,
    Value,
    WriteRangeError,
)
from simulators.bindings import Binding
from simulators.faults import Faults
from simulators.served import SimulatedDevice

log = logging.getLogger("pedf.sim.modbus")

_TABLE_OF_FUNCTION = {1: Table.COIL, 5: Table.COIL, 15: Table.COIL, 2: Table.DISCRETE_INPUT,
                      3: Table.HOLDING, 6: Table.HOLDING, 16: Table.HOLDING, 23: Table.HOLDING,
                      4: Table.INPUT}
_TUPLE_ORDER = (Table.COIL, Table.DISCRETE_INPUT, Table.HOLDING, Table.INPUT)


def served_ranges(device_map: DeviceMap[Point], table: Table) -> list[tuple[int, int]]:
    """(first, end) address runs a device of ``device_map`` answers in ``table``: every
    point's registers and the ``reserved`` ranges, joined across gaps of at most
    ``max_gap`` that touch no unreadable range, plus what the ``aliases`` of ``table``
    mirror of their source table."""
    spans = [(p.address, p.end) for p in device_map.points.values() if p.table is table]
    spans += [(r.first, r.last + 1) for r in device_map.reserved if r.table is table]
    runs = _join(sorted(spans), device_map, table)
    for alias in device_map.aliases:
        if alias.table is not table:
            continue
        low, high = alias.source_address(alias.first), alias.source_address(alias.last) + 1
        for first, end in served_ranges(device_map, alias.source):
            if first < high and end > low:
                runs.append((alias.first + max(first, low) - low,
                             alias.first + min(end, high) - low))
    return _join(sorted(runs), device_map, table, bridge=False)


def _join(spans: list[tuple[int, int]], device_map: DeviceMap[Point], table: Table, *,
          bridge: bool = True) -> list[tuple[int, int]]:
    """Sorted (first, end) spans merged where they touch or overlap, and (``bridge``)
    across gaps of at most ``max_gap`` that touch no unreadable range."""
    runs: list[tuple[int, int]] = []
    for first, end in spans:
        if runs:
            run_first, run_end = runs[-1]
            gap = first - run_end
            if gap <= 0 or (bridge and gap <= device_map.max_gap and not any(
                    r.overlaps(table, run_end, first - 1) for r in device_map.unreadable)):
                runs[-1] = (run_first, max(run_end, end))
                continue
        runs.append((first, end))
    return runs


@dataclass
class QuirkCounts:
    """How often a device's own pacing turned a request away (see the module docstring)."""

    ignored_early: int = 0  # requests within connect_delay_s of a connect: no answer
    busy: int = 0  # requests within request_interval_s of the previous answer: exception 06


class ServedDevice(SimulatedDevice):
    """One simulated device at one unit id: live values in, registers out, writes in."""

    def __init__(self, name: str, device_map: AnyMap, binding: Binding, unit: int, *,
                 refresh: Callable[[], None] = lambda: None,
                 faults: Faults | None = None, pacing: Pacing | None = None) -> None:
        super().__init__(name, device_map, binding, refresh, faults or Faults())
        self.unit = unit
        self.register_map: DeviceMap[Point] = register_map(device_map)
        self.pacing = device_map.pacing if pacing is None else pacing
        self.encode_failures = 0
        self.quirks = QuirkCounts()
        self._starts: dict[Table, list[int]] = {}
        self._points: dict[Table, list[Point]] = {}
        for table in Table:
            points = sorted((p for p in self.register_map.points.values() if p.table is table),
                            key=lambda p: p.address)
            self._points[table] = points
            self._starts[table] = [p.address for p in points]
        self._scale_factor_names = frozenset(
            p.scale_factor for p in self.register_map.points.values() if p.scale_factor)

    def _live_values(self) -> dict[str, Value]:
        values = super()._live_values()
        delta = self.faults.scale_factor_delta()
        if delta:
            for name in self._scale_factor_names:
                current = values.get(name)
                if isinstance(current, int):
                    values[name] = current + delta
        return values

    def _encode_point(self, point: Point, values: Mapping[str, Value]) -> list[int]:
        value = values.get(point.name)
        sf_value = values.get(point.scale_factor) if point.scale_factor else None
        sf = sf_value if isinstance(sf_value, int) else None
        if value is None and not point.not_implemented and point.type.is_integer:
            value = 0  # a register without a "not implemented" value reads 0
        try:
            if isinstance(value, float) and point.type.is_integer and not math.isfinite(value):
                raise WriteRangeError(point.name)
            return encode(point, value, sf)
        except WriteRangeError:
            self.encode_failures += 1
            if self.encode_failures in (1, 100, 10000):
                log.warning("%s: cannot encode %s = %r (served as 'not implemented')",
                            self.name, point.name, value)
            return encode(point, None, sf) if point.not_implemented or not (
                point.type.is_integer) else [0] * point.count

    def fill(self, table: Table, first: int, count: int, start: int,
             registers: list[int]) -> None:
        """Encode the live values of ``table`` points overlapping [first, first+count)
        into ``registers`` (a block whose index 0 is address ``start``); registers an
        alias of ``table`` mirrors come from its source table."""
        values = self.point_values()
        self._fill_points(table, first, count, start, registers, values)
        end = first + count
        for alias in self.register_map.aliases:
            low, high = max(first, alias.first), min(end, alias.last + 1)
            if alias.table is not table or low >= high:
                continue
            mirrored = [0] * (high - low)
            source = alias.source_address(low)
            self._fill_points(alias.source, source, high - low, source, mirrored, values)
            registers[low - start:high - start] = mirrored

    def _fill_points(self, table: Table, first: int, count: int, start: int,
                     registers: list[int], values: Mapping[str, Value]) -> None:
        points, starts = self._points[table], self._starts[table]
        index = max(0, bisect.bisect_right(starts, first) - 1)
        end = first + count
        for point in points[index:]:
            if point.address >= end:
                break
            if point.end <= first:
                continue
            for offset, word in enumerate(self._encode_point(point, values)):
                at = point.address + offset - start
                if 0 <= at < len(registers):
                    registers[at] = word

    def fill_bits(self, table: Table, start_word: int, registers: list[int]) -> None:
        """Pack the coil or discrete-input points into the block's 16-bit words."""
        values = self.point_values()
        words: dict[int, int] = {}
        for point in self._points[table]:
            word = point.address // 16 - start_word
            bit = point.address % 16
            words.setdefault(word, 0)
            if values.get(point.name):
                words[word] |= 1 << bit
        for word, value in words.items():
            if 0 <= word < len(registers):
                registers[word] = value

    def read(self, table: Table, address: int, count: int) -> list[int]:
        """What a read request returns now (registers, or 0/1 for bits); raises KeyError
        for an address the device does not serve."""
        served = served_ranges(self.register_map, table)
        if not any(first <= address and address + count <= end for first, end in served):
            raise KeyError(f"{self.name}: {table.value} {address}+{count} is not served")
        if table.is_bits:
            values = self.point_values()
            by_address = {p.address: p for p in self._points[table]}
            return [1 if a in by_address and values.get(by_address[a].name) else 0
                    for a in range(address, address + count)]
        registers = [0] * count
        self.fill(table, address, count, address, registers)
        return registers

    # -- writes -------------------------------------------------------------------------

    def write_registers(self, address: int, words: Sequence[int]) -> ExcCodes | None:
        """Apply a holding-register write; all or nothing."""
        end = address + len(words)
        touched = [p for p in self._points[Table.HOLDING] if p.address < end and p.end > address]
        if not touched or any(p.address < address or p.end > end for p in touched):
            return ExcCodes.ILLEGAL_ADDRESS
        current = self.point_values()
        updates: list[tuple[Point, Value]] = []
        for point in touched:
            raw_words = list(words[point.address - address:point.end - address])
            sf_value = current.get(point.scale_factor) if point.scale_factor else None
            sf = sf_value if isinstance(sf_value, int) else None
            try:
                decode_raw(point, raw_words)
                value = decode(point, raw_words, sf)
                encode_write(point, value, sf)  # the map's access and limit checks
            except (WriteRangeError, ValueError):
                return ExcCodes.ILLEGAL_VALUE
            updates.append((point, value))
        return None if self.apply(updates) is None else ExcCodes.ILLEGAL_VALUE

    def write_bits(self, address: int, bits: Sequence[bool]) -> ExcCodes | None:
        points = {p.address: p for p in self._points[Table.COIL]}
        updates: list[tuple[Point, Value]] = []
        for offset, bit in enumerate(bits):
            point = points.get(address + offset)
            if point is None or not point.access.writable:
                return ExcCodes.ILLEGAL_ADDRESS
            updates.append((point, bool(bit)))
        return None if self.apply(updates) is None else ExcCodes.ILLEGAL_VALUE

    # -- pymodbus -----------------------------------------------------------------------

    def sim_device(self) -> SimDevice:
        """The pymodbus device serving this map, with the live-value action."""
        blocks: list[list[SimData]] = []
        for table in _TUPLE_ORDER:
            data: list[SimData] = []
            writable = {a for p in self._points[table] if p.access.writable
                        for a in range(p.address, p.end)}
            for first, end in served_ranges(self.register_map, table):
                address = first
                while address < end:  # split runs where writability changes
                    run_writable = address in writable
                    stop = address + 1
                    while stop < end and (stop in writable) == run_writable:
                        stop += 1
                    data.append(SimData(
                        address, count=stop - address, values=False if table.is_bits else 0,
                        datatype=DataType.BITS if table.is_bits else DataType.REGISTERS,
                        readonly=not run_writable,
                    ))
                    address = stop
            if not data:  # pymodbus needs a block per table: an unmapped one far up
                data.append(SimData(0xFFF0, count=1, values=False, datatype=DataType.BITS)
                            if table.is_bits else
                            SimData(0xFFF0, count=1, datatype=DataType.INVALID))
            blocks.append(data)
        return SimDevice(self.unit, simdata=(blocks[0], blocks[1], blocks[2], blocks[3]),
                         action=self._action)

    async def _action(self, function_code: int, start: int, address: int, count: int,
                      registers: list[int], set_values: list[int] | list[bool] | None
                      ) -> ExcCodes | None:
        table = _TABLE_OF_FUNCTION.get(function_code)
        if table is None:
            return ExcCodes.ILLEGAL_FUNCTION
        if self.faults.exception is not None:
            return ExcCodes(self.faults.exception)
        if set_values is None and not table.is_bits \
                and count > self.register_map.max_registers:
            return ExcCodes.ILLEGAL_VALUE  # more than the device answers in one read
        if set_values is None:
            if table.is_bits:
                self.fill_bits(table, start, registers)
            else:
                self.fill(table, address, count, start, registers)
            return None
        if table is Table.COIL:
            return self.write_bits(address, [bool(v) for v in set_values])
        return self.write_registers(address, [int(v) for v in set_values])


class _NoBinding:
    """The binding of a :class:`ServedUnit`: its parts have the real ones."""

    def values(self) -> dict[str, Value]:
        return {}

    def extra_points(self) -> dict[str, Value]:
        return {}

    def write(self, capability: str, value: Value) -> None:
        raise KeyError(capability)


class ServedUnit(ServedDevice):
    """The parts of one physical device answering at one unit id — a SUN2000 inverter,
    the LUNA2000 battery and the power sensor it reads, each with a map of its own that
    names the same ``shared_unit``. Clients see one register space: a read may span the
    parts (the maps' gaps are bridged as each map allows), a write goes to the part
    owning its registers. Faults are the physical device's: one set for every part."""

    def __init__(self, parts: Sequence[ServedDevice]) -> None:
        first = parts[0]
        maps = [part.register_map for part in parts]
        points: dict[str, Point] = {}  # by "part.point": two parts may use one name
        self._owner: dict[str, tuple[ServedDevice, Point]] = {}
        for part in parts:
            for point in part.register_map.points.values():
                merged_point = dataclasses.replace(
                    point, name=f"{part.name}.{point.name}",
                    scale_factor=point.scale_factor and f"{part.name}.{point.scale_factor}",
                    ratios=tuple(f"{part.name}.{ratio}" for ratio in point.ratios))
                points[merged_point.name] = merged_point
                self._owner[merged_point.name] = (part, point)
        merged = dataclasses.replace(
            first.register_map, model="+".join(m.model for m in maps), points=points,
            capabilities={}, groups={}, controls={}, watchdog=None, sim_constants={},
            unreadable=tuple(r for m in maps for r in m.unreadable),
            reserved=tuple(r for m in maps for r in m.reserved),
            aliases=tuple(a for m in maps for a in m.aliases), sim_quantities={},
            max_registers=min(m.max_registers for m in maps),
            max_gap=min(m.max_gap for m in maps))
        pacing = Pacing(max(p.pacing.request_interval_s for p in parts),
                        max(p.pacing.connect_delay_s for p in parts),
                        any(p.pacing.single_client for p in parts))
        super().__init__("+".join(part.name for part in parts), merged, _NoBinding(),
                         first.unit, faults=first.faults, pacing=pacing)
        self.parts = list(parts)
        for part in parts:
            part.faults = self.faults
            part.quirks = self.quirks

    def _live_values(self) -> dict[str, Value]:
        values: dict[str, Value] = {}
        for part in self.parts:
            values.update({f"{part.name}.{name}": value
                           for name, value in part._live_values().items()})
        return values

    def apply(self, updates: Sequence[tuple[PointBase, Value]]) -> str | None:
        for part in self.parts:
            mine = [(self._owner[point.name][1], value) for point, value in updates
                    if self._owner[point.name][0] is part]
            if mine and (refused := part.apply(mine)) is not None:
                return refused
        return None


def _units(devices: Sequence[ServedDevice]) -> dict[int, ServedDevice]:
    """The devices by unit id, parts of one physical device joined in a
    :class:`ServedUnit`."""
    by_unit: dict[int, list[ServedDevice]] = {}
    for device in devices:
        by_unit.setdefault(device.unit, []).append(device)
    return {unit: parts[0] if len(parts) == 1 else ServedUnit(parts)
            for unit, parts in by_unit.items()}


# -- servers ----------------------------------------------------------------------------


#: Slack for the device's request gap: the client's clock and ours may disagree this much.
_PACING_SLACK_S = 0.001


class _FaultInjectingHandler(ServerRequestHandler):
    """pymodbus' request handler with our unit routing, the devices' own pacing and
    fault injection."""

    server: _EndpointMixin

    def __init__(self, owner: _EndpointMixin) -> None:
        super().__init__(owner, None, None, None)  # type: ignore[no-untyped-call]
        self.connected_at = -math.inf  # monotonic: the connection of this handler (TCP)
        self.answered_at: dict[int, float] = {}  # monotonic: each unit's last answer

    def callback_connected(self) -> None:
        super().callback_connected()
        self.connected_at = time.monotonic()
        self.answered_at = {}
        owner = self.server
        if owner.single_client and len(owner.active_connections) > 1:
            log.info("%s: refusing a second client (single-client device)", owner.label)
            self.transport.close()

    async def handle_request(self) -> None:
        pdu, addr = self.last_pdu, self.last_addr
        if pdu is None:
            return
        owner = self.server
        device = owner.devices.get(pdu.dev_id)
        if device is None:
            if not owner.serial:
                self._send(ExceptionResponse(pdu.function_code, ExcCodes.GATEWAY_NO_RESPONSE),
                           pdu, addr, corrupt=False)
            return
        faults = device.faults
        if faults.offline:
            if not owner.serial:
                self.transport.close()
            return
        if faults.no_response:
            return
        if faults.disconnect and not owner.serial:
            self.transport.close()
            return
        pacing, now = device.pacing, time.monotonic()
        if not owner.serial and now - self.connected_at < pacing.connect_delay_s:
            device.quirks.ignored_early += 1  # not ready yet after the connect: no answer
            return
        answered_at = self.answered_at.get(pdu.dev_id, -math.inf)
        if now - answered_at < pacing.request_interval_s - _PACING_SLACK_S:
            device.quirks.busy += 1
            self._send(ExceptionResponse(pdu.function_code, ExcCodes.DEVICE_BUSY), pdu, addr,
                       corrupt=False)
            return
        if faults.latency_s > 0:
            await asyncio.sleep(faults.latency_s)
        try:
            response = await pdu.datastore_update(owner.context, pdu.dev_id)
        except Exception:  # a bug in a binding must not kill the server
            log.exception("%s unit %d: request failed", owner.label, pdu.dev_id)
            response = ExceptionResponse(pdu.function_code, ExcCodes.DEVICE_FAILURE)
        self._send(response, pdu, addr, corrupt=faults.corrupt)

    def _send(self, response: ModbusPDU, request: ModbusPDU, addr: Any, *,
              corrupt: bool) -> None:
        response.transaction_id = request.transaction_id
        response.dev_id = request.dev_id
        if not self.transport:
            return
        self.answered_at[request.dev_id] = time.monotonic()
        frame = bytearray(self.framer.buildFrame(response))
        if corrupt:
            if self.server.serial:
                frame[-1] ^= 0xFF  # bad CRC
            elif len(frame) > 8 and response.function_code in (1, 2, 3, 4):
                frame[8] = (frame[8] + 2) & 0xFF  # byte count disagrees with the data
            else:
                frame[5] = (frame[5] + 3) & 0xFF  # MBAP length disagrees with the frame
        self.send(bytes(frame), addr=addr)


class _EndpointMixin:
    devices: Mapping[int, ServedDevice]
    single_client: bool
    serial: bool
    label: str
    active_connections: dict[str, Any]
    context: Any

    def callback_new_connection(self) -> ServerRequestHandler:
        return _FaultInjectingHandler(self)


class SimTcpServer(_EndpointMixin, ModbusTcpServer):
    """Serves ``devices`` (by unit id) on a TCP port."""

    def __init__(self, devices: Sequence[ServedDevice], host: str, port: int, *,
                 single_client: bool = False) -> None:
        self.devices = _units(devices)
        self.single_client = single_client or any(
            d.pacing.single_client for d in devices)
        self.serial = False
        self.label = f"tcp://{host}:{port}"
        super().__init__([d.sim_device() for d in self.devices.values()],
                         address=(host, port))


class SimSerialServer(_EndpointMixin, ModbusSerialServer):
    """Serves ``devices`` (by unit id) as RTU slaves on a serial line."""

    def __init__(self, devices: Sequence[ServedDevice], port: str, *, baud: int = 9600,
                 parity: str = "N", stop_bits: int = 1) -> None:
        self.devices = _units(devices)
        self.single_client = False
        self.serial = True
        self.label = f"rtu://{port}"
        super().__init__([d.sim_device() for d in self.devices.values()], port=port,
                         baudrate=baud,
                         parity=parity, stopbits=stop_bits)
