"""What an ``oadrEvent`` asks, in the control loop's terms: signal mapping to a
:class:`Plan` and the opt-in/opt-out decision. Pure functions, no I/O."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from controller.openadr.settings import OpenAdrSettings

OPT_IN = "optIn"
OPT_OUT = "optOut"
#: Book ids of OpenADR events: ``oadr:<eventID>`` (MQTT command ids cannot collide).
ID_PREFIX = "oadr:"
_SI_SCALE = {"p": 1e-12, "n": 1e-9, "micro": 1e-6, "m": 1e-3, "c": 1e-2, "d": 1e-1,
             "none": 1.0, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}


@dataclass(frozen=True, slots=True)
class Plan:
    """A site-wide DR target: ``kind`` "reduction" (kW below baseline) or "cap" (kW of
    import), per interval ``(offset from dtstart s, duration s, kW)``."""

    kind: str
    signal: str
    intervals: tuple[tuple[float, float, float], ...]

    def value_at(self, offset_s: float) -> float:
        """The target ``offset_s`` after dtstart (the first interval's before it, the last
        one's after it)."""
        for start, duration, value in self.intervals:
            if offset_s < start + duration:
                return value
        return self.intervals[-1][2]

    @property
    def peak_kw(self) -> float:
        return max(value for _, _, value in self.intervals)

    @property
    def lowest_kw(self) -> float:
        return min(value for _, _, value in self.intervals)


@dataclass(frozen=True, slots=True)
class OadrEvent:
    """The parts of an openleadr event dict the VEN acts on."""

    event_id: str
    modification: int
    status: str  # far, near, active, completed, cancelled
    test: bool
    market_context: str
    start: datetime  # dtstart of the active period
    duration_s: float
    ramp_s: float  # x-eiRampUp: before dtstart
    randomize_s: float  # tolerance/tolerate/startafter
    response_required: bool
    plan: Plan | None
    unsupported: str = ""  # why plan is None


class EventFormatError(ValueError):
    """An event dict without the parts every oadrEvent has."""


def parse_event(event: Mapping[str, Any], settings: OpenAdrSettings) -> OadrEvent:
    """Read an event dict as openleadr's client hands it to ``on_event``. Raises
    EventFormatError when the descriptor or active period is missing."""
    try:
        descriptor = event["event_descriptor"]
        period = event["active_period"]
        event_id = str(descriptor["event_id"])
        start = period["dtstart"]
    except (KeyError, TypeError) as exc:
        raise EventFormatError(f"event without {exc}") from None
    if not isinstance(start, datetime):
        raise EventFormatError(f"dtstart {start!r} is not a date-time")
    signals = event.get("event_signals") or []
    if isinstance(signals, Mapping):
        signals = signals.get("event_signals", [signals])
    duration = _seconds(period.get("duration"))
    plan, unsupported = _plan(signals, start, settings)
    if duration <= 0 and plan is not None:
        duration = max(off + dur for off, dur, _ in plan.intervals)
    if duration <= 0:
        plan, unsupported = None, "the event has no duration (open-ended events are not supported)"
    tolerance = period.get("tolerance") or {}
    tolerate = tolerance.get("tolerate", tolerance) if isinstance(tolerance, Mapping) else {}
    return OadrEvent(
        event_id=event_id,
        modification=int(descriptor.get("modification_number") or 0),
        status=str(descriptor.get("event_status") or "far"),
        test=bool(descriptor.get("test_event") or False),
        market_context=str(descriptor.get("market_context") or ""),
        start=start, duration_s=duration,
        ramp_s=_seconds(period.get("ramp_up")),
        randomize_s=_seconds(tolerate.get("startafter") if isinstance(tolerate, Mapping)
                             else None),
        response_required=event.get("response_required", "always") == "always",
        plan=plan, unsupported=unsupported)


def _seconds(value: object) -> float:
    if isinstance(value, timedelta):
        return max(0.0, value.total_seconds())
    if isinstance(value, int | float) and math.isfinite(value):
        return max(0.0, float(value))
    return 0.0


_PREFERENCE = ("LOAD_DISPATCH", "LOAD_CONTROL", "SIMPLE")


def _plan(signals: Sequence[Mapping[str, Any]], start: datetime, settings: OpenAdrSettings
          ) -> tuple[Plan | None, str]:
    """The first signal the site can act on (LOAD_DISPATCH, then LOAD_CONTROL, then
    SIMPLE), or None and why none is."""
    reasons = []
    ordered = sorted(signals, key=lambda s: _PREFERENCE.index(str(s.get("signal_name")).upper())
                     if str(s.get("signal_name")).upper() in _PREFERENCE else len(_PREFERENCE))
    for signal in ordered:
        plan, reason = _signal_plan(signal, start, settings)
        if plan is not None:
            return plan, ""
        reasons.append(reason)
    return None, "; ".join(reasons) or "the event has no signal"


def _signal_plan(signal: Mapping[str, Any], start: datetime, settings: OpenAdrSettings
                 ) -> tuple[Plan | None, str]:
    name = str(signal.get("signal_name", ""))
    kind = str(signal.get("signal_type", ""))
    label = f"{name}/{kind}"
    raw = _intervals(signal.get("intervals") or [], start)
    if not raw:
        return None, f"{label}: no intervals"
    if name.upper() == "SIMPLE" and kind == "level":
        levels = (0.0, *settings.simple_levels_kw)
        values = [levels[max(0, min(3, round(v)))] for _, _, v in raw]
        return _make("reduction", label, raw, values), ""
    if name == "LOAD_DISPATCH" and kind in ("delta", "setpoint"):
        factor, why = _kw_factor(signal.get("measurement"))
        if factor is None:
            return None, f"{label}: {why}"
        if kind == "delta":
            values = [-v * factor for _, _, v in raw]
            if any(v < 0 for v in values):
                return None, f"{label}: asks for more load (a positive delta), which the site " \
                             "does not offer"
            return _make("reduction", label, raw, values), ""
        return _make("cap", label, raw, [v * factor for _, _, v in raw]), ""
    if name == "LOAD_CONTROL" and kind == "x-loadControlCapacity":
        if settings.capacity_kw is None:
            return None, f"{label}: needs [openadr] capacity_kw"
        if any(not 0.0 <= v <= 1.0 for _, _, v in raw):
            return None, f"{label}: a capacity fraction outside 0–1"
        return _make("cap", label, raw, [v * settings.capacity_kw for _, _, v in raw]), ""
    return None, f"{label}: not a signal the site acts on"


def _intervals(intervals: object, start: datetime) -> list[tuple[float, float, float]]:
    if isinstance(intervals, Mapping):
        intervals = [intervals]
    if not isinstance(intervals, list):
        return []
    out = []
    offset = 0.0
    for interval in intervals:
        if not isinstance(interval, Mapping):
            continue
        duration = _seconds(interval.get("duration"))
        begin = interval.get("dtstart")
        at = (begin - start).total_seconds() if isinstance(begin, datetime) else offset
        payload = interval.get("signal_payload")
        try:
            value = float(payload) if isinstance(payload, int | float | str) else math.nan
        except ValueError:
            continue
        if not math.isfinite(value):
            continue
        out.append((at, duration, value))
        offset = at + duration
    return sorted(out)


def _kw_factor(measurement: object) -> tuple[float | None, str]:
    """kW per payload unit: W with the itemBase's SI scale; kW without an itemBase."""
    if not isinstance(measurement, Mapping):
        return 1.0, ""
    unit = str(measurement.get("unit") or "")
    if unit != "W":
        return None, f"payload unit {unit!r} is not a power in W"
    scale = _SI_SCALE.get(str(measurement.get("scale") or "none"))
    if scale is None:
        return None, f"unknown SI scale {measurement.get('scale')!r}"
    return scale / 1000.0, ""


def _make(kind: str, label: str, raw: list[tuple[float, float, float]],
          values: list[float]) -> Plan:
    return Plan(kind, label, tuple((off, dur, round(value, 6))
                                   for (off, dur, _), value in zip(raw, values, strict=True)))


def decide(event: OadrEvent, settings: OpenAdrSettings, *, requested_kw: float | None,
           flexibility_kw: float | None) -> tuple[str, str]:
    """optIn or optOut, and why. ``requested_kw``: the largest reduction the event asks
    (None: unknown); ``flexibility_kw``: what the site could shed now (None: not checked)."""
    if not settings.participate:
        return OPT_OUT, "not participating ([openadr] participate = false)"
    if settings.market_contexts and event.market_context not in settings.market_contexts:
        return OPT_OUT, f"market context {event.market_context!r} is not one of " \
                        "[openadr] market_contexts"
    if event.plan is None:
        return OPT_OUT, f"nothing the site can act on: {event.unsupported}"
    if requested_kw is not None and settings.opt_out_above_kw is not None and \
            requested_kw > settings.opt_out_above_kw + 1e-9:
        return OPT_OUT, f"asks {requested_kw:.1f} kW, more than opt_out_above_kw = " \
                        f"{settings.opt_out_above_kw:g} kW"
    if requested_kw is not None and flexibility_kw is not None and \
            requested_kw > flexibility_kw + 1e-9:
        return OPT_OUT, f"asks {requested_kw:.1f} kW; the site can shed " \
                        f"{flexibility_kw:.1f} kW now"
    plan = event.plan
    what = f"{plan.kind} {plan.peak_kw:g} kW" if plan.kind == "reduction" else \
        f"cap {plan.lowest_kw:g} kW"
    return OPT_IN, f"{what} ({plan.signal})"


def book_id(event_id: str) -> str:
    return ID_PREFIX + event_id
