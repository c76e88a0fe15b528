"""The vendors' simulators as faithful as their maps say: every point a number (no "not
implemented" sentinel for a quantity the device measures), one register space for the
parts of one device, physics that add up (a hybrid's AC port carries PV and battery;
phases sum to the total; counters integrate power), and writes that stay."""

from __future__ import annotations

import pytest
from vendor_sites import VENDOR_SITES, vendor_site

from drivers.codec import decode, encode, register_map
from drivers.maploader import get_map, shipped_models
from drivers.points import PointType, Table
from simulators.modbus import ServedDevice, ServedUnit
from simulators.runner import single_device_site
from simulators.served import SimulatedDevice
from simulators.servers import served_device
from simulators.sitefile import SimulatedSite, build_site

START = "2026-06-22T11:00:00+08:00"


def served(name: str) -> tuple[SimulatedSite, dict[str, SimulatedDevice]]:
    from datetime import datetime

    start = datetime.fromisoformat(START).timestamp()
    spec = vendor_site(name)
    site = build_site(spec, start_s=start)
    site.model.advance(start + 60.0)
    devices = {n: served_device(d, site.bindings[n], lambda: None)
               for n, d in spec.devices.items()}
    return site, devices


VENDOR_MODELS = [m for m in shipped_models()
                 if get_map(m).manufacturer in ("Huawei", "Sungrow", "GoodWe")]


@pytest.mark.parametrize("model", VENDOR_MODELS)
def test_every_point_of_the_vendor_maps_is_served_with_a_number(model: str) -> None:
    """Each vendor map in its site variant (or, the SmartLogger, on its own in ``pedf
    sim device``'s little building), an hour of physics from 11:00 in June: every point
    has a value that is not the type's "not implemented" sentinel."""
    from datetime import datetime

    start = datetime.fromisoformat(START).timestamp()
    spec, name = single_device_site(model), "device"
    for site_name in VENDOR_SITES:
        candidate = vendor_site(site_name)
        found = [d.name for d in candidate.devices.values() if d.model == model]
        if found:
            spec, name = candidate, found[0]
    site = build_site(spec, start_s=start)
    site.model.advance(start + 3600.0)
    device = served_device(spec.devices[name], site.bindings[name], lambda: None)
    assert isinstance(device, ServedDevice)
    values = device.point_values()
    for point in register_map(device.device_map).points.values():
        value = values.get(point.name)
        assert value is not None, f"{point.name} has no value"
        if point.type is PointType.STRING:
            assert isinstance(value, str)
            assert value
            continue
        words = encode(point, value)
        assert decode(point, words) is not None, \
            f"{point.name} = {value!r} is served as 'not implemented'"
    assert device.encode_failures == 0


def test_the_parts_of_a_sungrow_sh_answer_one_read_across_them() -> None:
    """A client reads doc 13003–13047 (protocol 13002–13046) in one request: registers of
    the inverter (PV energy, AC power), the meter (export power, energies) and the
    battery (SoC) in one answer, gaps of at most 16 registers between them as zero."""
    site, devices = served("sungrow-workshop")
    unit = ServedUnit([d for n, d in devices.items() if n in ("hybrid", "battery",
                                                              "grid_meter")
                       if isinstance(d, ServedDevice)])
    registers = unit.read(Table.INPUT, 13002, 45)
    battery_map = register_map(site.spec.devices["battery"].device_map)
    meter_map = register_map(site.spec.devices["grid_meter"].device_map)
    soc = battery_map.points["soc"]
    export = meter_map.points["export_power"]
    assert decode(soc, registers[soc.address - 13002:soc.end - 13002]) == pytest.approx(
        site.model.batteries["battery"].soc_pct, abs=0.05)
    assert decode(export, registers[export.address - 13002:export.end - 13002]) == \
        pytest.approx(site.model.meters["grid_meter"].counter.power_w, abs=1)
    assert registers[13011 - 13002] == 0  # doc 13012, not mapped: inside a gap, zero
    with pytest.raises(KeyError):
        unit.read(Table.INPUT, 13040, 20)  # past the last point nothing is served


@pytest.mark.parametrize(("name", "ac_point"), [("huawei-shop", "ac_power"),
                                                ("sungrow-workshop", "ac_power"),
                                                ("goodwe-office", "ac_power")])
def test_a_hybrid_inverters_ac_port_carries_pv_and_battery(name: str, ac_point: str) -> None:
    site, devices = served(name)
    inverter = "hybrid" if name == "sungrow-workshop" else "inverter"
    model = site.model
    battery, pv = model.batteries["battery"], model.pv[inverter]
    battery.set_forced(-3_000.0)
    model.advance(model.t_s + 10.0)
    values = devices[inverter].point_values()
    assert values[ac_point] == pytest.approx(pv.power_w + battery.power_w)
    assert battery.power_w == pytest.approx(-3_000.0)
    assert values["dc_power"] == pytest.approx(pv.dc_power_w)  # power_w: PV alone


@pytest.mark.parametrize("name", VENDOR_SITES)
def test_vendor_meter_phases_sum_and_counters_integrate(name: str) -> None:
    site, devices = served(name)
    meter = devices["grid_meter"].point_values()
    phases = sum(float(meter[f"l{k}_power"] or 0.0) for k in (1, 2, 3))
    total_point = "export_power" if name == "sungrow-workshop" else "power"
    assert phases == pytest.approx(float(meter[total_point] or 0.0), rel=1e-6, abs=1e-3)
    model = site.model
    inverter = "hybrid" if name == "sungrow-workshop" else "inverter"
    pv = model.pv[inverter]
    before_pv, before_import = pv.energy_wh, model.meters["grid_meter"].counter.import_wh
    powers, pv_powers = [], []
    for _ in range(60):
        model.advance(model.t_s + 60.0)
        powers.append(model.meters["grid_meter"].counter.power_w)
        pv_powers.append(pv.power_w)
    hour_import = model.meters["grid_meter"].counter.import_wh - before_import
    assert hour_import == pytest.approx(sum(max(0.0, p) for p in powers) / 60, rel=1e-6)
    assert pv.energy_wh - before_pv == pytest.approx(sum(pv_powers) / 60, rel=1e-6)
    values = devices[inverter].point_values()
    energy = values["energy" if name != "sungrow-workshop" else "pv_energy"]
    assert energy == pytest.approx(pv.energy_wh)


def test_huawei_settings_stay_as_written() -> None:
    """The LUNA2000's maximum powers and cut-offs, the SUN2000's derating: settings that
    stay as written — and act on the physics."""
    site, devices = served("huawei-shop")
    battery_device, inverter_device = devices["battery"], devices["inverter"]
    assert battery_device.write_value("max_discharging_power", 1_000) is None
    assert battery_device.write_value("discharging_cutoff", 20.0) is None
    assert inverter_device.write_value("active_power_derating", 30.0) is None
    assert battery_device.write_value("working_mode", 1) is not None  # read only here
    model = site.model
    model.batteries["battery"].set_forced(4_000.0)
    for _ in range(120):
        model.advance(model.t_s + 60.0)
    assert model.batteries["battery"].power_w <= 1_000.0 + 1e-6
    values = battery_device.point_values()
    assert (values["max_discharging_power"], values["discharging_cutoff"]) == (1_000, 20.0)
    assert inverter_device.point_values()["active_power_derating"] == 30.0
    assert model.pv["inverter"].power_w <= 0.3 * 10_000.0 + 1e-6
