"""The console's event and alarm log: device state changes seen in the gateway's health
(a device turning stale or failing raises an alarm; it clears when the device answers
again), demand-response events changing status (scheduled, active, completed,
cancelled…), and operator actions. Bounded; in memory (the audit table keeps the
actions, the store the events). States are sampled (the console does it four times a
second): a status that lasts less than that may not be noted, its successor is."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from controller.control.events import DrEvent
from controller.scheduler import DeviceHealth

ALARM_STATES = ("stale", "error")


@dataclass(slots=True)
class Entry:
    id: int
    ts: float
    kind: str  # "alarm", "cleared", "action"
    device: str
    text: str
    open: bool = False  # an alarm not acknowledged yet
    acknowledged_by: str | None = None
    acknowledged_at: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "ts": round(self.ts, 3), "kind": self.kind,
                "device": self.device, "text": self.text, "open": self.open,
                "acknowledged_by": self.acknowledged_by,
                "acknowledged_at": self.acknowledged_at}


@dataclass
class AlarmLog:
    max_entries: int = 1000
    entries: deque[Entry] = field(default_factory=deque)
    _states: dict[str, str] = field(default_factory=dict)
    _event_states: dict[str, str] = field(default_factory=dict)
    _next_id: int = 1

    def add(self, ts: float, kind: str, device: str, text: str, *, alarm: bool = False
            ) -> Entry:
        entry = Entry(self._next_id, ts, kind, device, text, open=alarm)
        self._next_id += 1
        self.entries.append(entry)
        while len(self.entries) > self.max_entries:
            self.entries.popleft()
        return entry

    def observe(self, health: Mapping[str, DeviceHealth], now_s: float) -> None:
        """Record the device state changes since the last call."""
        for device, state in health.items():
            previous = self._states.get(device)
            current = state.state
            self._states[device] = current
            if previous == current or current == "starting":
                continue
            if current in ALARM_STATES:
                detail = f": {state.last_error}" if state.last_error else ""
                self.add(now_s, "alarm", device, f"{current}{detail}", alarm=True)
            elif previous in ALARM_STATES:
                self.add(now_s, "cleared", device, f"{previous} → {current}")

    def observe_events(self, events: Mapping[str, DrEvent], now_s: float) -> None:
        """Record the demand-response events that appeared or changed status."""
        for event_id, event in events.items():
            if self._event_states.get(event_id) == event.status:
                continue
            self._event_states[event_id] = event.status
            self.add(now_s, "dr", event.target,
                     f"{event_id}: {event.kind} {event.value:g} {event.status}")

    def acknowledge(self, entry_id: int, user: str, now_s: float) -> Entry | None:
        """Acknowledge an open alarm (None: no such open alarm)."""
        for entry in self.entries:
            if entry.id == entry_id and entry.open:
                entry.open = False
                entry.acknowledged_by, entry.acknowledged_at = user, round(now_s, 3)
                return entry
        return None

    def newest(self, limit: int = 200) -> list[dict[str, Any]]:
        return [e.to_dict() for e in list(self.entries)[-limit:][::-1]]
