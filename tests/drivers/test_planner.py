"""The read planner: properties on random point sets, optimality, and the request count
for every shipped map."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.codec import register_map
from drivers.dlt645_driver import (
    REPLY_OVERHEAD_BYTES,
    REQUEST_BYTES,
    data_map,
    di_sizes,
    plan_dis,
)
from drivers.maploader import get_map, shipped_models
from drivers.planner import PlanError, ReadRequest, plan_group, plan_reads
from drivers.points import AddressRange, Point, PointType, Protocol, Table

SIZES = {PointType.U16: 1, PointType.U32: 2, PointType.F64: 4}


@st.composite
def point_sets(draw: st.DrawFn) -> list[Point]:
    """Non-overlapping points scattered over the four tables."""
    points: list[Point] = []
    for table in Table:
        address = draw(st.integers(0, 50))
        for index in range(draw(st.integers(0, 25))):
            if table.is_bits:
                point_type = PointType.BOOL
            else:
                point_type = draw(st.sampled_from([*SIZES, PointType.STRING]))
            length = draw(st.integers(1, 20)) if point_type is PointType.STRING else 1
            point = Point(name=f"{table.value}_{index}", table=table, address=address,
                          type=point_type, length=length)
            points.append(point)
            address = point.end + draw(st.integers(0, 12))
    return points


@st.composite
def plan_inputs(draw: st.DrawFn) -> tuple[list[Point], int, int, list[AddressRange]]:
    points = draw(point_sets())
    max_registers = draw(st.integers(20, 125))
    max_gap = draw(st.integers(0, 10))
    # Unreadable ranges placed only in gaps between points, as a valid map has them.
    blocked: list[AddressRange] = []
    for table in Table:
        ordered = sorted((p for p in points if p.table is table), key=lambda p: p.address)
        for before, after in itertools.pairwise(ordered):
            if after.address > before.end and draw(st.booleans()):
                blocked.append(AddressRange(table, before.end, before.end))
    return points, max_registers, max_gap, blocked


def covers(request: ReadRequest, point: Point) -> bool:
    return (request.table is point.table and request.address <= point.address
            and point.end <= request.end)


@given(plan_inputs())
def test_plan_properties(case: tuple[list[Point], int, int, list[AddressRange]]) -> None:
    points, max_registers, max_gap, blocked = case
    plan = plan_reads(points, max_registers=max_registers, max_gap=max_gap, unreadable=blocked)
    by_name = {p.name: p for p in points}
    for point in points:  # every point is covered by the request that names it
        owners = [r for r in plan if point.name in r.points]
        assert len(owners) == 1
        assert covers(owners[0], point)
    for request in plan:
        limit = 2000 if request.table.is_bits else max_registers
        assert 1 <= request.count <= limit
        assert all(by_name[n].table is request.table for n in request.points)  # one FC
        for blocked_range in blocked:  # never touches an unreadable range
            assert not blocked_range.overlaps(request.table, request.address, request.end - 1)
        # Every register of the request is a point's or in a gap of at most max_gap.
        inside = sorted((by_name[n] for n in request.points), key=lambda p: p.address)
        assert inside[0].address == request.address
        reach = inside[0].end
        for point in inside[1:]:
            assert point.address - reach <= max_gap
            reach = max(reach, point.end)
        assert reach == request.end


def minimum_requests(points: list[Point], limit: int, max_gap: int) -> int:
    """Brute-force lower bound by dynamic programming over sorted points (one table)."""
    ordered = sorted(points, key=lambda p: p.address)
    n = len(ordered)
    best = [0] + [n + 1] * n  # best[i]: requests to cover the first i points
    for end in range(1, n + 1):
        for start in range(end):
            segment = ordered[start:end]
            span = max(p.end for p in segment) - segment[0].address
            gaps_ok = all(b.address - max(p.end for p in segment[:k + 1]) <= max_gap
                          for k, b in enumerate(segment[1:]))
            if span <= limit and gaps_ok:
                best[end] = min(best[end], best[start] + 1)
    return best[n]


@given(point_sets(), st.integers(10, 125), st.integers(0, 10))
def test_plan_is_optimal(points: list[Point], limit: int, max_gap: int) -> None:
    holding = [p for p in points if p.table is Table.HOLDING and p.count <= limit]
    plan = plan_reads(holding, max_registers=limit, max_gap=max_gap)
    assert len(plan) == minimum_requests(holding, limit, max_gap)


def test_single_point_larger_than_limit_is_an_error() -> None:
    big = Point(name="s", table=Table.HOLDING, address=0, type=PointType.STRING, length=60)
    with pytest.raises(PlanError, match="spans 60 registers"):
        plan_reads([big], max_registers=50)


def test_point_inside_unreadable_range_is_an_error() -> None:
    point = Point(name="p", table=Table.HOLDING, address=5, type=PointType.U16)
    with pytest.raises(PlanError, match="unreadable"):
        plan_reads([point], unreadable=[AddressRange(Table.HOLDING, 0, 9)])


def test_gap_across_unreadable_range_splits() -> None:
    a = Point(name="a", table=Table.INPUT, address=0, type=PointType.U16)
    b = Point(name="b", table=Table.INPUT, address=4, type=PointType.U16)
    assert len(plan_reads([a, b], max_gap=10)) == 1
    assert len(plan_reads([a, b], max_gap=10,
                          unreadable=[AddressRange(Table.INPUT, 2, 2)])) == 2


# Requests per poll of every point of each shipped map: coalesced vs one per point. The
# figures are golden: a change means a map or the planner changed, on purpose or not.
EXPECTED_FULL_POLL = {
    "adl400": 6,  # 14 points; max_gap 0, only the confirmed addresses are served
    "adw300": 4,  # 12 points; max_gap 0, only evcc's addresses are served
    "dc-bus-converter": 2,  # 14 points
    "dc-interface-converter": 2,  # 19 points: holding 0–6, input 0–19
    "dc-load-controller": 2,  # 51 points: four curves in holding 0–37, input 0–41
    "dc-storage": 2,  # 15 points: holding 0–9, input 0–7
    "ddsu666": 3,  # 10 points: 0x0006, 0x2000-0x200F (reserved 0x200C), 0x4000-0x400B
    "dtsu666": 5,  # 59 points: the keyboard words (2 reads), 0x101E, 0x2000, 0x4000 blocks
    "esp32-submeter": 2,  # 30 points
    "goodwe-et": 4,  # 21 points: serial, 35103–35138, 35174–35192, 35301 (gaps ≤ 16)
    "goodwe-et-battery": 5,  # 12 points
    "goodwe-et-meter": 1,  # 9 points: 36004–36026
    "huawei-luna2000": 5,  # 23 points; at most 64 registers per read, gaps ≤ 16
    "huawei-smartlogger": 2,  # 3 points
    "huawei-sun2000": 7,  # 33 points
    "huawei-sun2000-meter": 1,  # 20 points: 37100–37137, evcc's block and a bit more
    "midea-mthermal-r290": 3,  # 21 points: settings 1–16, operating 100–151, status 189
    "relay16": 2,  # 34 points (16 coils in one FC 1 read; 18 registers from 4096)
    "sdm630": 9,  # 92 points; the input table answered as a whole, at most 80 per read
    "sg-ready-heatpump": 2,  # 15 points
    "sunspec-battery": 2,  # 96 points
    "sunspec-inverter": 3,  # 194 points
    "sungrow-sg": 2,  # 24 points: input 4999–5035, holding 5006–5010
    "sungrow-sh": 4,  # 19 points
    "sungrow-sh-battery": 6,  # 18 points
    "sungrow-sh-meter": 3,  # 7 points
    "tuf2000m-heat": 1,  # 7 points: registers 0–35, answered as a whole
    "tuf2000m-water": 1,  # 2 points: registers 0–9, answered as a whole
}


REGISTER_MAPS = [m for m in shipped_models() if get_map(m).protocol is Protocol.MODBUS]


@pytest.mark.parametrize("model", REGISTER_MAPS)
def test_requests_per_full_poll_of_each_map(model: str) -> None:
    device_map = register_map(get_map(model))
    readable = [p.name for p in device_map.points.values() if p.access.readable]
    plan = plan_group(device_map, readable)
    assert len(plan) == EXPECTED_FULL_POLL[model]
    assert len(plan) < len(readable)
    planned = {name for request in plan for name in request.points}
    assert planned == set(readable)


@pytest.mark.parametrize("model", REGISTER_MAPS)
def test_every_group_plan_includes_its_scale_factors(model: str) -> None:
    device_map = register_map(get_map(model))
    for group in device_map.groups.values():
        planned = {n for r in plan_group(device_map, group.points) for n in r.points}
        for name in group.points:
            scale_factor = device_map.points[name].scale_factor
            assert scale_factor is None or scale_factor in planned


def test_device_limit_lowers_request_size() -> None:
    inverter = register_map(get_map("sunspec-inverter"))
    names = [p.name for p in inverter.points.values()]
    assert all(r.count <= 40 for r in plan_group(inverter, names, max_registers=40))


# -- DL/T 645: planned by bytes on the wire ------------------------------------------------


def test_dlt645_blocks_are_read_when_they_cost_fewer_bytes() -> None:
    meter = data_map(get_map("dlt645-3phase"))
    voltages = [0x02010100, 0x02010200, 0x02010300]
    # three phase voltages: one block read (20 + 16 + 6 bytes) instead of three (3 × 38)
    assert [(r.di, r.members) for r in plan_dis(meter, voltages)] == [
        (0x0201FF00, tuple(voltages))]
    # one voltage alone: the block would carry two unwanted values
    assert [r.di for r in plan_dis(meter, voltages[:1])] == [0x02010100]
    # the energy block (5 × 4 bytes) pays for two of its members already
    energy = plan_dis(meter, [0x00010000, 0x00010300])
    assert [r.di for r in energy] == [0x0001FF00]
    # duplicates are read once, and identifiers outside every block one by one
    assert [r.di for r in plan_dis(meter, [0x02800002, 0x02800002, 0x04000401])] == [
        0x02800002, 0x04000401]


def test_a_block_costs_at_most_what_its_members_cost() -> None:
    meter = data_map(get_map("dlt645-3phase"))
    sizes = di_sizes(meter)
    for block, members in meter.blocks.items():
        reads = plan_dis(meter, list(members))
        assert [r.di for r in reads] == [block]
        together = REQUEST_BYTES + REPLY_OVERHEAD_BYTES + sum(sizes[m] for m in members)
        alone = sum(REQUEST_BYTES + REPLY_OVERHEAD_BYTES + sizes[m] for m in members)
        assert together < alone
