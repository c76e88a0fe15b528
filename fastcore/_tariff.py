"""Time-of-use tariff calendars: named periods, seasons, day types, holidays, prices.

A :class:`TariffCalendar` says, for every local minute of every date, which period is in
force and what a kWh costs then. It is pure data with validation (``ValueError`` naming
the season, day type and minute); the metering kernels compile it into lookup tables
(:func:`compile_calendar`) and the controller reads it for strategies, bills and the
``pedf tariff`` command. Data files (TOML) are parsed by ``controller.tariffs``.

Model
-----
* **Periods**: up to :data:`MAX_PERIODS` named periods, each with a Chinese name and the
  standard :class:`Tier` it behaves as (尖峰 sharp, 高峰 peak, 平段 flat, 低谷 valley,
  深谷 deep valley). The five standard periods are :data:`STANDARD_PERIODS`.
* **Seasons** own months (every month 1..12 belongs to exactly one season) and give a
  price per period (CNY/kWh) and a **layout**: local-time ranges per period covering each
  minute of the day once. A season may add layout **variants** for day types.
* **Day types**: ``workday`` (the season's layout), ``weekend`` (Saturday, Sunday),
  ``holiday`` and any custom type named by a holiday (e.g. a deep-valley holiday). A date
  in the holiday list takes the holiday's day type; a date in the work-day list (调休, a
  weekend day worked) is a workday; otherwise Saturday and Sunday are weekends. A day
  type without a variant in a season falls back: custom → ``holiday`` → ``weekend`` →
  the season's layout.
"""

from __future__ import annotations

import datetime as dt
import enum
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

MAX_PERIODS: Final = 16  # periods per calendar (the kernels' TOU buckets per load)
MINUTES_PER_DAY: Final = 1440
WORKDAY: Final = "workday"
WEEKEND: Final = "weekend"
HOLIDAY: Final = "holiday"
BUILTIN_DAY_TYPES: Final = (WORKDAY, WEEKEND, HOLIDAY)
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_EPOCH = dt.date(1970, 1, 1)


class Tier(enum.Enum):
    """The five standard Chinese time-of-use tiers, dearest first."""

    SHARP = "sharp"
    PEAK = "peak"
    FLAT = "flat"
    VALLEY = "valley"
    DEEP_VALLEY = "deep_valley"

    @property
    def zh(self) -> str:
        """The Chinese name: 尖峰, 高峰, 平段, 低谷, 深谷."""
        return _TIER_ZH[self]

    @property
    def rank(self) -> int:
        """0 for the dearest tier (sharp) .. 4 for the cheapest (deep valley)."""
        return list(Tier).index(self)

    @property
    def cheap(self) -> bool:
        """Valley or deep valley: the hours to charge storage in."""
        return self in (Tier.VALLEY, Tier.DEEP_VALLEY)

    @property
    def dear(self) -> bool:
        """Peak or sharp: the hours to discharge storage in."""
        return self in (Tier.SHARP, Tier.PEAK)

    @classmethod
    def parse(cls, text: str) -> Tier:
        """A tier from its English or Chinese name; ``ValueError`` otherwise."""
        for tier in cls:
            if text in (tier.value, tier.zh):
                return tier
        raise ValueError(f"unknown tier {text!r}; expected one of "
                         + ", ".join(f"{t.value} ({t.zh})" for t in cls))


_TIER_ZH: Final = {Tier.SHARP: "尖峰", Tier.PEAK: "高峰", Tier.FLAT: "平段",
                   Tier.VALLEY: "低谷", Tier.DEEP_VALLEY: "深谷"}


@dataclass(frozen=True)
class Period:
    """A named time-of-use period: identifier, Chinese name, the tier it behaves as."""

    name: str
    zh: str
    tier: Tier

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name):
            raise ValueError(f"period name {self.name!r} is not lowercase letters, digits "
                             "and _ starting with a letter (at most 32)")
        if not self.zh:
            raise ValueError(f"period {self.name!r} has no Chinese name")

    @classmethod
    def standard(cls, tier: Tier) -> Period:
        return cls(tier.value, tier.zh, tier)

    def __str__(self) -> str:
        return f"{self.name} ({self.zh})"


