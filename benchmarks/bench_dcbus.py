"""直柔 DC-bus voltage-band control, on the simulated bus of tests/control/sites/dc-bus.toml
(375 V, 60 kW interface converter, 20 kWp PV, 100 kWh / 30 kW DC storage, 53 kW of
flexible loads in four classes, 5 kW fixed).

1. Bus regulation (physics, converter in droop): ±50 % steps of PV and of the flexible
   loads; the bus must stay inside its band and settle within 100 ms of simulated time.
2. Grid following (the gateway's control loop on the simulated devices, no sockets): a
   VPP grid-setpoint step served by the converter's grid limit alone, the bus voltage
   carrying it to every device. Met when the grid meter is within 5 % of the step within
   1 s of simulated time, with no write to the load controller after the curves.
3. DR depth (physics): a reduction request ramped over 20 s, served
   a. by voltage alone: the converter's grid limit lowered, storage and loads give way
      by their curves (the order they gave way is printed);
   b. by today's on/off band shedding: the same converter limit, loads without curves
      (constant power) and storage without droop, the gateway's ``safety_dc_bus``
      strategy switching off one class per 1 s cycle while the bus is below its band.
   Side by side in the same run: the share of the request each delivers.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from benchmarks.common import REPO, Results, print_goals, print_table
from controller.control import strategies
from controller.control.events import DrEvent, EventKind
from controller.control.loop import ControlLoop
from controller.control.model import DcBusState, LoadState, Snapshot
from controller.control.settings import ControlSettings
from controller.inbox import CommandInbox
from controller.scheduler import WriteResult
from drivers.dc_curves import DcLoadClass
from drivers.devices import Write
from drivers.site import load_site
from fastcore._tariff import FLAT
from simulators.clock import ManualClock
from simulators.physics.dcgrid import ConverterMode, DcGrid, office_floor_bus, settle_time_s

SITE = REPO / "tests" / "control" / "sites" / "dc-bus.toml"
NOMINAL_V = 375.0
BAND_PCT = (90.0, 105.0)
PRIORITY = {DcLoadClass.LIGHTING: 1, DcLoadClass.FAN_COIL: 2, DcLoadClass.HEAT_PUMP: 3,
            DcLoadClass.EV_CHARGER: 4}
SETTLE_SHARE = 0.02  # "settled": within 2 % of the step's voltage change of the final value
DR_REQUEST_W = 40_000.0
DR_RAMP_S = 20.0
DR_HOLD_S = 40.0


def bus(*, curves: bool = True, storage_droop: bool = True) -> DcGrid:
    """The test site's bus at full demand, PV at 15 kW, settled."""
    return office_floor_bus(curves=curves, storage_droop=storage_droop)


# -- 1. bus regulation --------------------------------------------------------------------


def regulation() -> list[tuple[str, float, float, float]]:
    """(step, min V, max V, settle ms) for each ±50 % step, converter in droop."""
    rows = []
    for what, factor in (("PV +50 %", 1.5), ("PV −50 %", 0.5), ("loads +50 %", 1.5),
                         ("loads −50 %", 0.5)):
        grid = bus()
        assert grid.trace is not None
        start = grid.t_s
        if what.startswith("PV"):
            grid.pv[0].available_w *= factor
        else:
            for load in grid.loads.values():
                load.demand *= factor
        before_v = grid.voltage_v
        grid.trace.clear()
        grid.advance(start + 1.0, fine_s=1.0)
        final = grid.voltage_v
        voltages = [v for _, v in grid.trace]
        tolerance = max(0.05, SETTLE_SHARE * abs(final - before_v))
        settle = settle_time_s(grid.trace, start, final, tolerance)
        rows.append((what, min(voltages), max(voltages), settle * 1000.0))
    return rows


# -- 2. grid following by the gateway -------------------------------------------------------


