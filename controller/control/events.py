"""Demand-response events: one model for MQTT commands and OpenADR events.

An event asks, from its (possibly randomised) start until its end, for one of:

* ``reduction``: shed ``value`` kW below the site's baseline;
* ``cap``: keep site import at or below ``value`` kW;
* ``setpoint``: track a site grid power of ``value`` kW (VPP dispatch; may be negative);
* ``battery``: hold battery ``target`` at ``value`` W (+ discharge);
* ``sg_ready``: hold heat pump ``target`` in SG-Ready state ``value``.

Events ramp in over ``ramp_s``; may be modified (new value or end), cancelled, or opted
out of; and end by themselves at their scheduled end, whether or not the utility is
still reachable. The :class:`EventBook` is saved after every change, so after a restart
every event resumes where its schedule says — and none outlives its end.
"""

from __future__ import annotations

import enum
import json
import logging
import zlib
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from controller.commands import Command
from controller.control.model import SgReadyState

log = logging.getLogger("pedf.events")



class EventKind(enum.StrEnum):
    """What an event asks for; its :attr:`DrEvent.value` is in the unit of its kind."""

    REDUCTION = "reduction"  # kW below the baseline
    CAP = "cap"  # kW of site import at most
    SETPOINT = "setpoint"  # kW of site grid power to track
    BATTERY = "battery"  # W of battery power (+ discharge)
    SG_READY = "sg_ready"  # an SG-Ready state

    @property
    def on_site_import(self) -> bool:
        """Whether the event limits the site's import (its value in kW)."""
        return self in (EventKind.REDUCTION, EventKind.CAP, EventKind.SETPOINT)


KINDS = tuple(kind.value for kind in EventKind)
_COMMAND_KIND = {"shed": "reduction", "cap_import": "cap", "grid_setpoint": "setpoint",
                 "battery_setpoint": "battery", "sg_ready": "sg_ready"}


@dataclass(frozen=True)
class DrEvent:
    id: str
    kind: EventKind  # a plain string of the same value is accepted and converted
    target: str  # "site" or a device
    start_s: float  # requested start
    duration_s: float
    #: As stored and sent: kW (reduction, cap, setpoint), W (battery) or a state
    #: (sg_ready). Read it typed: :attr:`site_kw`, :attr:`battery_w`, :attr:`sg_state`.
    value: float
    source: str = "mqtt"
    ramp_s: float = 0.0
    randomize_s: float = 0.0
    loads: tuple[str, ...] = ()  # reduction: only these loads may be shed
    status: str = "scheduled"  # scheduled, active, completed, cancelled, opted_out
    baseline_kw: float | None = None  # reduction: fixed when the event starts
    modification: int = 0
    # reduction: how the baseline was made (controller.control.baseline), and the import
    # just before the event, which the controller also holds the reduction against
    baseline_method: str | None = None
    baseline_coverage: float | None = None
    baseline_quality: str | None = None
    baseline_note: str = ""
    reference_kw: float | None = None

    def __post_init__(self) -> None:
        """Raises ValueError for an unknown kind."""
        if not isinstance(self.kind, EventKind):
            try:
                object.__setattr__(self, "kind", EventKind(self.kind))
            except ValueError:
                raise ValueError(f"unknown event kind {self.kind!r}") from None

    @property
    def site_kw(self) -> float:
        """A reduction, cap or grid setpoint, kW. Raises TypeError for other kinds."""
        if not self.kind.on_site_import:
            raise TypeError(f"a {self.kind} event asks for no site power")
        return self.value

    @property
    def battery_w(self) -> float:
        """A battery event's power, W (+ discharge). Raises TypeError for other kinds."""
        if self.kind is not EventKind.BATTERY:
            raise TypeError(f"a {self.kind} event asks for no battery power")
        return self.value

    @property
    def sg_state(self) -> SgReadyState:
        """An sg_ready event's state. Raises TypeError for other kinds, ValueError for a
        value that is no SG-Ready state."""
        if self.kind is not EventKind.SG_READY:
            raise TypeError(f"a {self.kind} event asks for no SG-Ready state")
        return SgReadyState(int(self.value))

    @property
    def delay_s(self) -> float:
        """The randomised start offset: fixed per event (hash of its id)."""
        if self.randomize_s <= 0:
            return 0.0
        return (zlib.crc32(self.id.encode()) / 0xFFFF_FFFF) * self.randomize_s

    @property
    def begin_s(self) -> float:
        return self.start_s + self.delay_s

    @property
    def end_s(self) -> float:
        return self.begin_s + self.duration_s

    def running(self, now_s: float) -> bool:
        return self.status in ("scheduled", "active") and self.begin_s <= now_s < self.end_s

    def ramp_fraction(self, now_s: float) -> float:
        """0→1 over the ramp; 1 without one."""
        if self.ramp_s <= 0:
            return 1.0
        return max(0.0, min(1.0, (now_s - self.begin_s) / self.ramp_s))


