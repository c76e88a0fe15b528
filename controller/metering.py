"""Metering: readings into the fastcore aggregator, window summaries out.

Which series are metered, with the sign fastcore expects (+ import at the connection):

* the grid meter (``role = "grid"``): ``power_w`` and its import/export counters;
* PV inverters: −``power_w`` (generation is export);
* batteries: −``power_w`` (discharge is export, charge import);
* heat pumps, DC-bus converters, feeder meters: ``power_w`` (consumption);
* sub-meter channels: ``chN_power_w``, named after the load they meter.

Every completed demand window produces one ``metering`` message (window demand per
series, and the period's totals, time-of-use energy and cost, carbon and site figures,
the month's bill so far and which tariff and carbon factor they used) and one row per
series in the store's window history, which demand-response baselines read. The
aggregator state is saved in the store after each window, so totals survive a restart;
the period resets at the first window of each month (local time).

The month's power factor (for 力调电费) comes from the grid meter's import energy and its
reactive energy, integrated here from ``reactive_power_var`` (|var|, trapezoid).
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
from pathlib import Path
from typing import Any

import numpy as np

import fastcore
from controller import streams
from controller.bus import ReadingBus
from controller.energy import (
    EnergyAccounting,
    EnergySettings,
    Reconciliation,
    energy_settings,
)
from controller.kpi import window_kpis
from controller.store import EnergyWindow, Outgoing, Store
from controller.streams import Stream
from controller.tariffs import (
    DEFAULT_TARIFF,
    POWER_FACTOR_STANDARDS,
    BasicChargeBasis,
    BillSettings,
    CarbonFactor,
    MonthlyBill,
    Tariff,
    carbon_factor,
    carbon_factors,
    load_tariff,
    month_power_factor,
    monthly_bill,
    power_factor_tables,
    shipped_tariffs,
)
from drivers.reading import Quality
from drivers.schema import Node
from drivers.site import SiteSpec

log = logging.getLogger("pedf.metering")


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


def _default_tariff() -> Tariff:
    return load_tariff(DEFAULT_TARIFF)


def _default_carbon() -> CarbonFactor:
    return carbon_factor("national")


@dataclass(frozen=True)
class MeteringSettings:
    demand_window_s: int = 900
    max_gap_s: float = 300.0
    tariff: Tariff = field(default_factory=_default_tariff)
    carbon: CarbonFactor = field(default_factory=_default_carbon)
    bill: BillSettings = field(default_factory=BillSettings)


_KEYS = ("demand_window_s", "max_gap_s", "tariff", "carbon", "carbon_year",
         "emission_factor_kg_per_kwh", "bill")


def metering_settings(site: SiteSpec) -> MeteringSettings:
    """``[metering]``: demand window, gap limit, tariff calendar, carbon factor, bill
    options. Raises ConfigError naming the key."""
    node = site.section("metering")
    if node is None:
        return MeteringSettings()
    node.only(_KEYS)
    window = 900 if node.get("demand_window_s") is None else node.req(
        "demand_window_s").int(min=60, max=86400)
    if 86400 % window:
        raise node.req("demand_window_s").error("a number of seconds that divides a day")
    tariff_node = node.get("tariff")
    tariff = _default_tariff() if tariff_node is None else _tariff(tariff_node, site)
    return MeteringSettings(
        demand_window_s=window,
        max_gap_s=300.0 if node.get("max_gap_s") is None
        else node.req("max_gap_s").float(min=1, max=86400),
        tariff=tariff, carbon=_carbon(node), bill=_bill(node.get("bill"), tariff))


def _tariff(node: Node, site: SiteSpec) -> Tariff:
    """A shipped calendar by name, or a calendar file (relative to the site file); errors
    inside that file name the file and its key."""
    ref = node.str()
    path = Path(site.file).parent / ref
    if ref not in shipped_tariffs() and (path.suffix != ".toml" or not path.is_file()):
        raise node.error("a shipped calendar (" + ", ".join(shipped_tariffs())
                         + ") or the path of an existing .toml calendar file")
    return load_tariff(ref, base=Path(site.file).parent)


def _carbon(node: Node) -> CarbonFactor:
    """``carbon`` (a shipped factor id, or the site's own: one number or 24 hourly
    numbers) with ``carbon_year``; ``emission_factor_kg_per_kwh`` is the older spelling
    of a site's own factor."""
    own = node.get("emission_factor_kg_per_kwh")
    choice = node.get("carbon")
    year_node = node.get("carbon_year")
    if own is not None and choice is not None:
        raise own.error("nothing: give carbon or emission_factor_kg_per_kwh, not both")
    choice = choice or own
    if choice is None:
        if year_node is not None:
            raise year_node.error("nothing without carbon")
        return _default_carbon()
    if isinstance(choice.value, str):
        ids = sorted({f.id for f in carbon_factors()})
        factor_id = choice.str(choices=ids)
        year = None if year_node is None else year_node.int(min=2000, max=2100)
        try:
            return carbon_factor(factor_id, year)
        except KeyError as exc:
            assert year_node is not None
            raise year_node.error(f"a year with a published factor ({exc.args[0]})") from None
    if year_node is not None:
        raise year_node.error("nothing with the site's own factor")
    if isinstance(choice.value, list):
        hours = tuple(item.float(min=0, max=10) for item in choice.list())
        if len(hours) != 24:
            raise choice.error("one number or 24 hourly numbers")
        values = hours
    else:
        values = (choice.float(min=0, max=10),)
    return CarbonFactor("site", "site's own factor", None, values, f"{node.file}: {choice.path}")


