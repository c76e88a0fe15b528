"""Battery storage: state of charge, power limits, efficiency, setpoint following."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BatteryConfig:
    capacity_wh: float = 200_000.0
    max_charge_w: float = 100_000.0
    max_discharge_w: float = 100_000.0
    round_trip_efficiency: float = 0.90
    ramp_w_per_s: float = 20_000.0
    soc_min_pct: float = 5.0
    soc_max_pct: float = 100.0
    nominal_voltage_v: float = 716.8


class BatteryModel:
    """Power at the AC terminals, + discharge / − charge (W).

    The battery's own logic idles (0 W). External control comes in two kinds:

    * limits, as SunSpec model 124 defines them: with ``charge_limited`` the power may
      not exceed a charge of ``charge_limit_pct`` % of ``max_charge_w``; with
      ``discharge_limited`` it may not exceed a discharge of ``discharge_limit_pct`` %.
      Negative limits force the opposite direction. The limits lapse ``revert_s``
      seconds after the last write (0 = never);
    * a forced setpoint (:meth:`set_forced`, the vendors' "forcible" or "forced mode"
      charge and discharge): the battery holds ``forced_w`` until released — it does not
      revert by itself — unless the device was given a duration (it ends that long after
      the last command) or a target state of charge (it ends when the SoC gets there).
      A forced setpoint wins over the limits.

    Settable caps (``charge_cap_w``, ``discharge_cap_w``: a vendor's "maximum charging
    power" setting) and the SoC window (``max_soc_pct``; the floor is the highest of the
    rating's minimum, ``min_soc_pct`` and ``min_reserve_pct``) bound every target. The
    power moves towards its target at ``ramp_w_per_s`` and stops at the SoC bounds.
    Losses: charging stores ``power × √η``, discharging draws ``power / √η`` from the
    cells.
    """

    def __init__(self, config: BatteryConfig, start_s: float, soc_pct: float = 50.0) -> None:
        if not 0.0 <= soc_pct <= 100.0:
            raise ValueError(f"soc_pct {soc_pct} is outside 0–100")
        self.config = config
        self.t_s = start_s
        self.stored_wh = config.capacity_wh * soc_pct / 100.0
        self.power_w = 0.0
        self.charge_limited = False
        self.discharge_limited = False
        self.charge_limit_pct = 100.0
        self.discharge_limit_pct = 100.0
        self.revert_s = 0.0
        self.min_reserve_pct = config.soc_min_pct
        self.min_soc_pct = config.soc_min_pct
        self.max_soc_pct = config.soc_max_pct
        self.charge_cap_w = config.max_charge_w
        self.discharge_cap_w = config.max_discharge_w
        self.forced_w: float | None = None  # forced setpoint, + discharge; None: not forced
        self.forced_until_s: float | None = None  # a device-side duration ends it then
        self.forced_soc_target_pct: float | None = None  # ... or reaching this SoC
        self._written_s = start_s
        self.charged_wh = 0.0  # AC energy in, cumulative
        self.discharged_wh = 0.0  # AC energy out, cumulative
        self.cycles = 0.0

    @property
    def soc_pct(self) -> float:
        return 100.0 * self.stored_wh / self.config.capacity_wh

    @property
    def efficiency_one_way(self) -> float:
        return math.sqrt(self.config.round_trip_efficiency)

    def set_control(self, *, charge_limited: bool | None = None,
                    discharge_limited: bool | None = None,
                    charge_limit_pct: float | None = None,
                    discharge_limit_pct: float | None = None,
                    revert_s: float | None = None) -> None:
        for value in (charge_limit_pct, discharge_limit_pct):
            if value is not None and not -100.0 <= value <= 100.0:
                raise ValueError(f"rate {value} % is outside −100–100 %")
        if charge_limited is not None:
            self.charge_limited = charge_limited
        if discharge_limited is not None:
            self.discharge_limited = discharge_limited
        if charge_limit_pct is not None:
            self.charge_limit_pct = charge_limit_pct
        if discharge_limit_pct is not None:
            self.discharge_limit_pct = discharge_limit_pct
        if revert_s is not None:
            self.revert_s = revert_s
        self._written_s = self.t_s

    def set_forced(self, power_w: float | None, *, duration_s: float | None = None,
                   soc_target_pct: float | None = None) -> None:
        """Force the battery to ``power_w`` (W, + discharge; None releases it to its own
        logic). ``duration_s``: the device ends the setting that long from now (a new
        command restarts it); ``soc_target_pct``: it ends when the SoC reaches it (from
        below when charging, from above when discharging). Neither: it holds until
        released. Raises ValueError for a non-finite power or a target outside 0–100 %.
        """
        if power_w is not None and not math.isfinite(power_w):
            raise ValueError(f"forced power {power_w} is not a number")
        if soc_target_pct is not None and not 0.0 <= soc_target_pct <= 100.0:
            raise ValueError(f"target SoC {soc_target_pct} % is outside 0–100 %")
        self.forced_w = power_w
        self.forced_until_s = None if power_w is None or duration_s is None \
            else self.t_s + duration_s
        self.forced_soc_target_pct = None if power_w is None else soc_target_pct

    def _forced_ended(self) -> bool:
        forced, target = self.forced_w, self.forced_soc_target_pct
        if forced is None:
            return False
        if self.forced_until_s is not None and self.t_s >= self.forced_until_s:
            return True
        return target is not None and (
            (forced < 0 and self.soc_pct >= target) or (forced > 0 and self.soc_pct <= target))

    @property
    def floor_pct(self) -> float:
        """The state of charge below which the battery does not discharge."""
        return max(self.config.soc_min_pct, self.min_soc_pct, self.min_reserve_pct)

    def target_w(self) -> float:
        """The power the control asks for, before ramp and SoC limits."""
        if self.forced_w is not None:
            return self.forced_w
        low, high = -math.inf, math.inf  # in discharge-positive W
        if self.charge_limited:
            low = -self.charge_limit_pct / 100.0 * self.config.max_charge_w
        if self.discharge_limited:
            high = self.discharge_limit_pct / 100.0 * self.config.max_charge_w
        if low > high:  # contradictory limits: hold
            return 0.0
        return min(max(0.0, low), high)

    def advance(self, t_s: float) -> tuple[float, float]:
        """Move to ``t_s``; returns (AC energy charged, AC energy discharged) in the
        step, Wh."""
        dt = max(0.0, t_s - self.t_s)
        self.t_s = max(self.t_s, t_s)
        if dt == 0.0:
            return 0.0, 0.0
        if self.revert_s > 0 and self.t_s - self._written_s >= self.revert_s:
            self.charge_limited = self.discharge_limited = False
        if self._forced_ended():
            self.set_forced(None)
        cfg = self.config
        target = max(-min(cfg.max_charge_w, self.charge_cap_w),
                     min(cfg.max_discharge_w, self.discharge_cap_w, self.target_w()))
        step = cfg.ramp_w_per_s * dt
        power = self.power_w + max(-step, min(step, target - self.power_w))
        eta = self.efficiency_one_way
        floor_wh = cfg.capacity_wh * self.floor_pct / 100.0
        ceiling_wh = cfg.capacity_wh * min(cfg.soc_max_pct, self.max_soc_pct) / 100.0
        charged = discharged = 0.0
        if power > 0:  # discharge: limited by the energy above the floor
            available = max(0.0, self.stored_wh - floor_wh)
            wanted_cells = power / eta * dt / 3600.0
            cells = min(wanted_cells, available)
            discharged = cells * eta
            power = discharged * 3600.0 / dt
            self.stored_wh -= cells
        elif power < 0:
            room = max(0.0, ceiling_wh - self.stored_wh)
            wanted_cells = -power * eta * dt / 3600.0
            cells = min(wanted_cells, room)
            charged = cells / eta
            power = -charged * 3600.0 / dt
            self.stored_wh += cells
        self.power_w = power
        self.charged_wh += charged
        self.discharged_wh += discharged
        self.cycles += discharged / cfg.capacity_wh
        return charged, discharged
