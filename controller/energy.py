"""分类分项 energy accounting: metered series → energy per code per window, rolled up
into hours, days, months and years; the sub-meter tree reconciled with the main meter.

Per completed metering window (15 min by default) the feed hands over the cumulative
totals of every series. The window's energy of a series is the change of its totals
since the previous window (``import − export`` for consumers, ``export − import`` — the
generation — for PV), so nothing is lost or counted twice across windows and restarts:
the baseline is saved with the window's rows in one transaction. The energies go
through ``fastcore.rollup_codes`` (each series into its code and every ancestor code).

Reconciliation: the building's electricity use at the main meter is grid import − export
+ PV generation + battery discharge − charge; the sub-meter tree's is the sum of the
series coded under 01000. The difference is the unmetered remainder. It is reported
with every window; with ``remainder_code`` it is booked to that code (the guide's 拆分
by subtraction), otherwise it stays out of the codes. An ``energy_reconciliation``
alarm event fires when the disagreement exceeds ``tolerance_pct`` of the main meter
(with a remainder code: when the sub-meters exceed the main meter by that much), and a
clearing event when it is back within — events on changes, not every window.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

import fastcore
from controller.sections import Context, Key, Spec, apply, number, read
from controller.store import EnergyWindow
from drivers.energycodes import ancestors, energy_code, energy_codes
from drivers.schema import Node
from drivers.site import SiteSpec

log = logging.getLogger("pedf.energy")

ELECTRICITY = "01000"
#: The site's own figures, stored next to the codes (never reported as codes), in kWh.
SITE_FIGURES = ("site:consumption", "site:grid_import", "site:grid_export",
                "site:pv_generation")
#: Levels every window adds to, after the window's own.
ROLLUP_LEVELS = ("hour", "day", "month", "year")


@dataclass(frozen=True, slots=True)
class EnergySettings:
    """``[energy]``: reconciliation tolerance (% of the main meter's energy in a
    window), the code the unmetered remainder is booked to (None: not booked), and the
    building facts the KPIs need."""

    tolerance_pct: float = 5.0
    remainder_code: str | None = None
    min_main_kwh: float = 0.1  # windows with less at the main meter are not judged
    floor_area_m2: float | None = None  # for EUI and carbon per m² (controller.kpi)
    building_type: str = "office"  # GB/T 51161 building type
    climate_zone: str = "cold"  # GB/T 51161 climate zone (Jinan: cold)
    building_class: str = "A"  # GB/T 51161 class A (windows open) or B (sealed)
    coal_method: str = "equivalent"  # electricity's 当量值, or "primary" for 等价值


def _code_rule(node: Node, _: Context) -> str:
    code = energy_code(node)
    if not code.startswith("01") or code == ELECTRICITY:
        raise node.error("an electricity item code (01A00 … 01D20), not "
                         + ("the type" if code == ELECTRICITY else "another energy type"))
    return code


ENERGY: Spec = {
    "tolerance_pct": Key(number(0.0, 100.0)),
    "remainder_code": Key(_code_rule),
    "min_main_kwh": Key(number(0.0, 1e6)),
    "floor_area_m2": Key(number(0.0, 1e8, above=True)),
    "building_type": Key(lambda node, _: node.str(choices=["office"])),
    "climate_zone": Key(lambda node, _: node.str(choices=["cold"])),
    "building_class": Key(lambda node, _: node.str(choices=["A", "B"])),
    "coal_method": Key(lambda node, _: node.str(choices=["equivalent", "primary"])),
}


def energy_settings(site: SiteSpec) -> EnergySettings:
    """``[energy]`` (absent: 5 % tolerance, no remainder code). Raises ConfigError."""
    node = site.section("energy")
    if node is None:
        return EnergySettings()
    return apply(EnergySettings(), read(node, ENERGY, Context.of(site)).values)


@dataclass(frozen=True, slots=True)
class CodedSeries:
    """A metered series as the code tree sees it: its index in the aggregator, its
    role, and its code (None: not coded)."""

    index: int
    name: str
    role: str
    code: str | None


def coded_series(site: SiteSpec, series: Sequence[Any]) -> list[CodedSeries]:
    """The code of each metering series: a device's ``energy_code``, or for a sub-meter
    channel the metered load's. Raises ConfigError for a code on the grid meter or a
    battery (they are not uses of energy) or a non-generation code on a PV inverter."""
    loads = {load.name: load for load in site.loads.values()}
    result = []
    for index, item in enumerate(series):
        device = site.devices[item.device]
        code = device.energy_code
        if item.name in loads and item.name != item.device:
            code = loads[item.name].energy_code
        if code is not None:
            where = (loads[item.name].path if item.name in loads and item.name != item.device
                     else device.path)
            if item.role in ("grid", "battery"):
                raise Node(site.file, f"{where}.energy_code", code).error(
                    "no energy_code here: the grid meter and batteries are not uses of "
                    "energy (the grid meter is the main meter the codes reconcile with)")
            if item.role == "pv" and code.startswith("01"):
                raise Node(site.file, f"{where}.energy_code", code).error(
                    "a code of generated energy (06000) for a PV inverter")
        result.append(CodedSeries(index, item.name, item.role, code))
    return result


@dataclass(frozen=True, slots=True)
class CounterSeries:
    """A non-electric meter's counter: which reading, its code and the factor from the
    reading's unit to the code's (Wh of heat → kWh; m³ stays m³)."""

    device: str
    point: str
    code: str | None
    to_code_unit: float


#: meter kind → (energy types its code may belong to, counter capability, factor)
_COUNTERS = {"water_meter": (("02",), "volume_m3", 1.0),
             "heat_meter": (("04", "05"), "heat_energy_wh", 0.001)}


def counter_series(site: SiteSpec) -> list[CounterSeries]:
    """The counters of the site's heat/cold and water meters, and of the meters on
    sub-meters' pulse inputs (pulses × ``unit_per_pulse``). A heat meter coded 05000
    (central cooling) counts its cold, otherwise its heat. Raises ConfigError for a code
    of another energy type."""
    found = []
    for device in site.devices.values():
        spec = _COUNTERS.get(device.device_map.kind)
        if spec is None:
            continue
        types, capability, factor = spec
        code = device.energy_code
        if code is not None and code[:2] not in types:
            raise Node(site.file, f"{device.path}.energy_code", code).error(
                "a code of " + " or ".join(t + "000" for t in types) + f" for a "
                f"{device.device_map.kind.replace('_', ' ')}")
        if code is not None and code.startswith("05"):
            capability = "cooling_energy_wh"
        point = device.device_map.capabilities.get(capability)
        if point is not None:
            found.append(CounterSeries(device.name, point, code, factor))
    for device in site.devices.values():  # meters on a sub-meter's pulse inputs
        for meter in device.pulse_meters:
            point = device.device_map.capabilities[f"pulse{meter.channel}_count"]
            found.append(CounterSeries(device.name, point, meter.energy_code,
                                       meter.unit_per_pulse))
    return found


@dataclass(frozen=True)
class CodeTree:
    """The codes a site uses and their ancestors, in parent-first order, as the arrays
    ``fastcore.rollup_codes`` takes."""

    codes: tuple[str, ...]
    parent: np.ndarray  # int32[n_codes]

    @classmethod
    def of(cls, used: Sequence[str]) -> CodeTree:
        wanted: set[str] = set()
        for code in used:
            wanted.add(code)
            wanted.update(ancestors(code))
        ordered = tuple(c for c in energy_codes() if c in wanted)  # file order: parents first
        index = {c: i for i, c in enumerate(ordered)}
        parent = [index[ancestors(c)[0]] if ancestors(c) and ancestors(c)[0] in index else -1
                  for c in ordered]
        return cls(ordered, np.array(parent, dtype=np.int32))

    def index(self, code: str | None) -> int:
        return -1 if code is None else self.codes.index(code)


def period_starts(start_s: float, zone: ZoneInfo) -> tuple[tuple[str, float], ...]:
    """The (level, start in UNIX s) of the local hour, day, month and year that contain
    ``start_s``."""
    local = datetime.fromtimestamp(start_s, zone)
    hour = local.replace(minute=0, second=0, microsecond=0)
    day = hour.replace(hour=0)
    month = day.replace(day=1)
    year = month.replace(month=1)
    return tuple((level, moment.timestamp()) for level, moment in
                 zip(ROLLUP_LEVELS, (hour, day, month, year), strict=True))


@dataclass(frozen=True, slots=True)
class Reconciliation:
    """One window of the sub-meter tree against the main meter (kWh)."""

    main_kwh: float
    submetered_kwh: float
    remainder_kwh: float
    alarm: bool

    @property
    def remainder_pct(self) -> float | None:
        return None if self.main_kwh <= 0 else 100.0 * self.remainder_kwh / self.main_kwh

    def to_dict(self) -> dict[str, object]:
        pct = self.remainder_pct
        return {"main_kwh": round(self.main_kwh, 4),
                "submetered_kwh": round(self.submetered_kwh, 4),
                "remainder_kwh": round(self.remainder_kwh, 4),
                "remainder_pct": None if pct is None else round(pct, 2),
                "alarm": self.alarm}


def reconcile(main_kwh: float, submetered_kwh: float, settings: EnergySettings) -> Reconciliation:
    """Judge one window. Without a remainder code, |remainder| beyond the tolerance is an
    alarm; with one, only sub-meters exceeding the main meter beyond it (a positive
    remainder is the booked, unmetered use). Windows under ``min_main_kwh`` at the main
    meter are not judged (no alarm)."""
    remainder = main_kwh - submetered_kwh
    limit = settings.tolerance_pct / 100.0 * main_kwh
    judged = main_kwh >= settings.min_main_kwh
    if settings.remainder_code is None:
        alarm = judged and abs(remainder) > limit
    else:
        alarm = judged and -remainder > limit
    return Reconciliation(float(main_kwh), float(submetered_kwh), float(remainder),
                          bool(alarm))


@dataclass
class EnergyAccounting:
    """Window energies per code from the aggregator's cumulative totals (see module)."""

    site: SiteSpec
    series: Sequence[Any]
    settings: EnergySettings = field(default_factory=EnergySettings)
    window_s: int = 900
    coded: list[CodedSeries] = field(init=False)
    counters: list[CounterSeries] = field(init=False)
    tree: CodeTree = field(init=False)
    baseline: np.ndarray | None = None  # float64[2, n]: import, export Wh at the last window
    alarm: bool = False
    #: the latest reading of each counter, and its reading at the last window (NaN: none)
    counter_last: list[float] = field(init=False)
    counter_base: list[float] = field(init=False)

    def __post_init__(self) -> None:
        self.coded = coded_series(self.site, self.series)
        self.counters = counter_series(self.site)
        codes = [c.code for c in self.coded] + [c.code for c in self.counters]
        used = [code for code in codes if code is not None]
        if self.settings.remainder_code is not None:
            used.append(self.settings.remainder_code)
        self.tree = CodeTree.of(used)
        self._series_code = np.array([self.tree.index(code) for code in codes],
                                     dtype=np.int32)
        self.counter_last = [math.nan] * len(self.counters)
        self.counter_base = [math.nan] * len(self.counters)

    def counter_points(self) -> dict[tuple[str, str], int]:
        """(device, point) → counter index, for the feed."""
        return {(c.device, c.point): i for i, c in enumerate(self.counters)}

    def reading(self, index: int, value: float) -> None:
        """A counter's reading (in its point's unit)."""
        if math.isfinite(value):
            self.counter_last[index] = value

    def _counter_deltas(self) -> list[float]:
        """Each counter's advance since the last window, in its code's unit; a counter
        that went back (replaced, reset) restarts from its new reading (0 this time)."""
        deltas = []
        for i, counter in enumerate(self.counters):
            last, base = self.counter_last[i], self.counter_base[i]
            step = last - base if math.isfinite(last) and math.isfinite(base) else 0.0
            deltas.append(max(step, 0.0) * counter.to_code_unit)
            if math.isfinite(last):
                self.counter_base[i] = last
        return deltas

    @property
    def level(self) -> str:
        """The level name of a window's rows ("900s")."""
        return f"{self.window_s}s"

    def window(self, start_s: float, import_wh: np.ndarray,
               export_wh: np.ndarray) -> tuple[EnergyWindow, Reconciliation] | None:
        """The window starting at ``start_s`` from the totals now; None the first time
        (no baseline yet: the totals become it)."""
        now = np.vstack([np.asarray(import_wh, dtype=np.float64),
                         np.asarray(export_wh, dtype=np.float64)])
        previous, self.baseline = self.baseline, now
        counted = self._counter_deltas()
        if previous is None or previous.shape != now.shape:
            return None
        delta = np.maximum(now - previous, 0.0)  # a period reset starts totals at 0
        delta[:, np.any(now < previous, axis=0)] = now[:, np.any(now < previous, axis=0)]
        use_wh = np.zeros(len(self.coded), dtype=np.float64)
        main_wh = grid_import = grid_export = pv_wh = 0.0
        for item in self.coded:
            imported, exported = delta[0, item.index], delta[1, item.index]
            if item.role == "pv":
                use_wh[item.index] = exported - imported
                main_wh += exported - imported
                pv_wh += exported - imported
            elif item.role == "grid":
                main_wh += imported - exported
                grid_import += imported
                grid_export += exported
            elif item.role == "battery":
                main_wh += exported - imported
            else:
                use_wh[item.index] = imported - exported
        # one rollup over every series, each in its code's unit (electricity in kWh)
        use = np.concatenate([use_wh / 1000.0, np.array(counted, dtype=np.float64)])
        per_code = fastcore.rollup_codes(self._series_code, self.tree.parent, use)
        energy = {code: float(value) for code, value in
                  zip(self.tree.codes, per_code.tolist(), strict=True)}
        sub_kwh = energy.get(ELECTRICITY, 0.0)
        check = reconcile(float(main_wh) / 1000.0, sub_kwh, self.settings)
        remainder_code = self.settings.remainder_code
        if remainder_code is not None and check.remainder_kwh > 0:
            for code in (remainder_code, *ancestors(remainder_code)):
                energy[code] = energy.get(code, 0.0) + check.remainder_kwh
        energy.update(zip(SITE_FIGURES, (float(v) / 1000.0 for v in (
            main_wh, grid_import, grid_export, pv_wh)), strict=True))
        rollups = period_starts(start_s, self.site.zone)
        return EnergyWindow(self.level, start_s, energy, rollups), check

    def period_reset(self) -> None:
        """The aggregator's totals restarted at 0 (a new billing period): so does the
        baseline."""
        if self.baseline is not None:
            self.baseline = np.zeros_like(self.baseline)

    def alarm_event(self, start_s: float, check: Reconciliation,
                    now_s: float) -> dict[str, object] | None:
        """The ``energy_reconciliation`` event when the alarm state changes (else None)."""
        if check.alarm == self.alarm:
            return None
        self.alarm = check.alarm
        state = "raised" if check.alarm else "cleared"
        log.log(logging.WARNING if check.alarm else logging.INFO,
                "sub-meters vs main meter %s: main %.3f kWh, sub-meters %.3f kWh, remainder "
                "%.3f kWh (tolerance %.1f %%)", state, check.main_kwh, check.submetered_kwh,
                check.remainder_kwh, self.settings.tolerance_pct)
        return {"ts": round(now_s, 3), "type": "energy_reconciliation", "state": state,
                "window_start": start_s, "tolerance_pct": self.settings.tolerance_pct,
                **check.to_dict()}

    def state_json(self) -> str:
        base = None if self.baseline is None else self.baseline.tolist()
        counters = [None if math.isnan(v) else v for v in self.counter_base]
        return json.dumps({"baseline": base, "alarm": self.alarm, "counters": counters},
                          allow_nan=False)

    def restore(self, text: str | None) -> None:
        """The saved baseline and alarm state (ignored when unusable or of another
        site layout)."""
        if not text:
            return
        try:
            data = json.loads(text)
            base = data["baseline"]
            array = None if base is None else np.array(base, dtype=np.float64)
            if array is not None and array.shape != (2, len(self.coded)):
                raise ValueError("another number of series")
            if array is not None and not np.all(np.isfinite(array)):
                raise ValueError("not finite")
            counters = data.get("counters") or [None] * len(self.counters)
            if len(counters) != len(self.counters):
                raise ValueError("another number of counters")
            self.baseline, self.alarm = array, bool(data["alarm"])
            self.counter_base = [math.nan if v is None else float(v) for v in counters]
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("saved energy baseline unusable (%s): the next window starts it",
                        exc)


def code_names(codes: Mapping[str, float] | Sequence[str]) -> dict[str, str]:
    """Chinese and English label per code, for people."""
    known = energy_codes()
    return {code: known[code].label for code in codes if code in known}


def finite(value: float) -> float | None:
    return value if math.isfinite(value) else None
