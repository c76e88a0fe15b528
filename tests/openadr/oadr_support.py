"""Helpers for the OpenADR tests. The utility: a real openleadr VTN, in-process, on a free
port.

:class:`Utility` wraps ``OpenADRServer``: it registers one VEN, asks for every telemetry
report the VEN offers, sends events, and records what comes back (registrations, opt
answers — also unsolicited ones —, report values)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from openleadr import OpenADRServer, hooks, objects, utils
from openleadr.messaging import create_message, parse_message, validate_xml_schema
from sim_plant import SimPlant
from tests_support import EXAMPLE, eventually, example_on_free_ports, free_port

from controller.control.events import DrEvent
from controller.control.loop import ControlLoop
from controller.control.settings import control_settings
from controller.inbox import CommandInbox
from controller.openadr import Ven, ven_for
from controller.store import Outgoing, Store
from drivers.site import load_site
from simulators.clock import ManualClock

VEN_ID = "VEN-JINAN-01"
PREFIX = "/OpenADR2/Simple/2.0b"


@dataclass
class Utility:
    port: int
    poll_s: float = 1.0
    report_s: float = 1.0
    tls: dict[str, Path] | None = None  # ca, server_cert, server_key, client_cert
    registrations: list[dict[str, Any]] = field(default_factory=list)
    responses: list[tuple[str, str, int]] = field(default_factory=list)  # id, opt, mod
    reports: list[tuple[datetime, float]] = field(default_factory=list)
    offered: list[dict[str, Any]] = field(default_factory=list)
    server: Any = None
    registration_id: str | None = None

    @property
    def url(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.port}{PREFIX}"

    async def start(self) -> Utility:
        kwargs: dict[str, Any] = {}
        if self.tls is not None:
            kwargs.update(http_cert=str(self.tls["server_cert"]),
                          http_key=str(self.tls["server_key"]),
                          http_ca_file=str(self.tls["ca"]),
                          cert=str(self.tls["server_cert"]), key=str(self.tls["server_key"]))
        self.server = OpenADRServer(
            vtn_id="UTILITY", http_host="127.0.0.1", http_port=self.port,
            requested_poll_freq=timedelta(seconds=self.poll_s), ven_lookup=self._lookup,
            show_fingerprint=False, **kwargs)
        self.server.add_handler("on_create_party_registration", self._register)
        self.server.add_handler("on_register_report", self._register_report)
        hooks.register("before_handle", self._seen)
        await self.server.run()
        return self

    async def stop(self) -> None:
        hooks.HOOKS["before_handle"].remove(self._seen)
        if self.server is not None and hasattr(self.server, "app_runner"):
            await self.server.stop()

    # -- the VTN's side of the protocol --------------------------------------------------

    def _lookup(self, ven_id: str) -> dict[str, Any] | None:
        if ven_id != VEN_ID:
            return None
        fingerprint = None
        if self.tls is not None:
            fingerprint = utils.certificate_fingerprint(self.tls["client_cert"].read_text())
        return {"ven_id": VEN_ID, "ven_name": "jinan-office", "fingerprint": fingerprint,
                "registration_id": self.registration_id}

    def _register(self, payload: dict[str, Any]) -> tuple[str, str]:
        self.registrations.append(payload)
        self.registration_id = "REG-1"
        return VEN_ID, self.registration_id

    def _register_report(self, ven_id: str, resource_id: str, measurement: str, unit: str,
                         scale: str, min_sampling_interval: timedelta,
                         max_sampling_interval: timedelta
                         ) -> tuple[Callable[[list[tuple[datetime, float]]], None], timedelta]:
        self.offered.append({"resource_id": resource_id, "measurement": measurement,
                             "unit": unit, "scale": scale, "min": min_sampling_interval,
                             "max": max_sampling_interval})
        interval = max(min_sampling_interval, timedelta(seconds=self.report_s))
        return self.reports.extend, interval

    async def _seen(self, message_type: str, payload: dict[str, Any]) -> None:
        if message_type == "oadrCreatedEvent":
            for response in payload.get("event_responses") or []:
                self.responses.append((response["event_id"], response["opt_type"],
                                       int(response["modification_number"])))

    # -- events ------------------------------------------------------------------------

    def add(self, event_id: str, signal_name: str, signal_type: str,
            payloads: list[float], **options: Any) -> objects.Event:
        """Send an event (``make_event`` arguments) to the VEN."""
        event = make_event(event_id, signal_name, signal_type, payloads, **options)
        active = event.active_period
        self.server.add_raw_event(VEN_ID, event)
        # openleadr's add_raw_event rebuilds the active period from the intervals and
        # so drops rampUp and startafter: put ours back
        event.active_period = active
        return event

    def modify(self, event: objects.Event, payloads: list[float]) -> None:
        for interval, value in zip(event.event_signals[0].intervals, payloads, strict=True):
            interval.signal_payload = value
        utils.increment_event_modification_number(event)
        self.server.events_updated[VEN_ID] = True

    def cancel(self, event_id: str) -> None:
        self.server.cancel_event(VEN_ID, event_id)

    def answers(self, event_id: str) -> list[tuple[str, int]]:
        return [(opt, mod) for eid, opt, mod in self.responses if eid == event_id]


def make_event(event_id: str, signal_name: str, signal_type: str, payloads: list[float], *,
               start: datetime | None = None, interval_s: float = 600.0,
               ramp_up_s: float | None = None, startafter_s: float | None = None,
               scale: str | None = None, test: bool = False,
               market_context: str = "oadr://jinan/dr") -> objects.Event:
    """An event with one signal of ``len(payloads)`` back-to-back intervals; ``scale``:
    an itemBase powerReal in W with that SI scale (None: no itemBase)."""
    start = start or datetime.now(UTC) + timedelta(seconds=1)
    intervals = [objects.Interval(dtstart=start + timedelta(seconds=i * interval_s),
                                  duration=timedelta(seconds=interval_s),
                                  signal_payload=value, uid=i)
                 for i, value in enumerate(payloads)]
    measurement = None
    if scale is not None:
        measurement = objects.Measurement(
            name="powerReal", description="RealPower", unit="W", scale=scale,
            power_attributes=objects.PowerAttributes(hertz=50, voltage=220, ac=True))
    active = objects.ActivePeriod(
        dtstart=start, duration=timedelta(seconds=interval_s * len(payloads)),
        ramp_up_period=None if ramp_up_s is None else timedelta(seconds=ramp_up_s),
        tolerance=None if startafter_s is None else {
            "startafter": timedelta(seconds=startafter_s)})
    return objects.Event(
        event_descriptor=objects.EventDescriptor(
            event_id=event_id, modification_number=0, market_context=market_context,
            event_status="far", test_event=test),
        event_signals=[objects.EventSignal(intervals=intervals, signal_name=signal_name,
                                           signal_type=signal_type, signal_id=f"{event_id}-s",
                                           measurement=measurement)],
        targets=[{"ven_id": VEN_ID}], active_period=active)


def distributed(*events: objects.Event) -> list[dict[str, Any]]:
    """``events`` as the VEN's on_event handler receives them: through an
    oadrDistributeEvent message, rendered, schema-validated and parsed by openleadr."""
    message = create_message("oadrDistributeEvent", request_id="req-1", vtn_id="UTILITY",
                             events=list(events),
                             response={"response_code": 200, "response_description": "OK",
                                       "request_id": "req-1"})
    validate_xml_schema(message)
    _, payload = parse_message(message)
    return list(payload["events"])


@contextlib.asynccontextmanager
async def running_utility(**kwargs: Any) -> AsyncIterator[Utility]:
    utility = await Utility(free_port(), **kwargs).start()
    try:
        yield utility
    finally:
        await utility.stop()


async def until(condition: Callable[[], bool], timeout_s: float = 10.0,
                what: str = "condition") -> None:
    """``tests_support.eventually`` with this suite's argument order."""
    await eventually(condition, timeout_s=timeout_s, what=what)


