"""Physics models, stepped by a manual clock: energy balance, SoC bounds, SG-Ready,
power-limit revert, relay watchdog, DC-bus droop."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from drivers.site import load_site
from simulators.physics.battery import BatteryConfig, BatteryModel
from simulators.physics.dcbus import DcBus, DcBusConfig
from simulators.physics.heatpump import BuildingConfig, HeatPump, HeatPumpConfig
from simulators.physics.loads import RelayModule
from simulators.physics.pv import PvConfig, PvInverter
from simulators.physics.solar import Climate, Location
from simulators.sitefile import build_site

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "jinan-office.toml"
ZONE = ZoneInfo("Asia/Shanghai")


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=ZONE).timestamp()


def test_energy_balance_at_the_grid_meter_over_a_day() -> None:
    site = build_site(load_site(EXAMPLE), start_s=at("2026-06-22T00:00:00"))
    model = site.model
    grid = model.meters["grid_meter"].counter
    feeder = model.meters["heat_pump_meter"].counter
    start_import, start_export = grid.import_wh, grid.export_wh
    start_feeder = feeder.import_wh
    pv = model.pv["pv_inverter"]
    battery = model.batteries["battery"]
    heat_pump = model.heat_pumps["heat_pump"]
    pv_start, hp_start = pv.energy_wh, heat_pump.energy_wh
    loads_start = sum(load.energy_wh for load in model.loads.values() if load.dc_bus is None)
    # Drive the battery so it charges in the morning and discharges in the evening.
    t = model.t_s
    for step in range(24 * 60):
        t += 60.0
        if step == 8 * 60:
            battery.set_control(charge_limited=True, discharge_limited=True,
                                charge_limit_pct=40.0, discharge_limit_pct=-40.0)
        if step == 17 * 60:
            battery.set_control(charge_limit_pct=-50.0, discharge_limit_pct=50.0)
        model.advance(t)
    net_grid = (grid.import_wh - start_import) - (grid.export_wh - start_export)
    consumption = (
        sum(load.energy_wh for load in model.loads.values() if load.dc_bus is None) - loads_start
        + model.energy_wh["base_load"] + (heat_pump.energy_wh - hp_start)
        + model.energy_wh["dc_bus"] + battery.charged_wh - battery.discharged_wh
    )
    generation = pv.energy_wh - pv_start
    assert generation > 300_000  # a June day in Jinan on 120 kWp
    assert battery.charged_wh > 50_000
    assert battery.discharged_wh > 50_000
    assert grid.export_wh > start_export  # midday surplus was exported
    assert net_grid == pytest.approx(consumption - generation, rel=1e-9, abs=1e-6)
    assert feeder.import_wh - start_feeder == pytest.approx(heat_pump.energy_wh - hp_start)


def test_pv_follows_the_sun_and_temperature() -> None:
    location, climate = Location.jinan(), Climate.jinan()
    pv = PvInverter(PvConfig(peak_power_w=100_000, rated_ac_w=100_000), location, climate,
                    at("2026-06-21T00:00:00"))
    assert pv.power_w == 0.0
    powers = {}
    for hour in (6, 9, 12, 15, 18, 21):
        pv.advance(at(f"2026-06-21T{hour:02d}:15:00"))
        powers[hour] = pv.power_w
    assert powers[21] == 0.0
    assert powers[12] > powers[9] > powers[6] > 0
    assert powers[12] > powers[15] > powers[18]
    assert 60_000 < powers[12] < 100_000  # temperature-derated clear-sky noon
    winter = PvInverter(PvConfig(), location, climate, at("2026-12-21T12:15:00"))
    assert 0 < winter.power_w < powers[12]


def test_power_limit_caps_output_and_reverts_after_its_timeout() -> None:
    start = at("2026-06-21T11:00:00")
    pv = PvInverter(PvConfig(), Location.jinan(), Climate.jinan(), start)
    unlimited = pv.power_w
    pv.set_limit(pct=30.0, enabled=True, revert_s=120.0)
    pv.advance(start + 60)
    assert pv.power_w == pytest.approx(30_000.0)
    assert pv.limit_active
    pv.set_limit(pct=30.0)  # a refresh restarts the revert timer
    pv.advance(start + 170)
    assert pv.limit_enabled
    pv.advance(start + 181)
    assert not pv.limit_enabled
    assert pv.power_w > 30_000.0
    assert pv.power_w == pytest.approx(unlimited, rel=0.05)


def test_battery_stays_within_soc_bounds_and_loses_energy() -> None:
    config = BatteryConfig(capacity_wh=10_000, max_charge_w=5_000, max_discharge_w=5_000,
                           ramp_w_per_s=1e6, round_trip_efficiency=0.81, soc_min_pct=10)
    battery = BatteryModel(config, 0.0, soc_pct=50.0)
    battery.set_control(charge_limited=True, discharge_limited=True, charge_limit_pct=100.0,
                        discharge_limit_pct=-100.0)  # force full charge
    t = 0.0
    for _ in range(400):
        t += 30.0
        battery.advance(t)
        assert 10.0 - 1e-9 <= battery.soc_pct <= 100.0 + 1e-9
    assert battery.soc_pct == pytest.approx(100.0)
    assert battery.power_w == 0.0
    charged = battery.charged_wh
    battery.set_control(charge_limit_pct=-100.0, discharge_limit_pct=100.0)  # full discharge
    for _ in range(400):
        t += 30.0
        battery.advance(t)
        assert battery.soc_pct >= 10.0 - 1e-9
    assert battery.soc_pct == pytest.approx(10.0)
    # Stored 5000 Wh from 50 %, then released 9000 Wh of cell energy at 90 % one way.
    assert charged == pytest.approx(5_000 / 0.9)
    assert battery.discharged_wh == pytest.approx(9_000 * 0.9)


def test_battery_follows_its_setpoint_with_a_ramp_and_reverts() -> None:
    battery = BatteryModel(BatteryConfig(ramp_w_per_s=1_000.0), 0.0, soc_pct=50.0)
    battery.set_control(charge_limited=True, discharge_limited=True, charge_limit_pct=-20.0,
                        discharge_limit_pct=20.0, revert_s=60.0)
    battery.advance(10.0)
    assert battery.power_w == pytest.approx(10_000.0)  # ramping up at 1 kW/s
    battery.advance(30.0)
    assert battery.power_w == pytest.approx(20_000.0)
    battery.advance(61.0)
    assert not battery.charge_limited
    assert not battery.discharge_limited
    battery.advance(100.0)
    assert battery.power_w == 0.0


def test_a_forced_battery_holds_until_released() -> None:
    """A vendor's forced charge (Sungrow's forced mode, GoodWe's EMS mode): no timer, the
    battery holds it for as long as nobody releases it."""
    battery = BatteryModel(BatteryConfig(capacity_wh=100_000, ramp_w_per_s=1e6), 0.0,
                           soc_pct=40.0)
    battery.set_forced(-8_000.0)
    for minute in range(1, 181):
        battery.advance(60.0 * minute)
        assert battery.power_w == pytest.approx(-8_000.0)  # three hours, still charging
    battery.set_forced(None)
    battery.advance(60.0 * 181)
    assert battery.power_w == 0.0


def test_a_forced_battery_ends_by_itself_after_its_duration_or_at_its_target() -> None:
    """Huawei's forcible charge/discharge: by duration (a new command restarts it) or
    until a target SoC."""
    battery = BatteryModel(BatteryConfig(capacity_wh=10_000, ramp_w_per_s=1e6), 0.0,
                           soc_pct=50.0)
    battery.set_forced(2_000.0, duration_s=120.0)
    battery.advance(100.0)
    battery.set_forced(2_000.0, duration_s=120.0)  # renewed at t = 100 s
    battery.advance(200.0)
    assert battery.power_w == pytest.approx(2_000.0)
    battery.advance(221.0)
    assert battery.forced_w is None
    battery.advance(230.0)
    assert battery.power_w == 0.0
    battery.set_forced(-5_000.0, soc_target_pct=55.0)
    t = 230.0
    while battery.forced_w is not None and t < 3_600.0:
        t += 10.0
        battery.advance(t)
    assert battery.forced_w is None
    assert battery.soc_pct == pytest.approx(55.0, abs=0.2)  # stopped at the target
    with pytest.raises(ValueError, match="outside 0–100"):
        battery.set_forced(-1_000.0, soc_target_pct=120.0)


def test_power_caps_and_soc_window_bound_every_target() -> None:
    battery = BatteryModel(BatteryConfig(capacity_wh=10_000, ramp_w_per_s=1e6,
                                         soc_min_pct=5.0), 0.0, soc_pct=50.0)
    battery.charge_cap_w = 1_500.0  # a vendor's "maximum charging power" setting
    battery.set_forced(-4_000.0)
    battery.advance(10.0)
    assert battery.power_w == pytest.approx(-1_500.0)
    battery.max_soc_pct = 50.0  # the charging cut-off: no room left
    battery.advance(20.0)
    assert battery.power_w == 0.0
    battery.discharge_cap_w = 0.0  # Sungrow/evcc "hold": no discharge at all
    battery.set_forced(3_000.0)
    battery.advance(30.0)
    assert battery.power_w == 0.0
    battery.discharge_cap_w = 5_000.0
    battery.min_soc_pct = 49.99  # the discharging cut-off, just below the SoC
    battery.advance(60.0)
    battery.advance(600.0)
    assert battery.soc_pct == pytest.approx(49.99, abs=1e-6)
    assert battery.power_w == 0.0


def make_heat_pump(outdoor_c: float) -> HeatPump:
    return HeatPump(HeatPumpConfig(), BuildingConfig(initial_indoor_c=21.0),
                    lambda t: outdoor_c, lambda t: 0.0, 0.0)


def test_sg_ready_states_change_electric_power() -> None:
    powers = {}
    for state in (1, 2, 3, 4):
        heat_pump = make_heat_pump(0.0)
        heat_pump.sg_ready_state = state
        heat_pump.advance(600.0)
        powers[state] = heat_pump.electric_w
    assert powers[1] == 0.0
    assert 0 < powers[2] < powers[3] <= powers[4]
    assert powers[4] == pytest.approx(HeatPumpConfig().rated_electric_w)


def test_blocked_heat_pump_lets_the_building_cool_and_cop_depends_on_outdoor() -> None:
    heat_pump = make_heat_pump(-5.0)
    heat_pump.sg_ready_state = 1
    heat_pump.advance(4 * 3600.0)
    assert heat_pump.indoor_c < 20.0
    mild, cold = make_heat_pump(10.0), make_heat_pump(-10.0)
    mild.advance(300.0)
    cold.advance(300.0)
    assert mild.cop > cold.cop > 1.0


def test_relay_watchdog_switches_loads_back_on() -> None:
    relay = RelayModule(4, 0.0)
    relay.set_watchdog(30.0)
    relay.write_channel(2, False)
    relay.advance(20.0)
    assert relay.states == [True, False, True, True]
    relay.advance(31.0)
    assert relay.states == [True, True, True, True]
    assert relay.trips == 1


def test_dc_bus_voltage_sags_with_load_along_the_droop() -> None:
    bus = DcBus(DcBusConfig(nominal_voltage_v=375.0, rated_power_w=30_000.0, droop_pct=5.0), 0.0)
    bus.advance(1.0, 15_000.0)
    # Half of rated power: half of the 5 % droop below the setpoint.
    assert bus.voltage_v == pytest.approx(375.0 * (1 - 0.025), abs=0.05)
    assert bus.converter_w == pytest.approx(15_000.0, rel=1e-3)
    bus.advance(2.0, 0.0)
    assert bus.voltage_v == pytest.approx(375.0, abs=0.05)
    bus.power_limit_w = 10_000.0  # the converter cannot carry the load: the bus collapses
    bus.advance(3.0, 15_000.0)
    assert bus.loads_tripped  # undervoltage protection dropped the DC loads…
    assert bus.load_w == 0.0
    assert bus.voltage_v == pytest.approx(375.0, abs=0.5)  # …and the bus recovered
    bus.power_limit_w = 30_000.0
    bus.advance(3.0 + DcBusConfig().reconnect_s + 1.0, 15_000.0)
    assert not bus.loads_tripped
    assert bus.load_w == 15_000.0


def test_meter_phases_obey_p_equals_v_i_pf_sum_to_totals_and_integrate() -> None:
    """A three-phase meter's phases: P = V·I·PF and Q, S in every phase at every step; the
    phases add up to the totals; per-phase and per-quadrant energies add up to the
    totals after a day with import and export; the demand registers roll every 15 min."""
    site = build_site(load_site(EXAMPLE), start_s=at("2026-06-22T00:00:00"))
    model = site.model
    meter = model.meters["grid_meter"]
    binding = site.bindings["grid_meter"]
    start = [meter.counter.import_wh, meter.counter.export_wh, meter.import_varh,
             meter.export_varh]
    phase_start = [(c.import_wh, c.export_wh) for c in meter.phase_counters]
    demands: set[float] = set()
    unbalance = 0.0
    t = model.t_s
    battery = model.batteries["battery"]
    for step in range(24 * 60):
        t += 60.0
        if step == 8 * 60:  # as above: the midday surplus is exported
            battery.set_control(charge_limited=True, discharge_limited=True,
                                charge_limit_pct=40.0, discharge_limit_pct=-40.0)
        if step == 17 * 60:
            battery.set_control(charge_limit_pct=-50.0, discharge_limit_pct=50.0)
        model.advance(t)
        values = binding.values()
        phases = meter.phases(t)
        for k, phase in enumerate(phases, start=1):
            v, i, pf = (float(values[f"l{k}_{q}"] or 0.0)
                        for q in ("voltage_v", "current_a", "power_factor"))
            assert v * i * pf == pytest.approx(values[f"l{k}_power_w"], rel=1e-9, abs=1e-9)
            assert phase.apparent_va == pytest.approx(
                (phase.power_w ** 2 + phase.reactive_var ** 2) ** 0.5, rel=1e-12)
        assert sum(p.power_w for p in phases) == pytest.approx(
            meter.counter.power_w, rel=1e-12, abs=1e-9)
        assert sum(p.reactive_var for p in phases) == pytest.approx(
            meter.reactive_var, rel=1e-12, abs=1e-9)
        if abs(meter.counter.power_w) > 10_000:
            shares = [p.power_w / meter.counter.power_w for p in phases]
            unbalance = max(unbalance, max(shares) - min(shares))
        demands.add(meter.demand_w)
    counter = meter.counter
    assert counter.export_wh > start[1]  # the day had export as well as import
    imported = counter.import_wh - start[0]
    exported = counter.export_wh - start[1]
    assert sum(c.import_wh - s[0] for c, s in zip(meter.phase_counters, phase_start,
                                                  strict=True)) == pytest.approx(imported)
    assert sum(c.export_wh - s[1] for c, s in zip(meter.phase_counters, phase_start,
                                                  strict=True)) == pytest.approx(exported)
    assert sum(meter.quadrant_varh) == pytest.approx(meter.import_varh + meter.export_varh)
    assert meter.import_varh > start[2]
    assert 0.005 < unbalance < 0.15  # a few per cent, not identical phases
    assert len(demands) > 90  # a new demand value every 15-minute window
    assert meter.max_demand_w == max(demands)
    values = binding.values()

    def number(name: str) -> float:
        value = values[name]
        assert isinstance(value, int | float)
        return float(value)

    assert number("l1_import_wh") + number("l2_import_wh") + number("l3_import_wh") == \
        pytest.approx(number("import_wh"))
    assert number("apparent_power_va") >= abs(number("power_w"))
