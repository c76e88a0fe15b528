"""The 直柔 bus physics: droop and grid-limit modes, the watchdog fallback, storage SoC
limits, PV curtailment, load classes giving way by their curves, and the curve registers
of the simulated devices."""

from __future__ import annotations

import pytest

from drivers.dc_curves import DcLoadClass, VoltageCurve
from simulators.dcbindings import DcLoadsBinding, DcStorageBinding, InterfaceConverterBinding
from simulators.physics.dcgrid import ConverterMode, DcGrid, DcPv, office_floor_bus

NOMINAL_V = 375.0
FLOOR_V, CEILING_V = NOMINAL_V * 0.90, NOMINAL_V * 1.05


def bus(*, soc_pct: float = 60.0, pv_w: float = 15_000.0, storage: bool = True) -> DcGrid:
    return office_floor_bus(soc_pct=soc_pct, pv_w=pv_w, storage=storage)


def test_curve_interpolates_and_knows_its_knee() -> None:
    curve = VoltageCurve.of([340.0, 360.0, 370.0], [20.0, 60.0, 100.0])
    assert curve.fraction_pct(330.0) == 20.0
    assert curve.fraction_pct(350.0) == pytest.approx(40.0)
    assert curve.fraction_pct(380.0) == 100.0
    assert curve.knee_v == 370.0
    assert curve.floor_pct == 20.0
    assert len(curve.padded().points) == 4
    with pytest.raises(ValueError, match="increase"):
        VoltageCurve.of([360.0, 350.0], [0.0, 100.0])
    with pytest.raises(ValueError, match="fraction"):
        VoltageCurve.of([350.0, 360.0], [0.0, 120.0])


def test_droop_holds_the_bus_in_band_through_half_load_steps() -> None:
    for factor in (1.5, 0.5):
        grid = bus()
        assert grid.trace is not None
        for load in grid.loads.values():
            load.demand *= factor
        grid.trace.clear()
        grid.advance(grid.t_s + 1.0)
        voltages = [v for _, v in grid.trace]
        assert min(voltages) >= FLOOR_V
        assert max(voltages) <= CEILING_V
        # settled: the last half second moves less than 0.1 V
        tail = [v for t, v in grid.trace if t >= grid.t_s - 0.5]
        assert max(tail) - min(tail) < 0.1
        assert grid.net_power_w(grid.voltage_v) == pytest.approx(0.0, abs=50.0)


def test_grid_limit_draws_the_limit_and_loads_give_way_in_curve_order() -> None:
    grid = bus(storage=False)
    before = grid.converter.power_w
    grid.converter.mode = ConverterMode.GRID_LIMIT
    grid.converter.grid_limit_w = before - 12_000.0
    grid.advance(grid.t_s + 5.0)
    assert grid.converter.power_w == pytest.approx(before - 12_000.0, rel=0.01)
    fractions = {cls: load.curve.fraction_pct(grid.voltage_v)
                 for cls, load in grid.loads.items()}
    order = [DcLoadClass.LIGHTING, DcLoadClass.FAN_COIL, DcLoadClass.HEAT_PUMP,
             DcLoadClass.EV_CHARGER]  # the default curves' knees, highest first
    reduced = [cls for cls in order if fractions[cls] < 100.0]
    assert reduced == order[:len(reduced)]  # whoever gave way, all before it did too
    assert DcLoadClass.LIGHTING in reduced
    assert fractions[DcLoadClass.EV_CHARGER] == 100.0  # the last to give way has not yet
    assert FLOOR_V <= grid.voltage_v < NOMINAL_V


def test_watchdog_sends_the_converter_back_to_droop_unless_refreshed() -> None:
    grid = bus()
    converter = grid.converter
    converter.mode, converter.watchdog_s = ConverterMode.GRID_LIMIT, 5.0
    converter.grid_limit_w = 20_000.0
    converter.command(grid.t_s)
    for _ in range(4):  # refreshed every 3 s: stays
        grid.advance(grid.t_s + 3.0)
        converter.command(grid.t_s)
    assert converter.mode is ConverterMode.GRID_LIMIT
    assert converter.fallbacks == 0
    grid.advance(grid.t_s + 6.0)  # no refresh
    assert grid.converter.mode is ConverterMode.DROOP  # (re-read: advance changed it)
    assert converter.fallbacks == 1
    assert converter.power_w > 20_000.0  # droop serves the loads again


