"""A month's electricity bill the way Chinese two-part tariffs charge it. Pure functions.

* **电度电费** (energy charge): the month's import per time-of-use period × that period's
  price (CNY/kWh) in the month's season.
* **基本电费** (basic charge), chosen per site: **需量** — the month's maximum 15-minute
  demand (kW) × the demand price (CNY/kW·month); or **容量** — the transformer's kVA ×
  the capacity price (CNY/kVA·month); or none (single-part tariffs).
* **力调电费** (power-factor adjustment, 1983 《功率因数调整电费办法》): the month's power
  factor, from active and reactive energy and rounded to 0.01, looked up in the table of
  the site's standard (0.90 / 0.85 / 0.80); the percentage applies to energy + basic
  charge. Negative = reduction (减收), positive = increase (增收).

Money in CNY, energy in kWh / kvarh, demand in kW, capacity in kVA.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass

from fastcore import Period, TariffCalendar


@dataclass(frozen=True)
class BasicChargePrices:
    """基本电费 prices of a tariff (None: the tariff has none of that kind)."""

    demand_cny_per_kw_month: float | None = None  # 需量电价
    capacity_cny_per_kva_month: float | None = None  # 容量电价


@dataclass(frozen=True)
class Tariff:
    """A tariff file: the time-of-use calendar, basic-charge prices, and where it is from."""

    calendar: TariffCalendar
    basic: BasicChargePrices
    source: str  # the file's citation (its leading comment block)
    prices_note: str  # e.g. that the prices are illustrative
    file: str

    @property
    def name(self) -> str:
        return self.calendar.name


class BasicChargeBasis(enum.Enum):
    """What the site's 基本电费 is charged on."""

    NONE = "none"  # single-part tariff
    DEMAND = "demand"  # 需量: the month's maximum 15-min demand, kW
    CAPACITY = "capacity"  # 容量: the transformer's kVA

    @property
    def zh(self) -> str:
        return {BasicChargeBasis.NONE: "无", BasicChargeBasis.DEMAND: "需量",
                BasicChargeBasis.CAPACITY: "容量"}[self]


@dataclass(frozen=True)
class PowerFactorTable:
    """One standard's table of the 1983 rule: adjustment % by the month's power factor.

    ``rows`` are (power factor, adjustment %) from the highest power factor down, in
    0.01 steps; the first row also covers every higher power factor, and below the last
    row each further 0.01 adds ``below_lowest_pct_per_0_01``."""

    standard: float
    rows: tuple[tuple[float, float], ...]
    below_lowest_pct_per_0_01: float
    applies_to: str = ""
    source: str = ""

    def adjustment_pct(self, power_factor: float) -> float:
        """Adjustment in % of the month's bill (− reduction, + increase) for a power
        factor already rounded to 0.01. ``ValueError`` outside 0..1."""
        if not 0.0 <= power_factor <= 1.0:
            raise ValueError(f"power factor {power_factor} outside 0..1")
        hundredths = round(power_factor * 100)
        if hundredths == round(self.standard * 100):
            return 0.0
        for pf, pct in self.rows:
            if round(pf * 100) == hundredths:
                return pct
        if hundredths > round(self.rows[0][0] * 100):
            return self.rows[0][1]
        below = round(self.rows[-1][0] * 100) - hundredths
        return self.rows[-1][1] + below * self.below_lowest_pct_per_0_01


def month_power_factor(active_kwh: float, reactive_kvarh: float) -> float | None:
    """cos φ = kWh / √(kWh² + kvarh²), rounded half up to 0.01 (None without energy)."""
    if active_kwh <= 0 or not math.isfinite(active_kwh) or not math.isfinite(reactive_kvarh):
        return None
    value = active_kwh / math.hypot(active_kwh, reactive_kvarh)
    return math.floor(value * 100 + 0.5) / 100


@dataclass(frozen=True)
class BillSettings:
    """A site's bill options: basic-charge basis, transformer kVA, power-factor standard
    (0.90, 0.85, 0.80; None: no adjustment)."""

    basis: BasicChargeBasis = BasicChargeBasis.NONE
    transformer_kva: float | None = None
    power_factor_standard: float | None = None


@dataclass(frozen=True)
class PeriodCharge:
    period: Period
    energy_kwh: float
    price_cny_per_kwh: float
    charge_cny: float


