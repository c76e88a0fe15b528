"""One-shot tools: read a device once (``pedf read``), scan an endpoint (``pedf scan``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from controller.poller import READ_FUNCTION as _READ
from controller.transport import LinkError, RtuLink, TcpLink
from drivers.codec import RegisterImage, decode_points
from drivers.frames import ExceptionCode, Function, Request
from drivers.planner import plan_group
from drivers.points import Point, Value
from drivers.site import DeviceSpec, RtuEndpoint, TcpEndpoint
from drivers.sunspec import SunSpecScan


@dataclass(frozen=True, slots=True)
class PointValue:
    point: Point
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


def link_for(device: DeviceSpec) -> TcpLink | RtuLink:
    if isinstance(device.endpoint, TcpEndpoint):
        return TcpLink(device.endpoint, connect_delay_s=device.pacing.connect_delay_s)
    assert isinstance(device.endpoint, RtuEndpoint)
    return RtuLink(device.endpoint)


async def read_device(device: DeviceSpec, point_names: Sequence[str] | None = None
                      ) -> list[PointValue]:
    """Read every readable point of ``device`` (or the named ones) once.

    Raises KeyError for an unknown point. Requests that fail leave their points with
    the error text instead of a value.
    """
    device_map = device.device_map
    if point_names is None:
        point_names = [p.name for p in device_map.points.values() if p.access.readable]
    for name in point_names:
        device_map.point(name)
    link = link_for(device)
    image = RegisterImage()
    errors: dict[str, str] = {}
    try:
        for request in plan_group(device_map, point_names, max_registers=device.max_registers):
            try:
                if isinstance(link, RtuLink):
                    response = await link.execute(
                        Request(device.unit, _READ[request.table], request.address,
                                count=request.count), device.timeout_s,
                        turnaround_s=device.turnaround_s)
                else:
                    response = await link.execute(
                        Request(device.unit, _READ[request.table], request.address,
                                count=request.count), device.timeout_s)
            except LinkError as exc:
                errors.update(dict.fromkeys(request.points, str(exc)))
                continue
            if response.exception is not None:
                errors.update(dict.fromkeys(request.points,
                                            ExceptionCode.describe(response.exception)))
                continue
            image.store(request.table, request.address,
                        response.bits if request.table.is_bits else response.registers)
    finally:
        await link.close()
    points = [device_map.point(n) for n in point_names]
    values = decode_points(device_map, device_map.with_dependencies(list(point_names)), image)
    return [PointValue(p, values.get(p.name), errors.get(p.name, "")) for p in points]


@dataclass
class UnitFound:
    unit: int
    sunspec_base: int | None = None
    models: list[int] = field(default_factory=list)
    note: str = ""


async def scan_endpoint(endpoint: TcpEndpoint, units: Sequence[int], *, timeout_s: float = 0.5,
                        progress: Callable[[int], None] | None = None) -> list[UnitFound]:
    """Probe ``units`` on a Modbus TCP endpoint; for each that answers, discover its
    SunSpec model chain. A unit answers if it returns data or a Modbus exception other
    than a gateway's 0A/0B ("no such device")."""
    link = TcpLink(endpoint)
    found: list[UnitFound] = []
    try:
        for unit in units:
            scan = SunSpecScan()
            answered = False
            note = ""
            while (read := scan.next_read()) is not None:
                address, count = read
                try:
                    response = await link.execute(
                        Request(unit, Function.READ_HOLDING_REGISTERS, address, count=count),
                        timeout_s)
                except LinkError as exc:
                    if "cannot connect" in str(exc):
                        raise
                    scan.feed(None)
                    if not answered:
                        break  # silent unit: do not probe its other base addresses
                    continue
                if response.exception in (ExceptionCode.GATEWAY_PATH_UNAVAILABLE,
                                          ExceptionCode.GATEWAY_TARGET_FAILED):
                    break
                answered = True
                if response.exception is not None:
                    note = ExceptionCode.describe(response.exception)
                    scan.feed(None)
                else:
                    scan.feed(response.registers)
            if answered:
                found.append(UnitFound(unit, scan.base_address,
                                       [m.model_id for m in scan.models],
                                       scan.error or ("" if scan.base_address else note)))
            if progress is not None:
                progress(unit)
    finally:
        await link.close()
    return found


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
