"""Tariff calendars, the power-factor table and carbon factors as TOML data files.

Every value is checked; an error names the file, the key path and what was expected::

    my-tariff.toml: seasons[1].layout: expected a layout covering every minute once (14:00
    is in no period), got a table

Shipped files live next to this module: ``shandong-2024-commercial.toml`` (the default
calendar), ``power-factor-1983.toml``, ``carbon-factors.toml``. A site names a shipped
calendar or gives a path (docs/configuration.md). The format: docs/fastcore.md.
"""

from __future__ import annotations

import datetime as dt
import functools
from importlib import resources
from pathlib import Path

from controller.tariffs.bill import BasicChargePrices, PowerFactorTable, Tariff
from controller.tariffs.carbon import CarbonFactor
from drivers.schema import ConfigError, Node, load_toml
from fastcore import (
    HOLIDAY,
    MAX_PERIODS,
    DayLayout,
    Holiday,
    Period,
    TariffCalendar,
    TariffSeason,
    Tier,
)
from fastcore._tariff import parse_dates

DEFAULT_TARIFF = "shandong-2024-commercial"
_NOT_CALENDARS = ("power-factor-1983", "carbon-factors")
POWER_FACTOR_STANDARDS = (0.90, 0.85, 0.80)


def _shipped(name: str) -> Path:
    return Path(str(resources.files("controller.tariffs") / f"{name}.toml"))


def shipped_tariffs() -> list[str]:
    """Names of the calendars shipped with the toolkit."""
    folder = resources.files("controller.tariffs")
    return sorted(entry.name.removesuffix(".toml") for entry in folder.iterdir()
                  if entry.name.endswith(".toml")
                  and entry.name.removesuffix(".toml") not in _NOT_CALENDARS)


def load_tariff(ref: str, *, base: Path | None = None) -> Tariff:
    """A shipped calendar by name, or a TOML file by path (relative to ``base``).
    Raises :class:`ConfigError` naming file, key and expectation."""
    if ref in shipped_tariffs():
        return parse_tariff(load_toml(_shipped(ref)))
    path = Path(ref)
    if not path.is_absolute() and base is not None:
        path = base / path
    if path.suffix != ".toml":
        raise ConfigError(str(path), "", "a shipped tariff (" + ", ".join(shipped_tariffs())
                          + ") or the path of a .toml calendar", ref)
    return parse_tariff(load_toml(path))


def _leading_comment(file: str) -> str:
    lines = []
    try:
        text = Path(file).read_text(encoding="utf-8")
    except OSError:
        return ""
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        lines.append(line[1:].strip())
    return "\n".join(lines).strip()


_TOP = ("name", "prices_note", "workdays", "periods", "prices_cny_per_kwh", "basic_charge",
        "seasons", "holidays")


def parse_tariff(root: Node) -> Tariff:
    """A :class:`Tariff` from a parsed calendar file. Raises :class:`ConfigError`."""
    root.only(_TOP)
    periods = _periods(root.req("periods"))
    names = {p.name: p.name for p in periods} | {p.zh: p.name for p in periods}
    default_prices = None if root.get("prices_cny_per_kwh") is None else _prices(
        root.req("prices_cny_per_kwh"), names)
    seasons = [_season(node, names, default_prices, periods)
               for node in root.req("seasons").list()]
    holidays: list[Holiday] = []
    for node in [] if root.get("holidays") is None else root.req("holidays").list():
        node.only(("name", "dates", "day_type"))
        day_type = HOLIDAY if node.get("day_type") is None else _identifier(node.req("day_type"))
        label = "" if node.get("name") is None else node.req("name").str()
        holidays += [Holiday(d, day_type, label) for d in _dates(node.req("dates"))]
    workdays = [] if root.get("workdays") is None else _dates(root.req("workdays"))
    basic = BasicChargePrices()
    basic_node = root.get("basic_charge")
    if basic_node is not None:
        basic_node.only(("demand_cny_per_kw_month", "capacity_cny_per_kva_month"))
        demand, capacity = (basic_node.get(k) for k in ("demand_cny_per_kw_month",
                                                          "capacity_cny_per_kva_month"))
        basic = BasicChargePrices(
            None if demand is None else demand.float(min=0, max=10_000),
            None if capacity is None else capacity.float(min=0, max=10_000))
    try:
        calendar = TariffCalendar(name=root.req("name").str(), periods=tuple(periods),
                                  seasons=tuple(seasons), holidays=tuple(holidays),
                                  workdays=tuple(workdays))
    except ValueError as exc:
        raise root.error(f"a consistent calendar ({exc})") from None
    note = "" if root.get("prices_note") is None else root.req("prices_note").str()
    return Tariff(calendar, basic, _leading_comment(root.file), note, root.file)


