"""From what the site reads now and what the forecasters learned to one solve's
:class:`~controller.planner.problem.PlanInputs`."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, tzinfo

import numpy as np

from controller.control.events import DrEvent, EventKind
from controller.control.model import Snapshot
from controller.control.settings import ControlSettings
from controller.planner.forecast import HeatLossEstimator, LoadForecaster, PvForecaster
from controller.planner.problem import (
    BatteryInputs,
    DeferrableInputs,
    PlanInputs,
    Series,
    ThermalInputs,
    ThermalMode,
)
from controller.planner.settings import Deferrable, PlannerSettings
from controller.tariffs import Tariff

#: Outdoor temperatures at which the heat pump heats (below) or cools (above), °C: an
#: air-source unit's usual auto-mode changeover (and the simulated one's).
HEATING_BELOW_C = 15.0
COOLING_ABOVE_C = 24.0


@dataclass
class Forecasters:
    """The learners the planner keeps (fed every 15 min by the service)."""

    pv: PvForecaster
    load: LoadForecaster
    outdoor: LoadForecaster
    heat_loss: HeatLossEstimator


def slots(now_s: float, settings: PlannerSettings) -> list[float]:
    """The horizon's step starts: the step now is in first (UNIX s)."""
    step = settings.step_s
    first = now_s - now_s % step
    return [first + i * step for i in range(round(settings.horizon_h * 3600.0 / step))]


def prices(tariff: Tariff, times: Iterable[float], zone: tzinfo) -> Series:
    """The energy price at each time (CNY/kWh) on the tariff calendar."""
    calendar = tariff.calendar
    out = []
    for t in times:
        local = datetime.fromtimestamp(t, zone)
        out.append(calendar.price(local.month, calendar.period_at(local)))
    return np.array(out, dtype=np.float64)


def cop(mode: int, outdoor_c: float, settings: PlannerSettings) -> float:
    """An air-source heat pump's COP: a fraction of the Carnot COP between the flow
    water (heating) or 7 °C chilled water (cooling) and the outdoor air, in 1.5–6."""
    if mode == ThermalMode.HEATING:
        hot, cold = settings.flow_temp_c + 273.15, outdoor_c + 273.15
        base = hot
    else:
        hot, cold = outdoor_c + 273.15, 7.0 + 273.15
        base = cold
    lift = max(hot - cold, 1.0)
    return max(1.5, min(6.0, settings.carnot_efficiency * base / lift))


def thermal_mode(outdoor_c: float) -> ThermalMode:
    if outdoor_c < HEATING_BELOW_C:
        return ThermalMode.HEATING
    if outdoor_c > COOLING_ABOVE_C:
        return ThermalMode.COOLING
    return ThermalMode.OFF


def occupied(t: float, zone: tzinfo) -> bool:
    local = datetime.fromtimestamp(t, zone)
    return local.weekday() < 5 and 8 <= local.hour < 18


def deferrable_window(item: Deferrable, times: list[float], zone: tzinfo
                      ) -> np.typing.NDArray[np.bool_]:
    """Whether each step lies in the load's daily window (earliest → deadline)."""
    out = []
    for t in times:
        local = datetime.fromtimestamp(t, zone)
        hour = local.hour + local.minute / 60.0
        if item.earliest_h <= item.deadline_h:
            out.append(item.earliest_h <= hour < item.deadline_h)
        else:  # over midnight
            out.append(hour >= item.earliest_h or hour < item.deadline_h)
    return np.array(out, dtype=np.bool_)


def first_window(window: np.typing.NDArray[np.bool_]) -> np.typing.NDArray[np.bool_]:
    """Only the first run of True steps: one energy target per window (the next day's
    window is planned when it comes)."""
    out = np.zeros_like(window)
    started = False
    for i, inside in enumerate(window):
        if inside:
            out[i] = True
            started = True
        elif started:
            break
    return out


def event_limits(events: Iterable[DrEvent], times: list[float], step_s: float,
                 expected_net_kw: Series) -> tuple[Series, Series]:
    """(import caps, grid setpoints) per step from scheduled and running events (inf /
    nan where none). A reduction's cap is its baseline (or, before it is fixed, the
    expected import) less the reduction."""
    n = len(times)
    caps, setpoints = np.full(n, np.inf), np.full(n, np.nan)
    for event in events:
        if event.status not in ("scheduled", "active") or not event.kind.on_site_import:
            continue
        for i, t in enumerate(times):
            if t + step_s <= event.begin_s or t >= event.end_s:
                continue
            if event.kind is EventKind.SETPOINT:
                setpoints[i] = event.site_kw
            elif event.kind is EventKind.CAP:
                caps[i] = min(caps[i], event.site_kw)
            else:
                base = event.baseline_kw if event.baseline_kw is not None \
                    else expected_net_kw[i]
                caps[i] = min(caps[i], max(0.0, base - event.site_kw))
    return caps, setpoints


