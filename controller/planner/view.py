"""``pedf plan``: read the site once, plan, and show the plan as a table and a PNG
(prices, forecasts, battery SoC, heat-pump states, grid import)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from datetime import datetime, tzinfo
from pathlib import Path

import numpy as np
from rich.table import Table

from controller.planner.problem import Plan
from controller.scheduler import WriteResult
from controller.tools import read_device
from drivers.devices import Write
from drivers.points import Value
from drivers.site import SiteSpec

SG_NAMES = {1: "blocked", 2: "normal", 3: "boost", 4: "forced"}


class ReadingsPlant:
    """A plant over one reading of every device (writes refused): what ``pedf plan``
    plans from."""

    def __init__(self, site: SiteSpec, values: Mapping[str, Mapping[str, Value]]) -> None:
        self.site = site
        self._values = values

    @classmethod
    async def read(cls, site: SiteSpec) -> ReadingsPlant:
        """Read every device once (devices that do not answer read as missing)."""
        values: dict[str, Mapping[str, Value]] = {}
        for name, device in site.devices.items():
            read = await read_device(device)
            values[name] = {item.point.name: item.value for item in read  # primary side
                            if not item.error and item.value is not None}
        return cls(site, values)

    def value(self, device: str, capability: str) -> float | None:
        spec = self.site.devices.get(device)
        point = None if spec is None else spec.device_map.capabilities.get(capability)
        value = None if point is None else self._values.get(device, {}).get(point)
        return float(value) if isinstance(value, int | float) else None

    def device_values(self, device: str) -> Mapping[str, Value]:
        return self._values.get(device, {})

    async def execute(self, device: str, writes: Sequence[Write]) -> list[WriteResult]:
        return [WriteResult(device, w.point, w.value, False, "pedf plan does not write")
                for w in writes]


def read_plant(site: SiteSpec) -> ReadingsPlant:
    return asyncio.run(ReadingsPlant.read(site))


def plan_table(plan: Plan, zone: tzinfo, *, every: int = 4) -> Table:
    """One row per ``every`` steps (hourly by default)."""
    table = Table(title=f"plan from {_local(plan.start_s, zone)}: {plan.status.value}, "
                        f"objective {plan.objective_cny:.1f} CNY, solved in "
                        f"{plan.solve_ms:.0f} ms")
    for column in ("time", "price CNY/kWh", "load kW", "PV kW", "battery kW", "SoC kWh",
                   "heat pump kW", "indoor °C", "SG-Ready", "grid kW"):
        table.add_column(column, justify="left" if column in ("time", "SG-Ready") else "right")
    for i in range(0, plan.steps, every):
        table.add_row(_local(plan.start_s + i * plan.step_s, zone)[11:16],
                      f"{plan.price_cny_per_kwh[i]:.3f}", f"{plan.load_kw[i]:.1f}",
                      f"{plan.pv_kw[i]:.1f}", f"{plan.battery_kw[i]:+.1f}",
                      f"{plan.soc_kwh[i]:.0f}", f"{plan.heat_pump_kw[i]:.1f}",
                      f"{plan.indoor_c[i]:.1f}", SG_NAMES.get(int(plan.sg_state[i]), "?"),
                      f"{plan.grid_kw[i]:+.1f}")
    return table


def plan_png(plan: Plan, zone: tzinfo, path: Path) -> Path:
    """Draw the plan: prices, forecasts and grid; battery and SoC; heat pump and
    indoor temperature with its SG-Ready states."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hours = np.array([datetime.fromtimestamp(plan.start_s + i * plan.step_s, zone)
                      for i in range(plan.steps)])
    fig, axes = plt.subplots(3, 1, figsize=(11, 9), sharex=True)
    power, price = axes[0], axes[0].twinx()
    power.step(hours, plan.load_kw, where="post", label="load forecast")
    power.step(hours, plan.pv_kw, where="post", label="PV forecast")
    power.step(hours, plan.grid_kw, where="post", label="grid (planned)", linewidth=2)
    price.step(hours, plan.price_cny_per_kwh, where="post", color="grey", linestyle=":",
               label="price")
    power.set_ylabel("kW")
    price.set_ylabel("CNY/kWh")
    power.legend(loc="upper left", fontsize=8)
    battery, soc = axes[1], axes[1].twinx()
    battery.bar(hours, plan.battery_kw, width=plan.step_s / 86400.0, align="edge",
                label="battery (+ discharge)")
    soc.plot(hours, plan.soc_kwh, color="black", label="SoC")
    battery.set_ylabel("kW")
    soc.set_ylabel("kWh")
    battery.legend(loc="upper left", fontsize=8)
    heat, indoor = axes[2], axes[2].twinx()
    heat.step(hours, plan.heat_pump_kw, where="post", label="heat pump")
    for state, colour in ((1, "tab:blue"), (3, "tab:red")):
        mask = plan.sg_state == state
        heat.scatter(hours[mask], np.zeros(int(mask.sum())), color=colour, marker="|", s=200,
                     label=SG_NAMES[state])
    indoor.plot(hours, plan.indoor_c, color="black", label="indoor")
    heat.set_ylabel("kW")
    indoor.set_ylabel("°C")
    heat.legend(loc="upper left", fontsize=8)
    fig.suptitle(f"plan from {_local(plan.start_s, zone)} ({plan.status.value})")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _local(unix_s: float, zone: tzinfo) -> str:
    return datetime.fromtimestamp(unix_s, zone).strftime("%Y-%m-%d %H:%M")