def _identifier(node: Node) -> str:
    text = node.str()
    try:
        Period(text, "x", Tier.FLAT)
    except ValueError:
        raise node.error("a name of lowercase letters, digits and _") from None
    return text


def _periods(node: Node) -> list[Period]:
    items = node.list()
    if not 1 <= len(items) <= MAX_PERIODS:
        raise node.error(f"1 to {MAX_PERIODS} periods")
    periods = []
    for item in items:
        item.only(("name", "zh", "tier"))
        name = _identifier(item.req("name"))
        standard = next((t for t in Tier if t.value == name), None)
        tier_node = item.get("tier")
        if tier_node is not None:
            try:
                tier = Tier.parse(tier_node.str())
            except ValueError:
                raise tier_node.error("one of sharp, peak, flat, valley, deep_valley "
                                      "(尖峰, 高峰, 平段, 低谷, 深谷)") from None
        elif standard is not None:
            tier = standard
        else:
            raise ConfigError(item.file, item.child_path("tier"), "the tier of a custom "
                              "period (sharp, peak, flat, valley or deep_valley)", missing=True)
        zh_node = item.get("zh")
        zh = tier.zh if zh_node is None and standard is not None else item.req("zh").str()
        periods.append(Period(name, zh, tier))
    for attribute in ("name", "zh"):
        values = [getattr(p, attribute) for p in periods]
        if len(set(values)) != len(values):
            raise node.error(f"periods with distinct {attribute}s")
    return periods


def _period_name(node: Node, key: str, names: dict[str, str]) -> str:
    if key not in names:
        raise node.error("periods declared in [[periods]] (" + ", ".join(sorted(names)) + ")")
    return names[key]


def _prices(node: Node, names: dict[str, str]) -> dict[str, float]:
    prices = {}
    for key, child in node.items():
        prices[_period_name(child, key, names)] = child.float(min=0, max=1000)
    return prices


def _layout(node: Node, names: dict[str, str], periods: list[Period]) -> DayLayout:
    ranges: dict[str, list[str]] = {}
    others = None
    for key, child in node.items():
        if key == "others":
            others = _period_name(child, child.str(), names)
            continue
        values = [child.str()] if isinstance(child.value, str) else [
            item.str() for item in child.list()]
        ranges[_period_name(child, key, names)] = values
    layout = DayLayout.of(ranges, others)
    try:
        layout.minute_periods({p.name: i for i, p in enumerate(periods)})
    except ValueError as exc:
        raise node.error(f'"HH:MM-HH:MM" ranges covering every minute once ({exc})') from None
    return layout


def _season(node: Node, names: dict[str, str], default_prices: dict[str, float] | None,
            periods: list[Period]) -> TariffSeason:
    node.only(("name", "months", "prices_cny_per_kwh", "layout", "variants"))
    months_node = node.req("months")
    months = tuple(item.int(min=1, max=12) for item in months_node.list())
    prices_node = node.get("prices_cny_per_kwh")
    prices = default_prices if prices_node is None else _prices(prices_node, names)
    if prices is None:
        raise node.req("prices_cny_per_kwh").error("prices per period (or top-level "
                                                   "[prices_cny_per_kwh])")
    layout = _layout(node.req("layout"), names, periods)
    variants = []
    variants_node = node.get("variants")
    for day_type, child in [] if variants_node is None else variants_node.items():
        if day_type == "workday":
            raise child.error("weekend, holiday or a custom day type (workday is the "
                              "season's own layout)")
        variants.append((day_type, _layout(child, names, periods)))
    used = {p for layout_ in (layout, *(v for _, v in variants))
            for p in layout_.period_names()}
    missing = sorted(used - set(prices))
    if missing:
        raise (prices_node or node).error(f"a price for every period the season uses "
                                          f"(missing: {', '.join(missing)})")
    try:
        return TariffSeason(node.req("name").str(), months, tuple(prices.items()), layout,
                            tuple(variants))
    except ValueError as exc:
        raise months_node.error(f"distinct months 1..12 ({exc})") from None