class CountingPlant:
    """The tests' simulated plant, counting writes per device."""

    def __init__(self, plant: Any) -> None:
        self.inner = plant
        self.site = plant.site
        self.writes: dict[str, int] = {}

    def value(self, device: str, capability: str) -> float | None:
        return self.inner.value(device, capability)  # type: ignore[no-any-return]

    def device_values(self, device: str) -> Any:
        return self.inner.device_values(device)

    async def execute(self, device: str, writes: Sequence[Write]) -> list[WriteResult]:
        self.writes[device] = self.writes.get(device, 0) + len(writes)
        return await self.inner.execute(device, writes)  # type: ignore[no-any-return]


async def grid_following() -> dict[str, float]:
    sys.path[:0] = [str(REPO / "tests")]
    from sim_plant import SimPlant  # the tests' socket-free plant

    spec = load_site(SITE)
    clock = ManualClock(datetime(2026, 6, 17, 10, tzinfo=ZoneInfo("Asia/Shanghai")).timestamp())
    inner, simulated = SimPlant.build(spec, clock.now, start_s=clock.now())
    plant = CountingPlant(inner)
    loop = ControlLoop(plant, ControlSettings(), CommandInbox(), None, clock=clock.now)
    for _ in range(40):  # curves written and verified, bus settled
        await loop.cycle()
        clock.advance(1.0)
    load_writes_before = plant.writes.get("dc_loads", 0)
    grid = simulated.model.dc_grids["dc_converter"]
    before_w = simulated.model.site_power_w()
    step_w = -20_000.0
    target_w = before_w + step_w
    loop.book.add(DrEvent("vpp-step", EventKind.SETPOINT, "site", clock.now(), 600.0,
                          target_w / 1000))
    started = clock.now()
    met_at = None
    samples: list[tuple[float, float]] = []
    next_cycle = clock.now()
    while clock.now() - started < 10.0:
        if clock.now() >= next_cycle - 1e-9:
            await loop.cycle()  # the event wakes the loop at once, then every 1 s
            next_cycle += 1.0
        clock.advance(0.01)
        simulated.model.advance(clock.now())
        grid_w = simulated.model.site_power_w()
        samples.append((clock.now() - started, grid_w))
        within = abs(grid_w - target_w) <= 0.05 * abs(step_w)
        if within and met_at is None:
            met_at = clock.now() - started
        elif not within:
            met_at = None
    return {"before_w": before_w, "target_w": target_w,
            "after_w": samples[-1][1], "met_s": float("nan") if met_at is None else met_at,
            "load_writes": plant.writes.get("dc_loads", 0) - load_writes_before,
            "bus_v": grid.voltage_v,
            "mode": float(grid.converter.mode is ConverterMode.GRID_LIMIT)}


# -- 3. DR depth ---------------------------------------------------------------------------


def dr_by_voltage() -> tuple[float, list[tuple[str, float, float]], float, float]:
    """(delivered W, [(class, gave way at s, fraction at the end %)], storage W, lowest
    bus V)."""
    grid = bus()
    converter = grid.converter
    before = converter.power_w
    storage_before = grid.storage[0].power_w
    converter.mode = ConverterMode.GRID_LIMIT
    converter.watchdog_s = 0.0
    gave_way: dict[DcLoadClass, float] = {}
    start, t, lowest = grid.t_s, 0.0, grid.voltage_v
    while t < DR_RAMP_S + DR_HOLD_S:
        t += 0.1
        converter.grid_limit_w = before - DR_REQUEST_W * min(1.0, t / DR_RAMP_S)
        grid.advance(start + t, fine_s=0.0)
        for cls, load in grid.loads.items():
            if cls not in gave_way and load.curve.fraction_pct(grid.voltage_v) < 99.0:
                gave_way[cls] = t
        lowest = min(lowest, grid.voltage_v)
    order = [(cls.value, at, grid.loads[cls].curve.fraction_pct(grid.voltage_v))
             for cls, at in sorted(gave_way.items(), key=lambda item: item[1])]
    return (before - converter.power_w, order, grid.storage[0].power_w - storage_before,
            lowest)


