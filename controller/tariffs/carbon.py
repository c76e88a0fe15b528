"""Grid CO2 emission factors with their year and source (pure data)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CarbonFactor:
    """The grid emission factor a site reports with: one value or 24 local-hour values
    (kgCO2/kWh), and what it is — ``id`` ("national", "north_china", or "site" for a
    site's own), ``name``, ``year`` (None for a site's own) and ``source``."""

    id: str
    name: str
    year: int | None
    kg_per_kwh: tuple[float, ...]
    source: str

    def __post_init__(self) -> None:
        if len(self.kg_per_kwh) not in (1, 24) or any(
                not 0.0 <= f <= 10.0 for f in self.kg_per_kwh):
            raise ValueError("an emission factor is one value or 24 hourly values, 0..10 "
                             "kgCO2/kWh")

    @property
    def hourly(self) -> bool:
        return len(self.kg_per_kwh) == 24

    @property
    def mean_kg_per_kwh(self) -> float:
        return sum(self.kg_per_kwh) / len(self.kg_per_kwh)

    def describe(self) -> str:
        """E.g. ``华北区域电网 North China grid 2023: 0.6361 kg/kWh (MEE/NBS, …)``."""
        value = (f"24 hourly values, mean {self.mean_kg_per_kwh:.4f} kg/kWh" if self.hourly
                 else f"{self.kg_per_kwh[0]:.4f} kg/kWh")
        year = f" {self.year}" if self.year is not None else ""
        return f"{self.name}{year}: {value} ({self.source})"

    def to_dict(self) -> dict[str, object]:
        return {"id": self.id, "name": self.name, "year": self.year,
                "kg_per_kwh": self.kg_per_kwh[0] if not self.hourly else list(self.kg_per_kwh),
                "source": self.source}