def _dates(node: Node) -> list[dt.date]:
    texts = [node.str()] if isinstance(node.value, str) else [i.str() for i in node.list()]
    try:
        return parse_dates(texts)
    except ValueError:
        raise node.error('dates "YYYY-MM-DD" or ranges "YYYY-MM-DD..YYYY-MM-DD"') from None


# -------------------------------------------------------------------- power factor


@functools.cache
def power_factor_tables() -> dict[float, PowerFactorTable]:
    """The 1983 rule's three tables by standard (0.90, 0.85, 0.80)."""
    root = load_toml(_shipped("power-factor-1983"))
    root.only(("standards",))
    source = _leading_comment(root.file)
    tables: dict[float, PowerFactorTable] = {}
    for node in root.req("standards").list():
        node.only(("standard", "applies_to", "reductions", "increases",
                   "below_lowest_pct_per_0_01"))
        standard = node.req("standard").float(min=0.5, max=1.0)
        rows = [_row(item) for key in ("reductions", "increases")
                for item in node.req(key).list()]
        hundredths = [round(pf * 100) for pf, _ in rows]
        std = round(standard * 100)
        if not rows or hundredths != [h for h in range(hundredths[0], hundredths[-1] - 1, -1)
                                      if h != std] or not hundredths[-1] < std < hundredths[0]:
            raise node.error("rows in 0.01 steps from the highest power factor down, "
                             "skipping only the standard itself")
        if any((pct >= 0) if h > std else (pct <= 0) for h, (_, pct) in zip(
                hundredths, rows, strict=True)):
            raise node.error("reductions (< 0) above the standard, increases (> 0) below it")
        tables[standard] = PowerFactorTable(
            standard, tuple(rows), node.req("below_lowest_pct_per_0_01").float(min=0, max=10),
            node.req("applies_to").str(), source)
    return tables


def _row(node: Node) -> tuple[float, float]:
    pair = node.list()
    if len(pair) != 2:
        raise node.error("[power factor, adjustment %]")
    return pair[0].float(min=0, max=1), pair[1].float(min=-100, max=100)


# -------------------------------------------------------------------------- carbon


@functools.cache
def carbon_factors() -> tuple[CarbonFactor, ...]:
    """The shipped grid emission factors (every id and year)."""
    root = load_toml(_shipped("carbon-factors"))
    root.only(("factors",))
    factors = []
    for node in root.req("factors").list():
        node.only(("id", "name", "year", "kg_per_kwh", "source"))
        factors.append(CarbonFactor(
            _identifier(node.req("id")), node.req("name").str(),
            node.req("year").int(min=2000, max=2100),
            (node.req("kg_per_kwh").float(min=0, max=10),), node.req("source").str()))
    return tuple(factors)


def carbon_factor(factor_id: str, year: int | None = None) -> CarbonFactor:
    """A shipped factor by id (``national``, ``north_china``) and year (default: the
    latest). ``KeyError`` naming what exists when there is none."""
    candidates = [f for f in carbon_factors() if f.id == factor_id
                  and (year is None or f.year == year)]
    if not candidates:
        known = sorted({f"{f.id} {f.year}" for f in carbon_factors()})
        raise KeyError(f"no carbon factor {factor_id!r}"
                       + (f" for {year}" if year else "") + "; shipped: " + ", ".join(known))
    return max(candidates, key=lambda f: f.year or 0)
