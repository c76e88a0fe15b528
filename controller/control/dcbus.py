"""直柔: the gateway's side of a flexible DC bus (configured by ``[dcbus]``, see
:mod:`controller.control.dcbus_config`).

The devices on the bus follow their own P–V curves; the gateway

1. **writes the curves** (per load class, and the storage droop) and checks them by
   reading them back — again after any device reset or foreign write;
2. **supervises the bus**: its voltage against the band, with an alarm on leaving it;
3. **serves DR and VPP events through the converter**: it sets the interface
   converter's grid limit; the bus voltage carries the request to every device, which
   gives way by its curve. Delivery is checked on the grid meter and the limit adjusted
   each cycle (integral feedback on the meter's error). The loop's per-load shedding
   stays in place as the fallback;
4. counts the bus's **flexibility** from the curves and the storage state.

Fail-safe: the grid limit is a ``device_reverts`` control: the gateway refreshes it well
within the converter's watchdog, and if the gateway stops or loses the converter, the
converter falls back to droop by itself while every device keeps its curve.

Powers in W (grid + import; converter + into the bus); voltages in V; times UNIX s.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from controller.control.dcbus_config import DcBusSettings, dcbus_settings
from controller.control.plant import Plant
from controller.control.strategies import RunningEvent
from drivers.dc_curves import BREAKPOINTS, VoltageCurve
from drivers.devices import DcBus, Write
from drivers.points import WriteRangeError

__all__ = ["CurveTarget", "DcBusControl", "bus_readings", "grid_target_w"]

log = logging.getLogger("pedf.control.dcbus")

#: Breakpoint read-back tolerance (the registers hold 0.1 V and 0.1 %).
_TOLERANCE = 0.06
#: After writing a curve, wait this long for the read-back before writing it again, s.
_REWRITE_S = 30.0
#: The bus's readings go out on ``<prefix>/dcbus`` this often, s (alarms at once).
REPORT_S = 60.0


@dataclass(frozen=True, slots=True)
class CurveTarget:
    """A curve the gateway keeps on a device: capabilities ``{prefix}v1..4`` and
    ``{prefix}pct1..4``."""

    label: str  # "lighting", "storage" …
    device: str
    prefix: str  # "lighting_curve_" or "curve_"
    curve: VoltageCurve

    def registers(self) -> list[tuple[str, float]]:
        """(capability, value) for every breakpoint register, voltages first."""
        padded = self.curve.padded(BREAKPOINTS)
        return [(f"{self.prefix}v{i + 1}", v) for i, v in enumerate(padded.voltages_v)] + \
            [(f"{self.prefix}pct{i + 1}", f) for i, f in enumerate(padded.fractions_pct)]


def curve_targets(settings: DcBusSettings) -> list[CurveTarget]:
    targets = []
    if settings.loads is not None:
        targets += [CurveTarget(cls.value, settings.loads, f"{cls.value}_curve_", spec.curve)
                    for cls, spec in settings.classes.items()]
    if settings.storage is not None and settings.storage_curve is not None:
        targets.append(CurveTarget("storage", settings.storage, "curve_",
                                   settings.storage_curve))
    return targets


def grid_target_w(running: Sequence[RunningEvent]) -> tuple[float, bool] | None:
    """The grid power the running events ask for, W, and whether it is two-sided (a VPP
    setpoint) rather than a maximum (reduction, cap); None without such an event."""
    setpoints = [r.limit_w for r in running if r.two_sided and r.limit_w is not None]
    if setpoints:
        return setpoints[-1], True
    caps = [r.limit_w for r in running if not r.two_sided and r.limit_w is not None]
    return (min(caps), False) if caps else None


@dataclass
class DcBusControl:
    """Curves, supervision and converter-limit flexibility for one DC bus."""

    settings: DcBusSettings
    plant: Plant
    publish: Callable[[dict[str, Any]], None] = lambda body: None
    limit_w: float | None = None  # the grid limit we hold (None: converter in droop)
    ceiling_w: float | None = None  # one-sided events never raise the limit above this
    target_w: float | None = None
    state: str = "unknown"  # ok, low, high, unknown (converter not read)
    verified: dict[str, bool] = field(default_factory=dict)
    alarms: list[str] = field(default_factory=list)
    limit_writes: int = 0
    curve_writes: int = 0
    _rewrite_at: dict[str, float] = field(default_factory=dict)
    _last_limit: tuple[float, float] | None = None  # (value, when) last written
    _last_target_w: float | None = None
    _next_report_s: float = 0.0

    @classmethod
    def for_site(cls, plant: Plant) -> DcBusControl | None:
        """The control for ``plant``'s site, if its file has a ``[dcbus]`` section.
        Raises :class:`~drivers.schema.ConfigError` for a malformed one."""
        settings = dcbus_settings(plant.site)
        return None if settings is None else cls(settings, plant)

    # -- the cycle --------------------------------------------------------------------

    async def cycle(self, now_s: float, grid_w: float | None,
                    target: tuple[float, bool] | None) -> None:
        await self._keep_curves(now_s)
        self._supervise(now_s)
        await self._follow(now_s, grid_w, target if self.settings.serve_events else None)
        if now_s >= self._next_report_s:  # the bus for the uplink and the console
            self._next_report_s = now_s + REPORT_S
            self.publish({"ts": round(now_s, 3), "bus": self.readings()})

    async def release(self, why: str) -> None:
        """Hand the converter back to droop (the gateway stops)."""
        if self.limit_w is None:
            return
        writes = self._converter().release_control("grid_limit")
        if await self._execute(self.settings.converter, writes, "release the grid limit"):
            log.info("dc bus: grid limit released (%s)", why)
        self.limit_w = self.ceiling_w = self._last_limit = self._last_target_w = None

    # -- curves -----------------------------------------------------------------------

    def curve_matches(self, target: CurveTarget) -> bool | None:
        """Whether the device holds ``target`` (None: not read yet)."""
        for capability, wanted in target.registers():
            value = self.plant.value(target.device, capability)
            if value is None:
                return None
            if abs(value - wanted) > _TOLERANCE:
                return False
        return True

    async def _keep_curves(self, now_s: float) -> None:
        for target in curve_targets(self.settings):
            matches = self.curve_matches(target)
            self.verified[target.label] = matches is True
            if matches is True or now_s < self._rewrite_at.get(target.label, -1.0):
                continue
            if matches is False and target.label in self._rewrite_at:
                self._alarm(now_s, f"{target.label} curve on {target.device} differs from "
                                   "the site file: written again")
            self._rewrite_at[target.label] = now_s + _REWRITE_S
            writes = [Write(self._point(target.device, capability), round(value, 1))
                      for capability, value in target.registers()]
            self.curve_writes += 1
            await self._execute(target.device, writes, f"write the {target.label} curve")

    def _point(self, device: str, capability: str) -> str:
        point = self.plant.site.devices[device].device_map.capability_point(capability)
        if point is None:
            raise WriteRangeError(f"{device} has no writable {capability}")
        return point.name

    # -- supervision ------------------------------------------------------------------

    def band_v(self) -> tuple[float, float] | None:
        nominal = self.plant.value(self.settings.converter, "nominal_voltage_v")
        if not nominal:
            return None
        low, high = self.settings.band_pct
        return nominal * low / 100.0, nominal * high / 100.0

    def _supervise(self, now_s: float) -> None:
        voltage = self.plant.value(self.settings.converter, "bus_voltage_v")
        band = self.band_v()
        if voltage is None or band is None:
            state = "unknown"
        else:
            state = "low" if voltage < band[0] else "high" if voltage > band[1] else "ok"
        if state != self.state:
            if state in ("low", "high"):
                assert voltage is not None
                assert band is not None
                self._alarm(now_s, f"bus {voltage:.1f} V outside its band "
                                   f"{band[0]:.1f}–{band[1]:.1f} V")
            elif state == "unknown":
                self._alarm(now_s, "converter not answering: it falls back to droop by itself")
            elif self.state != "unknown":
                log.info("dc bus back in its band")
            self.state = state

    def _alarm(self, now_s: float, text: str) -> None:
        log.warning("dc bus: %s", text)
        self.alarms = [*self.alarms[-19:], text]
        self.publish({"ts": round(now_s, 3), "alarm": text})

    # -- flexibility through the converter --------------------------------------------

    def _converter(self) -> DcBus:
        name = self.settings.converter
        device = self.plant.site.devices[name]
        return DcBus(device.device_map, self.plant.device_values(name))

    async def _follow(self, now_s: float, grid_w: float | None,
                      target: tuple[float, bool] | None) -> None:
        self.target_w = None if target is None else target[0]
        conv = self.settings.converter
        if target is None or grid_w is None:
            await self.release("no event" if target is None else "no grid reading")
            return
        rated = self.plant.value(conv, "rated_power_w")
        drawn = self.plant.value(conv, "power_w")
        if rated is None or drawn is None:
            return  # not read yet (or lost): the converter is in droop or falls back
        target_w, two_sided = target
        stepped = self._last_target_w is None or \
            abs(target_w - self._last_target_w) > 0.05 * rated
        self._last_target_w = target_w
        if self.limit_w is None:
            self.limit_w = drawn
            self.ceiling_w = None if two_sided else drawn
        # A new or stepped target: the whole error at once (feed-forward), then integral
        # feedback on what the meter still shows.
        gain = 1.0 if stepped else self.settings.gain
        wanted = self.limit_w - gain * (grid_w - target_w)
        if self.ceiling_w is not None:
            wanted = min(wanted, self.ceiling_w)
        self.limit_w = max(-rated, min(rated, wanted))
        value = float(round(self.limit_w))
        last = self._last_limit
        refresh_s = self.settings.watchdog_s / 4.0
        if last is not None and abs(last[0] - value) < 0.002 * rated and \
                now_s - last[1] < refresh_s:
            return
        try:
            writes = self._converter().set_control("grid_limit", value,
                                                   revert_s=self.settings.watchdog_s)
        except WriteRangeError as exc:
            log.warning("dc bus: cannot set the grid limit to %g W: %s", value, exc)
            return
        self.limit_writes += 1
        if await self._execute(conv, writes, "set the grid limit"):
            self._last_limit = (value, now_s)
        else:
            self._last_limit = None

    async def _execute(self, device: str, writes: list[Write], what: str) -> bool:
        results = await self.plant.execute(device, writes)
        failed = [r for r, w in zip(results, writes, strict=False) if not r.ok and not w.optional]
        if failed or len(results) < len(writes):
            error = failed[0].error if failed else "not all writes attempted"
            log.warning("dc bus: could not %s on %s: %s", what, device, error)
            return False
        return True

    # -- reporting --------------------------------------------------------------------

    def readings(self) -> dict[str, Any]:
        """The bus now (see :func:`bus_readings`) with what the gateway does: the grid
        limit it holds, the target, whether the curves are verified, the last alarm."""
        readings = bus_readings(self.settings, self.plant.value)
        readings.update({
            "state": self.state, "grid_limit_w": self.limit_w, "target_w": self.target_w,
            "curves_verified": all(self.verified.values()) if self.verified else None,
            "alarm": self.alarms[-1] if self.alarms and self.state != "ok" else None})
        return readings

    def flexibility(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(down, up) items for the flexibility report: how much less (more) the bus can
        draw by voltage alone — each class down to its curve floor or comfort limit,
        storage within its SoC limits — in kW and for how long (s)."""
        value = self.plant.value
        settings = self.settings
        down: list[dict[str, Any]] = []
        up: list[dict[str, Any]] = []
        if settings.loads is not None:
            for cls, spec in settings.classes.items():
                demand = value(settings.loads, f"{cls.value}_demand_w")
                power = value(settings.loads, f"{cls.value}_power_w")
                if demand is None or power is None:
                    continue
                floor_w = demand * max(spec.curve.floor_pct, spec.comfort_min_pct) / 100.0
                if power - floor_w > 0:
                    down.append(_item(cls.value, power - floor_w, spec.max_reduced_s))
        if settings.storage is not None:
            soc = value(settings.storage, "soc_pct")
            power = value(settings.storage, "power_w")
            rated = value(settings.storage, "rated_power_w")
            capacity = value(settings.storage, "capacity_wh")
            low = value(settings.storage, "soc_min_pct")
            high = value(settings.storage, "soc_max_pct")
            if None not in (soc, power, rated, capacity, low, high):
                assert soc is not None
                assert power is not None
                assert rated is not None
                assert capacity is not None
                assert low is not None
                assert high is not None
                above_wh = max(0.0, soc - low) / 100.0 * capacity
                below_wh = max(0.0, high - soc) / 100.0 * capacity
                more_out, more_in = max(0.0, rated - power), max(0.0, rated + power)
                if above_wh > 0 and more_out > 0:
                    down.append(_item("dc_storage", more_out, above_wh / more_out * 3600.0))
                if below_wh > 0 and more_in > 0:
                    up.append(_item("dc_storage", more_in, below_wh / more_in * 3600.0))
        return down, up

    def extend_flexibility(self, body: dict[str, Any]) -> dict[str, Any]:
        """``body`` (the loop's flexibility report) with the DC bus's items added."""
        down, up = self.flexibility()
        body["down"] = [*body.get("down", []), *down]
        body["up"] = [*body.get("up", []), *up]
        body["down_kw"] = round(sum(item["kw"] for item in body["down"]), 3)
        body["up_kw"] = round(sum(item["kw"] for item in body["up"]), 3)
        return body


