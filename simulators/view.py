"""A live summary of the simulated building's physics, for ``pedf demo`` and
``pedf sim site --view``: power flows and the state of storage, refreshed every second."""

from __future__ import annotations

import asyncio
from datetime import datetime

from simulators.runner import SiteRunner


def summary(runner: SiteRunner) -> dict[str, float]:
    """Site power flows in kW (+ import / consumption) and storage state."""
    model = runner.site.model
    loads_kw = sum(load.power_w for load in model.loads.values()) / 1000 + model.base_load_w / 1000
    values = {
        "grid_kw": model.site_power_w() / 1000,
        "pv_kw": sum(p.power_w for p in model.pv.values()) / 1000,
        "battery_kw": sum(b.power_w for b in model.batteries.values()) / 1000,
        "heat_pump_kw": sum(h.electric_w for h in model.heat_pumps.values()) / 1000,
        "loads_kw": loads_kw,
    }
    if model.batteries:
        values["soc_pct"] = next(iter(model.batteries.values())).soc_pct
    if model.dc_buses:
        values["dc_bus_v"] = next(iter(model.dc_buses.values())).voltage_v
    if model.heat_pumps:
        values["indoor_c"] = next(iter(model.heat_pumps.values())).indoor_c
    return values


def render(runner: SiteRunner) -> str:
    zone = runner.site.spec.zone
    moment = datetime.fromtimestamp(runner.site.model.t_s, zone).strftime("%Y-%m-%d %H:%M:%S")
    s = summary(runner)
    parts = [f"{moment}", f"grid {s['grid_kw']:+7.1f} kW", f"PV {s['pv_kw']:6.1f} kW",
             f"battery {s['battery_kw']:+6.1f} kW"]
    if "soc_pct" in s:
        parts.append(f"SoC {s['soc_pct']:5.1f} %")
    parts.append(f"heat pump {s['heat_pump_kw']:5.1f} kW")
    if "indoor_c" in s:
        parts.append(f"indoor {s['indoor_c']:4.1f} °C")
    if "dc_bus_v" in s:
        parts.append(f"DC bus {s['dc_bus_v']:5.1f} V")
    parts.append(f"loads {s['loads_kw']:6.1f} kW")
    return " | ".join(parts)


async def print_every(runner: SiteRunner, period_s: float = 1.0) -> None:
    while True:
        print(render(runner), flush=True)
        await asyncio.sleep(period_s)