def event_from_command(command: Command, now_s: float) -> DrEvent:
    """A DR event for a shed / cap_import / grid_setpoint / battery_setpoint / sg_ready
    command (other command types act on existing events)."""
    params = command.params
    kind = _COMMAND_KIND[command.type]
    value = {"reduction": "kw", "cap": "kw", "setpoint": "kw", "battery": "power_w",
             "sg_ready": "state"}[kind]
    return DrEvent(
        id=command.id, kind=EventKind(kind), target=command.target,
        start_s=float(params.get("start_at", now_s)), duration_s=float(params["duration_s"]),
        value=float(params[value]), source="mqtt",
        ramp_s=float(params.get("ramp_s", 0.0)),
        randomize_s=float(params.get("randomize_s", 0.0)),
        loads=tuple(params.get("loads", ())))


@dataclass
class EventBook:
    """The events the controller knows, persisted through ``save`` after every change."""

    save: Callable[[str], None] = lambda text: None
    events: dict[str, DrEvent] = field(default_factory=dict)

    @classmethod
    def load(cls, text: str | None, save: Callable[[str], None]) -> EventBook:
        book = cls(save)
        if text:
            try:
                for item in json.loads(text):
                    item["loads"] = tuple(item.get("loads", ()))
                    event = DrEvent(**item)
                    book.events[event.id] = event
            except (ValueError, TypeError, KeyError) as exc:
                log.error("saved events unreadable (%s): starting without them", exc)
        return book

    def _persist(self) -> None:
        self.save(json.dumps([asdict(e) for e in self.events.values()]))

    def add(self, event: DrEvent) -> None:
        self.events[event.id] = event
        self._persist()
        log.info("event %s (%s %g) from %.0f for %.0f s", event.id, event.kind, event.value,
                 event.begin_s, event.duration_s)

    def update(self, event_id: str, **changes: Any) -> DrEvent | None:
        event = self.events.get(event_id)
        if event is None:
            return None
        event = replace(event, **changes)
        self.events[event_id] = event
        self._persist()
        return event

    def modify(self, event_id: str, *, value: float | None = None,
               duration_s: float | None = None) -> DrEvent | None:
        event = self.events.get(event_id)
        if event is None or event.status not in ("scheduled", "active"):
            return None
        return self.update(event_id, value=event.value if value is None else value,
                           duration_s=event.duration_s if duration_s is None else duration_s,
                           modification=event.modification + 1)

    def cancel(self, event_id: str) -> DrEvent | None:
        event = self.events.get(event_id)
        if event is None or event.status not in ("scheduled", "active"):
            return None
        return self.update(event_id, status="cancelled")

    def opt_out(self, event_id: str) -> DrEvent | None:
        event = self.events.get(event_id)
        if event is None or event.status not in ("scheduled", "active"):
            return None
        return self.update(event_id, status="opted_out")

    def release(self, target: str, now_s: float) -> list[DrEvent]:
        """End every running event on ``target`` ("site": every site-wide event)."""
        ended = []
        for event in list(self.events.values()):
            if event.status in ("scheduled", "active") and event.begin_s <= now_s and (
                    event.target == target or (target == "site" and event.target == "site")):
                ended.append(self.update(event.id, status="completed",
                                         duration_s=max(0.0, now_s - event.begin_s)))
        return [e for e in ended if e is not None]

    def tick(self, now_s: float) -> Iterator[tuple[str, DrEvent]]:
        """Advance statuses; yields ("started" | "ended", event) transitions."""
        for event in list(self.events.values()):
            if event.status == "scheduled" and event.begin_s <= now_s < event.end_s:
                started = self.update(event.id, status="active")
                if started is not None:
                    yield "started", started
            elif event.status in ("scheduled", "active") and now_s >= event.end_s:
                ended = self.update(event.id, status="completed")
                if ended is not None:
                    yield "ended", ended

    def running(self, now_s: float) -> list[DrEvent]:
        return sorted((e for e in self.events.values() if e.running(now_s)),
                      key=lambda e: (e.begin_s, e.id))

    def upcoming(self, now_s: float, within_s: float) -> list[DrEvent]:
        return [e for e in self.events.values()
                if e.status == "scheduled" and now_s <= e.begin_s < now_s + within_s]

    def prune(self, now_s: float, keep_s: float = 7 * 86400.0) -> None:
        old = [k for k, e in self.events.items()
               if e.status not in ("scheduled", "active") and e.end_s < now_s - keep_s]
        for key in old:
            del self.events[key]
        if old:
            self._persist()
