"""A closed loop over the simulated building, on a manual clock (no sockets)."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sim_plant import SimPlant
from tests_support import eventually

from controller.control.events import DrEvent
from controller.control.loop import ControlLoop
from controller.control.settings import ControlSettings
from controller.inbox import CommandInbox
from controller.store import Store
from drivers.site import SiteSpec, load_site
from simulators.clock import ManualClock

ZONE = ZoneInfo("Asia/Shanghai")
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "jinan-office.toml"


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=ZONE).timestamp()


@dataclass
class Trace:
    t: list[float] = field(default_factory=list)
    grid_kw: list[float] = field(default_factory=list)
    battery_kw: list[float] = field(default_factory=list)
    pv_kw: list[float] = field(default_factory=list)
    soc: list[float] = field(default_factory=list)
    shed: list[int] = field(default_factory=list)
    sg: list[int] = field(default_factory=list)


@dataclass
class ClosedLoop:
    loop: ControlLoop
    plant: SimPlant
    simulated: Any
    clock: ManualClock
    trace: Trace = field(default_factory=Trace)

    @classmethod
    def build(cls, start: str, settings: ControlSettings, *, site: SiteSpec | None = None,
              store: Store | None = None, soc_pct: float | None = None) -> ClosedLoop:
        spec = site or load_site(EXAMPLE)
        clock = ManualClock(at(start))
        plant, simulated = SimPlant.build(spec, clock.now, start_s=clock.now())
        if soc_pct is not None:
            for battery in simulated.model.batteries.values():
                battery.stored_wh = battery.config.capacity_wh * soc_pct / 100.0
        loop = ControlLoop(plant, settings, CommandInbox(), store, clock=clock.now)
        return cls(loop, plant, simulated, clock)

    async def run(self, seconds: float, step_s: float | None = None) -> None:
        """Advance the clock and cycle the loop until ``seconds`` have passed."""
        step = step_s or self.loop.settings.cycle_s
        end = self.clock.now() + seconds
        model = self.simulated.model
        while self.clock.now() < end - 1e-9:
            self.clock.advance(step)
            model.advance(self.clock.now())
            self.record()
            await self.loop.cycle()

    def advance_without_controller(self, seconds: float, step_s: float = 5.0) -> None:
        """The building goes on for ``seconds`` while the controller is dead."""
        model = self.simulated.model
        end = self.clock.now() + seconds
        while self.clock.now() < end:
            self.clock.advance(step_s)
            model.advance(self.clock.now())

    async def stop_running(self) -> None:
        """Run the loop as a task (as the gateway does) for a cycle, then stop it: what
        it holds is handed back."""
        cycles = self.loop.cycles
        task = asyncio.create_task(self.loop.run())
        await eventually(lambda: self.loop.cycles > cycles, what="a cycle of the running loop")
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    def record(self) -> None:
        model = self.simulated.model
        self.trace.t.append(self.clock.now())
        self.trace.grid_kw.append(model.site_power_w() / 1000.0)
        battery = model.batteries["battery"]  # every site variant names its battery so
        self.trace.battery_kw.append(battery.power_w / 1000.0)
        self.trace.soc.append(battery.soc_pct)
        self.trace.pv_kw.append(sum(p.power_w for p in model.pv.values()) / 1000.0)
        self.trace.shed.append(sum(1 for load in model.loads.values() if not load.switched_on))
        heat_pump = model.heat_pumps.get("heat_pump")  # site variants may have none
        self.trace.sg.append(0 if heat_pump is None else heat_pump.sg_ready_state)

    def event(self, event: DrEvent) -> None:
        self.loop.book.add(event)

    def between(self, start: float, end: float) -> list[int]:
        return [i for i, t in enumerate(self.trace.t) if start <= t < end]
