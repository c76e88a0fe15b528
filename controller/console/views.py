"""What each console page shows, as JSON-ready dicts built from the running gateway.
Pure functions of their inputs (no I/O except the store reads named in docstrings), so
they are tested without a browser.

Units are in the keys (``_kw``, ``_kwh``, ``_cny``). A value not known now is None.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from controller.control.settlement import settle
from controller.view import site_flows

if TYPE_CHECKING:
    from controller.app import App
    from controller.control.events import DrEvent
    from fastcore._tariff import TariffCalendar


def _num(value: object, digits: int = 3) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return round(float(value), digits)


def health_rows(app: App, now_s: float) -> list[dict[str, Any]]:
    """Each device: model, kind, state, seconds since its last good poll, polls, latency."""
    rows = []
    for name, health in app.gateway.health().items():
        spec = app.site.devices[name]
        rows.append({
            "device": name, "model": spec.model, "kind": spec.device_map.kind,
            "state": health.state,
            "last_ok_age_s": None if health.last_ok_wall is None
            else _num(max(0.0, now_s - health.last_ok_wall), 1),
            "polls_ok": health.polls_ok, "polls_failed": health.polls_failed,
            "latency_ms": _num(health.latency_ms, 1),
            "error": health.last_error if health.state != "ok" else "",
        })
    return rows


def live(app: App, now_s: float) -> dict[str, Any]:
    """The live page: power flows (kW; grid + import, battery + discharge), health and,
    on a site with a ``[dcbus]``, the 直柔 bus (voltage against its band, converter mode,
    each load class's power fraction; see ``controller.control.dcbus.bus_readings``)."""
    flows = dataclasses.asdict(site_flows(app.site, app.gateway.bus.latest))
    dc = None if app.control is None or app.control.dc is None else app.control.dc.readings()
    return {"ts": round(now_s, 3), "site": app.site.name,
            "flows": {k: _num(v) if k not in ("loads_on", "loads_total", "sg_ready_state")
                      else v for k, v in flows.items()},
            "devices": health_rows(app, now_s), "dcbus": dc}


def devices(app: App) -> list[dict[str, Any]]:
    """Every device with every point's last value, unit, quality and enum label."""
    out = []
    latest = app.gateway.bus.latest
    for name, spec in app.site.devices.items():
        points = []
        for point_name, point in spec.device_map.points.items():
            reading = latest.get(name, point_name)
            value = None if reading is None else reading.value
            points.append({
                "point": point_name, "unit": point.unit,
                "value": value if isinstance(value, str) else _num(value, 4),
                "label": None if value is None else point.label(value),
                "quality": "none" if reading is None else reading.quality.value,
                "writable": point.access.writable, "description": point.description,
            })
        out.append({"device": name, "model": spec.model, "kind": spec.device_map.kind,
                    "points": points})
    return out


def _event_row(event: DrEvent, records: Sequence[Mapping[str, Any]], app: App
               ) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": event.id, "kind": event.kind, "target": event.target, "source": event.source,
        "status": event.status, "start_s": event.begin_s, "end_s": event.end_s,
        "value": event.value, "baseline_kw": _num(event.baseline_kw),
        "baseline_method": event.baseline_method, "baseline_quality": event.baseline_quality,
        "intervals": [{"start_s": r.get("interval_start"), "actual_kw": r.get("actual_kw"),
                       "baseline_kw": r.get("baseline_kw"), "target_kw": r.get("target_kw"),
                       "limit_kw": r.get("limit_kw"), "delivered_kw": r.get("delivered_kw")}
                      for r in records],
        "settlement": None,
    }
    control = app.control
    if control is not None and event.kind == "reduction" and records and \
            event.status not in ("scheduled", "active"):  # settled once it is over
        result = settle(event.id, event.value, [dict(r) for r in records],
                        control.settings.settlement,
                        interval_s=control.settings.performance_interval_s,
                        baseline={"kw": event.baseline_kw, "method": event.baseline_method,
                                  "coverage": event.baseline_coverage,
                                  "quality": event.baseline_quality})
        row["settlement"] = None if result is None else result.to_dict()
    return row


def demand_response(app: App, now_s: float) -> dict[str, list[dict[str, Any]]]:
    """Events split into active, upcoming and past (newest first), each with its
    performance intervals and settlement estimate (reductions). Reads the store's
    performance records of past events."""
    groups: dict[str, list[dict[str, Any]]] = {"active": [], "upcoming": [], "past": []}
    control = app.control
    if control is None:
        return groups
    for event in sorted(control.book.events.values(), key=lambda e: e.begin_s, reverse=True):
        records: Sequence[Mapping[str, Any]] = control.performance.get(event.id, [])
        if not records and app.store is not None and event.status != "scheduled":
            records = app.store.performance(event.id)
        group = ("active" if event.status == "active" else
                 "upcoming" if event.status == "scheduled" else "past")
        groups[group].append(_event_row(event, records, app))
    return groups


def day_calendar(calendar: TariffCalendar, day: dt.date) -> list[dict[str, Any]]:
    """The day's time-of-use segments: minutes from midnight, period, price."""
    return [{"start_min": s.start_min, "end_min": s.end_min, "period": s.period.name,
             "zh": s.period.zh, "tier": s.period.tier.value,
             "price_cny_per_kwh": s.price_cny_per_kwh} for s in calendar.segments(day)]


