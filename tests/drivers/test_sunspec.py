"""SunSpec points from pysunspec2's definitions, and sans-I/O discovery of a model chain."""

from __future__ import annotations

from drivers import sunspec
from drivers.codec import RegisterImage, encode, register_map
from drivers.maploader import get_map
from drivers.points import Table


def test_model_lengths_match_pysunspec2() -> None:
    assert sunspec.model_length(1) == 66
    assert sunspec.model_length(103) == 50
    assert sunspec.model_length(160, 2) == 8 + 2 * 20
    assert sunspec.repeats_for_length(160, 48) == 2


def test_inverter_map_layout_is_a_valid_chain() -> None:
    inverter = register_map(get_map("sunspec-inverter"))
    constants = inverter.sim_constants
    assert constants["SunS"] == "SunS"
    address = inverter.point("SunS").address + 2
    for model_id, name in ((1, "common"), (103, "inverter_three_phase"), (120, "nameplate"),
                           (121, "settings"), (122, "status"), (123, "controls"),
                           (160, "mppt")):
        assert inverter.point(f"{name}.ID").address == address
        assert constants[f"{name}.ID"] == model_id
        address += 2 + int(constants[f"{name}.L"])  # type: ignore[arg-type]
    assert inverter.point("end.ID").address == address
    assert inverter.point("mppt.module[1].DCW").scale_factor == "mppt.DCW_SF"


def serve_image(device_map_name: str) -> RegisterImage:
    device_map = register_map(get_map(device_map_name))
    image = RegisterImage()
    for point in device_map.points.values():
        value = device_map.sim_constants.get(point.name)
        image.store(point.table, point.address, encode(point, value, 0))
    return image


def run_scan(image: RegisterImage, scan: sunspec.SunSpecScan) -> sunspec.SunSpecScan:
    while (request := scan.next_read()) is not None:
        address, count = request
        scan.feed(image.get(Table.HOLDING, address, count))
    return scan


def test_scan_finds_the_model_chain() -> None:
    scan = run_scan(serve_image("sunspec-battery"), sunspec.SunSpecScan())
    assert scan.base_address == 40000
    assert [m.model_id for m in scan.models] == [1, 802, 124]
    assert scan.error is None
    points = {p.name for p in sunspec.points_for_models(scan.models)}
    assert {"battery.SoC", "storage_basic.InWRte", "common.Mn"} <= points


def test_scan_without_marker_finds_nothing() -> None:
    scan = run_scan(RegisterImage(), sunspec.SunSpecScan())
    assert scan.base_address is None
    assert scan.models == []


def test_scan_reports_a_broken_chain() -> None:
    image = serve_image("sunspec-battery")
    end = register_map(get_map("sunspec-battery")).point("end.ID").address
    image.store(Table.HOLDING, end, [1, 66])  # claims another model where the end is
    scan = run_scan(image, sunspec.SunSpecScan())
    assert scan.error is not None
    assert [m.model_id for m in scan.models][:3] == [1, 802, 124]


def test_unknown_models_are_skipped_but_the_chain_continues() -> None:
    headers = [sunspec.ModelHeader(64999, 40002, 10), sunspec.ModelHeader(1, 40014, 66)]
    names = {p.name for p in sunspec.points_for_models(headers)}
    assert "common.Mn" in names
    assert sunspec.build_points(1, 40014)[0].address == 40014
