"""Read planning: coalesce the points of a poll group into the fewest Modbus reads. Sans-I/O.

Rules, per request:

* one table (one function code) only;
* at most ``max_registers`` registers (125 by the protocol, lower for some devices) or
  2000 bits for coils and discrete inputs;
* it may bridge a gap of unwanted registers between two points only when the gap is at
  most ``max_gap`` registers and touches no range the map marks unreadable, or when the
  gap lies inside a range the map marks reserved (documented as answered by the device);
* every point lies wholly inside one request.

Within those rules a left-to-right greedy sweep is optimal: each request starts at the
lowest uncovered point and extends as far as the rules allow, and no plan can cover the
points of a table with fewer requests (the classic interval-covering argument).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from drivers.codec import with_dependencies
from drivers.points import AddressRange, DeviceMap, Point, Table

__all__ = ["PlanError", "ReadRequest", "plan_group", "plan_reads"]


class PlanError(ValueError):
    """Points cannot be planned (a point alone exceeds the request size limit)."""


@dataclass(frozen=True, slots=True)
class ReadRequest:
    """One Modbus read: ``count`` registers (or bits) of ``table`` from ``address``."""

    table: Table
    address: int
    count: int
    points: tuple[str, ...]

    @property
    def function_code(self) -> int:
        return self.table.read_function

    @property
    def end(self) -> int:
        return self.address + self.count


def plan_reads(
    points: Iterable[Point],
    *,
    max_registers: int = 125,
    max_gap: int = 0,
    unreadable: Sequence[AddressRange] = (),
    reserved: Sequence[AddressRange] = (),
) -> list[ReadRequest]:
    """Plan the reads that cover ``points`` (deduplicated by name). Gaps inside a
    ``reserved`` range (registers the device answers) are bridged whatever their size.

    Requests come out ordered by table, then address. Raises :class:`PlanError` when a
    single point is larger than the request limit of its table.
    """
    if max_registers < 1:
        raise PlanError(f"max_registers must be >= 1, got {max_registers}")
    if max_gap < 0:
        raise PlanError(f"max_gap must be >= 0, got {max_gap}")
    by_table: dict[Table, dict[str, Point]] = {}
    for point in points:
        by_table.setdefault(point.table, {})[point.name] = point
    plan: list[ReadRequest] = []
    for table in Table:
        table_points = by_table.get(table)
        if table_points:
            limit = 2000 if table.is_bits else min(max_registers, 125)
            blocked = [r for r in unreadable if r.table is table]
            answered = [r for r in reserved if r.table is table]
            plan.extend(_plan_table(table, table_points.values(), limit, max_gap, blocked,
                                    answered))
    return plan


def _plan_table(table: Table, points: Iterable[Point], limit: int, max_gap: int,
                blocked: Sequence[AddressRange], answered: Sequence[AddressRange] = ()
                ) -> list[ReadRequest]:
    ordered = sorted(points, key=lambda p: (p.address, p.end, p.name))
    requests: list[ReadRequest] = []
    start = end = 0
    names: list[str] = []
    for point in ordered:
        if point.count > limit:
            raise PlanError(
                f"point {point.name} spans {point.count} registers, more than the "
                f"{limit} one request may read"
            )
        if any(r.overlaps(table, point.address, point.end - 1) for r in blocked):
            raise PlanError(f"point {point.name} lies in a range marked unreadable")
        if names and _can_extend(table, start, end, point, limit, max_gap, blocked,
                                 answered):
            end = max(end, point.end)
            names.append(point.name)
            continue
        if names:
            requests.append(ReadRequest(table, start, end - start, tuple(names)))
        start, end, names = point.address, point.end, [point.name]
    if names:
        requests.append(ReadRequest(table, start, end - start, tuple(names)))
    return requests


def _can_extend(table: Table, start: int, end: int, point: Point, limit: int, max_gap: int,
                blocked: Sequence[AddressRange], answered: Sequence[AddressRange]) -> bool:
    if max(end, point.end) - start > limit:
        return False
    gap = point.address - end
    if gap <= 0:
        return True
    if any(r.first <= end and point.address - 1 <= r.last for r in answered):
        return True
    if gap > max_gap:
        return False
    return not any(r.overlaps(table, end, point.address - 1) for r in blocked)


def plan_group(device_map: DeviceMap[Point], names: Iterable[str], *,
               max_registers: int | None = None) -> list[ReadRequest]:
    """Plan a poll group of ``device_map``: its points plus the scale factors and
    transformer ratios they need.

    ``max_registers`` lowers the map's own per-request limit (never raises it).
    """
    limit = device_map.max_registers
    if max_registers is not None:
        limit = min(limit, max_registers)
    return plan_reads(
        with_dependencies(device_map, tuple(names)),
        max_registers=limit,
        max_gap=device_map.max_gap,
        unreadable=device_map.unreadable,
        reserved=device_map.reserved,
    )
