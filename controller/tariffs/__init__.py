"""Tariffs the way Chinese utilities bill them: time-of-use calendars as data files
(any number of periods, seasons, holidays), the month's bill (energy, 需量/容量 basic
charge, 力调 power-factor adjustment) and grid carbon factors with year and source.

The calendar model itself is :mod:`fastcore._tariff` (the metering kernels compile it);
this package reads the data files and does the billing arithmetic."""

from controller.tariffs.bill import (
    BasicChargeBasis,
    BasicChargePrices,
    BillSettings,
    MonthlyBill,
    PeriodCharge,
    PowerFactorTable,
    Tariff,
    month_power_factor,
    monthly_bill,
)
from controller.tariffs.carbon import CarbonFactor
from controller.tariffs.files import (
    DEFAULT_TARIFF,
    POWER_FACTOR_STANDARDS,
    carbon_factor,
    carbon_factors,
    load_tariff,
    parse_tariff,
    power_factor_tables,
    shipped_tariffs,
)

__all__ = [
    "DEFAULT_TARIFF",
    "POWER_FACTOR_STANDARDS",
    "BasicChargeBasis",
    "BasicChargePrices",
    "BillSettings",
    "CarbonFactor",
    "MonthlyBill",
    "PeriodCharge",
    "PowerFactorTable",
    "Tariff",
    "carbon_factor",
    "carbon_factors",
    "load_tariff",
    "month_power_factor",
    "monthly_bill",
    "parse_tariff",
    "power_factor_tables",
    "shipped_tariffs",
]