def depth_by_voltage_w() -> float:
    """The most the bus can give by voltage alone: the converter's draw before, less the
    lowest grid limit it still holds before its bus support takes over at the band's
    floor (the limit lowered in 500 W steps, the bus settling at each)."""
    grid = bus()
    converter = grid.converter
    before = held = converter.power_w
    converter.mode = ConverterMode.GRID_LIMIT
    limit = before
    while limit > -converter.rated_power_w:
        limit -= 500.0
        converter.grid_limit_w = limit
        grid.advance(grid.t_s + 5.0)
        if abs(converter.power_w - limit) > 0.02 * converter.rated_power_w:  # + feeder loss
            break
        held = limit
    return before - held


def dr_by_band_shedding() -> tuple[float, list[tuple[str, float]], float, float]:
    """(delivered W, [(class, switched off at s)], seconds below the band, lowest V)."""
    grid = bus(curves=False, storage_droop=False)
    converter = grid.converter
    before = converter.power_w
    settings = ControlSettings()
    converter.mode = ConverterMode.GRID_LIMIT
    converter.watchdog_s = 0.0
    shed_by: dict[str, str] = {}
    off: dict[str, float] = {}
    start, t, below_s, lowest = grid.t_s, 0.0, 0.0, grid.voltage_v
    shed_floor = NOMINAL_V * settings.dc_band(NOMINAL_V)[0] / 100.0
    next_cycle = 1.0
    while t < DR_RAMP_S + DR_HOLD_S:
        t += 0.1
        converter.grid_limit_w = before - DR_REQUEST_W * min(1.0, t / DR_RAMP_S)
        grid.advance(start + t, fine_s=0.0)
        lowest = min(lowest, grid.voltage_v)
        if grid.voltage_v < shed_floor:
            below_s += 0.1
        if t >= next_cycle - 1e-9:  # the gateway's 1 s cycle, today's strategy
            next_cycle += 1.0
            for proposal in strategies.safety_dc_bus(_snapshot(grid, t, off),
                                                     strategies.Context(settings,
                                                                        shed_by=shed_by),
                                                     strategies.Decision()):
                name = proposal.actuator.name
                if name not in off:
                    off[name] = t
                    shed_by[name] = "dc_bus"
                    grid.loads[DcLoadClass(name)].demand = 0.0
    return (before - converter.power_w, sorted(off.items(), key=lambda item: item[1]),
            below_s, lowest)


def _snapshot(grid: DcGrid, t: float, off: dict[str, float]) -> Snapshot:
    loads = tuple(
        LoadState(cls.value, load.rated_w, PRIORITY[cls], True, cls.value not in off,
                  load.power_w, 0.0, 0.0, 3600.0, None, "dc_converter", None,
                  off.get(cls.value))
        for cls, load in grid.loads.items())
    return Snapshot(now_s=t, local_hour=10.0, weekday=2, period=FLAT, grid_w=None,
                    pv_w=0.0, dc_buses=(DcBusState("dc_converter", grid.voltage_v, NOMINAL_V,
                                                   grid.converter.power_w),),
                    loads=loads)


# -- report ----------------------------------------------------------------------------------