def _bill(node: Node | None, tariff: Tariff) -> BillSettings:
    """``[metering.bill]``: basic_charge ("none", "demand", "capacity"), transformer_kva,
    power_factor_standard (0.90, 0.85, 0.80)."""
    if node is None:
        return BillSettings()
    node.only(("basic_charge", "transformer_kva", "power_factor_standard"))
    basis_node = node.get("basic_charge")
    basis = BasicChargeBasis.NONE if basis_node is None else BasicChargeBasis(
        basis_node.str(choices=[b.value for b in BasicChargeBasis]))
    kva_node = node.get("transformer_kva")
    kva = None if kva_node is None else kva_node.float(min=1, max=1e6)
    if basis is BasicChargeBasis.CAPACITY and kva is None:
        raise node.req("transformer_kva").error("the transformer's kVA (basic_charge = "
                                                '"capacity")')
    price = {BasicChargeBasis.DEMAND: tariff.basic.demand_cny_per_kw_month,
             BasicChargeBasis.CAPACITY: tariff.basic.capacity_cny_per_kva_month}.get(basis, 0.0)
    if price is None:
        assert basis_node is not None
        raise basis_node.error(f"a basis the tariff prices ({Path(tariff.file).name} has no "
                               f"{basis.value} price in [basic_charge])")
    pf_node = node.get("power_factor_standard")
    standard = None
    if pf_node is not None:
        standard = pf_node.float()
        if standard not in POWER_FACTOR_STANDARDS:
            raise pf_node.error("0.90, 0.85 or 0.80 (the 1983 rule's standards)")
    return BillSettings(basis, kva, standard)


@dataclass
class ReactiveEnergy:
    """|reactive power| of the grid meter integrated into the month's kvarh (trapezoid,
    intervals longer than ``max_gap_s`` skipped)."""

    max_gap_s: float = 300.0
    kvarh: float = 0.0
    last: tuple[float, float] | None = None

    def add(self, timestamp_s: float, var: float) -> None:
        value = abs(var)
        if self.last is not None:
            t0, v0 = self.last
            if timestamp_s <= t0:
                return
            if timestamp_s - t0 <= self.max_gap_s:
                self.kvarh += 0.5 * (v0 + value) * (timestamp_s - t0) / 3.6e6
        self.last = (timestamp_s, value)

    def to_json(self) -> str:
        return json.dumps({"kvarh": self.kvarh, "last": self.last})

    @classmethod
    def from_json(cls, text: str | None, max_gap_s: float) -> ReactiveEnergy:
        if not text:
            return cls(max_gap_s)
        try:
            data = json.loads(text)
            last = data["last"]
            return cls(max_gap_s, float(data["kvarh"]),
                       None if last is None else (float(last[0]), float(last[1])))
        except (ValueError, KeyError, TypeError, IndexError):
            log.warning("saved reactive energy unusable: starting the month's kvarh at 0")
            return cls(max_gap_s)


