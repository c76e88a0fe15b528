"""PV array and inverter with a SunSpec active-power limit that reverts by itself."""

from __future__ import annotations

from dataclasses import dataclass

from simulators.physics.solar import Climate, Location, plane_of_array_w_m2, sun_position


@dataclass(frozen=True, slots=True)
class PvConfig:
    peak_power_w: float = 100_000.0  # array DC rating at STC
    rated_ac_w: float = 100_000.0  # inverter AC rating (WMax)
    tilt_deg: float = 25.0
    azimuth_deg: float = 0.0  # 0 = south, + west
    temperature_coefficient_per_k: float = -0.0037
    noct_c: float = 45.0
    inverter_efficiency: float = 0.975
    clearness: float = 1.0  # 1 = clear sky; lower for haze (Jinan winter: ~0.8)
    mppt_count: int = 2


class PvInverter:
    """AC output follows clear-sky irradiance, cell temperature and the power limit.

    Power limit (SunSpec model 123): when enabled, AC power is capped at
    ``limit_pct`` % of ``rated_ac_w``. Every write of the limit restarts the revert
    timer; ``revert_s`` seconds after the last write the limit disables itself, so a
    gateway that dies cannot leave the inverter throttled. ``ramp_s`` spreads a change of
    the limit over that many seconds.
    """

    def __init__(self, config: PvConfig, location: Location, climate: Climate,
                 start_s: float, energy_wh: float = 1_000_000.0) -> None:
        self.config = config
        self.location = location
        self.climate = climate
        self.t_s = start_s
        self.energy_wh = energy_wh
        self.limit_enabled = False
        self.limit_pct = 100.0
        self.revert_s = 0.0
        self.ramp_s = 0.0
        self._limit_written_s = start_s
        self._applied_limit_pct = 100.0
        self.available_w = 0.0  # what the array could deliver now, before the limit
        self.power_w = 0.0
        self.dc_power_w = 0.0
        self.cell_temp_c = climate.temperature_c(location, start_s)
        self.advance(start_s)

    # -- control (what Modbus writes call) ----------------------------------------------

    def set_limit(self, *, pct: float | None = None, enabled: bool | None = None,
                  revert_s: float | None = None, ramp_s: float | None = None) -> None:
        if pct is not None:
            if not 0.0 <= pct <= 100.0:
                raise ValueError(f"power limit {pct} % is outside 0–100 %")
            self.limit_pct = pct
        if enabled is not None:
            self.limit_enabled = enabled
        if revert_s is not None:
            self.revert_s = revert_s
        if ramp_s is not None:
            self.ramp_s = ramp_s
        if pct is not None or enabled:
            self._limit_written_s = self.t_s

    @property
    def limit_active(self) -> bool:
        return self.limit_enabled and self._applied_limit_pct < 100.0

    # -- physics ------------------------------------------------------------------------

    def advance(self, t_s: float) -> float:
        """Move to ``t_s``; returns the energy produced in the step, Wh."""
        dt = max(0.0, t_s - self.t_s)
        self.t_s = max(self.t_s, t_s)
        if self.limit_enabled and self.revert_s > 0 and (
            self.t_s - self._limit_written_s >= self.revert_s
        ):
            self.limit_enabled = False
        target = self.limit_pct if self.limit_enabled else 100.0
        if self.ramp_s > 0 and dt > 0:
            step = 100.0 * dt / self.ramp_s
            delta = max(-step, min(step, target - self._applied_limit_pct))
            self._applied_limit_pct += delta
        else:
            self._applied_limit_pct = target
        cfg = self.config
        sun = sun_position(self.location, self.t_s)
        poa = plane_of_array_w_m2(sun, cfg.tilt_deg, cfg.azimuth_deg, clearness=cfg.clearness)
        air_c = self.climate.temperature_c(self.location, self.t_s)
        self.cell_temp_c = air_c + poa / 800.0 * (cfg.noct_c - 20.0)
        dc = cfg.peak_power_w * poa / 1000.0 * (
            1.0 + cfg.temperature_coefficient_per_k * (self.cell_temp_c - 25.0)
        )
        dc = max(0.0, dc)
        self.available_w = min(dc * cfg.inverter_efficiency, cfg.rated_ac_w)
        cap = cfg.rated_ac_w * self._applied_limit_pct / 100.0
        self.power_w = min(self.available_w, cap)
        self.dc_power_w = self.power_w / cfg.inverter_efficiency if self.power_w > 0 else 0.0
        produced = self.power_w * dt / 3600.0
        self.energy_wh += produced
        return produced
