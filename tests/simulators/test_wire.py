"""Third-party clients read the simulators: mbpoll (Debian), pyModbusTCP, and
pysunspec2's own SunSpec client. None of them share code with our drivers."""

from __future__ import annotations

import asyncio

import pytest
from tests_support import mbpoll, polled_values

from simulators.runner import SiteRunner


async def test_mbpoll_reads_the_tcp_simulator(running_site: SiteRunner) -> None:
    spec, model = running_site.site.spec, running_site.site.model
    heat_pump = spec.devices["heat_pump"]
    output = await mbpoll("-m", "tcp", "-a", "1", "-0", "-r", "0", "-c", "4", "-t", "3",
                          "-1", "-p", str(heat_pump.line.port), heat_pump.line.host)
    values = polled_values(output)
    hp = model.heat_pumps["heat_pump"]
    assert values[3] / 10 == pytest.approx(hp.indoor_c, abs=0.051)  # s16, 0.1 °C
    assert values[2] / 10 == pytest.approx(hp.outdoor_c(hp.t_s), abs=0.051)
    output = await mbpoll("-m", "tcp", "-a", "1", "-0", "-r", "500", "-c", "1", "-t", "3",
                          "-1", "-p", str(heat_pump.line.port), heat_pump.line.host)
    assert "Illegal data address" in output


async def test_mbpoll_reads_floats_over_the_rtu_line(running_site: SiteRunner) -> None:
    spec, model = running_site.site.spec, running_site.site.model
    feeder = spec.devices["heat_pump_meter"]  # SDM630, unit 2 on the RS-485 line
    port = running_site.serial_ports[feeder.line.serial_port]
    output = await mbpoll("-m", "rtu", "-b", "9600", "-P", "none", "-a", "2", "-0", "-r", "52",
                          "-c", "1", "-t", "3:float", "-B", "-1", "-o", "2", port)
    values = polled_values(output)
    assert values[52] == pytest.approx(model.meters["heat_pump_meter"].counter.power_w,
                                       rel=1e-4), output


async def test_pymodbustcp_reads_relay_coils(running_site: SiteRunner) -> None:
    from pyModbusTCP.client import ModbusClient

    relay = running_site.site.spec.devices["relay_b"]
    running_site.site.model.relays["relay_b"].write_channel(4, False)

    def read() -> list[bool] | None:
        client = ModbusClient(host=relay.line.host, port=relay.line.port,
                              unit_id=2, timeout=2.0)
        try:
            return client.read_coils(0, 16)  # type: ignore[no-any-return]
        finally:
            client.close()

    bits = await asyncio.to_thread(read)
    assert bits is not None
    assert bits[:5] == [True, True, True, False, True]


async def test_pysunspec2_scans_the_simulated_inverter_and_battery(
        running_site: SiteRunner) -> None:
    import sunspec2.modbus.client as sunspec_client

    spec, model = running_site.site.spec, running_site.site.model

    def scan(name: str) -> object:
        device = spec.devices[name]
        client = sunspec_client.SunSpecModbusClientDeviceTCP(
            slave_id=device.unit, ipaddr=device.line.host, ipport=device.line.port,
            timeout=3)
        try:
            client.scan()
            return client
        finally:
            client.close()

    inverter = await asyncio.to_thread(scan, "pv_inverter")
    models = set(inverter.models)  # type: ignore[attr-defined]
    assert {1, 103, 120, 121, 122, 123, 160} <= models
    inv = inverter.models[103][0]  # type: ignore[attr-defined]
    assert inv.W.cvalue == pytest.approx(model.pv["pv_inverter"].power_w, abs=5.0)
    assert inv.PF.cvalue == pytest.approx(100.0)  # percent: unity is 100, not 1
    assert inverter.common[0].Mn.value == "PEDF Toolkit"  # type: ignore[attr-defined]
    battery = await asyncio.to_thread(scan, "battery")
    assert {1, 802, 124} <= set(battery.models)  # type: ignore[attr-defined]
    soc = battery.models[802][0].SoC.cvalue  # type: ignore[attr-defined]
    assert soc == pytest.approx(model.batteries["battery"].soc_pct, abs=0.05)
