"""mbpoll (Debian's, an independent Modbus client) reads every simulated meter at the
addresses its vendor documents, with the function codes and block sizes the real meter
accepts, and gets the real meter's exceptions for what it refuses. Each test names the
document and address it reads."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator

import pytest
from tests_support import free_port, mbpoll, polled_values, simulated, site_from_text

from simulators.physics.site import MeterModel
from simulators.runner import SiteRunner

CT_RATIO = 80.0  # the grid meter on 400/5 A current transformers
UNITS = {"dtsu666": 1, "sdm630": 2, "ddsu666": 3, "adw300": 4, "adl400": 5}


def meters_site(port: int) -> str:
    parts = ['[site]\nid = "meters"\n',
             f'[[lines]]\nname = "gw"\ntransport = "tcp"\nhost = "127.0.0.1"\nport = {port}\n']
    for index, (model, unit) in enumerate(UNITS.items()):
        ratio = f", ct_ratio = {CT_RATIO}" if model == "dtsu666" else ""
        parts.append(f'[[loads]]\nname = "load_{model}"\nrated_w = {8000 + 3000 * index}.0\n'
                     'simulation = { profile = "constant", power_factor = 0.9 }\n')
        parts.append(f'[[devices]]\nname = "{model}"\nmodel = "{model}"\nline = "gw"\n'
                     f'unit = {unit}\nsimulation = {{ measures = ["load_{model}"], '
                     f'import_wh = {123_000 + 1000 * index}.0, export_wh = 4000.0{ratio} }}\n')
    return "\n".join(parts)


@pytest.fixture
async def meters() -> AsyncIterator[tuple[SiteRunner, int]]:
    port = free_port()
    async with simulated(site_from_text(meters_site(port))) as runner:
        yield runner, port


#: mbpoll names the tables by their reference prefix: 3x input, 4x holding registers.
MBPOLL_TABLE = {"input": "3", "holding": "4"}


async def read(port: int, model: str, table: str, ref: int, count: int = 1,
               kind: str = "float") -> tuple[dict[int, float], str]:
    """mbpoll one read (FC 04 for ``input``, FC 03 for ``holding``) of ``count`` values
    from 0-based ``ref``, big-endian words for 32-bit types (``kind`` float or int; "" a
    16-bit word)."""
    fmt = f"{MBPOLL_TABLE[table]}:{kind}" if kind else MBPOLL_TABLE[table]
    args = ["-m", "tcp", "-a", str(UNITS[model]), "-0", "-r", str(ref), "-c", str(count),
            "-t", fmt, "-1", "-o", "3", "-p", str(port)]
    if kind:
        args.append("-B")
    output = await mbpoll(*args, "127.0.0.1")
    return polled_values(output), output


def meter_of(runner: SiteRunner, name: str) -> MeterModel:
    return runner.site.model.meters[name]


async def test_dtsu666_answers_fc03_and_fc04_on_the_secondary_side(
        meters: tuple[SiteRunner, int]) -> None:
    """Chint quick manual Table 3: Ua at 2006H (0.1 V), Ia at 200CH (0.001 A), Pt at
    2012H (0.1 W), IrAt at 0006H; secondary values: I = raw × IrAt × 0.001 A. FC 04 as
    OpenEMS reads it answers the same."""
    runner, port = meters
    meter = meter_of(runner, "dtsu666")
    phases = meter.phases(runner.site.model.t_s)
    holding, _ = await read(port, "dtsu666", "holding", 0x2006, 6)  # Ua Ub Uc Ia Ib Ic
    inputs, _ = await read(port, "dtsu666", "input", 0x2006, 6)
    assert holding == inputs
    ratio, _ = await read(port, "dtsu666", "holding", 0x0006, 1, kind="")  # IrAt, signed word
    assert ratio[0x0006] == CT_RATIO
    for k, phase in enumerate(phases):
        assert holding[0x2006 + 2 * k] / 10 == pytest.approx(phase.voltage_v, rel=1e-5)
        secondary = holding[0x200C + 2 * k] / 1000
        assert secondary == pytest.approx(phase.current_a / CT_RATIO, rel=1e-5)
        assert secondary < 6.0  # the DTSU666-CT's 1.5(6) A rating
    power, _ = await read(port, "dtsu666", "input", 0x2012, 4)  # Pt Pa Pb Pc
    assert power[0x2012] / 10 * CT_RATIO == pytest.approx(meter.counter.power_w, rel=1e-5)
    assert power[0x2014] + power[0x2016] + power[0x2018] == pytest.approx(power[0x2012],
                                                                          rel=1e-5)


async def test_dtsu666_serves_both_energy_blocks_with_per_phase_energies(
        meters: tuple[SiteRunner, int]) -> None:
    """Energy in kWh × IrAt: 401EH ImpEp / 4028H ExpEp (Chint quick manual Table 3),
    101EH ImpEp with 1020H/1022H/1024H per phase and 1028H ExpEp (mbmd dtsu666.go), 4000H
    (OpenEMS, FC 04), Q1Eq 4032H; whole blocks in one read as drivers on hardware do."""
    runner, port = meters
    meter = meter_of(runner, "dtsu666")
    block_4000, _ = await read(port, "dtsu666", "input", 0x4000, 41)  # 82 registers, FC 04
    block_1000, _ = await read(port, "dtsu666", "holding", 0x101E, 10)
    imported = meter.counter.import_wh / 1000 / CT_RATIO
    exported = meter.counter.export_wh / 1000 / CT_RATIO
    assert block_4000[0x401E] == pytest.approx(imported, rel=1e-5)
    assert block_4000[0x4028] == pytest.approx(exported, rel=1e-5)
    assert block_4000[0x4000] == pytest.approx(imported + exported, rel=1e-5)
    assert block_4000[0x4032] == pytest.approx(meter.quadrant_varh[0] / 1000 / CT_RATIO,
                                               rel=1e-5)
    assert block_4000[0x4020] == 0.0  # reserved in Table 3
    assert block_1000[0x101E] == block_4000[0x401E]
    assert block_1000[0x1028] == block_4000[0x4028]
    assert block_1000[0x1020] + block_1000[0x1022] + block_1000[0x1024] == pytest.approx(
        block_1000[0x101E], rel=1e-5)
    assert len({block_1000[0x1020], block_1000[0x1022], block_1000[0x1024]}) == 3
    marcin, _ = await read(port, "dtsu666", "input", 0x2000, 35)  # 0x2000-0x2045 as one read
    assert all(math.isfinite(v) for v in marcin.values())
    _, refused = await read(port, "dtsu666", "input", 0x3000, 1)
    assert "Illegal data address" in refused


async def test_sdm630_answers_an_80_register_read_with_numbers_and_refuses_82(
        meters: tuple[SiteRunner, int]) -> None:
    """Eastron SDM630 Modbus MID V2 manual 1.2: input registers 30001-30080 in one read
    (its stated maximum of 80 registers), phase angle 30067 (0042H); over 80 registers
    the meter answers an exception (illegal data value)."""
    runner, port = meters
    values, output = await read(port, "sdm630", "input", 0x0000, 40)
    assert len(values) == 40, output
    assert all(math.isfinite(v) for v in values.values()), output
    meter = meter_of(runner, "sdm630")
    assert values[0x0034] == pytest.approx(meter.counter.power_w, rel=1e-5)
    angle = math.degrees(math.atan2(meter.reactive_var, meter.counter.power_w))
    assert values[0x0042] == pytest.approx(angle, abs=1e-3)
    assert 20 < values[0x0042] < 30  # a load at power factor 0.9 lags by 25.8°
    assert values[0x0024] != 0.0  # phase 1 angle
    line, _ = await read(port, "sdm630", "input", 0x00C8, 4)  # 30201-30207 line voltages
    assert 390 < line[0x00C8] < 410
    _, refused = await read(port, "sdm630", "input", 0x0000, 41)
    assert "Illegal data value" in refused


async def test_ddsu666_answers_the_block_the_esp32_firmware_reads(
        meters: tuple[SiteRunner, int]) -> None:
    """Chint DDSU666 (as OpenEMS and Tasmota read it): 2000H U, 2002H I, 2004H P kW,
    200AH PF, 200EH F, 4000H ImpEp kWh: 2000H-200FH in one read, as the firmware does."""
    runner, port = meters
    meter = meter_of(runner, "ddsu666")
    values, output = await read(port, "ddsu666", "holding", 0x2000, 8)
    phase = meter.phases(runner.site.model.t_s)[0]
    assert values[0x2000] == pytest.approx(phase.voltage_v, rel=1e-5), output
    assert values[0x2004] * 1000 == pytest.approx(meter.counter.power_w, rel=1e-5)
    assert values[0x2000] * values[0x2002] * values[0x200A] * 1.0 == pytest.approx(
        values[0x2004] * 1000, rel=1e-4)  # single phase: P = U·I·PF
    assert values[0x200C] == 0.0
    energy, _ = await read(port, "ddsu666", "holding", 0x4000, 1)
    assert energy[0x4000] == pytest.approx(meter.counter.import_wh / 1000, rel=1e-5)


async def test_acrel_meters_answer_their_integer_registers(
        meters: tuple[SiteRunner, int]) -> None:
    """Acrel ADW300 (evcc acrel-adw300.yaml): holding 20 Ua 0.1 V, 26 Ia 0.01 A, 36 total
    P int32 W, 62 forward energy int32 0.01 kWh. Acrel ADL400: 0064H Ia 0.01 A, 016AH
    total P int32 W, 0000H total energy int32 0.01 kWh."""
    runner, port = meters
    adw = meter_of(runner, "adw300")
    words, _ = await read(port, "adw300", "holding", 20, 3, kind="")
    assert words[20] / 10 == pytest.approx(adw.phases(runner.site.model.t_s)[0].voltage_v,
                                           abs=0.051)
    power, output = await read(port, "adw300", "holding", 36, 1, kind="int")
    assert power[36] == pytest.approx(adw.counter.power_w, abs=0.5), output
    energy, _ = await read(port, "adw300", "holding", 62, 1, kind="int")
    assert energy[62] / 100 == pytest.approx(adw.counter.import_wh / 1000, abs=0.005)
    adl = meter_of(runner, "adl400")
    currents, _ = await read(port, "adl400", "holding", 0x0064, 3, kind="")
    phases = adl.phases(runner.site.model.t_s)
    for k in range(3):
        assert currents[0x64 + k] / 100 == pytest.approx(phases[k].current_a, abs=0.0051)
    total, _ = await read(port, "adl400", "holding", 0x016A, 1, kind="int")
    assert total[0x016A] == pytest.approx(adl.counter.power_w, abs=0.5)
    combined, _ = await read(port, "adl400", "holding", 0x0000, 1, kind="int")
    assert combined[0] / 100 == pytest.approx(
        (adl.counter.import_wh + adl.counter.export_wh) / 1000, abs=0.005)
    _, refused = await read(port, "adl400", "holding", 0x0067, 1, kind="")
    assert "Illegal data address" in refused
