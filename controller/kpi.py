"""The carbon-peaking plan's building figures at the edge, per day, month and year.

Inputs per period (from the store's energy rows): the building's electricity use at the
main meter (``site:consumption``: grid import − export + PV − battery net charge), grid
import and export, PV generation, and the 分类 energies of gas (03000, m³), central
heating (04000, kWh) and central cooling (05000, kWh). Factors come from ``kpi.toml``
with their sources. Formulas (docs/energy-monitoring.md):

* total standard coal  E_ce = E_el·f_el + V_gas·f_gas + Q_heat·f_heat + Q_cool·f_cool
  (kgce; f_el is the 当量值 0.1229 or the 等价值, by ``coal_method``);
* electricity's share  = E_el·f_el / E_ce;
* renewable substitution rate = E_pv·f_el / E_ce (PV generated on site, valued like grid
  electricity);
* PV self-consumption ratio = (E_pv − E_export) / E_pv, and E_export;
* energy use intensity EUI = E_el / A (kWh/m² in the period), against GB/T 51161's
  constraint and guide values for the year;
* carbon = E_import·c_grid + V_gas·c_gas + Q_heat·c_heat (kgCO2; exports are not
  credited), and carbon / A.
A ratio whose denominator is zero is None.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from datetime import date, datetime
from functools import cache
from pathlib import Path
from zoneinfo import ZoneInfo

from controller.energy import EnergySettings
from controller.store import EnergyWindow, Store
from drivers.schema import Node

FACTORS_FILE = Path(__file__).with_name("kpi.toml")
LEVELS = ("day", "month", "year")


@dataclass(frozen=True, slots=True)
class Factors:
    """Standard-coal and carbon factors (see kpi.toml for each one's source)."""

    electricity_kgce_per_kwh: float
    method: str  # "equivalent" (当量值) or "primary" (等价值)
    gas_kgce_per_m3: float
    heat_kgce_per_kwh: float
    cooling_kgce_per_kwh: float
    gas_kg_co2_per_m3: float
    heat_kg_co2_per_kwh: float


@dataclass(frozen=True, slots=True)
class EuiReference:
    building_type: str
    climate_zone: str
    building_class: str
    constraint_kwh_per_m2: float
    guide_kwh_per_m2: float
    source: str


@cache
def _data() -> Node:
    return Node(str(FACTORS_FILE), "", tomllib.loads(FACTORS_FILE.read_text("utf-8")))


def factors(method: str = "equivalent") -> Factors:
    """The shipped factors; ``method`` picks electricity's 当量值 ("equivalent") or
    等价值 ("primary")."""
    coal, carbon = _data().req("coal"), _data().req("carbon")
    electricity = coal.req("electricity")
    key = "equivalent_kgce_per_kwh" if method == "equivalent" else "primary_kgce_per_kwh"
    return Factors(electricity.req(key).float(min=0), method,
                   coal.req("natural_gas").req("kgce_per_m3").float(min=0),
                   coal.req("heat").req("kgce_per_kwh").float(min=0),
                   coal.req("cooling").req("kgce_per_kwh").float(min=0),
                   carbon.req("natural_gas").req("kg_per_m3").float(min=0),
                   carbon.req("heat").req("kg_per_kwh").float(min=0))


def eui_references() -> list[EuiReference]:
    return [EuiReference(n.req("building_type").str(), n.req("climate_zone").str(),
                         n.req("class").str(), n.req("constraint_kwh_per_m2").float(),
                         n.req("guide_kwh_per_m2").float(), n.req("source").str())
            for n in _data().req("eui").list()]


def eui_reference(building_type: str, climate_zone: str,
                  building_class: str = "A") -> EuiReference | None:
    return next((r for r in eui_references() if (r.building_type, r.climate_zone,
                                                 r.building_class) == (
        building_type, climate_zone, building_class)), None)


@dataclass(frozen=True, slots=True)
class EnergyUse:
    """One period's energy at the building (kWh unless named otherwise)."""

    electricity_kwh: float = 0.0
    grid_import_kwh: float = 0.0
    grid_export_kwh: float = 0.0
    pv_generation_kwh: float = 0.0
    gas_m3: float = 0.0
    heat_kwh: float = 0.0
    cooling_kwh: float = 0.0

    @classmethod
    def from_codes(cls, energy: dict[str, float]) -> EnergyUse:
        return cls(energy.get("site:consumption", 0.0), energy.get("site:grid_import", 0.0),
                   energy.get("site:grid_export", 0.0), energy.get("site:pv_generation", 0.0),
                   energy.get("03000", 0.0), energy.get("04000", 0.0),
                   energy.get("05000", 0.0))


@dataclass(frozen=True, slots=True)
class Kpis:
    total_kgce: float
    electricity_share: float | None
    renewable_rate: float | None
    pv_self_consumption: float | None
    pv_export_kwh: float
    eui_kwh_per_m2: float | None
    carbon_kg: float
    carbon_kg_per_m2: float | None

    def to_dict(self) -> dict[str, float | None]:
        return {name: None if value is None else round(value, 4)
                for name, value in ((f, getattr(self, f)) for f in self.__slots__)}


def _ratio(part: float, whole: float) -> float | None:
    return part / whole if whole > 0 else None


def kpis(use: EnergyUse, f: Factors, grid_kg_co2_per_kwh: float,
         floor_area_m2: float | None) -> Kpis:
    """The figures of one period (see the module docstring for the formulas)."""
    electricity_kgce = use.electricity_kwh * f.electricity_kgce_per_kwh
    total = (electricity_kgce + use.gas_m3 * f.gas_kgce_per_m3
             + use.heat_kwh * f.heat_kgce_per_kwh + use.cooling_kwh * f.cooling_kgce_per_kwh)
    carbon = (use.grid_import_kwh * grid_kg_co2_per_kwh + use.gas_m3 * f.gas_kg_co2_per_m3
              + use.heat_kwh * f.heat_kg_co2_per_kwh)
    area = floor_area_m2 if floor_area_m2 else None
    return Kpis(
        total_kgce=total,
        electricity_share=_ratio(electricity_kgce, total),
        renewable_rate=_ratio(use.pv_generation_kwh * f.electricity_kgce_per_kwh, total),
        pv_self_consumption=_ratio(use.pv_generation_kwh - use.grid_export_kwh,
                                   use.pv_generation_kwh),
        pv_export_kwh=use.grid_export_kwh,
        eui_kwh_per_m2=None if area is None else use.electricity_kwh / area,
        carbon_kg=carbon,
        carbon_kg_per_m2=None if area is None else carbon / area)


def period_start(level: str, day: date, zone: ZoneInfo) -> float:
    """The UNIX start of the local day, month or year containing ``day``."""
    moment = datetime(day.year, 1 if level == "year" else day.month,
                      day.day if level == "day" else 1, tzinfo=zone)
    return moment.timestamp()


def stored_use(store: Store, level: str, start_s: float) -> EnergyUse:
    """A period's energy as the store rolled it up."""
    rows = store.energy_periods(level, start_s, start_s + 1.0)
    return EnergyUse.from_codes({code: value for _, code, value in rows})


def window_kpis(store: Store, window: EnergyWindow, settings: EnergySettings,
                grid_kg_co2_per_kwh: float) -> dict[str, dict[str, float | None]]:
    """The day's, month's and year's figures so far, including ``window`` (which the
    store has not recorded yet), for the uplink's window summary."""
    f = factors(settings.coal_method)
    result: dict[str, dict[str, float | None]] = {}
    for level, start in window.rollups:
        if level not in LEVELS:
            continue
        energy = {code: value for _, code, value in
                  store.energy_periods(level, start, start + 1.0)}
        for code, value in window.energy.items():
            energy[code] = energy.get(code, 0.0) + value
        result[level] = kpis(EnergyUse.from_codes(energy), f, grid_kg_co2_per_kwh,
                             settings.floor_area_m2).to_dict()
    return result


def kpi_table(store: Store, settings: EnergySettings, grid_kg_co2_per_kwh: float,
              zone: ZoneInfo, day: date) -> str:
    """``pedf kpi``: the day, month and year containing ``day``, one row each."""
    f = factors(settings.coal_method)
    reference = eui_reference(settings.building_type, settings.climate_zone,
                              settings.building_class)

    def pct(value: float | None) -> str:
        return "—" if value is None else f"{100 * value:.1f} %"

    def num(value: float | None, digits: int = 1) -> str:
        return "—" if value is None else f"{value:.{digits}f}"

    header = (f"{'period':<10} {'kgce':>10} {'elec share':>10} {'renewable':>10} "
              f"{'PV self':>8} {'export kWh':>10} {'kWh/m²':>8} {'kgCO2':>10} {'kgCO2/m²':>9}")
    lines = [header, "-" * len(header)]
    for level, label in zip(LEVELS, (day.isoformat(), f"{day:%Y-%m}", f"{day:%Y}"),
                            strict=True):
        k = kpis(stored_use(store, level, period_start(level, day, zone)), f,
                 grid_kg_co2_per_kwh, settings.floor_area_m2)
        lines.append(f"{label:<10} {k.total_kgce:>10.1f} {pct(k.electricity_share):>10} "
                     f"{pct(k.renewable_rate):>10} {pct(k.pv_self_consumption):>8} "
                     f"{k.pv_export_kwh:>10.1f} {num(k.eui_kwh_per_m2, 2):>8} "
                     f"{k.carbon_kg:>10.1f} {num(k.carbon_kg_per_m2, 3):>9}")
    method = "当量值 (calorific)" if f.method == "equivalent" else "等价值 (primary energy)"
    lines.append(f"standard coal: electricity {f.electricity_kgce_per_kwh} kgce/kWh, {method}; "
                 f"grid carbon {grid_kg_co2_per_kwh:.4f} kgCO2/kWh")
    if reference is not None:
        lines.append(f"GB/T 51161 {reference.building_type}, {reference.climate_zone} zone, "
                     f"class {reference.building_class}: constraint "
                     f"{reference.constraint_kwh_per_m2:g}, guide "
                     f"{reference.guide_kwh_per_m2:g} kWh/(m²·a) — compare the year's row "
                     f"({reference.source})")
    if settings.floor_area_m2 is None:
        lines.append("no floor area ([energy] floor_area_m2): no per-m² figures")
    return "\n".join(lines)
