"""Strategies as pure functions of a snapshot: precedence, one owner per actuator, and
each strategy's decision on hand-made snapshots."""

from __future__ import annotations

import dataclasses

import pytest

from controller.control import strategies
from controller.control.events import DrEvent, EventBook, EventKind
from controller.control.model import (
    Actuator,
    BatteryState,
    DcBusState,
    DemandState,
    HeatPumpState,
    InverterState,
    Level,
    LoadState,
    Snapshot,
    TariffStretch,
)
from controller.control.settings import ControlSettings
from controller.control.strategies import Context, RunningEvent, compose
from fastcore import Period
from fastcore._tariff import DEEP_VALLEY, FLAT, PEAK, SHARP, VALLEY

NOW = 1_782_100_000.0
BATTERY = Actuator("battery", "bat")


def load(name: str, *, rated_w: float = 10_000.0, priority: int = 3, on: bool = True,
         dc_bus: str | None = None, **changes: object) -> LoadState:
    state = LoadState(name, rated_w, priority, True, on, None, 0.0, 0.0, 7200.0, None, dc_bus,
                      None, None)
    return dataclasses.replace(state, **changes)  # type: ignore[arg-type]


def snapshot(*, grid_w: float = 100_000.0, soc: float = 60.0, battery_w: float = 0.0,
             loads: tuple[LoadState, ...] = (), indoor_c: float = 22.0,
             outdoor_c: float = 5.0, **changes: object) -> Snapshot:
    base = Snapshot(
        now_s=NOW, local_hour=10.0, weekday=1, period=FLAT, grid_w=grid_w, pv_w=30_000.0,
        batteries=(BatteryState("bat", soc, battery_w, 100_000.0, 100_000.0, 200_000.0),),
        heat_pumps=(HeatPumpState("hp", 2, 20_000.0, indoor_c, outdoor_c, 45_000.0),),
        inverters=(InverterState("inv", 30_000.0, 100_000.0, None),),
        dc_buses=(DcBusState("dc", 375.0, 375.0, 10_000.0),), loads=loads)
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def event(kind: str, value: float, limit_kw: float | None, **changes: object) -> RunningEvent:
    dr = DrEvent("e", kind, changes.pop("target", "site"), NOW - 60, 3600.0, value)  # type: ignore[arg-type]
    return RunningEvent(dr, None if limit_kw is None else limit_kw * 1000.0,
                        kind == "setpoint")


def test_higher_levels_own_their_actuators() -> None:
    snap = snapshot(grid_w=150_000.0, loads=(load("a", priority=1), load("b", priority=2)))
    context = Context(ControlSettings(import_cap_kw=140.0),
                      events=(event("cap", 100.0, 100.0),))
    decision = compose(snap, context, strategies.ALL)
    battery = decision.claims[BATTERY]
    assert battery.owner == "dr"
    assert battery.level is Level.EVENT
    assert battery.value == pytest.approx(50_000.0)  # trims the 50 kW above the cap
    # Lower strategies see the battery taken and do not even propose for it.
    assert not [p for p in decision.dropped if p.actuator == BATTERY]
    assert decision.claims[Actuator("sg_ready", "hp")].owner == "comfort"


def test_a_cap_sheds_discrete_loads_only_beyond_what_the_battery_sustains() -> None:
    loads = (load("cheap", rated_w=20_000.0, priority=1), load("dear", rated_w=20_000.0,
                                                                priority=9))
    full = snapshot(grid_w=160_000.0, soc=80.0, loads=loads)
    context = Context(ControlSettings(), events=(event("cap", 100.0, 100.0),))
    decision = compose(full, context, strategies.ALL)
    assert Actuator("load", "cheap") not in decision.claims  # the battery is enough
    empty = snapshot(grid_w=140_000.0, soc=6.0, loads=loads)  # almost nothing left
    decision = compose(empty, context, strategies.ALL)
    assert decision.claims[Actuator("load", "cheap")].value is False
    assert Actuator("load", "dear") not in decision.claims  # the cheapest set suffices
    assert decision.claims[Actuator("sg_ready", "hp")].value == strategies.SG_BLOCKED


def test_shed_decisions_use_the_counterfactual_import() -> None:
    """A load we shed last cycle stays shed: its power counts as still needed."""
    loads = (load("cheap", rated_w=30_000.0, priority=1, on=False),)
    snap = snapshot(grid_w=100_000.0, soc=6.0, loads=loads)  # 130 kW without our shed
    context = Context(ControlSettings(), events=(event("cap", 110.0, 110.0),),
                      shed_by={"cheap": "dr"})
    decision = compose(snap, context, strategies.ALL)
    assert decision.claims[Actuator("load", "cheap")].value is False


