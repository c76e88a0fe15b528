"""Metering: readings into the fastcore aggregator, window summaries out.

Which series are metered, with the sign fastcore expects (+ import at the connection):

* the grid meter (``role = "grid"``): ``power_w`` and its import/export counters;
* PV inverters: −``power_w`` (generation is export);
* batteries: −``power_w`` (discharge is export, charge import);
* heat pumps, DC-bus converters, feeder meters: ``power_w`` (consumption);
* sub-meter channels: ``chN_power_w``, named after the load they meter.

Every completed demand window produces one ``metering`` message (window demand per
series, and the period's totals, time-of-use energy and cost, carbon and site figures)
and one row per series in the store's window history, which demand-response baselines
read. The aggregator state is saved in the store after each window, so totals survive a
restart; the period resets at the first window of each month (local time).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

import fastcore
from controller.bus import ReadingBus
from controller.store import Outgoing, Store
from drivers.reading import Quality
from drivers.schema import Node
from drivers.site import SiteSpec

log = logging.getLogger("pedf.metering")

PERIODS = ("sharp", "peak", "flat", "valley")


@dataclass(frozen=True, slots=True)
class Series:
    """One metered series: where its power comes from and how to sign it."""

    name: str
    role: str  # consumer, pv, grid, battery
    device: str
    point: str
    sign: float
    import_counter: str | None = None
    export_counter: str | None = None


def metered_series(site: SiteSpec) -> list[Series]:
    series: list[Series] = []
    metered_loads = {load.meter: load.name for load in site.loads.values() if load.meter}
    for device in site.devices.values():
        caps = device.device_map.capabilities
        kind = device.device_map.kind
        if kind == "meter" and "power_w" in caps:
            role = "grid" if device.role == "grid" else "consumer"
            series.append(Series(device.name, role, device.name, caps["power_w"], 1.0,
                                 caps.get("import_wh"), caps.get("export_wh")))
        elif kind == "inverter":
            series.append(Series(device.name, "pv", device.name, caps["power_w"], -1.0))
        elif kind == "battery":
            series.append(Series(device.name, "battery", device.name, caps["power_w"], -1.0))
        elif kind in ("heat_pump", "dc_bus") and "power_w" in caps:
            series.append(Series(device.name, "consumer", device.name, caps["power_w"], 1.0,
                                 caps.get("energy_wh") if kind == "heat_pump" else None))
        elif kind == "sub_meter":
            for capability, point in caps.items():
                if capability.startswith("ch") and capability.endswith("_power_w"):
                    channel = int(capability[2:capability.index("_")])
                    name = metered_loads.get((device.name, channel),
                                             f"{device.name}_ch{channel}")
                    series.append(Series(name, "consumer", device.name, point, 1.0))
    return series


@dataclass(frozen=True, slots=True)
class MeteringSettings:
    demand_window_s: int = 900
    max_gap_s: float = 300.0
    emission_factor_kg_per_kwh: float | tuple[float, ...] = 0.5703
    tariff: fastcore.TariffCalendar | None = None


def metering_settings(site: SiteSpec) -> MeteringSettings:
    """``[metering]``: demand window, gap limit, emission factor, tariff. Raises
    ConfigError naming the key."""
    node = site.section("metering")
    if node is None:
        return MeteringSettings(tariff=fastcore.SHANDONG_COMMERCIAL_EXAMPLE)
    node.only(("demand_window_s", "max_gap_s", "emission_factor_kg_per_kwh", "tariff"))
    window = 900 if node.get("demand_window_s") is None else node.req(
        "demand_window_s").int(min=60, max=86400)
    if 86400 % window:
        raise node.req("demand_window_s").error("a number of seconds that divides a day")
    factor: float | tuple[float, ...] = 0.5703
    factor_node = node.get("emission_factor_kg_per_kwh")
    if factor_node is not None:
        if isinstance(factor_node.value, list):
            hours = [item.float(min=0, max=10) for item in factor_node.list()]
            if len(hours) != 24:
                raise factor_node.error("one number or 24 hourly numbers")
            factor = tuple(hours)
        else:
            factor = factor_node.float(min=0, max=10)
    tariff = fastcore.SHANDONG_COMMERCIAL_EXAMPLE
    tariff_node = node.get("tariff")
    if tariff_node is not None:
        tariff = _tariff(tariff_node)
    return MeteringSettings(
        demand_window_s=window,
        max_gap_s=300.0 if node.get("max_gap_s") is None
        else node.req("max_gap_s").float(min=1, max=86400),
        emission_factor_kg_per_kwh=factor, tariff=tariff)


def _tariff(node: Node) -> fastcore.TariffCalendar:
    if node.value == "shandong-example":
        return fastcore.SHANDONG_COMMERCIAL_EXAMPLE
    if not isinstance(node.value, dict):
        raise node.error('"shandong-example" or a tariff table (docs/fastcore.md)')
    try:
        return fastcore.TariffCalendar.from_dict(node.value)
    except (TypeError, ValueError, KeyError) as exc:
        raise node.error(f"a valid tariff calendar ({exc})") from None


@dataclass
class MeteringFeed:
    """Bus → aggregator; completed windows → window history and, when an uplink carries
    them (``topic`` set), the outbox."""

    site: SiteSpec
    store: Store
    bus: ReadingBus
    topic: str | None
    notify: asyncio.Event | None = None
    settings: MeteringSettings = field(default_factory=MeteringSettings)
    flush_s: float = 1.0
    clock: Callable[[], float] = time.time
    series: list[Series] = field(init=False)
    aggregator: Any = field(init=False)
    _by_point: dict[tuple[str, str], int] = field(init=False)
    _counters: dict[tuple[str, str], tuple[int, str]] = field(init=False)
    _last_window: float = math.nan
    _month: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        self.series = metered_series(self.site)
        self._by_point = {(s.device, s.point): i for i, s in enumerate(self.series)}
        self._counters = {}
        for index, item in enumerate(self.series):
            if item.import_counter:
                self._counters[(item.device, item.import_counter)] = (index, "import")
            if item.export_counter:
                self._counters[(item.device, item.export_counter)] = (index, "export")
        self.aggregator = self._restore() or self._new()

    def _new(self) -> Any:
        offset = self.site.zone.utcoffset(datetime.now()) or None
        return fastcore.MeterAggregator(
            max(1, len(self.series)), roles=[s.role for s in self.series] or None,
            utc_offset_s=int(offset.total_seconds()) if offset else 28800,
            demand_window_s=self.settings.demand_window_s, max_gap_s=self.settings.max_gap_s,
            tariff=self.settings.tariff,
            emission_factor_kg_per_kwh=self.settings.emission_factor_kg_per_kwh)

    def _restore(self) -> Any | None:
        text = self.store.get_state("metering")
        if text is None:
            return None
        try:
            state = json.loads(text)
            restored = fastcore.MeterAggregator.from_state(state)
        except (ValueError, TypeError, KeyError) as exc:
            log.warning("saved metering state unusable (%s): starting afresh", exc)
            return None
        saved_roles = [fastcore.ROLE_NAMES[int(code)] for code in restored.config.roles]
        if saved_roles != [s.role for s in self.series] or (
                restored.n_loads != max(1, len(self.series))):
            log.warning("site changed since the metering state was saved: starting afresh")
            return None
        log.info("metering totals restored")
        return restored

    async def run(self) -> None:
        subscription = self.bus.subscribe("metering", maxsize=100_000)
        try:
            while True:
                await asyncio.sleep(self.flush_s)
                samples: list[tuple[int, float, float]] = []
                counters: list[tuple[int, float, str, float]] = []
                while (batch := subscription.get_nowait()) is not None:
                    for reading in batch:
                        value = reading.value
                        if reading.quality is not Quality.OK or not isinstance(
                                value, int | float) or isinstance(value, bool):
                            continue
                        key = (reading.device, reading.point)
                        index = self._by_point.get(key)
                        if index is not None:
                            samples.append((index, reading.timestamp,
                                            self.series[index].sign * float(value)))
                        counter = self._counters.get(key)
                        if counter is not None:
                            counters.append((counter[0], reading.timestamp, counter[1],
                                             float(value)))
                self.feed(samples, counters)
                await self._publish_completed_windows()
        finally:
            self.bus.unsubscribe(subscription)

    def feed(self, samples: list[tuple[int, float, float]],
             counters: list[tuple[int, float, str, float]]) -> None:
        if samples:
            indices, stamps, powers = zip(*samples, strict=True)
            self.aggregator.add_samples(np.array(indices, dtype=np.int32),
                                        np.array(stamps, dtype=np.float64),
                                        np.array(powers, dtype=np.float64))
        readings: dict[tuple[int, float], dict[str, float]] = {}
        for index, stamp, direction, value in counters:
            readings.setdefault((index, stamp), {})[direction] = value
        for (index, stamp), registers in readings.items():
            arrays = (np.array([index], dtype=np.int32), np.array([stamp], dtype=np.float64),
                      np.array([registers.get("import", math.nan)], dtype=np.float64))
            export = registers.get("export")
            self.aggregator.add_counters(
                *arrays, None if export is None else np.array([export], dtype=np.float64))

    async def _publish_completed_windows(self) -> None:
        totals = self.aggregator.totals()
        grid = [i for i, s in enumerate(self.series) if s.role == "grid"]
        starts = totals.demand_window_start_s[grid] if grid else totals.demand_window_start_s
        finite = starts[np.isfinite(starts)]
        if not finite.size:
            return
        window = float(finite.max())
        if window == self._last_window:
            return
        self._last_window = window
        body = self.window_summary(window, totals)
        rows = [(window, s.name, float(totals.demand_kw[i])) for i, s in enumerate(self.series)
                if totals.demand_window_start_s[i] == window]
        await asyncio.to_thread(self._save, body, rows)
        local = datetime.fromtimestamp(window + self.settings.demand_window_s, self.site.zone)
        month = (local.year, local.month)
        if self._month is not None and month != self._month:
            log.info("new billing period %04d-%02d: metering totals reset", *month)
            self.aggregator.reset_period()
        self._month = month
        if self.notify is not None:
            self.notify.set()

    def _save(self, body: dict[str, object], rows: list[tuple[float, str, float]]) -> None:
        if self.topic is not None:
            self.store.append([Outgoing(self.topic, body)])
        self.store.record_windows(rows)
        self.store.set_state("metering", json.dumps(self.aggregator.state(), allow_nan=False))

    def window_summary(self, window: float, totals: Any) -> dict[str, object]:
        figures = self.aggregator.site_figures()
        loads = {}
        for index, item in enumerate(self.series):
            loads[item.name] = {
                "role": item.role,
                "demand_kw": _num(totals.demand_kw[index]),
                "import_kwh": _num(totals.import_wh[index] / 1000.0),
                "export_kwh": _num(totals.export_wh[index] / 1000.0),
                "tou_import_kwh": dict(zip(PERIODS, (_num(v / 1000.0) for v in
                                                     totals.tou_import_wh[index]), strict=True)),
                "cost_cny": _num(totals.cost_cny[index]),
                "carbon_kg": _num(totals.carbon_kg[index]),
                "max_demand_kw": _num(totals.max_demand_kw[index]),
            }
        return {
            "ts": round(self.clock(), 3),
            "window_start": window,
            "window_s": self.settings.demand_window_s,
            "loads": loads,
            "site": {
                "grid_import_kwh": _num(figures.grid_import_wh / 1000.0),
                "grid_export_kwh": _num(figures.grid_export_wh / 1000.0),
                "pv_generation_kwh": _num(figures.pv_generation_wh / 1000.0),
                "consumption_kwh": _num(figures.consumption_wh / 1000.0),
                "self_consumption_ratio": _num(figures.self_consumption_ratio),
                "self_sufficiency_ratio": _num(figures.self_sufficiency_ratio),
                "renewable_share": _num(figures.renewable_share),
                "peak_demand_kw": _num(figures.peak_demand_kw),
                "carbon_kg": _num(figures.carbon_kg),
                "grid_cost_cny": _num(figures.grid_cost_cny),
            },
            "implementation": fastcore.IMPLEMENTATION,
        }


def _num(value: float) -> float | None:
    number = float(value)
    return round(number, 4) if math.isfinite(number) else None