def test_protection_band_holds_the_floor_whatever_the_limit() -> None:
    grid = bus(storage=False)
    grid.converter.mode = ConverterMode.GRID_LIMIT
    grid.converter.grid_limit_w = -60_000.0
    grid.advance(grid.t_s + 10.0)
    assert FLOOR_V <= grid.voltage_v <= FLOOR_V + 0.01 * NOMINAL_V
    assert grid.converter.power_w > 0  # it supports the bus, whatever the limit


def test_storage_keeps_its_soc_limits() -> None:
    empty = bus()
    empty.storage[0].soc_pct = 10.0
    assert empty.storage[0].bus_power_w(NOMINAL_V * 0.9) == 0.0  # no discharge at the floor
    assert empty.storage[0].bus_power_w(NOMINAL_V * 1.04) < 0.0  # may charge
    full = bus()
    full.storage[0].soc_pct = 95.0
    assert full.storage[0].bus_power_w(NOMINAL_V * 1.04) == 0.0
    assert full.storage[0].bus_power_w(NOMINAL_V * 0.92) == pytest.approx(30_000.0)
    grid = bus(soc_pct=50.0)
    grid.converter.mode = ConverterMode.GRID_LIMIT
    grid.converter.grid_limit_w = 0.0
    grid.advance(grid.t_s + 600.0)  # discharging for ten minutes
    assert grid.storage[0].soc_pct < 50.0


def test_pv_curtails_above_its_threshold() -> None:
    pv = DcPv(10_000.0, 380.0, 390.0)
    assert pv.bus_power_w(375.0) == 10_000.0
    assert pv.bus_power_w(385.0) == pytest.approx(5_000.0)
    assert pv.bus_power_w(395.0) == 0.0
    grid = bus(pv_w=60_000.0, storage=False)  # far more PV than the loads take
    grid.converter.mode = ConverterMode.GRID_LIMIT
    grid.converter.grid_limit_w = 0.0  # and no export allowed
    grid.advance(grid.t_s + 5.0)
    assert grid.pv[0].power_w < 60_000.0
    assert grid.voltage_v <= CEILING_V + 0.01 * NOMINAL_V


def test_curve_registers_take_a_curve_when_it_is_whole() -> None:
    grid = bus()
    binding = DcLoadsBinding(grid)
    lighting = grid.loads[DcLoadClass.LIGHTING]
    original = lighting.curve
    binding.write("lighting_curve_v1", 300.0)  # still increasing: taken at once
    assert lighting.curve.points[0][0] == 300.0
    binding.write("lighting_curve_v2", 290.0)  # below v1: held, not taken
    assert lighting.curve.points[1] == original.padded().points[1]
    assert binding.values()["lighting_curve_v2"] == 290.0  # the register holds it
    binding.write("lighting_curve_v1", 280.0)  # now whole again
    assert lighting.curve.points[:2] == ((280.0, original.points[0][1]),
                                         (290.0, original.padded().points[1][1]))
    with pytest.raises(KeyError):
        binding.write("lighting_curve_v9", 300.0)
    storage = DcStorageBinding(grid, grid.storage[0])
    storage.write("curve_pct1", 50.0)
    assert grid.storage[0].curve.points[0][1] == 50.0


def test_converter_binding_refuses_beyond_rating_and_refreshes_the_watchdog() -> None:
    grid = bus()
    binding = InterfaceConverterBinding(grid)
    with pytest.raises(ValueError, match="rating"):
        binding.write("grid_limit_w", 90_000.0)
    binding.write("watchdog_s", 10.0)
    binding.write("converter_mode", 1)
    assert binding.values()["active_mode"] == 1
    grid.advance(grid.t_s + 11.0)
    assert binding.values()["active_mode"] == 0
    assert binding.values()["fallbacks"] == 1