def test_heat_pump_is_blocked_only_inside_the_comfort_band_with_hysteresis() -> None:
    context = Context(ControlSettings(comfort_min_c=20.0), events=(event("cap", 50.0, 50.0),))
    cold = snapshot(grid_w=200_000.0, soc=6.0, indoor_c=20.3)  # heating, 0.3 K above min
    assert Actuator("sg_ready", "hp") not in {
        a for a, p in compose(cold, context, strategies.ALL).claims.items()
        if p.value == strategies.SG_BLOCKED}
    blocked = dataclasses.replace(cold, commanded={Actuator("sg_ready", "hp"): 1})
    decision = compose(blocked, context, strategies.ALL)
    assert decision.claims[Actuator("sg_ready", "hp")].value == strategies.SG_BLOCKED


def test_vpp_setpoint_charges_the_battery_when_asked_for_more_import() -> None:
    context = Context(ControlSettings(), events=(event("setpoint", 150.0, 150.0),))
    decision = compose(snapshot(grid_w=100_000.0), context, strategies.ALL)
    assert decision.claims[BATTERY].value == pytest.approx(-50_000.0)


def test_overrides_win_over_limits() -> None:
    override = event("battery", 20_000.0, None, target="bat")
    context = Context(ControlSettings(), events=(override, event("cap", 50.0, 50.0)))
    decision = compose(snapshot(grid_w=150_000.0), context, strategies.ALL)
    assert decision.claims[BATTERY].value == 20_000.0
    assert decision.claims[BATTERY].owner == "event:e"


def test_export_limit_curtails_pv_and_opens_up_gradually() -> None:
    settings = ControlSettings(export_limit_kw=10.0)
    exporting = snapshot(grid_w=-40_000.0, inverters=(InverterState("inv", 80_000.0, 100_000.0,
                                                                    None),))
    proposal = compose(exporting, Context(settings), strategies.ALL).claims[
        Actuator("inverter_limit", "inv")]
    assert proposal.level is Level.SAFETY
    assert proposal.value == pytest.approx((80_000 - (40_000 - 9_500)) / 1000.0)
    recovering = snapshot(grid_w=20_000.0, inverters=(InverterState("inv", 40_000.0, 100_000.0,
                                                                     40.0),))
    opened = compose(recovering, Context(settings), strategies.ALL).claims[
        Actuator("inverter_limit", "inv")]
    assert opened.value == pytest.approx(50.0)  # +10 % per cycle, not straight to 100


def test_dc_loads_go_off_one_by_one_below_the_band() -> None:
    loads = (load("dc1", priority=2, dc_bus="dc"), load("dc2", priority=5, dc_bus="dc"))
    sagging = snapshot(loads=loads, dc_buses=(DcBusState("dc", 350.0, 375.0, 30_000.0),))
    decision = compose(sagging, Context(ControlSettings()), strategies.ALL)
    off = [a.name for a, p in decision.claims.items() if a.kind == "load" and p.value is False]
    assert off == ["dc1"]  # the least important first, one per cycle
    recovering = dataclasses.replace(sagging, loads=(load("dc1", priority=2, dc_bus="dc",
                                                          on=False), loads[1]),
                                     dc_buses=(DcBusState("dc", 362.0, 375.0, 30_000.0),))
    held = compose(recovering, Context(ControlSettings(), shed_by={"dc1": "dc_bus"}),
                   strategies.ALL)
    assert held.claims[Actuator("load", "dc1")].value is False  # 96.5 %: not yet back
    assert Actuator("load", "dc2") not in held.claims


def test_indoor_safety_limits_override_events() -> None:
    context = Context(ControlSettings(), events=(event("sg_ready", 1, None, target="hp"),))
    freezing = snapshot(indoor_c=15.0)
    decision = compose(freezing, context, strategies.ALL)
    assert decision.claims[Actuator("sg_ready", "hp")].value == strategies.SG_NORMAL
    assert decision.claims[Actuator("sg_ready", "hp")].level is Level.SAFETY


