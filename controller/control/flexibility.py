"""The site's flexibility now, for a VPP and the OpenADR client: how much less (down)
and more (up) it can import, per resource, in kW and for how long."""

from __future__ import annotations

from typing import Any

from controller.control.model import Snapshot
from controller.control.settings import ControlSettings


def flexibility(snapshot: Snapshot, settings: ControlSettings) -> dict[str, Any]:
    """Available flexibility now: ``down`` (the site can import less) and ``up`` (it can
    absorb more), per resource, in kW and for how long (s)."""
    down: list[dict[str, Any]] = []
    up: list[dict[str, Any]] = []
    for battery in snapshot.batteries:
        if not battery.ok or battery.soc_pct is None or not battery.capacity_wh:
            continue
        now_w = battery.power_w or 0.0
        above = max(0.0, battery.soc_pct - settings.min_soc_pct) / 100.0 * battery.capacity_wh
        below = max(0.0, settings.max_soc_pct - battery.soc_pct) / 100.0 * battery.capacity_wh
        more_discharge = max(0.0, (battery.max_discharge_w or 0.0) - now_w)
        more_charge = max(0.0, (battery.max_charge_w or 0.0) + now_w)
        if more_discharge > 0 and above > 0:
            down.append(_flex("battery", battery.name, more_discharge, above / more_discharge))
        if more_charge > 0 and below > 0:
            up.append(_flex("battery", battery.name, more_charge, below / more_charge))
    sheddable_w = sum(load.expected_w for load in snapshot.loads if load.sheddable and load.on)
    if sheddable_w > 0:
        limit_s = min((load.max_shed_s for load in snapshot.loads
                       if load.sheddable and load.on), default=0.0)
        down.append(_flex("loads", "sheddable", sheddable_w, limit_s / 3600.0))
    for heat_pump in snapshot.heat_pumps:
        if heat_pump.indoor_c is None or heat_pump.power_w is None:
            continue
        margin_down = max(0.0, heat_pump.indoor_c - settings.comfort_min_c)
        margin_up = max(0.0, settings.comfort_max_c - heat_pump.indoor_c)
        if heat_pump.power_w > 0 and margin_down > 0:
            down.append(_flex("heat_pump", heat_pump.name, heat_pump.power_w,
                              margin_down * settings.thermal_hours_per_k))
        room = max(0.0, (heat_pump.rated_w or 0.0) - heat_pump.power_w)
        if room > 0 and margin_up > 0:
            up.append(_flex("heat_pump", heat_pump.name, room,
                            margin_up * settings.thermal_hours_per_k))
    return {"ts": round(snapshot.now_s, 3), "grid_kw": None if snapshot.grid_w is None
            else round(snapshot.grid_w / 1000.0, 3),
            "down_kw": round(sum(item["kw"] for item in down), 3),
            "up_kw": round(sum(item["kw"] for item in up), 3), "down": down, "up": up}


def _flex(kind: str, name: str, watts: float, hours: float) -> dict[str, Any]:
    return {"resource": kind, "name": name, "kw": round(watts / 1000.0, 3),
            "duration_s": round(hours * 3600.0)}

