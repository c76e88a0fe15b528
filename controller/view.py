"""The live terminal view: site power flows and device health, refreshed every second."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from controller.bus import LatestValues
from controller.dcview import dc_bus_table
from controller.runtime import Gateway
from drivers.site import SiteSpec


@dataclass(frozen=True, slots=True)
class Flows:
    """Site power flows in kW from the latest readings (None: not known now)."""

    grid_kw: float | None
    pv_kw: float | None
    battery_kw: float | None
    soc_pct: float | None
    heat_pump_kw: float | None
    sg_ready_state: int | None
    indoor_c: float | None
    dc_bus_v: float | None
    dc_bus_kw: float | None
    loads_on: int
    loads_total: int
    switched_kw: float


def capability(site: SiteSpec, latest: LatestValues, device: str, name: str) -> float | None:
    point = site.devices[device].device_map.capabilities.get(name)
    return None if point is None else latest.value(device, point)


def _sum_kind(site: SiteSpec, latest: LatestValues, kind: str, name: str) -> float | None:
    values = [capability(site, latest, d.name, name) for d in site.devices.values()
              if d.device_map.kind == kind]
    known = [v for v in values if v is not None]
    return sum(known) / 1000.0 if known else None


def _first(site: SiteSpec, latest: LatestValues, kind: str, name: str) -> float | None:
    for device in site.devices.values():
        if device.device_map.kind == kind:
            return capability(site, latest, device.name, name)
    return None


def site_flows(site: SiteSpec, latest: LatestValues) -> Flows:
    grid = site.grid_meter()
    grid_w = None if grid is None else capability(site, latest, grid.name, "power_w")
    on = total = 0
    switched_w = 0.0
    for load in site.loads.values():
        if load.device is None or load.channel is None:
            continue
        total += 1
        state = capability(site, latest, load.device, f"channel_{load.channel}_on")
        if state:
            on += 1
            switched_w += load.rated_w
    sg_state = _first(site, latest, "heat_pump", "sg_ready_state")
    return Flows(
        grid_kw=None if grid_w is None else grid_w / 1000.0,
        pv_kw=_sum_kind(site, latest, "inverter", "power_w"),
        battery_kw=_sum_kind(site, latest, "battery", "power_w"),
        soc_pct=_first(site, latest, "battery", "soc_pct"),
        heat_pump_kw=_sum_kind(site, latest, "heat_pump", "power_w"),
        sg_ready_state=None if sg_state is None else int(sg_state),
        indoor_c=_first(site, latest, "heat_pump", "indoor_temp_c"),
        dc_bus_v=_first(site, latest, "dc_bus", "bus_voltage_v"),
        dc_bus_kw=_sum_kind(site, latest, "dc_bus", "power_w"),
        loads_on=on, loads_total=total, switched_kw=switched_w / 1000.0,
    )


def _kw(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "—"
    return f"{value:+8.1f} kW" if signed else f"{value:8.1f} kW"


SG_LABELS = {1: "blocked", 2: "normal", 3: "boost", 4: "forced"}
STATE_STYLE = {"ok": "green", "stale": "yellow", "error": "red", "starting": "dim"}


def render(gateway: Gateway, clock: Callable[[], float]) -> Group:
    site, latest = gateway.site, gateway.bus.latest
    flows = site_flows(site, latest)
    moment = datetime.fromtimestamp(clock(), site.zone).strftime("%Y-%m-%d %H:%M:%S")
    title = Text(f"{site.name} — {moment}", style="bold")
    power = Table(title="power flows", title_justify="left", expand=False)
    power.add_column("")
    power.add_column("power", justify="right")
    power.add_column("")
    grid_note = "" if flows.grid_kw is None else ("importing" if flows.grid_kw >= 0
                                                  else "exporting")
    power.add_row("grid", _kw(flows.grid_kw, signed=True), grid_note)
    power.add_row("PV", _kw(flows.pv_kw), "")
    soc = "" if flows.soc_pct is None else f"SoC {flows.soc_pct:.1f} %"
    battery_note = soc
    if flows.battery_kw is not None:
        direction = ("discharging" if flows.battery_kw > 0.05
                     else "charging" if flows.battery_kw < -0.05 else "idle")
        battery_note = f"{direction}, {soc}"
    power.add_row("battery", _kw(flows.battery_kw, signed=True), battery_note)
    hp_note = []
    if flows.sg_ready_state is not None:
        hp_note.append(f"SG-Ready {flows.sg_ready_state} "
                       f"({SG_LABELS.get(flows.sg_ready_state, '?')})")
    if flows.indoor_c is not None:
        hp_note.append(f"indoor {flows.indoor_c:.1f} °C")
    power.add_row("heat pump", _kw(flows.heat_pump_kw), ", ".join(hp_note))
    dc_note = "" if flows.dc_bus_v is None else f"bus {flows.dc_bus_v:.1f} V"
    power.add_row("DC bus", _kw(flows.dc_bus_kw), dc_note)
    power.add_row("loads", _kw(flows.switched_kw),
                  f"{flows.loads_on}/{flows.loads_total} switched on (rated)")
    health = Table(title="devices", title_justify="left")
    for column in ("device", "model", "state", "last ok", "polls ok/failed", "latency", "note"):
        health.add_column(column)
    now = time.time()
    for name, state in gateway.health().items():
        spec = site.devices[name]
        age = "—" if state.last_ok_wall is None else f"{max(0.0, now - state.last_ok_wall):.0f} s"
        health.add_row(name, spec.model, Text(state.state, style=STATE_STYLE.get(state.state, "")),
                       age, f"{state.polls_ok}/{state.polls_failed}",
                       f"{state.latency_ms:.0f} ms", state.last_error[:50] if state.state != "ok"
                       else "")
    dc_bus = dc_bus_table(site, latest)
    return Group(title, power, *([] if dc_bus is None else [dc_bus]), health)


async def live_view(gateway: Gateway, clock: Callable[[], float] = time.time,
                    period_s: float = 1.0) -> None:
    console = Console()
    with Live(render(gateway, clock), console=console, refresh_per_second=4,
              transient=False) as live:
        while True:
            await asyncio.sleep(period_s)
            live.update(render(gateway, clock))


async def log_summary(gateway: Gateway, clock: Callable[[], float] = time.time,
                      period_s: float = 10.0) -> None:
    """Headless mode: a one-line summary in the log every ``period_s``."""
    import logging

    log = logging.getLogger("pedf.summary")
    while True:
        await asyncio.sleep(period_s)
        flows = site_flows(gateway.site, gateway.bus.latest)
        states = [h.state for h in gateway.health().values()]
        log.info("grid %s, PV %s, battery %s, heat pump %s, DC bus %s V; devices ok %d/%d",
                 _kw(flows.grid_kw, True).strip(), _kw(flows.pv_kw).strip(),
                 _kw(flows.battery_kw, True).strip(), _kw(flows.heat_pump_kw).strip(),
                 "—" if flows.dc_bus_v is None else f"{flows.dc_bus_v:.1f}",
                 states.count("ok"), len(states))
