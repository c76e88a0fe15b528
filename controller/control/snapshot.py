"""The snapshot a cycle's strategies see: every device read by its kind's reader
(:data:`~controller.control.actuators.READERS`), the loads, the tariff ahead, the
demand picture."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime, timedelta, tzinfo
from typing import Any

import fastcore
from controller.control.actuators import READERS, LoadMemory, ReadContext, SgHold, read_loads
from controller.control.facts import control_of, controllable
from controller.control.model import (
    Actuator,
    ActuatorValue,
    DemandState,
    Snapshot,
    TariffStretch,
)
from controller.control.plant import Plant
from controller.control.settings import ControlSettings
from controller.tariffs import Tariff


def tariff_ahead(calendar: fastcore.TariffCalendar, now_s: float, zone: tzinfo,
                 hours: float = 24.0) -> tuple[TariffStretch, ...]:
    """The calendar's stretches from the one in force at ``now_s`` to ``hours`` (≤ 24)
    ahead (UNIX s), a stretch continuing over midnight merged into one."""
    day = datetime.fromtimestamp(now_s, zone).date()
    horizon = now_s + hours * 3600.0
    return tuple(s for s in _two_days(calendar, day, zone)
                 if s.end_s > now_s and s.start_s < horizon)


_TWO_DAYS: dict[tuple[int, date, str], tuple[fastcore.TariffCalendar,
                                              tuple[TariffStretch, ...]]] = {}


def _two_days(calendar: fastcore.TariffCalendar, day: date, zone: tzinfo
              ) -> tuple[TariffStretch, ...]:
    """The stretches of ``day`` and the day after (cached: the loop asks every cycle)."""
    key = (id(calendar), day, str(zone))
    hit = _TWO_DAYS.get(key)
    if hit is not None and hit[0] is calendar:
        return hit[1]
    out: list[TariffStretch] = []
    for offset in (0, 1):
        date_ = day + timedelta(days=offset)
        midnight = datetime.combine(date_, datetime.min.time(), zone).timestamp()
        for segment in calendar.segments(date_):
            start = midnight + segment.start_min * 60.0
            end = midnight + segment.end_min * 60.0
            if out and out[-1].period == segment.period and out[-1].end_s == start and (
                    out[-1].price_cny_per_kwh == segment.price_cny_per_kwh):
                out[-1] = TariffStretch(out[-1].start_s, end, segment.period,
                                        segment.price_cny_per_kwh)
            else:
                out.append(TariffStretch(start, end, segment.period,
                                         segment.price_cny_per_kwh))
    if len(_TWO_DAYS) > 16:
        _TWO_DAYS.clear()
    _TWO_DAYS[key] = (calendar, tuple(out))
    return tuple(out)


def build_snapshot(plant: Plant, settings: ControlSettings, now_s: float,
                   tariff: Tariff, memory: LoadMemory,
                   commanded: Mapping[Actuator, ActuatorValue],
                   demand: DemandState | None = None,
                   heat_pump_running_w: Mapping[str, float] | None = None,
                   sg_holds: Mapping[str, SgHold] | None = None) -> Snapshot:
    """What the strategies see at ``now_s``. Devices whose map offers no way to control
    them are measured (PV counts) but not read as actuators."""
    site = plant.site
    local = datetime.fromtimestamp(now_s, site.zone)
    grid = site.grid_meter()
    context = ReadContext(memory, heat_pump_running_w or {}, sg_holds or {})
    states: dict[str, list[Any]] = {field: [] for _, field in READERS.values()}
    pv_w = 0.0
    for device in site.devices.values():
        kind = device.device_map.kind
        if kind == "inverter":
            pv_w += plant.value(device.name, "power_w") or 0.0
        if control_of(device) is not None and not controllable(device):
            continue  # measured, but not an actuator: its map says no way to control it
        reader = READERS.get(kind)
        if reader is not None:
            states[reader[1]].append(reader[0](plant, device, context))
    return Snapshot(
        now_s=now_s, local_hour=local.hour + local.minute / 60.0, weekday=local.weekday(),
        period=tariff.calendar.period_at(local),
        grid_w=None if grid is None else plant.value(grid.name, "power_w"), pv_w=pv_w,
        batteries=tuple(states["batteries"]), heat_pumps=tuple(states["heat_pumps"]),
        inverters=tuple(states["inverters"]), dc_buses=tuple(states["dc_buses"]),
        loads=read_loads(plant, memory), commanded=dict(commanded),
        tariff_ahead=tariff_ahead(tariff.calendar, now_s, site.zone), demand=demand)