STANDARD_PERIODS: Final = tuple(Period.standard(t) for t in Tier)
SHARP, PEAK, FLAT, VALLEY, DEEP_VALLEY = STANDARD_PERIODS


# ----------------------------------------------------------------------- time ranges


def parse_hhmm(text: str, *, allow_24: bool) -> int:
    """``"HH:MM"`` -> minute of the day; ``ValueError`` when malformed."""
    parts = text.strip().split(":")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise ValueError(f"time {text!r} is not HH:MM")
    hours, minutes = int(parts[0]), int(parts[1])
    if minutes >= 60 or hours > 24 or (hours == 24 and (minutes or not allow_24)):
        raise ValueError(f"time {text!r} is out of range (00:00 .. 24:00)")
    return hours * 60 + minutes


def parse_range(text: str) -> tuple[int, int]:
    """``"HH:MM-HH:MM"`` -> (start minute, end minute); the end is exclusive, may be
    ``24:00`` and may wrap past midnight (``"23:00-07:00"``)."""
    if text.count("-") != 1:
        raise ValueError(f"time range {text!r} is not HH:MM-HH:MM")
    start_text, end_text = text.split("-")
    start = parse_hhmm(start_text, allow_24=False)
    end = parse_hhmm(end_text, allow_24=True)
    if start == end:
        raise ValueError(f"time range {text!r} is empty")
    return start, end


