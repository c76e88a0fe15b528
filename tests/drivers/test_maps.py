"""Every shipped map loads; malformed maps fail with the file, key and expectation."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from drivers.capabilities import KINDS
from drivers.codec import register_map
from drivers.dlt645_driver import data_map, di_sizes
from drivers.maploader import MapError, get_map, load_map, shipped_models
from drivers.points import Protocol, Table

MAPS = Path(__file__).resolve().parents[2] / "drivers" / "maps"


@pytest.mark.parametrize("model", shipped_models())
def test_every_shipped_map_loads_and_is_consistent(model: str) -> None:
    device_map = load_map(MAPS / f"{model}.toml")
    assert device_map.model == model
    assert KINDS[device_map.kind].required <= device_map.capabilities.keys()
    assert device_map.groups, "a map ships default poll groups"
    if device_map.protocol is Protocol.MODBUS:
        for point in register_map(device_map).points.values():
            assert point.end <= 0x10000
            if point.table.is_bits:
                assert point.type.value == "bool"
    else:
        data = data_map(device_map)
        sizes = di_sizes(data)
        for members in data.blocks.values():
            assert all(member in sizes for member in members)
    for name in device_map.sim_constants:
        assert name in device_map.points
    # every control the map offers is complete: set and release writes, a fail-safe
    for control in device_map.controls.values():
        assert control.set
        assert control.release
        for step in control.set + control.release:
            assert device_map.point(step.point).access.writable


def test_shipped_maps_cover_the_issue() -> None:
    kinds = {get_map(m).kind for m in shipped_models()}
    assert kinds == {"meter", "inverter", "battery", "heat_pump", "relay", "dc_bus", "sub_meter",
                     "heat_meter", "water_meter", "dc_storage", "dc_loads"}
    assert {"sdm630", "dtsu666", "sunspec-inverter", "sunspec-battery", "dlt645-3phase",
            "dlt645-1phase"} <= set(shipped_models())
    assert {get_map(m).protocol for m in shipped_models()} == set(Protocol)


def test_sdm630_reads_input_registers_as_float32() -> None:
    sdm = get_map("sdm630")
    power = sdm.point(sdm.capabilities["power_w"])
    assert (power.table, power.address, power.type.value) == (  # type: ignore[attr-defined]
        Table.INPUT, 0x0034, "f32")


def test_unknown_model_lists_the_known_ones() -> None:
    with pytest.raises(KeyError, match=r"known: .*sdm630"):
        get_map("sdm999")


MINIMAL = '''
[device]
model = "bad"
kind = "meter"

[[points]]
name = "power"
table = "input"
address = 0
type = "f32"
unit = "W"

[[points]]
name = "import_energy"
table = "input"
address = 2
type = "f32"
unit = "Wh"

[[points]]
name = "export_energy"
table = "input"
address = 4
type = "f32"
unit = "Wh"

[capabilities]
power_w = "power"
import_wh = "import_energy"
export_wh = "export_energy"

[groups.all]
interval_s = 1
points = ["power"]
'''


def write_map(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_minimal_map_is_valid(tmp_path: Path) -> None:
    assert load_map(write_map(tmp_path, MINIMAL)).model == "bad"


@pytest.mark.parametrize(("change", "message"), [
    (('unit = "W"', 'unit = "kW"'), 'points[0].unit: expected a base unit .* got "kW"'),
    (('address = 2', 'address = "2"'), 'points[1].address: expected an integer 0–65535, got "2"'),
    (('address = 2', 'address = 70000'), "points[1].address: expected an integer 0–65535"),
    (('type = "f32"\nunit = "W"', 'type = "float"\nunit = "W"'),
     'points[0].type: expected one of .*"f32".* got "float"'),
    (('table = "input"\naddress = 0', 'table = "inputs"\naddress = 0'),
     'points[0].table: expected one of "coil", "discrete_input", "holding", "input"'),
    (('address = 2', 'address = 1'), "points: expected points that do not overlap"),
    (('power_w = "power"', 'power_w = "nothing"'),
     "capabilities.power_w: expected the name of a point of this map"),
    (('power_w = "power"\n', ''), "capabilities: expected the meter capabilities power_w"),
    (('kind = "meter"', 'kind = "toaster"'), 'device.kind: expected one of "battery"'),
    (('model = "bad"', 'model = "other"'), 'device.model: expected "bad"'),
    (('points = ["power"]', 'points = ["nope"]'),
     r"groups.all.points\[0\]: expected the name of a point"),
    (('unit = "W"', 'unit = "W"\nadress = 3'), "points[0].adress: expected one of the keys"),
    (('unit = "W"', 'unit = "W"\naccess = "rw"'),
     'points[0].access: expected "r" .input points cannot be written'),
    (('unit = "W"', 'unit = "W"\nmin = 10\nmax = 5'), "points[0].max: expected a number >= min"),
    (('interval_s = 1', 'interval_s = 0'), "groups.all.interval_s: expected a number 0.05–86400"),
    (('unit = "W"', 'unit = "W"\nratios = ["ct"]'),
     "points[0].ratios: expected names of numeric points of this map"),
    (('unit = "W"', 'unit = "W"\nratios = ["power"]'),
     "points[0].ratios: expected names of numeric points"),
    (('[capabilities]', '[[aliases]]\ntable = "input"\nfirst = 0\nlast = 9\n'
      'source = "holding"\n[capabilities]'), "aliases[0]: expected an alias range without "
     "points of its own table"),
    (('[capabilities]', '[[aliases]]\ntable = "input"\nfirst = 100\nlast = 109\n'
      'source = "input"\n[capabilities]'), "aliases[0].source: expected the other register"),
    (('[capabilities]', '[[reserved]]\ntable = "input"\nfirst = 0\nlast = 9\n'
      '[[unreadable]]\ntable = "input"\nfirst = 8\nlast = 8\n[capabilities]'),
     "reserved[0]: expected a range that overlaps no unreadable range"),
    (('[groups.all]', '[simulation.quantities]\npower = "toast_w"\n[groups.all]'),
     "simulation.quantities.power: expected a quantity a meter offers"),
])
def test_malformed_map_names_file_key_and_expectation(tmp_path: Path, change: tuple[str, str],
                                                      message: str) -> None:
    old, new = change
    assert old in MINIMAL
    path = write_map(tmp_path, MINIMAL.replace(old, new, 1))
    with pytest.raises(MapError) as caught:
        load_map(path)
    text = str(caught.value)
    assert text.startswith(f"{path}: "), text
    assert re.search(message.replace("[", r"\[").replace("]", r"\]")
                     if "\\[" not in message else message, text), text


def test_toml_syntax_error_names_the_file(tmp_path: Path) -> None:
    path = write_map(tmp_path, MINIMAL + "\n[[points]\n")
    with pytest.raises(MapError, match=re.escape(str(path)) + ": expected valid TOML"):
        load_map(path)


def test_unknown_sunspec_model_is_rejected(tmp_path: Path) -> None:
    text = ('[device]\nmodel = "bad"\nkind = "inverter"\n[sunspec]\nmodels = [1, 9999]\n'
            '[capabilities]\npower_w = "common.DA"\nenergy_wh = "common.DA"\n')
    with pytest.raises(MapError, match=r"sunspec.models\[1\]: expected a SunSpec model"):
        load_map(write_map(tmp_path, text))


# -- control recipes ----------------------------------------------------------------------

INVERTER = '''
[device]
model = "bad"
kind = "inverter"

[[points]]
name = "power"
table = "input"
address = 0
type = "s32"
unit = "W"

[[points]]
name = "energy"
table = "input"
address = 2
type = "u32"
unit = "Wh"

[[points]]
name = "rated"
table = "input"
address = 4
type = "u16"
unit = "W"

[[points]]
name = "limit"
table = "holding"
address = 0
type = "u16"
unit = "%"
access = "rw"
min = 0
max = 100

[[points]]
name = "limit_on"
table = "holding"
address = 1
type = "u16"
access = "rw"
min = 0
max = 1

[capabilities]
power_w = "power"
energy_wh = "energy"
rated_power_w = "rated"
power_limit_pct = "limit"

[groups.all]
interval_s = 1
points = ["power", "energy"]

[controls.power_limit]
set = [{ point = "limit", value = "value" }, { point = "limit_on", value = 1, optional = true }]
release = [{ point = "limit_on", value = 0 }]
failsafe = "gateway"
'''


def test_a_recipe_map_loads_with_its_controls(tmp_path: Path) -> None:
    device_map = load_map(write_map(tmp_path, INVERTER))
    control = device_map.control("power_limit")
    assert control is not None
    assert [s.point for s in control.set] == ["limit", "limit_on"]
    assert control.set[1].optional


@pytest.mark.parametrize(("change", "message"), [
    # a map that could be limited but does not say how: never a silent no-op at runtime
    ((INVERTER[INVERTER.index("[controls.power_limit]"):], ""),
     "controls.power_limit: expected a recipe for control 'power_limit'"),
    (('failsafe = "gateway"', ""), "controls.power_limit.failsafe: expected a value"),
    (('failsafe = "gateway"', 'failsafe = "device_reverts"'),
     'controls.power_limit: expected a device_reverts control whose set steps write "revert_s"'),
    (('failsafe = "gateway"', 'failsafe = "watchdog"'),
     'controls.power_limit.failsafe: expected a .watchdog. table in this map'),
    (('value = "value" }', 'value = "value * max_power_w" }'),
     r"controls.power_limit.set\[0\].value: expected an expression .*unknown: max_power_w"),
    (('value = "value" }', 'value = "__import__(\'os\')" }'),
     r"controls.power_limit.set\[0\].value: expected an arithmetic expression"),
    (('{ point = "limit", value', '{ point = "power", value'),
     r"controls.power_limit.set\[0\].point: expected a writable point"),
    (("[controls.power_limit]", "[controls.power_setpoint]"),
     r"controls.power_setpoint: expected a control a inverter offers \(power_limit\)"),
    (('release = [{ point = "limit_on", value = 0 }]', "release = []"),
     "controls.power_limit.release: expected at least one write step"),
])
def test_incomplete_or_unsafe_recipes_fail_the_map(tmp_path: Path, change: tuple[str, str],
                                                   message: str) -> None:
    old, new = change
    assert old in INVERTER
    with pytest.raises(MapError) as caught:
        load_map(write_map(tmp_path, INVERTER.replace(old, new, 1)))
    assert re.search(message, str(caught.value)), caught.value