def main() -> Results:
    started = time.perf_counter()
    results = Results()
    low_v, high_v = NOMINAL_V * BAND_PCT[0] / 100.0, NOMINAL_V * BAND_PCT[1] / 100.0
    print(f"\n-- 1. bus regulation, converter in droop; band {low_v:.1f}–{high_v:.1f} V, "
          f"settled = within {SETTLE_SHARE:.0%} of the step's voltage change")
    rows = regulation()
    print_table(["step", "min V", "max V", "settle ms"],
                [[w, f"{lo:.1f}", f"{hi:.1f}", f"{ms:.0f}"] for w, lo, hi, ms in rows])
    in_band = all(low_v <= lo and hi <= high_v for _, lo, hi, _ in rows)
    worst_ms = max(ms for *_, ms in rows)
    results.figures.update({"regulation_worst_settle_ms": round(worst_ms, 1),
                            "regulation_lowest_v": round(min(r[1] for r in rows), 1),
                            "regulation_highest_v": round(max(r[2] for r in rows), 1)})
    results.goal("±50 % PV and load steps: bus inside its band", in_band,
                 f"{min(r[1] for r in rows):.1f}–{max(r[2] for r in rows):.1f} V "
                 f"(band {low_v:.1f}–{high_v:.1f} V)")
    results.goal("±50 % steps settle < 100 ms simulated", worst_ms < 100.0,
                 f"worst {worst_ms:.0f} ms")

    print("\n-- 2. grid following: a −20 kW VPP setpoint step, served by the converter's "
          "grid limit (gateway loop, 1 s cycle, on the simulated devices)")
    follow = asyncio.run(grid_following())
    print_table(["before kW", "target kW", "after 10 s kW", "within 5 % after s",
                 "load-controller writes", "bus V"],
                [[f"{follow['before_w'] / 1000:.1f}", f"{follow['target_w'] / 1000:.1f}",
                  f"{follow['after_w'] / 1000:.1f}", f"{follow['met_s']:.2f}",
                  int(follow["load_writes"]), f"{follow['bus_v']:.1f}"]])
    results.figures.update({"grid_following_s": round(follow["met_s"], 3),
                            "grid_following_load_writes": int(follow["load_writes"])})
    met = follow["met_s"] == follow["met_s"] and follow["met_s"] <= 1.0 \
        and follow["load_writes"] == 0
    results.goal("grid-setpoint step met within 5 % in ≤ 1 s, no per-load writes", met,
                 f"{follow['met_s']:.2f} s, {int(follow['load_writes'])} load writes")

    print(f"\n-- 3. DR depth: a {DR_REQUEST_W / 1000:g} kW reduction ramped over "
          f"{DR_RAMP_S:g} s, held {DR_HOLD_S:g} s (same bus, same converter limit)")
    delivered, order, storage_w, lowest_voltage_v = dr_by_voltage()
    depth_w = depth_by_voltage_w()
    shed_delivered, shed_order, below_s, lowest_v = dr_by_band_shedding()
    print("  a. by voltage alone (curves + storage droop): classes gave way in this order")
    print_table(["class", "gave way at s", "fraction at the end %"],
                [[name, f"{at:.1f}", f"{pct:.0f}"] for name, at, pct in order])
    print(f"     storage +{storage_w / 1000:.1f} kW, lowest bus {lowest_voltage_v:.1f} V; "
          f"the deepest reduction by voltage alone (bus held at the band floor): "
          f"{depth_w / 1000:.1f} kW")
    print("  b. today's on/off band shedding (safety_dc_bus, one class per cycle):")
    print_table(["class", "switched off at s"], [[n, f"{at:.0f}"] for n, at in shed_order]
                or [["(none)", "-"]])
    print(f"     bus below the shed band for {below_s:.1f} s, lowest {lowest_v:.1f} V")
    share = delivered / DR_REQUEST_W
    shed_share = shed_delivered / DR_REQUEST_W
    print_table(["served by", "delivered kW", "share of request", "loads fully off"],
                [["voltage (curves)", f"{delivered / 1000:.1f}", f"{share:.0%}", 0],
                 ["on/off band shedding", f"{shed_delivered / 1000:.1f}", f"{shed_share:.0%}",
                  len(shed_order)]])
    results.figures.update({"dr_share_voltage": round(share, 3),
                            "dr_share_band_shedding": round(shed_share, 3),
                            "dr_order": ",".join(name for name, _, _ in order),
                            "dr_loads_switched_off_by_shedding": len(shed_order)})
    results.figures["dr_depth_by_voltage_kw"] = round(depth_w / 1000.0, 1)
    results.goal("DR by voltage alone: share of the request delivered, bus in band",
                 share >= 0.95 and lowest_voltage_v >= low_v,
                 f"{share:.0%} (order: {', '.join(name for name, _, _ in order)}; "
                 f"deepest {depth_w / 1000:.1f} kW); on/off band shedding {shed_share:.0%} "
                 f"with {len(shed_order)} classes off, {below_s:.1f} s below the band")
    print(f"\n  (benchmark took {time.perf_counter() - started:.1f} s)")
    return results


if __name__ == "__main__":
    print_goals(main().goals)
