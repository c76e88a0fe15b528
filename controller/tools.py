"""One-shot tools: read a device once (``pedf read``), scan a line (``pedf scan``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from controller.lines import Line, LinkDownError, LinkError, line_for
from drivers import dlt645
from drivers.dlt645_driver import Dlt645Exchange
from drivers.frames import ExceptionCode, Function, Request
from drivers.modbus import exchange_for
from drivers.points import PointBase, Protocol, Value
from drivers.protocol import DeviceAnswerError, FrameError
from drivers.sessions import driver_for
from drivers.site import SERIAL_DEFAULTS, DeviceSpec, LineKind, LineSpec, SerialSettings
from drivers.sunspec import SunSpecScan

#: Default per-request timeout of ``pedf scan``, s: long enough for every device the
#: project ships (the ESP32 sub-meter answers in about 320 ms), short enough that a scan of
#: 247 silent units stays bearable.
SCAN_TIMEOUT_S = 1.0


@dataclass(frozen=True, slots=True)
class PointValue:
    point: PointBase
    value: Value
    error: str = ""

    def text(self) -> str:
        if self.error:
            return self.error
        if self.value is None:
            return "not implemented"
        label = self.point.label(self.value)
        if label:
            return f"{self.value} ({label})"
        if self.point.bits:
            names = self.point.bit_names(self.value)
            return f"{self.value:#x}" + (f" ({', '.join(names)})" if names else "")
        if isinstance(self.value, float):
            return f"{self.value:.6g}"
        return str(self.value)


async def read_device(device: DeviceSpec, point_names: Sequence[str] | None = None
                      ) -> list[PointValue]:
    """Read every readable point of ``device`` (or the named ones) once.

    Raises KeyError for an unknown point. Exchanges that fail leave their points with the
    error text instead of a value; the others are still read.
    """
    device_map = device.device_map
    if point_names is None:
        point_names = [p.name for p in device_map.points.values() if p.access.readable]
    for name in point_names:
        device_map.point(name)
    line = line_for(device.line, connect_delay_s=device.pacing.connect_delay_s)
    operation = driver_for(device).read(point_names)
    errors: dict[str, str] = {}
    try:
        while (exchange := operation.next_exchange()) is not None:
            try:
                await line.exchange(exchange, device.timeout_s, turnaround_s=device.turnaround_s)
                operation.complete()
            except (LinkError, DeviceAnswerError, FrameError) as exc:  # FrameError: undecodable
                errors.update(dict.fromkeys(operation.covering, str(exc)))
    finally:
        await line.close()
    values = operation.values
    return [PointValue(device_map.point(n), values.get(n), errors.get(n, ""))
            for n in point_names]


@dataclass
class Found:
    """A device that answered a scan: its station ("unit 3", "address 0000…")."""

    station: str
    sunspec_base: int | None = None
    models: list[int] = field(default_factory=list)
    note: str = ""


def scan_spec(*, host: str | None, serial_port: str | None, port: int | None,
              serial_server: bool, protocol: str, baud: int | None, parity: str | None,
              stop_bits: int) -> LineSpec:
    """The line ``pedf scan`` was pointed at. Serial defaults follow the protocol
    (Modbus 9600 8N1, DL/T 645 2400 8E1). Raises ValueError for a bad combination."""
    defaults = SERIAL_DEFAULTS[Protocol(protocol)]
    serial = SerialSettings(baud or defaults.baud, parity or defaults.parity, stop_bits)
    if not 300 <= serial.baud <= 921600:
        raise ValueError("--baud must be 300–921600")
    if serial_port is not None:
        if serial_server or port is not None:
            raise ValueError("--port and --serial-server go with --host, not --serial")
        return LineSpec("scan", LineKind.SERIAL, serial_port=serial_port, serial=serial)
    assert host is not None
    tcp_port = port or (8899 if serial_server else 502)
    if not 1 <= tcp_port <= 65535:
        raise ValueError("--port must be 1–65535")
    if serial_server:
        return LineSpec("scan", LineKind.SERIAL_SERVER, host=host, port=tcp_port, serial=serial)
    return LineSpec("scan", LineKind.TCP, host=host, port=tcp_port)


async def scan_line(spec: LineSpec, protocol: str, targets: Sequence[int] | Sequence[str], *,
                    timeout_s: float = SCAN_TIMEOUT_S,
                    progress: Callable[[int | str], None] | None = None) -> list[Found]:
    """Find the devices on a line: Modbus ``targets`` are unit ids; DL/T 645 ``targets``
    are meter addresses to check (empty: ask the one meter of a point-to-point line for
    its address). Raises :class:`~controller.lines.LinkDownError` when the line cannot be
    reached, ValueError for a malformed address."""
    line = line_for(spec)
    found: list[Found] = []
    try:
        if protocol == "dlt645" and not targets:
            address = await _read_meter_address(line, timeout_s)
            if address is not None:
                found.append(Found(f"address {address}", note="read-address answer"))
            if progress is not None:
                progress("read address")
            return found
        for target in targets:
            result = await (_probe_unit(line, int(target), timeout_s) if protocol == "modbus"
                            else _probe_meter(line, str(target), timeout_s))
            if result is not None:
                found.append(result)
            if progress is not None:
                progress(target)
    finally:
        await line.close()
    return found


async def _answered(line: Line, exchange: Dlt645Exchange, timeout_s: float) -> bool:
    """Whether a meter answered ``exchange`` (with data or an error reply). Raises
    :class:`~controller.lines.LinkDownError` when the line itself is down."""
    try:
        await line.exchange(exchange, timeout_s)
    except LinkDownError:
        raise
    except LinkError:
        return False
    return True


async def _read_meter_address(line: Line, timeout_s: float) -> str | None:
    """The address of the one meter on a point-to-point line (read address, 13H)."""
    exchange = Dlt645Exchange(dlt645.read_address_request())
    if not await _answered(line, exchange, timeout_s):
        return None
    answer = exchange.answer
    return answer if isinstance(answer, str) else None


#: The data identifier of a meter's communication address (04-00-04-01).
ADDRESS_DI = 0x04000401


async def _probe_meter(line: Line, address: str, timeout_s: float) -> Found | None:
    exchange = Dlt645Exchange(dlt645.read_request(dlt645.parse_address(address), ADDRESS_DI))
    if not await _answered(line, exchange, timeout_s):
        return None
    note = "" if exchange.refusal is None else str(exchange.refusal)
    return Found(f"address {address}", note=note)


async def _probe_unit(line: Line, unit: int, timeout_s: float) -> Found | None:
    scan = SunSpecScan()
    answered = False
    note = ""
    while (read := scan.next_read()) is not None:
        address, count = read
        exchange = exchange_for(Request(unit, Function.READ_HOLDING_REGISTERS, address,
                                        count=count), line.spec.framing)
        try:
            await line.exchange(exchange, timeout_s)
        except LinkDownError:
            raise
        except LinkError:
            scan.feed(None)
            if not answered:
                return None  # silent unit: do not probe its other base addresses
            continue
        response = exchange.answer
        assert response is not None
        if response.exception in (ExceptionCode.GATEWAY_PATH_UNAVAILABLE,
                                  ExceptionCode.GATEWAY_TARGET_FAILED):
            return None
        answered = True
        if response.exception is not None:
            note = ExceptionCode.describe(response.exception)
            scan.feed(None)
        else:
            scan.feed(response.registers)
    return Found(f"unit {unit}", scan.base_address, [m.model_id for m in scan.models],
                 scan.error or ("" if scan.base_address else note))


def parse_units(text: str) -> list[int]:
    """``"1-247"``, ``"1,3,5-7"`` → unit ids. Raises ValueError naming the problem."""
    units: list[int] = []
    for part in text.split(","):
        first, _, last = part.strip().partition("-")
        try:
            low = int(first)
            high = int(last) if last else low
        except ValueError:
            raise ValueError(
                f"--units: expected ranges like 1-247 or 1,3,5-7, got {text!r}") from None
        if not 0 <= low <= high <= 255:
            raise ValueError(f"--units: {part!r} is not within 0–255")
        units.extend(range(low, high + 1))
    return units