@dataclass(frozen=True)
class MonthlyBill:
    """One month's bill. ``power_factor`` is the rounded monthly value used (None when
    no adjustment applies or the energy to compute it is missing)."""

    year: int
    month: int
    energy: tuple[PeriodCharge, ...]
    energy_cny: float
    basis: BasicChargeBasis
    basic_quantity: float  # kW (demand) or kVA (capacity); 0 for none
    basic_price: float  # CNY/kW·month or CNY/kVA·month
    basic_cny: float
    power_factor: float | None
    power_factor_standard: float | None
    power_factor_adjustment_pct: float
    power_factor_adjustment_cny: float
    total_cny: float

    def to_dict(self) -> dict[str, object]:
        return {
            "month": f"{self.year:04d}-{self.month:02d}",
            "energy": {c.period.name: {"kwh": round(c.energy_kwh, 3),
                                       "price_cny_per_kwh": c.price_cny_per_kwh,
                                       "cny": round(c.charge_cny, 2)} for c in self.energy},
            "energy_cny": round(self.energy_cny, 2),
            "basic_charge": {"basis": self.basis.value, "quantity": round(self.basic_quantity, 3),
                             "price": self.basic_price, "cny": round(self.basic_cny, 2)},
            "power_factor": self.power_factor,
            "power_factor_standard": self.power_factor_standard,
            "power_factor_adjustment_pct": self.power_factor_adjustment_pct,
            "power_factor_adjustment_cny": round(self.power_factor_adjustment_cny, 2),
            "total_cny": round(self.total_cny, 2),
        }


def monthly_bill(tariff: Tariff, year: int, month: int, energy_kwh: Sequence[float], *,
                 settings: BillSettings, max_demand_kw: float | None = None,
                 power_factor: float | None = None,
                 power_factor_tables: dict[float, PowerFactorTable] | None = None
                 ) -> MonthlyBill:
    """The bill of ``month``: ``energy_kwh`` is the import per period (in the order of
    ``tariff.calendar.periods``), ``max_demand_kw`` the month's highest 15-min demand,
    ``power_factor`` the month's (rounded) power factor.

    Raises ``ValueError`` when the energy list does not match the periods, the basis
    needs a price the tariff lacks (or a kVA / demand the site did not give), or a
    power-factor standard has no table."""
    calendar = tariff.calendar
    if len(energy_kwh) != calendar.n_periods:
        raise ValueError(f"{len(energy_kwh)} energies for {calendar.n_periods} periods")
    charges = []
    for period, kwh in zip(calendar.periods, energy_kwh, strict=True):
        price = calendar.price(month, period)
        cost = 0.0 if kwh == 0 else kwh * price
        charges.append(PeriodCharge(period, float(kwh), price, cost))
    energy_cny = sum(c.charge_cny for c in charges)
    quantity, price = _basic(tariff, settings, max_demand_kw)
    basic_cny = quantity * price
    pct = 0.0
    used_pf = None
    standard = settings.power_factor_standard
    if standard is not None and power_factor is not None:
        tables = power_factor_tables or {}
        if standard not in tables:
            raise ValueError(f"no power-factor table for standard {standard:.2f}")
        used_pf = power_factor
        pct = tables[standard].adjustment_pct(power_factor)
    adjustment = (energy_cny + basic_cny) * pct / 100.0
    return MonthlyBill(year, month, tuple(charges), energy_cny, settings.basis, quantity, price,
                       basic_cny, used_pf, standard, pct, adjustment,
                       energy_cny + basic_cny + adjustment)


def _basic(tariff: Tariff, settings: BillSettings, max_demand_kw: float | None
           ) -> tuple[float, float]:
    basis = settings.basis
    if basis is BasicChargeBasis.NONE:
        return 0.0, 0.0
    if basis is BasicChargeBasis.DEMAND:
        price = tariff.basic.demand_cny_per_kw_month
        if price is None:
            raise ValueError(f"tariff {tariff.name!r} has no demand (需量) price")
        return (0.0 if max_demand_kw is None or not math.isfinite(max_demand_kw)
                else max_demand_kw), price
    price = tariff.basic.capacity_cny_per_kva_month
    if price is None:
        raise ValueError(f"tariff {tariff.name!r} has no capacity (容量) price")
    if settings.transformer_kva is None:
        raise ValueError("a capacity (容量) basic charge needs the transformer's kVA")
    return settings.transformer_kva, price
