"""``pedf plan SITE --backtest``: each forecast's day-ahead 15-min nMAE on the store's
metering history (the 15-min windows the gateway records per metered series)."""

from __future__ import annotations

from controller.planner.forecast import (
    QUARTER_S,
    LoadForecaster,
    PvForecaster,
    backtest_day_ahead,
)
from controller.planner.problem import Series
from controller.store import Store
from controller.tariffs import Tariff
from drivers.site import SiteSpec


def backtest_store(site: SiteSpec, store: Store, tariff: Tariff, until_s: float
                   ) -> dict[str, float | None]:
    """nMAE by forecast ("load: grid_meter", "pv: pv_inverter"), None where the history
    is too short (a week of warm-up, then whole days). Load is forecast on the grid
    meter's import (what the site draws net of PV and storage): the similar-day
    forecaster on that series."""
    calendar = tariff.calendar
    out: dict[str, float | None] = {}
    grid = site.grid_meter()
    if grid is not None:
        history = _history(store, grid.name, until_s)
        load = LoadForecaster(site.zone, lambda day: str(calendar.day_type(day)),
                              history=dict(history))
        out[f"load: {grid.name}"] = backtest_day_ahead(
            history, lambda slots, cut: load.forecast(slots, before_s=cut), site.zone)
    for device in site.devices.values():
        if device.device_map.kind != "inverter":
            continue
        history = {t: abs(kw) for t, kw in _history(store, device.name, until_s).items()}

        def pv_day(slots: list[float], cutoff: float,
                   history: dict[float, float] = history) -> Series:
            pv = PvForecaster(site.latitude_deg, site.longitude_deg)
            for t in sorted(t for t in history if t < cutoff)[-96 * 14:]:
                pv.observe(t, history[t])
            return pv.forecast(slots)

        out[f"pv: {device.name}"] = backtest_day_ahead(history, pv_day, site.zone)
    return out


def _history(store: Store, series: str, until_s: float) -> dict[float, float]:
    return {start - start % QUARTER_S: kw for start, kw in store.windows(series, 0.0, until_s)}