def build_inputs(snapshot: Snapshot, events: Iterable[DrEvent], forecasters: Forecasters,
                 *, settings: PlannerSettings, control: ControlSettings, tariff: Tariff,
                 zone: tzinfo, demand_price_cny_per_kw: float, carbon_kg_per_kwh: float,
                 uncontrolled_kw: float, flexible_dc_kw: float,
                 delivered_kwh: dict[str, float], rated_kw: dict[str, float]) -> PlanInputs:
    """One solve's inputs at ``snapshot.now_s``: forecasts over the horizon, the devices'
    state now (SoC, indoor temperature), the events ahead, the tariff."""
    times = slots(snapshot.now_s, settings)
    n = len(times)
    price = prices(tariff, times, zone)
    pv = forecasters.pv.forecast(times)
    load = forecasters.load.forecast(times) if forecasters.load.history else np.full(
        n, uncontrolled_kw)
    load = np.maximum(load, 0.0)
    battery = _battery(snapshot, control, settings)
    thermal = _thermal(snapshot, forecasters, times, settings, control, zone)
    expected_net = load - pv + (thermal.rated_kw * 0.5 if thermal is not None else 0.0)
    caps, setpoints = event_limits(events, times, settings.step_s, expected_net)
    deferrable = []
    for item in settings.deferrable:
        window = first_window(deferrable_window(item, times, zone))
        still = max(0.0, item.energy_kwh - delivered_kwh.get(item.load, 0.0))
        deferrable.append(DeferrableInputs(item.load, rated_kw.get(item.load, 0.0), still,
                                           window))
    demand = snapshot.demand
    return PlanInputs(
        start_s=times[0], step_s=settings.step_s, price_cny_per_kwh=price,
        export_price_cny_per_kwh=np.full(n, settings.export_price_cny_per_kwh),
        carbon_kg_per_kwh=np.full(n, carbon_kg_per_kwh), load_kw=load, pv_kw=pv,
        flexible_dc_kw=np.full(n, flexible_dc_kw),
        demand_price_cny_per_kw=demand_price_cny_per_kw if demand is not None and demand.billed
        else 0.0,
        month_peak_kw=(demand.month_peak_kw or 0.0) if demand is not None else 0.0,
        cap_kw=caps, setpoint_kw=setpoints,
        export_limit_kw=math.inf if control.export_limit_kw is None else control.export_limit_kw,
        battery=battery, thermal=thermal, deferrable=tuple(deferrable),
        weights=settings.weights)


def _battery(snapshot: Snapshot, control: ControlSettings, settings: PlannerSettings
             ) -> BatteryInputs | None:
    if not snapshot.batteries:
        return None
    ok = [b for b in snapshot.batteries if b.ok and b.capacity_wh]
    capacity = sum((b.capacity_wh or 0.0) for b in ok) / 1000.0
    if not ok or capacity <= 0:
        return BatteryInputs(1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, available=False)
    soc = sum((b.soc_pct or 0.0) / 100.0 * (b.capacity_wh or 0.0) for b in ok) / 1000.0
    return BatteryInputs(
        capacity_kwh=capacity, soc_kwh=soc,
        max_charge_kw=sum(b.max_charge_w or 0.0 for b in ok) / 1000.0,
        max_discharge_kw=sum((b.max_discharge_w or b.max_charge_w or 0.0) for b in ok) / 1000.0,
        floor_kwh=capacity * control.min_soc_pct / 100.0,
        reserve_kwh=capacity * control.reserve_soc_pct / 100.0,
        ceiling_kwh=capacity * control.max_soc_pct / 100.0,
        round_trip_efficiency=settings.battery_efficiency)


def _thermal(snapshot: Snapshot, forecasters: Forecasters, times: list[float],
             settings: PlannerSettings, control: ControlSettings, zone: tzinfo
             ) -> ThermalInputs | None:
    if not snapshot.heat_pumps:
        return None
    pumps = snapshot.heat_pumps
    known = [h for h in pumps if h.indoor_c is not None and h.power_w is not None]
    rated = sum((h.rated_w or 0.0) for h in pumps) / 1000.0
    now_outdoor = next((h.outdoor_c for h in pumps if h.outdoor_c is not None), None)
    if forecasters.outdoor.history:
        outdoor = forecasters.outdoor.forecast(times)
        if now_outdoor is not None:  # today runs warmer or colder than the days before
            fade = np.exp(-np.arange(len(times)) * settings.step_s / 21600.0)
            outdoor = outdoor + (now_outdoor - outdoor[0]) * fade
    else:
        outdoor = np.full(len(times), now_outdoor if now_outdoor is not None else 15.0)
    modes = np.array([thermal_mode(t) for t in outdoor], dtype=np.int8)
    cops = np.array([cop(int(m), t, settings) for m, t in zip(modes, outdoor, strict=True)])
    indoor = float(np.mean([h.indoor_c for h in known])) if known else \
        (control.comfort_min_c + control.comfort_max_c) / 2
    setpoint = next((h.setpoint_c for h in pumps if h.setpoint_c is not None),
                    (control.comfort_min_c + control.comfort_max_c) / 2)
    gains = np.array([settings.internal_gains_kw if occupied(t + settings.step_s / 2, zone)
                      else 0.0 for t in times])
    return ThermalInputs(
        rated_kw=rated, indoor_c=indoor, ua_kw_per_k=forecasters.heat_loss.kw_per_k,
        capacity_kwh_per_k=settings.heat_capacity_kwh_per_k, setpoint_c=setpoint,
        outdoor_c=outdoor, cop=cops, mode=modes,
        comfort_min_c=np.full(len(times), control.comfort_min_c),
        comfort_max_c=np.full(len(times), control.comfort_max_c), gains_kw=gains,
        available=bool(known) and rated > 0)


__all__ = ["Forecasters", "build_inputs", "prices", "slots"]