def test_thermal_storage_heats_up_or_cools_down_within_the_band() -> None:
    settings = ControlSettings(thermal_surplus_kw=10.0)
    surplus = -20_000.0  # grid power, W
    heating = compose(snapshot(indoor_c=21.0, outdoor_c=0.0, grid_w=surplus),
                      Context(settings), strategies.ALL)
    assert heating.claims[Actuator("sg_ready", "hp")].value == strategies.SG_BOOST
    full = compose(snapshot(indoor_c=23.8, outdoor_c=0.0, grid_w=surplus), Context(settings),
                   strategies.ALL)
    assert full.claims[Actuator("sg_ready", "hp")].value == strategies.SG_NORMAL
    cooling = compose(snapshot(indoor_c=23.0, outdoor_c=32.0, grid_w=surplus),
                      Context(settings), strategies.ALL)
    assert cooling.claims[Actuator("sg_ready", "hp")].value == strategies.SG_BOOST


def test_self_consumption_respects_the_reserve_and_a_cap_above() -> None:
    at_reserve = compose(snapshot(grid_w=50_000.0, soc=20.0), Context(ControlSettings()),
                         strategies.ALL)
    assert at_reserve.claims[BATTERY].value == 0.0
    exporting = compose(snapshot(grid_w=-30_000.0), Context(ControlSettings()), strategies.ALL)
    assert exporting.claims[BATTERY].value == pytest.approx(-30_000.0)  # charges the surplus


def test_event_book_modify_cancel_release_and_persistence() -> None:
    saved: list[str] = []
    book = EventBook(saved.append)
    book.add(DrEvent("a", EventKind.REDUCTION, "site", NOW, 600.0, 40.0, ramp_s=60.0,
                     randomize_s=120.0))
    event = book.events["a"]
    assert 0 <= event.delay_s <= 120
    assert event.end_s == event.begin_s + 600
    assert event.ramp_fraction(event.begin_s + 30) == pytest.approx(0.5)
    assert book.modify("a", value=50.0).value == 50.0  # type: ignore[union-attr]
    assert [t for t, _ in book.tick(event.begin_s + 1)] == ["started"]
    assert book.release("site", event.begin_s + 10)[0].status == "completed"
    assert book.cancel("a") is None  # already over
    restored = EventBook.load(saved[-1], lambda text: None)
    assert restored.events["a"].status == "completed"
    assert restored.events["a"].modification == 1


def test_settings_refuse_timeouts_the_loop_cannot_refresh() -> None:
    with pytest.raises(ValueError, match="battery_revert_s must be at least 3"):
        ControlSettings(cycle_s=30.0, battery_revert_s=30)


# -- five tiers and the demand charge -------------------------------------------------------

HOUR = 3600.0


def stretches(*spec: tuple[float, float, Period]) -> tuple[TariffStretch, ...]:
    """(start h, end h, period) relative to NOW, priced at the Shandong example prices."""
    return tuple(TariffStretch(NOW + a * HOUR, NOW + b * HOUR, p, SHANDONG_PRICES[p.name])
                 for a, b, p in spec)


SHANDONG_PRICES = {"sharp": 1.3, "peak": 1.105, "flat": 0.65, "valley": 0.195,
                   "deep_valley": 0.065}
WINTER_MIDDAY = stretches((0, 1, VALLEY), (1, 4, DEEP_VALLEY), (4, 5, VALLEY), (5, 6, FLAT),
                          (6, 9, SHARP), (9, 11, PEAK), (11, 24, FLAT))
ARBITRAGE = ControlSettings(battery_mode="tou_arbitrage")


def test_arbitrage_waits_in_the_valley_for_a_deep_valley_that_suffices() -> None:
    """25 % → 95 % of 200 kWh is 140 kWh: the 3 h of 深谷 at 100 kW hold it."""
    valley = snapshot(soc=25.0, period=VALLEY, tariff_ahead=WINTER_MIDDAY)
    assert compose(valley, Context(ARBITRAGE), strategies.ALL).claims[BATTERY].value == 0.0
    deep = snapshot(soc=25.0, period=DEEP_VALLEY, tariff_ahead=WINTER_MIDDAY[1:])
    proposal = compose(deep, Context(ARBITRAGE), strategies.ALL).claims[BATTERY]
    assert proposal.value == pytest.approx(-140_000.0 / 3)  # spread over the 深谷
    assert proposal.reason == "deep_valley (深谷) charging"


