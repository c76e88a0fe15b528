"""What every actuator kind shares: the loop state a write plan reads and changes, the
plan itself, and the interface each kind implements.

One module per kind (:mod:`.relay_load`, :mod:`.battery`, :mod:`.sg_ready`,
:mod:`.inverter_limit`): each reads its devices into the snapshot and translates a
proposal into the device's writes (its map's recipe), so the loop itself knows no kind.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from controller.control.model import (
    Actuator,
    ActuatorKind,
    ActuatorValue,
    Proposal,
    SgReadyState,
    Snapshot,
)
from controller.control.plant import Plant
from controller.control.settings import ControlSettings
from drivers.devices import Write
from drivers.site import DeviceSpec

log = logging.getLogger("pedf.control")


@dataclass
class LoadMemory:
    """Which loads we switched off, when, and by whom; which SG-Ready state we set on
    each heat pump, since when, and since when it is blocked (persisted, so dwell times
    and the blocking limit hold across restarts)."""

    shed_since: dict[str, float] = field(default_factory=dict)
    shed_by: dict[str, str] = field(default_factory=dict)
    switched: dict[str, float] = field(default_factory=dict)
    sg_state: dict[str, int] = field(default_factory=dict)
    sg_since: dict[str, float] = field(default_factory=dict)
    blocked_since: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({"shed_since": self.shed_since, "shed_by": self.shed_by,
                           "switched": self.switched, "sg_state": self.sg_state,
                           "sg_since": self.sg_since, "blocked_since": self.blocked_since})

    @classmethod
    def from_json(cls, text: str | None) -> LoadMemory:
        if not text:
            return cls()
        try:
            data = json.loads(text)
            return cls(dict(data["shed_since"]), dict(data["shed_by"]), dict(data["switched"]),
                       {k: int(v) for k, v in data.get("sg_state", {}).items()},
                       dict(data.get("sg_since", {})), dict(data.get("blocked_since", {})))
        except (ValueError, KeyError, TypeError, AttributeError):
            log.error("saved load state unreadable: starting afresh")
            return cls()

    def sg_changed(self, heat_pump: str, state: int, now_s: float, *,
                   moved: bool = True) -> None:
        """Record that ``heat_pump`` is in SG-Ready ``state`` from ``now_s``: a change
        starts its dwell (``moved`` False: the heat pump was in that state already, as
        when the gateway first confirms it — no dwell), a block the blocking clock."""
        if self.sg_state.get(heat_pump) == state:
            return
        self.sg_state[heat_pump] = state
        if moved:
            self.sg_since[heat_pump] = now_s
        else:
            self.sg_since.pop(heat_pump, None)
        if state == SgReadyState.BLOCKED:
            self.blocked_since[heat_pump] = now_s
        else:
            self.blocked_since.pop(heat_pump, None)


@dataclass(frozen=True, slots=True)
class SgHold:
    """What the SG-Ready actuator holds a heat pump to: the state it set stays until
    ``held_until_s`` (minimum dwell); a block must end by ``block_until_s``."""

    held_until_s: float | None
    block_until_s: float | None


@dataclass(frozen=True)
class ReadContext:
    """What reading a device into the snapshot needs beyond its values."""

    memory: LoadMemory
    heat_pump_running_w: Mapping[str, float] = field(default_factory=dict)
    sg_holds: Mapping[str, SgHold] = field(default_factory=dict)


@dataclass
class LoopState:
    """The loop's state a write plan reads, and its effect changes once the writes are
    verified: what each actuator was commanded (absent: never, None: handed back), when
    it was written last, the load memory."""

    plant: Plant
    settings: ControlSettings
    memory: LoadMemory
    commanded: dict[Actuator, ActuatorValue] = field(default_factory=dict)
    last_written: dict[Actuator, float] = field(default_factory=dict)
    #: How often a device's held setting must be re-written, s (inf: never).
    refresh_s: Callable[[str], float] = lambda device: float("inf")

    def remember(self, actuator: Actuator, value: ActuatorValue,
                 now_s: float) -> Callable[[], None]:
        """The effect of a verified write: ``actuator`` holds ``value`` since ``now_s``."""
        def effect() -> None:
            self.commanded[actuator] = value
            self.last_written[actuator] = now_s
        return effect

    def refresh_due(self, actuator: Actuator, now_s: float) -> bool:
        """Whether ``actuator``'s held setting is due for its refresh."""
        return now_s - self.last_written.get(actuator, -float("inf")) >= \
            self.refresh_s(actuator.name)


@dataclass(frozen=True)
class WritePlan:
    """The writes that carry out a proposal on one device, and what to record once
    they are verified."""

    device: str
    writes: list[Write]
    effect: Callable[[], None]


class ActuatorHandler(Protocol):
    """One actuator kind: reads its devices, translates proposals into writes."""

    kind: ActuatorKind

    def plan(self, actuator: Actuator, proposal: Proposal, snapshot: Snapshot,
             state: LoopState, now_s: float) -> WritePlan | None:
        """The writes for ``proposal`` (None: nothing to write now). Raises
        :class:`~drivers.points.WriteRangeError` for a value the map refuses."""
        ...


#: Reads one device into its snapshot state (None: not read into the snapshot).
DeviceReader = Callable[[Plant, DeviceSpec, ReadContext], object]
