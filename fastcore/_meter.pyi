"""Type stub of the compiled metering kernel (same API as fastcore._meter_py)."""

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from fastcore._common import LoadTotals, MeterConfig, RawState, SiteFigures
from fastcore._tariff import TariffCalendar

class MeterAggregator:
    def __init__(
        self,
        n_loads: int,
        *,
        roles: Iterable[str | int] | npt.NDArray[Any] | None = None,
        utc_offset_s: int = 28800,
        demand_window_s: int = 900,
        max_gap_s: float = 300.0,
        tariff: TariffCalendar | None = None,
        emission_factor_kg_per_kwh: float | Sequence[float] = 0.5306,
        grid_renewable_fraction: float = 0.0,
        counter_wrap_wh: float | Sequence[float] | npt.NDArray[np.float64] = 0.0,
        counter_max_power_w: float | Sequence[float] | npt.NDArray[np.float64] = 1.0e7,
        counter_jitter_wh: float = 10.0,
    ) -> None: ...
    @property
    def n_loads(self) -> int: ...
    @property
    def config(self) -> MeterConfig: ...
    @property
    def accepted_samples(self) -> int: ...
    def state(self) -> dict[str, Any]: ...
    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> MeterAggregator: ...
    def totals(self) -> LoadTotals: ...
    def site_figures(self) -> SiteFigures: ...
    def anomalies(self) -> dict[str, int]: ...
    def add_samples(
        self,
        load_index: npt.NDArray[np.int32],
        timestamp_s: npt.NDArray[np.float64],
        power_w: npt.NDArray[np.float64],
    ) -> int: ...
    def add_counters(
        self,
        load_index: npt.NDArray[np.int32],
        timestamp_s: npt.NDArray[np.float64],
        import_wh: npt.NDArray[np.float64],
        export_wh: npt.NDArray[np.float64] | None = None,
    ) -> int: ...
    def reset_period(self) -> None: ...
    def _raw_state(self) -> RawState: ...
