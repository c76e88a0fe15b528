"""Semantic device classes read by capability and encode checked writes."""

from __future__ import annotations

import pytest

from drivers.codec import WriteRangeError, decode
from drivers.devices import Battery, HeatPump, Inverter, Meter, Relay, device_class
from drivers.maploader import get_map
from drivers.points import Table


def test_meter_reads_through_capabilities_on_both_meters() -> None:
    for model in ("sdm630", "dtsu666"):
        device_map = get_map(model)
        caps = device_map.capabilities
        meter = Meter(device_map, {caps["power_w"]: -1500.0, caps["import_wh"]: 1.0e6,
                                   caps["export_wh"]: 2.0e5})
        assert (meter.power_w, meter.import_wh, meter.export_wh) == (-1500.0, 1.0e6, 2.0e5)
        assert meter.frequency_hz is None  # not read in this poll
    with pytest.raises(TypeError, match="not a meter"):
        Meter(get_map("relay16"), {})


def test_inverter_power_limit_writes_with_scale_factor() -> None:
    inverter_map = get_map("sunspec-inverter")
    inverter = Inverter(inverter_map, {"controls.WMaxLimPct_SF": -1})
    writes = inverter.limit_power(42.5, revert_s=60)
    assert [w.point for w in writes] == ["controls.WMaxLimPct_RvrtTms", "controls.WMaxLimPct",
                                         "controls.WMaxLim_Ena"]
    pct = writes[1]
    assert pct.table is Table.HOLDING
    assert pct.values == (425,)
    assert decode(inverter_map.point(pct.point), list(pct.values), -1) == 42.5
    with pytest.raises(WriteRangeError, match="outside 0–100"):
        inverter.limit_power(120, revert_s=60)
    with pytest.raises(WriteRangeError, match=r"scale factor .* unknown"):
        Inverter(inverter_map, {}).limit_power(50, revert_s=60)


def test_inverter_limit_reads_none_when_disabled() -> None:
    inverter_map = get_map("sunspec-inverter")
    values = {"controls.WMaxLimPct": 60.0, "controls.WMaxLim_Ena": 0}
    assert Inverter(inverter_map, values).power_limit_pct is None
    values["controls.WMaxLim_Ena"] = 1
    assert Inverter(inverter_map, values).power_limit_pct == 60.0


def test_battery_setpoint_pins_both_limits() -> None:
    battery = Battery(get_map("sunspec-battery"), {
        "storage_basic.WChaMax": 100_000.0, "storage_basic.InOutWRte_SF": -1})
    writes = {w.point: w.value for w in battery.set_power_w(-25_000, revert_s=30)}
    assert writes == {"storage_basic.InOutWRte_RvrtTms": 30, "storage_basic.InWRte": 25.0,
                      "storage_basic.OutWRte": -25.0, "storage_basic.StorCtl_Mod": 3}
    with pytest.raises(WriteRangeError):
        battery.set_power_w(150_000, revert_s=30)
    with pytest.raises(WriteRangeError, match="max_charge_w unknown"):
        Battery(get_map("sunspec-battery"), {}).set_power_w(1000, revert_s=30)


def test_heat_pump_sg_ready_and_setpoint() -> None:
    heat_pump = HeatPump(get_map("sg-ready-heatpump"), {"sg_ready_state": 2})
    assert heat_pump.sg_ready_state == 2
    assert heat_pump.set_sg_ready_state(1).values == (1,)
    with pytest.raises(WriteRangeError, match="1–4"):
        heat_pump.set_sg_ready_state(5)
    assert heat_pump.set_flow_setpoint_c(45.0).values == (450,)
    with pytest.raises(WriteRangeError, match="outside 20–60"):
        heat_pump.set_flow_setpoint_c(75.0)


def test_relay_channels() -> None:
    relay = Relay(get_map("relay16"), {"relay_3": False})
    assert relay.channel_count == 16
    assert relay.channel_on(3) is False
    assert relay.channel_on(4) is None
    write = relay.set_channel(3, True)
    assert (write.table, write.address, write.values) == (Table.COIL, 2, (1,))


def test_device_class_for_every_kind() -> None:
    for model in ("sdm630", "sunspec-inverter", "sunspec-battery", "sg-ready-heatpump",
                  "relay16", "dc-bus-converter", "esp32-submeter"):
        device_map = get_map(model)
        assert device_class(device_map).kind == device_map.kind