def energy_by_period(windows: Iterable[tuple[float, float]], window_s: float,
                     calendar: TariffCalendar, zone: dt.tzinfo) -> dict[str, Any]:
    """Energy (kWh) and cost (CNY) by time-of-use period from demand windows (start s,
    average kW), and the highest window's demand (kW). A window is priced at the period
    of its start."""
    energy: dict[str, float] = defaultdict(float)
    cost: dict[str, float] = defaultdict(float)
    peak_kw: float | None = None
    for start_s, kw in windows:
        local = dt.datetime.fromtimestamp(start_s, zone)
        period = calendar.period_at(local)
        kwh = kw * window_s / 3600.0
        energy[period.name] += kwh
        cost[period.name] += kwh * calendar.price_at(local)
        peak_kw = kw if peak_kw is None else max(peak_kw, kw)
    return {"energy_kwh": {k: round(v, 3) for k, v in energy.items()},
            "cost_cny": {k: round(v, 2) for k, v in cost.items()},
            "total_kwh": round(sum(energy.values()), 3),
            "total_cny": round(sum(cost.values()), 2), "peak_demand_kw": _num(peak_kw)}


def energy(app: App, now_s: float) -> dict[str, Any]:
    """Today's and this month's energy by time-of-use period for each metered series
    (from the store's demand windows), with cost and peak demand; ``categories`` (the
    分类分项 tree) and ``kpis`` (the carbon-peaking plan's figures): see :func:`by_code`."""
    metering = app.metering
    zone = app.site.zone
    local = dt.datetime.fromtimestamp(now_s, zone)
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
    first = midnight.replace(day=1)
    series: list[dict[str, Any]] = []
    periods: list[dict[str, str]] = []
    if metering is not None and app.store is not None:
        calendar = metering.config.tariff.calendar
        window_s = metering.config.demand_window_s
        periods = [{"name": p.name, "zh": p.zh, "tier": p.tier.value}
                   for p in calendar.periods]
        for item in metering.series:
            month = app.store.windows(item.name, first.timestamp(), now_s)
            today = [w for w in month if w[0] >= midnight.timestamp()]
            series.append({"name": item.name, "role": item.role,
                           "today": energy_by_period(today, window_s, calendar, zone),
                           "month": energy_by_period(month, window_s, calendar, zone)})
    categories, figures = by_code(app, local.date()) if metering is not None else (None, None)
    return {"date": midnight.date().isoformat(), "month": first.strftime("%Y-%m"),
            "periods": periods, "series": series, "categories": categories,
            "kpis": figures}


def by_code(app: App, day: dt.date) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The 分类分项 tree's energy (per code, in the code's unit: kWh, m³) and the
    carbon-peaking plan's figures for the day, month and year containing ``day``, from
    the periods the store rolled up (completed windows only). (None, None) without a
    store or metering."""
    from controller.kpi import factors, kpis, period_start, stored_use
    from drivers.energycodes import energy_codes

    metering, store = app.metering, app.store
    if metering is None or store is None:
        return None, None
    known = energy_codes()
    settings = metering.energy.settings
    f = factors(settings.coal_method)
    categories: dict[str, Any] = {}
    figures: dict[str, Any] = {}
    for level in ("day", "month", "year"):
        start = period_start(level, day, app.site.zone)
        categories[level] = [
            {"code": code, "zh": known[code].zh, "en": known[code].en,
             "unit": known[code].unit, "value": round(value, 3)}
            for _, code, value in store.energy_periods(level, start, start + 1.0)
            if code in known]
        figures[level] = kpis(stored_use(store, level, start), f,
                              metering.config.carbon.mean_kg_per_kwh,
                              settings.floor_area_m2).to_dict()
    return categories, figures


def schedule(app: App) -> dict[str, Any] | None:
    """The optimiser's plan in force (None: no planner, or no plan yet): per step its
    start (UNIX s), grid, battery (+ discharge), heat pump, PV and load power (kW), SoC
    (kWh at the step's end), SG-Ready state and energy price (CNY/kWh)."""
    from controller.planner.problem import Plan

    planner = None if app.control is None else app.control.planner
    plan = getattr(planner, "plan", None)  # the PlannerService's plan in force
    if not isinstance(plan, Plan):
        return None
    steps = [{"start_s": plan.start_s + i * plan.step_s,
              "grid_kw": _num(float(plan.grid_kw[i]), 2),
              "battery_kw": _num(float(plan.battery_kw[i]), 2),
              "soc_kwh": _num(float(plan.soc_kwh[i]), 2),
              "heat_pump_kw": _num(float(plan.heat_pump_kw[i]), 2),
              "pv_kw": _num(float(plan.pv_kw[i]), 2),
              "load_kw": _num(float(plan.load_kw[i]), 2),
              "sg_state": int(plan.sg_state[i]),
              "price_cny_per_kwh": _num(float(plan.price_cny_per_kwh[i]), 4)}
             for i in range(plan.steps)]
    return {"status": plan.status.value, "objective_cny": _num(plan.objective_cny, 2),
            "peak_kw": _num(plan.peak_kw, 1), "solve_ms": _num(plan.solve_ms, 1),
            "costs_cny": {k: _num(v, 2) for k, v in plan.costs_cny.items()},
            "step_s": plan.step_s, "steps": steps}


def plan(app: App, now_s: float) -> dict[str, Any]:
    """The tariff calendar of today and tomorrow, and the optimiser's plan
    (:func:`schedule`)."""
    metering = app.metering
    zone = app.site.zone
    today = dt.datetime.fromtimestamp(now_s, zone).date()
    days = []
    if metering is not None:
        calendar = metering.config.tariff.calendar
        for day in (today, today + dt.timedelta(days=1)):
            days.append({"date": day.isoformat(), "day_type": calendar.day_type(day),
                         "season": calendar.season(day.month).name,
                         "segments": day_calendar(calendar, day)})
    return {"tariff": None if metering is None else metering.config.tariff.name,
            "days": days, "schedule": schedule(app)}