def test_arbitrage_charges_in_the_valley_what_the_deep_valley_cannot_take() -> None:
    short = stretches((0, 1, VALLEY), (1, 2, DEEP_VALLEY), (2, 24, FLAT))
    valley = snapshot(soc=25.0, period=VALLEY, tariff_ahead=short)
    # 140 kWh needed, 90 kWh fit in the one hour of 深谷: 50 kWh in this hour of 低谷
    assert compose(valley, Context(ARBITRAGE), strategies.ALL).claims[BATTERY].value == (
        pytest.approx(-50_000.0))


def test_arbitrage_keeps_the_charge_for_sharp_hours_and_holds_in_flat() -> None:
    ahead = stretches((0, 1, PEAK), (1, 4, SHARP), (4, 24, FLAT))
    peak = snapshot(grid_w=100_000.0, soc=50.0, period=PEAK, tariff_ahead=ahead)
    # 60 kWh above the 20 % reserve all go to the 3 h of 尖峰 at 100 kW: none now
    assert compose(peak, Context(ARBITRAGE), strategies.ALL).claims[BATTERY].value == 0.0
    sharp = snapshot(grid_w=100_000.0, soc=50.0, period=SHARP, tariff_ahead=ahead[1:])
    assert compose(sharp, Context(ARBITRAGE), strategies.ALL).claims[BATTERY].value == (
        pytest.approx(20_000.0))  # 60 kWh over 3 h
    flat = snapshot(grid_w=100_000.0, soc=90.0, period=FLAT, tariff_ahead=ahead[2:])
    assert compose(flat, Context(ARBITRAGE), strategies.ALL).claims[BATTERY].value == 0.0


def test_thermal_storage_preheats_in_the_cheap_midday_valley() -> None:
    cheap = snapshot(indoor_c=21.0, outdoor_c=2.0, period=DEEP_VALLEY)
    proposal = compose(cheap, Context(ControlSettings()), strategies.ALL).claims[
        Actuator("sg_ready", "hp")]
    assert (proposal.value, proposal.reason) == (strategies.SG_BOOST, "storing in deep_valley "
                                                                       "(深谷)")
    dear = snapshot(indoor_c=21.0, outdoor_c=2.0, period=SHARP)
    assert compose(dear, Context(ControlSettings()), strategies.ALL).claims[
        Actuator("sg_ready", "hp")].value == strategies.SG_NORMAL


def demand(month_peak_kw: float | None, window_kwh: float, *, billed: bool = True
           ) -> DemandState:
    """A 15-min window half gone (450 s left)."""
    return DemandState(NOW - 450.0, 900.0, window_kwh, month_peak_kw, billed)


@pytest.mark.parametrize(("state", "battery_w"), [
    (None, 50_000.0),  # no demand picture: the cap, instantly
    (demand(120.0, 15.0, billed=False), 50_000.0),  # capacity billing: the cap, instantly
    (demand(120.0, 15.0), 30_000.0),  # 需量: the month already peaked at 120 kW
    (demand(80.0, 10.0), 30_000.0),  # 80 kW so far: 120 kW for the rest averages the cap
    (demand(120.0, 20.0), 70_000.0),  # 160 kW so far: 80 kW for the rest averages 120 kW
])
def test_peak_shaving_keeps_the_months_demand_charge_in_mind(state: DemandState | None,
                                                             battery_w: float) -> None:
    settings = ControlSettings(import_cap_kw=100.0, battery_mode="idle")
    snap = snapshot(grid_w=150_000.0, soc=80.0, demand=state)
    assert compose(snap, Context(settings), strategies.ALL).claims[BATTERY].value == (
        pytest.approx(battery_w))


def test_a_blocked_heat_pump_counts_with_its_draw_before_the_block() -> None:
    """A gateway need not poll the rated power: the draw seen before the block counts,
    so the heat pump stays blocked instead of toggling every cycle."""
    blocked = HeatPumpState("hp", 1, 0.0, 22.0, 5.0, None, running_w=14_000.0)
    snap = snapshot(grid_w=100_000.0, soc=6.0, heat_pumps=(blocked,),
                    commanded={Actuator("sg_ready", "hp"): strategies.SG_BLOCKED})
    context = Context(ControlSettings(), events=(event("cap", 100.0, 100.0),))
    assert strategies.counterfactual_import_w(snap, context) == pytest.approx(
        100_000.0 + 14_000.0)  # grid + the blocked heat pump
    decision = compose(snap, context, strategies.ALL)
    assert decision.claims[Actuator("sg_ready", "hp")].value == strategies.SG_BLOCKED
