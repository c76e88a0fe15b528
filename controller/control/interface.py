"""The narrow interface that services beside the control loop use (the OpenADR client,
the planner): the event book, the clock, a few readings, a wake-up — never the loop's
internals. :class:`~controller.control.loop.ControlLoop` implements it."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from controller.control.events import DrEvent, EventBook
from controller.control.model import PlanSetpoints, Snapshot
from controller.store import Store
from drivers.site import SiteSpec


class SiteControl(Protocol):
    """What a service may ask of, and give to, the site's control."""

    @property
    def site(self) -> SiteSpec:
        """The site's devices and loads."""
        ...

    @property
    def book(self) -> EventBook:
        """The demand-response events (add, modify, cancel: the loop carries them out)."""
        ...

    @property
    def store(self) -> Store | None:
        """The durable store (service state, audit), if the site has one."""
        ...

    def now_s(self) -> float:
        """The control clock, UNIX s."""
        ...

    def wake(self) -> None:
        """Run the next control cycle now. Safe from any thread."""
        ...

    def grid_power_w(self) -> float | None:
        """The grid meter's latest power, W (+ import); None without a reading."""
        ...

    def snapshot(self) -> Snapshot:
        """What the strategies would see now."""
        ...

    def flexibility_down_kw(self) -> float:
        """How much less the site could import now, kW."""
        ...

    def publish_event(self, body: dict[str, Any]) -> None:
        """Hand an event message (``…/events``) to the uplinks."""
        ...


class PlanSource(Protocol):
    """A planner, as the control loop sees it (:class:`controller.planner.service.
    PlannerService`)."""

    def tick(self, snapshot: Snapshot, events: Iterable[DrEvent]) -> PlanSetpoints | None:
        """Learn from this cycle, start a solve when due (never waiting for one), and
        return the plan's setpoints for now (None: no plan fit to follow)."""
        ...
