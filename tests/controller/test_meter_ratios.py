"""The gateway reports the primary side of meters on current transformers: it reads the
ratio each meter holds with every value and multiplies (Chint's conversion table), over
Modbus (DTSU666-CT, FC 03) and DL/T 645 (the DTSU666 in its factory protocol)."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests_support import (
    DLT645_POINTS,
    dlt645_site,
    free_port,
    polling,
    serial_line,
    simulated,
    site_from_text,
)

from drivers.dlt645_driver import Dlt645Driver
from drivers.reading import Reading

CT_RATIO = 80.0  # 400/5 A


def value_of(reading: Reading | None) -> float:
    assert reading is not None
    value = reading.value
    assert isinstance(value, int | float)
    assert not isinstance(value, bool)
    return float(value)


async def test_the_gateway_reports_a_dtsu666_ct_meter_on_the_primary_side() -> None:
    port = free_port()
    spec = site_from_text(f'''
[site]
id = "ct-meter"
[[lines]]
name = "gw"
transport = "tcp"
host = "127.0.0.1"
port = {port}
[[loads]]
name = "feeder"
rated_w = 180000.0
simulation = {{ profile = "constant", power_factor = 0.92 }}
[[devices]]
name = "grid"
model = "dtsu666"
line = "gw"
unit = 1
role = "grid"
[devices.simulation]
measures = ["feeder"]
import_wh = 2500000.0
export_wh = 1000.0
ct_ratio = {CT_RATIO}
''')
    async with simulated(spec) as runner, polling(spec) as polled:
        points = ["l1_current", "l2_current", "l3_current", "total_power", "l1_voltage",
                  "import_energy", "l1_import_energy", "current_transformer_ratio"]
        await polled.all_good({"grid": points}, timeout_s=15)
        meter = runner.site.model.meters["grid"]
        phases = meter.phases(runner.site.model.t_s)
        assert value_of(polled.latest("grid", "current_transformer_ratio")) == CT_RATIO
        for k, phase in enumerate(phases, start=1):
            current = value_of(polled.latest("grid", f"l{k}_current"))
            assert current == pytest.approx(phase.current_a, rel=1e-5)
            assert current > 80.0  # beyond a direct-connect DTSU666: only a CT meter
        assert value_of(polled.latest("grid", "total_power")) == pytest.approx(
            meter.counter.power_w, rel=1e-5)
        assert value_of(polled.latest("grid", "l1_voltage")) == pytest.approx(
            phases[0].voltage_v, rel=1e-5)  # no PT: UrAt = 10, ratio 1
        assert value_of(polled.latest("grid", "import_energy")) == pytest.approx(
            meter.counter.import_wh, rel=1e-6)
        assert value_of(polled.latest("grid", "l1_import_energy")) == pytest.approx(
            meter.phase_counters[0].import_wh, rel=1e-6)


async def test_the_gateway_polls_a_dtsu666_in_dl_t_645_mode_through_its_ratio(
        tmp_path: Path) -> None:
    spec = dlt645_site(serial_line(f"{tmp_path}/rs485"), {"grid": "000012345678"},
                       model="dtsu666-dlt645", ct_ratio=CT_RATIO)
    async with simulated(spec) as runner, polling(spec, runner.serial_ports) as polled:
        await polled.all_good({"grid": [*DLT645_POINTS, "ct_ratio"]}, timeout_s=20)
        meter = runner.site.model.meters["grid"]
        driver = polled.gateway.scheduler_of("grid").device("grid").driver
        assert isinstance(driver, Dlt645Driver)
        planned = [read.di for read in driver.plan(["power"])]
        assert planned == [0x02030000, 0x04000307, 0x04000306]  # power, PT, CT ratio
        assert value_of(polled.latest("grid", "ct_ratio")) == CT_RATIO
        # XX.XXXX kW and XXXXXX.XX kWh on the secondary side: resolution × 80 primary
        assert value_of(polled.latest("grid", "power")) == pytest.approx(
            meter.counter.power_w, abs=0.05 * CT_RATIO)
        assert value_of(polled.latest("grid", "import_energy")) == pytest.approx(
            meter.counter.import_wh, abs=5 * CT_RATIO)
        phases = meter.phases(runner.site.model.t_s)
        assert value_of(polled.latest("grid", "l1_voltage")) == pytest.approx(
            phases[0].voltage_v, abs=0.051)