def hhmm(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


@dataclass(frozen=True)
class DayLayout:
    """Which period each local minute of a day is in: ``ranges`` per period name, and
    optionally ``others``, the period of every minute no range names ("all other hours
    are 平段")."""

    ranges: tuple[tuple[str, tuple[str, ...]], ...]
    others: str | None = None

    @classmethod
    def of(cls, ranges: Mapping[str, Iterable[str] | str], others: str | None = None
           ) -> DayLayout:
        return cls(tuple((name, (value,) if isinstance(value, str) else tuple(value))
                         for name, value in ranges.items()), others)

    def period_names(self) -> set[str]:
        names = {name for name, _ in self.ranges}
        return names | ({self.others} if self.others else set())

    def minute_periods(self, index: Mapping[str, int]) -> list[int]:
        """Period index (``index[name]``) of every minute of the day (1440 entries).

        Raises ``ValueError`` naming the minute when two periods claim it or none does,
        and for malformed ranges or unknown period names."""
        table = [-1] * MINUTES_PER_DAY
        for name, texts in self.ranges:
            if name not in index:
                raise ValueError(f"unknown period {name!r}")
            for text in texts:
                start, end = parse_range(text)
                minutes = range(start, end) if start < end else [
                    *range(start, MINUTES_PER_DAY), *range(end)]
                for minute in minutes:
                    if table[minute] != -1:
                        other = next(n for n, i in index.items() if i == table[minute])
                        raise ValueError(f"{hhmm(minute)} is in both {other} and {name}")
                    table[minute] = index[name]
        if self.others is not None:
            if self.others not in index:
                raise ValueError(f"unknown period {self.others!r}")
            table = [index[self.others] if p == -1 else p for p in table]
        if -1 in table:
            raise ValueError(f"{hhmm(table.index(-1))} is in no period")
        return table

    def to_dict(self) -> dict[str, Any]:
        return {"ranges": {name: list(texts) for name, texts in self.ranges},
                "others": self.others}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DayLayout:
        return cls.of(data["ranges"], data.get("others"))


# --------------------------------------------------------------------------- seasons


@dataclass(frozen=True)
class TariffSeason:
    """Months with one set of prices (CNY/kWh per period name) and a day layout, plus
    layout variants by day type (``weekend``, ``holiday`` or a custom holiday type).

    A price is needed for every period the season's layouts use; periods it never uses
    may be left out (they cost nothing because nothing is booked there)."""

    name: str
    months: tuple[int, ...]
    prices_cny_per_kwh: tuple[tuple[str, float], ...]
    layout: DayLayout
    variants: tuple[tuple[str, DayLayout], ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "months", tuple(int(m) for m in self.months))
        object.__setattr__(self, "prices_cny_per_kwh", tuple(
            (str(name), float(price)) for name, price in self.prices_cny_per_kwh))
        object.__setattr__(self, "variants", tuple(self.variants))
        if not self.months or any(not 1 <= m <= 12 for m in self.months):
            raise ValueError(f"season {self.name!r}: months must be 1..12, got {self.months}")
        if len(set(self.months)) != len(self.months):
            raise ValueError(f"season {self.name!r}: repeated month in {self.months}")
        for name, price in self.prices_cny_per_kwh:
            if not (math.isfinite(price) and 0.0 <= price <= 1000.0):
                raise ValueError(f"season {self.name!r}: price of {name} ({price}) outside "
                                 "0..1000 CNY/kWh")
        types = [day_type for day_type, _ in self.variants]
        if len(set(types)) != len(types) or WORKDAY in types:
            raise ValueError(f"season {self.name!r}: day-type variants must be distinct "
                             f"and not {WORKDAY!r} (the season's own layout)")

    @property
    def prices(self) -> dict[str, float]:
        return dict(self.prices_cny_per_kwh)

    def layout_for(self, day_type: str) -> DayLayout:
        """The layout of ``day_type``: its variant, else custom → holiday → weekend →
        the season's layout."""
        variants = dict(self.variants)
        chain = [day_type] if day_type in BUILTIN_DAY_TYPES else [day_type, HOLIDAY]
        if HOLIDAY in chain:
            chain.append(WEEKEND)
        for candidate in chain:
            if candidate in variants:
                return variants[candidate]
        return self.layout

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "months": list(self.months),
                "prices_cny_per_kwh": dict(self.prices_cny_per_kwh),
                "layout": self.layout.to_dict(),
                "variants": {day_type: layout.to_dict() for day_type, layout in self.variants}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TariffSeason:
        return cls(name=str(data.get("name", "")), months=tuple(data["months"]),
                   prices_cny_per_kwh=tuple(
                       (k, v) for k, v in data["prices_cny_per_kwh"].items() if v is not None),
                   layout=DayLayout.from_dict(data["layout"]),
                   variants=tuple((k, DayLayout.from_dict(v))
                                  for k, v in data.get("variants", {}).items()))


@dataclass(frozen=True)
class Holiday:
    """A date with its own day type (default ``holiday``), e.g. 春节 or a deep-valley day."""

    date: dt.date
    day_type: str = HOLIDAY
    name: str = ""


@dataclass(frozen=True)
class Segment:
    """A stretch of one day in one period: ``[start_min, end_min)`` local minutes."""

    start_min: int
    end_min: int
    period: Period
    price_cny_per_kwh: float

    def __str__(self) -> str:
        return f"{hhmm(self.start_min)}-{hhmm(self.end_min)} {self.period}"


# -------------------------------------------------------------------------- calendar


@dataclass(frozen=True)
class TariffCalendar:
    """A Chinese time-of-use tariff: periods, seasons, holidays and work days (调休).

    Raises ``ValueError`` (naming season, day type, period or minute) when a month is in
    no season or two, a layout leaves a minute uncovered or covers it twice, a layout
    uses an undeclared period or one the season has no price for, more than
    :data:`MAX_PERIODS` periods are declared, names repeat, or a holiday names a day
    type no season defines.
    """

    name: str
    seasons: tuple[TariffSeason, ...]
    periods: tuple[Period, ...] = STANDARD_PERIODS
    holidays: tuple[Holiday, ...] = ()
    workdays: tuple[dt.date, ...] = ()
    _tables: _Tables = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("seasons", "periods", "holidays", "workdays"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if not 1 <= len(self.periods) <= MAX_PERIODS:
            raise ValueError(f"tariff calendar {self.name!r}: 1..{MAX_PERIODS} periods, "
                             f"got {len(self.periods)}")
        for attribute in ("name", "zh"):
            values = [getattr(p, attribute) for p in self.periods]
            if len(set(values)) != len(values):
                raise ValueError(f"tariff calendar {self.name!r}: repeated period "
                                 f"{attribute} in {values}")
        owner: dict[int, str] = {}
        for season in self.seasons:
            if not isinstance(season, TariffSeason):
                raise TypeError(f"seasons must be TariffSeason, got {type(season).__name__}")
            for month in season.months:
                if month in owner:
                    raise ValueError(
                        f"month {month} is in seasons {owner[month]!r} and {season.name!r}")
                owner[month] = season.name
        missing = [m for m in range(1, 13) if m not in owner]
        if missing:
            raise ValueError(f"tariff calendar {self.name!r}: months {missing} have no season")
        dates = [h.date for h in self.holidays]
        if len(set(dates)) != len(dates):
            raise ValueError(f"tariff calendar {self.name!r}: a holiday date is listed twice")
        if set(dates) & set(self.workdays):
            raise ValueError(f"tariff calendar {self.name!r}: a date is both a holiday and "
                             "a work day")
        object.__setattr__(self, "_tables", _build(self))

    # -- construction helpers -------------------------------------------------------------

    @classmethod
    def flat_rate(cls, price_cny_per_kwh: float) -> TariffCalendar:
        """One price all day, all year (everything is booked in the flat period)."""
        price = float(price_cny_per_kwh)
        return cls(name=f"flat {price} CNY/kWh", periods=(FLAT,), seasons=(TariffSeason(
            name="all year", months=tuple(range(1, 13)), prices_cny_per_kwh=(("flat", price),),
            layout=DayLayout.of({"flat": "00:00-24:00"})),))

    # -- periods -------------------------------------------------------------------------

    @property
    def n_periods(self) -> int:
        return len(self.periods)

    def period(self, name: str | Tier) -> Period:
        """The period named ``name`` (English or Chinese), or the first of a tier."""
        for period in self.periods:
            if name in (period.name, period.zh, period.tier):
                return period
        raise KeyError(f"tariff calendar {self.name!r} has no period {name!r}")

    def index(self, period: Period | str) -> int:
        """Position of a period in :attr:`periods` (the kernels' TOU bucket column)."""
        target = period if isinstance(period, Period) else self.period(period)
        return self.periods.index(target)

    # -- dates ---------------------------------------------------------------------------

    @property
    def day_types(self) -> tuple[str, ...]:
        """Built-in day types first, then custom ones (kernel day-type indices)."""
        return self._tables.day_types

    def day_type(self, date: dt.date) -> str:
        """The day type of a local date (holiday list, 调休 work days, weekends)."""
        return _day_type(self, date)

    def season(self, month: int) -> TariffSeason:
        for season in self.seasons:
            if month in season.months:
                return season
        raise ValueError(f"month {month} outside 1..12")

    def _profile(self, date: dt.date) -> int:
        tables = self._tables
        season = tables.month_season[date.month - 1]
        return tables.day_profile[season * len(tables.day_types)
                                  + tables.day_types.index(self.day_type(date))]

    def minute_periods(self, date: dt.date) -> list[int]:
        """Period index of every minute of a local date (1440 entries; do not modify)."""
        return self._tables.profiles[self._profile(date)]

    def price(self, month: int, period: Period | str) -> float:
        """CNY/kWh of ``period`` in ``month`` (NaN if that season never uses it)."""
        target = period if isinstance(period, Period) else self.period(period)
        return self.season(month).prices.get(target.name, math.nan)

    def period_at(self, local: dt.datetime) -> Period:
        """The period in force at a local (wall-clock) time."""
        minute = local.hour * 60 + local.minute
        return self.periods[self.minute_periods(local.date())[minute]]

    def price_at(self, local: dt.datetime) -> float:
        return self.price(local.month, self.period_at(local))

    def segments(self, date: dt.date) -> list[Segment]:
        """The day as stretches of one period each, in time order."""
        key = (date.month, self._profile(date))
        cached = self._tables.segments.get(key)
        if cached is not None:
            return list(cached)
        table = self.minute_periods(date)
        out: list[Segment] = []
        start = 0
        for minute in range(1, MINUTES_PER_DAY + 1):
            if minute == MINUTES_PER_DAY or table[minute] != table[start]:
                period = self.periods[table[start]]
                out.append(Segment(start, minute, period, self.price(date.month, period)))
                start = minute
        self._tables.segments[key] = tuple(out)
        return out

    # -- serialisation -------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (:meth:`from_dict` is the inverse)."""
        return {
            "name": self.name,
            "periods": [{"name": p.name, "zh": p.zh, "tier": p.tier.value}
                        for p in self.periods],
            "seasons": [s.to_dict() for s in self.seasons],
            "holidays": [{"date": h.date.isoformat(), "day_type": h.day_type, "name": h.name}
                         for h in self.holidays],
            "workdays": [d.isoformat() for d in self.workdays],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TariffCalendar:
        """Inverse of :meth:`to_dict`; also reads the four-period format of state
        version 1 (seasons with ``sharp``/``peak``/``flat``/``valley`` range lists)."""
        if "periods" not in data:
            return _legacy(data)
        return cls(
            name=str(data.get("name", "")),
            periods=tuple(Period(p["name"], p["zh"], Tier(p["tier"])) for p in data["periods"]),
            seasons=tuple(TariffSeason.from_dict(s) for s in data["seasons"]),
            holidays=tuple(Holiday(dt.date.fromisoformat(h["date"]), h.get("day_type", HOLIDAY),
                                   h.get("name", "")) for h in data.get("holidays", ())),
            workdays=tuple(dt.date.fromisoformat(d) for d in data.get("workdays", ())))


def _legacy(data: Mapping[str, Any]) -> TariffCalendar:
    names = ("sharp", "peak", "flat", "valley")
    seasons = []
    for season in data["seasons"]:
        ranges = {n: season.get(n, ()) for n in names if season.get(n)}
        seasons.append(TariffSeason(
            name=str(season.get("name", "")), months=tuple(season["months"]),
            prices_cny_per_kwh=tuple(zip(names, season["prices_cny_per_kwh"], strict=True)),
            layout=DayLayout.of(ranges)))
    return TariffCalendar(name=str(data.get("name", "")), seasons=tuple(seasons),
                          periods=STANDARD_PERIODS[:4])


def _day_type(calendar: TariffCalendar, date: dt.date) -> str:
    tables = calendar._tables
    special = tables.special.get(date)
    if special is not None:
        return special
    return WEEKEND if date.weekday() >= 5 else WORKDAY


def day_number(date: dt.date) -> int:
    """Days since 1970-01-01 (the kernels' day numbering)."""
    return (date - _EPOCH).days


@dataclass(frozen=True)
class _Tables:
    day_types: tuple[str, ...]
    month_season: tuple[int, ...]  # (12,)
    day_profile: tuple[int, ...]  # (n_seasons * n_day_types,) profile index
    profiles: tuple[list[int], ...]  # distinct minute tables
    special: Mapping[dt.date, str]  # holidays and 调休 work days -> day type
    segments: dict[tuple[int, int], tuple[Segment, ...]] = field(default_factory=dict)


def _build(calendar: TariffCalendar) -> _Tables:
    index = {p.name: i for i, p in enumerate(calendar.periods)}
    custom: list[str] = []
    for holiday in calendar.holidays:
        if holiday.day_type not in BUILTIN_DAY_TYPES and holiday.day_type not in custom:
            custom.append(holiday.day_type)
    defined = {t for s in calendar.seasons for t, _ in s.variants}
    for season in calendar.seasons:
        unknown = {t for t, _ in season.variants} - set(BUILTIN_DAY_TYPES) - set(custom)
        if unknown:
            raise ValueError(f"season {season.name!r}: variant for day type(s) "
                             f"{sorted(unknown)} that no holiday has")
    for day_type in custom:
        if day_type not in defined:
            raise ValueError(f"holiday day type {day_type!r} has no layout in any season")
    day_types = (*BUILTIN_DAY_TYPES, *custom)
    profiles: list[list[int]] = []
    day_profile: list[int] = []
    for season in calendar.seasons:
        prices = season.prices
        for day_type in day_types:
            try:
                table = season.layout_for(day_type).minute_periods(index)
            except ValueError as exc:
                raise ValueError(f"season {season.name!r}, {day_type}: {exc}") from None
            for used in {calendar.periods[i].name for i in set(table)}:
                if used not in prices:
                    raise ValueError(f"season {season.name!r}: no price for period {used!r}")
            if table not in profiles:
                profiles.append(table)
            day_profile.append(profiles.index(table))
    for season in calendar.seasons:
        for name in season.prices:
            if name not in index:
                raise ValueError(f"season {season.name!r}: price for unknown period {name!r}")
    season_of = {m: i for i, s in enumerate(calendar.seasons) for m in s.months}
    special: dict[dt.date, str] = {h.date: h.day_type for h in calendar.holidays}
    special.update(dict.fromkeys(calendar.workdays, WORKDAY))
    return _Tables(day_types, tuple(season_of[m] for m in range(1, 13)), tuple(day_profile),
                   tuple(profiles), special)


# ------------------------------------------------------------------ kernel lookup tables


@dataclass(frozen=True, eq=False)
class CalendarTables:
    """What the kernels look up per segment (numpy-free lists; see compile_calendar).

    Day type of day number d: ``special[d - special_first]`` when in range and >= 0,
    else 1 (weekend) when ``(d + 3) % 7 >= 5`` (1970-01-01 was a Thursday), else 0.
    Profile = ``day_profile[season * n_day_types + day_type]``; the period of minute m is
    ``minute_period[profile * 1440 + m]`` and the next change ``next_change[...]``;
    the price is ``prices[season * n_periods + period]``."""

    n_periods: int
    n_day_types: int
    month_season: list[int]
    day_profile: list[int]
    minute_period: list[int]
    next_change: list[int]
    prices: list[float]
    special_first: int
    special: list[int]


def compile_calendar(calendar: TariffCalendar) -> CalendarTables:
    tables = calendar._tables
    minute_period: list[int] = []
    next_change: list[int] = []
    for table in tables.profiles:
        following = [MINUTES_PER_DAY] * MINUTES_PER_DAY
        for minute in range(MINUTES_PER_DAY - 2, -1, -1):
            following[minute] = (minute + 1 if table[minute + 1] != table[minute]
                                 else following[minute + 1])
        minute_period += table
        next_change += following
    prices = [season.prices.get(p.name, 0.0) for season in calendar.seasons
              for p in calendar.periods]
    days = sorted(tables.special)
    first = day_number(days[0]) if days else 0
    special = [-1] * (day_number(days[-1]) - first + 1 if days else 0)
    for date, day_type in tables.special.items():
        special[day_number(date) - first] = tables.day_types.index(day_type)
    return CalendarTables(
        n_periods=calendar.n_periods, n_day_types=len(tables.day_types),
        month_season=list(tables.month_season), day_profile=list(tables.day_profile),
        minute_period=minute_period, next_change=next_change, prices=prices,
        special_first=first, special=special)


def weekend(day: int) -> bool:
    """Whether day number ``day`` (days since 1970-01-01) is a Saturday or Sunday."""
    return (day + 3) % 7 >= 5


def parse_dates(texts: Sequence[str]) -> list[dt.date]:
    """``"YYYY-MM-DD"`` or ``"YYYY-MM-DD..YYYY-MM-DD"`` (inclusive) -> dates."""
    out: list[dt.date] = []
    for text in texts:
        first_text, _, last_text = text.partition("..")
        first = dt.date.fromisoformat(first_text.strip())
        last = dt.date.fromisoformat(last_text.strip()) if last_text else first
        if last < first:
            raise ValueError(f"date range {text!r} ends before it starts")
        out += [first + dt.timedelta(days=k) for k in range((last - first).days + 1)]
    return out