def bus_readings(settings: DcBusSettings, value: Callable[[str, str], float | None]
                 ) -> dict[str, Any]:
    """The bus from the latest device values (``value(device, capability)``), for the
    live view, the console and the uplink: voltage against its band, the converter's
    mode and power, each class's power fraction (in the order they give way) and the
    storage state; None where not read."""
    conv = settings.converter
    nominal = value(conv, "nominal_voltage_v")
    band = None if not nominal else [round(nominal * pct / 100.0, 1)
                                     for pct in settings.band_pct]
    voltage = value(conv, "bus_voltage_v")
    state = "unknown" if voltage is None or band is None else \
        "low" if voltage < band[0] else "high" if voltage > band[1] else "ok"
    classes: dict[str, dict[str, float | None]] = {}
    if settings.loads is not None:
        for cls in settings.give_way_order():
            name = cls.value
            classes[name] = {"fraction_pct": value(settings.loads, f"{name}_fraction_pct"),
                             "power_w": value(settings.loads, f"{name}_power_w"),
                             "demand_w": value(settings.loads, f"{name}_demand_w")}
    storage = None if settings.storage is None else {
        "soc_pct": value(settings.storage, "soc_pct"),
        "power_w": value(settings.storage, "power_w")}
    mode = value(conv, "active_mode")
    return {"bus_voltage_v": voltage, "nominal_v": nominal, "band_v": band, "state": state,
            "mode": None if mode is None else ("grid_limit" if mode == 1 else "droop"),
            "converter_w": value(conv, "power_w"), "classes": classes, "storage": storage}


def _item(name: str, watts: float, duration_s: float) -> dict[str, Any]:
    return {"resource": "dc_bus", "name": name, "kw": round(watts / 1000.0, 3),
            "duration_s": round(duration_s)}