@dataclass
class MeteringFeed:
    """Bus → aggregator; completed windows → window history and, when an uplink carries
    them (``stream`` set), the outbox."""

    site: SiteSpec
    store: Store
    bus: ReadingBus
    stream: Stream | None  # the windows' stream (None: not sent upstream)
    notify: asyncio.Event | None = None
    settings: MeteringSettings | None = None  # None: the site's [metering]
    flush_s: float = 1.0
    clock: Callable[[], float] = time.time
    events: bool = False  # whether the energy reconciliation alarm goes upstream
    energy_settings: EnergySettings | None = None  # None: the site's [energy]
    series: list[Series] = field(init=False)
    energy: EnergyAccounting = field(init=False)
    last_energy: tuple[EnergyWindow, Reconciliation] | None = field(init=False, default=None)
    aggregator: Any = field(init=False)
    _by_point: dict[tuple[str, str], int] = field(init=False)
    _counters: dict[tuple[str, str], tuple[int, str]] = field(init=False)
    _last_window: float = math.nan
    _month: tuple[int, int] | None = None
    _saving: asyncio.Future[None] | None = None  # the window being written, if any
    reactive: ReactiveEnergy = field(init=False)
    _reactive_point: tuple[str, str] | None = field(init=False)
    _restored: bool = field(init=False, default=False)
    _meters: dict[tuple[str, str], int] = field(init=False)

    def __post_init__(self) -> None:
        if self.settings is None:
            self.settings = metering_settings(self.site)
        self.series = metered_series(self.site)
        self._by_point = {(s.device, s.point): i for i, s in enumerate(self.series)}
        self._counters = {}
        for index, item in enumerate(self.series):
            if item.import_counter:
                self._counters[(item.device, item.import_counter)] = (index, "import")
            if item.export_counter:
                self._counters[(item.device, item.export_counter)] = (index, "export")
        restored = self._restore()
        self._restored = restored is not None
        self.aggregator = restored or self._new()
        grid = self.site.grid_meter()
        point = None if grid is None else grid.device_map.capabilities.get("reactive_power_var")
        self._reactive_point = None if grid is None or point is None else (grid.name, point)
        self.reactive = ReactiveEnergy.from_json(self.store.get_state("metering_reactive"),
                                                 self.config.max_gap_s)
        self.energy = EnergyAccounting(
            self.site, self.series, self.energy_settings or energy_settings(self.site),
            self.config.demand_window_s)
        if self._restored:
            self.energy.restore(self.store.get_state("energy"))
        self._meters = self.energy.counter_points()

    @property
    def config(self) -> MeteringSettings:
        assert self.settings is not None
        return self.settings

    def _new(self) -> Any:
        offset = self.site.zone.utcoffset(datetime.now()) or None
        return fastcore.MeterAggregator(
            max(1, len(self.series)), roles=[s.role for s in self.series] or None,
            utc_offset_s=int(offset.total_seconds()) if offset else 28800,
            demand_window_s=self.config.demand_window_s, max_gap_s=self.config.max_gap_s,
            tariff=self.config.tariff.calendar,
            emission_factor_kg_per_kwh=self.config.carbon.kg_per_kwh)

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
        saved = restored.config
        factors = self.config.carbon.kg_per_kwh
        if saved.tariff != self.config.tariff.calendar or saved.emission_factor_kg_per_kwh != (
                factors * 24 if len(factors) == 1 else factors):
            log.warning("tariff or carbon factor changed since the metering state was saved: "
                        "starting afresh")
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
                        if key == self._reactive_point:
                            self.reactive.add(reading.timestamp, float(value))
                        index = self._by_point.get(key)
                        if index is not None:
                            samples.append((index, reading.timestamp,
                                            self.series[index].sign * float(value)))
                        meter = self._meters.get(key)
                        if meter is not None:  # a heat/cold or water meter's counter
                            self.energy.reading(meter, float(value))
                        counter = self._counters.get(key)
                        if counter is not None:
                            counters.append((counter[0], reading.timestamp, counter[1],
                                             float(value)))
                self.feed(samples, counters)
                await self._publish_completed_windows()
        finally:
            self.bus.unsubscribe(subscription)
            if self._saving is not None and not self._saving.done():
                # Stopped mid-write: let the thread finish, so a window's summary and its
                # history row are on disk together before the store is read or closed.
                await asyncio.wait([self._saving])

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
        accounted = self.energy.window(window, totals.import_wh, totals.export_wh)
        messages: list[Outgoing] = []
        if accounted is not None:
            self.last_energy = accounted
            body["energy"] = {
                "codes": {c: round(v, 4) for c, v in accounted[0].energy.items()},
                "reconciliation": accounted[1].to_dict(),
                "kpi": await asyncio.to_thread(
                    window_kpis, self.store, accounted[0], self.energy.settings,
                    self.config.carbon.mean_kg_per_kwh)}
            event = self.energy.alarm_event(window, accounted[1], self.clock())
            if event is not None and self.events:
                messages.append(Outgoing(streams.EVENTS, event))
        self._saving = asyncio.ensure_future(asyncio.to_thread(
            self._save, body, rows, messages, None if accounted is None else accounted[0]))
        await asyncio.shield(self._saving)
        local = datetime.fromtimestamp(window + self.config.demand_window_s, self.site.zone)
        month = (local.year, local.month)
        if self._month is not None and month != self._month:
            log.info("new billing period %04d-%02d: metering totals reset", *month)
            self.aggregator.reset_period()
            self.energy.period_reset()
            self.reactive.kvarh = 0.0
        self._month = month
        if self.notify is not None:
            self.notify.set()

    def _save(self, body: dict[str, object], rows: list[tuple[float, str, float]],
              messages: list[Outgoing], energy: EnergyWindow | None) -> None:
        if self.stream is not None:
            messages.insert(0, Outgoing(self.stream, body))
        if messages:
            self.store.append(messages)
        self.store.record_windows(rows)
        # The window's energy per code and the state that follows it, in one transaction.
        state = {"metering": json.dumps(self.aggregator.state(), allow_nan=False),
                 "metering_reactive": self.reactive.to_json(),
                 "energy": self.energy.state_json()}
        if energy is None:
            for key, text in state.items():
                self.store.set_state(key, text)
        else:
            self.store.record_energy_window(energy, state)

    def bill(self, window: float, totals: Any) -> MonthlyBill | None:
        """The month's bill so far at the grid connection (None without a grid meter, or
        when the bill options need a price the tariff lacks)."""
        grid = [i for i, s in enumerate(self.series) if s.role == "grid"]
        if not grid:
            return None
        local = datetime.fromtimestamp(window, self.site.zone)
        energy = totals.tou_import_wh[grid].sum(axis=0) / 1000.0
        figures = self.aggregator.site_figures()
        try:
            return monthly_bill(
                self.config.tariff, local.year, local.month, [float(e) for e in energy],
                settings=self.config.bill, max_demand_kw=figures.peak_demand_kw,
                power_factor=month_power_factor(float(energy.sum()), self.reactive.kvarh),
                power_factor_tables=power_factor_tables())
        except ValueError as exc:
            log.warning("no bill: %s", exc)
            return None

    def window_summary(self, window: float, totals: Any) -> dict[str, object]:
        figures = self.aggregator.site_figures()
        periods = [p.name for p in self.config.tariff.calendar.periods]
        bill = self.bill(window, totals)
        loads = {}
        for index, item in enumerate(self.series):
            loads[item.name] = {
                "role": item.role,
                "demand_kw": _num(totals.demand_kw[index]),
                "import_kwh": _num(totals.import_wh[index] / 1000.0),
                "export_kwh": _num(totals.export_wh[index] / 1000.0),
                "tou_import_kwh": dict(zip(periods, (_num(v / 1000.0) for v in
                                                     totals.tou_import_wh[index]), strict=True)),
                "cost_cny": _num(totals.cost_cny[index]),
                "carbon_kg": _num(totals.carbon_kg[index]),
                "max_demand_kw": _num(totals.max_demand_kw[index]),
            }
        return {
            "ts": round(self.clock(), 3),
            "window_start": window,
            "window_s": self.config.demand_window_s,
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
                "reactive_kvarh": _num(self.reactive.kvarh),
            },
            "tariff": self.config.tariff.name,
            "carbon_factor": self.config.carbon.to_dict(),
            "bill": None if bill is None else bill.to_dict(),
            "implementation": fastcore.IMPLEMENTATION,
        }


def _num(value: float) -> float | None:
    number = float(value)
    return round(number, 4) if math.isfinite(number) else None