def site_with_openadr(tmp_path: Path, section: str, *, free_ports: bool = False) -> Path:
    """The example site in ``tmp_path`` with an ``[openadr]`` section appended; with
    ``free_ports``, its TCP ports moved to free ones and its RS-485 line into
    ``tmp_path`` (for a served building)."""
    if free_ports:
        path = example_on_free_ports(tmp_path)
    else:
        path = tmp_path / "site.toml"
        path.write_text(EXAMPLE.read_text(encoding="utf-8"), encoding="utf-8")
    text = path.read_text(encoding="utf-8")
    path.write_text(text + "\n" + section.strip() + "\n", encoding="utf-8")
    return path


@contextlib.asynccontextmanager
async def serving(service: Callable[[], Any]) -> AsyncIterator[asyncio.Task[Any]]:
    """Run a service coroutine in a task; cancel it (and wait) on exit."""
    task = asyncio.create_task(service())
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


START = 1_782_093_600.0 + 3600  # 2026-06-22 11:00 in Jinan


@dataclass
class Site:
    loop: ControlLoop
    ven: Ven
    clock: ManualClock
    store: Store

    async def run(self, seconds: float, step_s: float = 5.0) -> None:
        """Advance the building, the control loop and the VEN's tick ``seconds``."""
        end = self.clock.now() + seconds
        while self.clock.now() < end:
            await self.ven.tick()
            await self.loop.cycle()
            self.clock.advance(step_s)

    def event(self, event_id: str) -> DrEvent:
        return self.loop.book.events[f"oadr:{event_id}"]


@contextlib.contextmanager
def building(tmp_path: Path, openadr: str, *, store_path: Path | None = None
             ) -> Iterator[Site]:
    """The example building as a socket-free ``SimPlant`` on a manual clock at
    ``START``, its control loop (with a store) and its VEN from ``[openadr]`` ``openadr``."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    spec = load_site(site_with_openadr(tmp_path, "[openadr]\n" + openadr))
    clock = ManualClock(START)
    plant, _ = SimPlant.build(spec, clock.now, start_s=START)
    store = Store(store_path or tmp_path / "state.sqlite")

    def publish(messages: list[Outgoing]) -> None:
        store.append(messages)

    try:
        loop = ControlLoop(plant, control_settings(spec), CommandInbox(), store,
                           publish=publish, clock=clock.now)
        ven = ven_for(spec, loop)
        assert ven is not None
        yield Site(loop, ven, clock, store)
    finally:
        store.close()
