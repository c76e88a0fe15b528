"""The narrow interface that services beside the control loop use (the OpenADR client,
the planner): the event book, the clock, a few readings, a wake-up — never the loop's
internals. :class:`~controller.control.loop.ControlLoop` implements it."""

from __future__ import annotations

from typing import Any, Protocol

from controller.control.events import EventBook
from controller.control.model import Snapshot
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
