"""Semantic device classes read by capability and set controls by the map's recipes;
the protocol's driver encodes the writes (here checked down to the request frames)."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from drivers.codec import decode
from drivers.devices import Battery, HeatPump, Inverter, Meter, Relay, Write, device_class
from drivers.frames import Function, Request
from drivers.maploader import get_map
from drivers.modbus import ModbusDriver, ModbusExchange
from drivers.points import WriteRangeError
from drivers.protocol import Framing


def test_meter_reads_through_capabilities_whatever_the_protocol() -> None:
    for model in ("sdm630", "dtsu666", "dlt645-3phase"):
        device_map = get_map(model)
        caps = device_map.capabilities
        meter = Meter(device_map, {caps["power_w"]: -1500.0, caps["import_wh"]: 1.0e6,
                                   caps["export_wh"]: 2.0e5})
        assert (meter.power_w, meter.import_wh, meter.export_wh) == (-1500.0, 1.0e6, 2.0e5)
        assert meter.frequency_hz is None  # not read in this poll
    with pytest.raises(TypeError, match="not a meter"):
        Meter(get_map("relay16"), {})


def _requests(driver: ModbusDriver, write: Write, latest: Mapping[str, object]) -> list[Request]:
    operation = driver.write(write, latest)  # type: ignore[arg-type]
    requests = []
    while (exchange := operation.next_exchange()) is not None:
        assert isinstance(exchange, ModbusExchange)
        requests.append(exchange.request)
        break  # the write itself; the read-back follows once it is answered
    return requests


def test_inverter_power_limit_follows_the_maps_recipe() -> None:
    inverter_map = get_map("sunspec-inverter")
    latest = {"controls.WMaxLimPct_SF": -1}
    inverter = Inverter(inverter_map, latest)
    writes = inverter.limit_power(42.5, revert_s=60)
    assert [(w.point, w.value) for w in writes] == [
        ("controls.WMaxLimPct_RvrtTms", 60), ("controls.WMaxLimPct", 42.5),
        ("controls.WMaxLim_Ena", 1)]
    driver = ModbusDriver(inverter_map, 1, Framing.STREAM)
    (request,) = _requests(driver, writes[1], latest)
    assert request.function is Function.WRITE_SINGLE_REGISTER
    assert request.values == (425,)
    assert decode(inverter_map.point("controls.WMaxLimPct"), [425], -1) == 42.5  # type: ignore[arg-type]
    assert [w.point for w in inverter.release_power_limit()] == ["controls.WMaxLim_Ena"]
    with pytest.raises(WriteRangeError, match="outside 0–100"):
        inverter.limit_power(120, revert_s=60)
    with pytest.raises(WriteRangeError, match=r"scale factor .* has not been read"):
        _requests(driver, writes[1], {})


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
    with pytest.raises(WriteRangeError, match="max_charge_w is not known yet"):
        Battery(get_map("sunspec-battery"), {}).set_power_w(1000, revert_s=30)


def test_heat_pump_sg_ready_and_setpoint() -> None:
    heat_pump = HeatPump(get_map("sg-ready-heatpump"), {"sg_ready_state": 2})
    assert heat_pump.sg_ready_state == 2
    assert [(w.point, w.value) for w in heat_pump.set_sg_ready_state(1)] == [
        ("sg_ready_state", 1)]
    with pytest.raises(WriteRangeError, match="1–4"):
        heat_pump.set_sg_ready_state(5)
    assert [w.value for w in heat_pump.set_flow_setpoint_c(45.0)] == [45.0]
    with pytest.raises(WriteRangeError, match="outside 20–60"):
        heat_pump.set_flow_setpoint_c(75.0)
    assert [(w.point, w.value) for w in heat_pump.release_control("sg_ready")] == [
        ("sg_ready_state", 2)]


def test_relay_channels_and_watchdog() -> None:
    relay_map = get_map("relay16")
    relay = Relay(relay_map, {"relay_3": False})
    assert relay.channel_count == 16
    assert relay.channel_on(3) is False
    assert relay.channel_on(4) is None
    write = relay.set_channel(3, True)
    assert (write.point, write.value) == ("relay_3", True)
    (request,) = _requests(ModbusDriver(relay_map, 1, Framing.SERIAL), write, {})
    assert (request.function, request.address, request.values) == (
        Function.WRITE_SINGLE_COIL, 2, (1,))
    assert [(w.point, w.value) for w in relay.arm_watchdog(90)] == [("watchdog_timeout", 90)]


def test_a_device_without_the_control_refuses_it() -> None:
    meter = Meter(get_map("sdm630"), {})
    assert not meter.offers("power_limit")
    with pytest.raises(WriteRangeError, match="offers no power_limit control"):
        meter.set_control("power_limit", 50)


def test_device_class_for_every_kind() -> None:
    for model in ("sdm630", "sunspec-inverter", "sunspec-battery", "sg-ready-heatpump",
                  "relay16", "dc-bus-converter", "esp32-submeter", "dlt645-1phase"):
        device_map = get_map(model)
        assert device_class(device_map).kind == device_map.kind
