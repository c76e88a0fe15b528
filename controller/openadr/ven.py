"""The VEN service: openleadr's ``OpenADRClient`` wired to the control loop's event book.

Failure behaviour: an unreachable or refusing VTN is retried with backoff (1 s doubling to
60 s); events already in the book run to their end whether or not the VTN is reachable."""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from controller.control.events import DrEvent, EventKind
from controller.control.interface import SiteControl
from controller.openadr.settings import OpenAdrSettings, openadr_settings
from controller.openadr.signals import (
    OPT_IN,
    OPT_OUT,
    OadrEvent,
    Plan,
    book_id,
    decide,
    parse_event,
)
from drivers.site import SiteSpec

if TYPE_CHECKING:
    import aiohttp


log = logging.getLogger("pedf.openadr")

#: The check_flexibility policy looks at events that start within this many seconds.
FLEXIBILITY_HORIZON_S = 3600.0
#: How long the VEN remembers an event after its end (the book keeps a week too).
KEEP_S = 7 * 86400.0
TICK_S = 1.0
REGISTER_TIMEOUT_S = 120.0
BACKOFF_MAX_S = 60.0


class Ven:
    """The supervised service: ``await ven.run()`` until cancelled.

    ``wall`` is the clock openleadr and the VTN use (UNIX time); event times are moved onto
    the control loop's clock by the difference between the two at the moment an event
    arrives — none in production, where both are the system clock; a simulation running on
    its own clock sees "starts in 10 s" as 10 s of simulated time later.
    """

    def __init__(self, settings: OpenAdrSettings, control: SiteControl, *,
                 wall: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.control = control
        self.wall = wall
        self.client: Any = None
        self.registered = False
        self.registrations = 0
        self.last_contact_s: float | None = None  # monotonic
        self.last_failure: str | None = None  # why the last registration ended or failed
        self.state: dict[str, dict[str, Any]] = self._load_state()
        self._tasks: set[asyncio.Task[None]] = set()

    # -- running ------------------------------------------------------------------------

    async def run(self) -> None:
        """Register, then poll, answer and report; after a failed or lost registration,
        try again after 1, 2, 4 … 60 s."""
        if not self.settings.tls:
            log.warning("OpenADR over plain HTTP to %s: for a lab VTN only",
                        self.settings.vtn_url)
        delay = 1.0
        while True:
            started = time.monotonic()
            reason = await self._session()
            self.last_failure = reason
            if time.monotonic() - started > BACKOFF_MAX_S:
                delay = 1.0
            log.warning("OpenADR: %s; registering again in %.0f s", reason, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX_S)

    async def _session(self) -> str:
        client = self._new_client()
        self.client = client
        try:
            try:
                async with asyncio.timeout(REGISTER_TIMEOUT_S):
                    await client.run()
            except TimeoutError:
                return f"registration with {self.settings.vtn_url} timed out"
            if client.registration_id is None:
                return f"no registration with the VTN at {self.settings.vtn_url} " \
                       "(unreachable, refused, or its answers failed validation)"
            self._poll_interval(client)
            self.registered = True
            self.registrations += 1
            log.info("OpenADR: registered with %s as venID %s (registration %s)",
                     self.settings.vtn_url, client.ven_id, client.registration_id)
            self._audit(None, "openadr_registration", "registered",
                        f"venID {client.ven_id}, registrationID {client.registration_id}",
                        {"vtn_url": self.settings.vtn_url, "ven_id": client.ven_id})
            while True:
                await asyncio.sleep(TICK_S)
                await self.tick()
                if client.registration_id is None:
                    return "the VTN cancelled the registration"
        finally:
            self.registered = False
            await self._close(client)

    def _new_client(self) -> Any:
        from openleadr import OpenADRClient, objects, utils

        for name in ("openleadr", "apscheduler"):  # per-poll INFO chatter
            logging.getLogger(name).setLevel(logging.WARNING)
        s = self.settings
        client = OpenADRClient(
            ven_name=s.ven_name, vtn_url=s.vtn_url, ven_id=s.ven_id, cert=s.cert_file,
            key=s.key_file, ca_file=s.ca_file, vtn_fingerprint=s.vtn_fingerprint,
            show_fingerprint=False, check_hostname=s.check_hostname,
            disable_signature=not s.sign_messages)
        if s.cert_file is not None:
            log.info("OpenADR: this VEN's certificate fingerprint is %s (give it to the "
                     "utility)", utils.certificate_fingerprint(Path(s.cert_file).read_text()))
        client.add_handler("on_event", self._on_event)
        client.add_handler("on_update_event", self._on_event)
        client.add_hook("after_parse_xml", self._after_parse)
        client.add_hook("after_receive_xml", self._contact)
        grid = self.control.site.grid_meter()
        if grid is not None:
            period = timedelta(seconds=s.report_interval_s)
            client.add_report(
                callback=self.grid_kw, resource_id=grid.name,
                measurement=objects.Measurement(
                    name="powerReal", description="RealPower", unit="W", scale="k",
                    power_attributes=objects.PowerAttributes(hertz=50, voltage=220, ac=True)),
                report_specifier_id=f"{s.ven_name}-telemetry", r_id="grid_power",
                report_name="TELEMETRY_USAGE", reading_type="Direct Read",
                report_type="reading", scale="k", report_duration=timedelta(hours=1),
                sampling_rate=objects.SamplingRate(
                    min_period=period, max_period=max(period, timedelta(hours=1)),
                    on_change=False))
        client.client_session = self._http_session()
        client.pending_reports = _ReportQueue()
        return client

    def _http_session(self) -> aiohttp.ClientSession:
        """Our own session, so that ``ca_file``, ``check_hostname`` and TLS ≥ 1.2 apply
        with or without a client certificate (openleadr alone ignores ca_file without
        one)."""
        import aiohttp

        s = self.settings
        connector = None
        if s.tls:
            context = ssl.create_default_context(cafile=s.ca_file)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            context.check_hostname = s.check_hostname
            if s.cert_file is not None:
                context.load_cert_chain(s.cert_file, s.key_file)
            connector = aiohttp.TCPConnector(ssl=context)
        return aiohttp.ClientSession(
            connector=connector, headers={"content-type": "application/xml"},
            timeout=aiohttp.ClientTimeout(total=30, sock_connect=5, sock_read=10))

    def _poll_interval(self, client: Any) -> None:
        if self.settings.poll_interval_s is None:
            return
        for job in client.scheduler.get_jobs():
            if getattr(job.func, "__name__", "") == "_poll":
                job.reschedule(trigger="interval", seconds=self.settings.poll_interval_s)

    async def _close(self, client: Any) -> None:
        """Stop polling and reporting; let a request in flight finish (briefly)."""
        scheduler = client.scheduler
        if scheduler.running:
            scheduler.pause()
            executor = getattr(scheduler, "_executors", {}).get("default")
            pending = list(getattr(executor, "_pending_futures", ()))
            if pending:
                await asyncio.wait(pending, timeout=0.5)
            scheduler.shutdown(wait=False)
        if client.report_queue_task is not None:
            client.report_queue_task.cancel()
            await asyncio.wait([client.report_queue_task], timeout=0.5)
        for task in list(self._tasks):
            task.cancel()
        if client.client_session is not None:
            await client.client_session.close()

    async def _contact(self, _xml: str) -> None:
        self.last_contact_s = time.monotonic()

    # -- reports ------------------------------------------------------------------------

    def grid_kw(self) -> float | list[Any]:
        """Site grid power now, kW (+ import, − export), from the gateway's latest reading;
        no reading: no value (an empty report rather than a made-up one)."""
        value = self.control.grid_power_w()
        if value is None:
            return []
        return round(value / 1000.0, 3)

    # -- events -------------------------------------------------------------------------

    async def _on_event(self, event: dict[str, Any]) -> str:
        try:
            return self.handle(event)
        except Exception as exc:  # an event we cannot read: say no, loudly
            log.exception("OpenADR event not understood")
            event_id = str(event.get("event_descriptor", {}).get("event_id", "?"))
            self._audit(book_id(event_id), "openadr_event", OPT_OUT,
                        f"not understood: {exc}", event)
            return OPT_OUT

    def handle(self, event: Mapping[str, Any]) -> str:
        """Take one event (new, repeated, modified or cancelled) into the book; return the
        opt answer for the VTN."""
        parsed = parse_event(event, self.settings)
        known = self.state.get(parsed.event_id)
        if parsed.status == "cancelled":
            return self._cancel(parsed.event_id, "cancelled by the VTN", event,
                                modification=parsed.modification)
        key = book_id(parsed.event_id)
        existing = self.control.book.events.get(key)
        action = "openadr_event" if known is None else "openadr_modification"
        if known is not None and known["mod"] == parsed.modification:
            if not (known.get("acted") and existing is None):
                return str(known["opt"])  # sent again (or after our restart): same answer
            action = "openadr_restore"  # we crashed before the book was saved: again
        now = self.control.now_s()
        start = self._loop_start(parsed, known)
        in_event = known is not None and known["opt"] == OPT_IN and existing is not None \
            and existing.status in ("scheduled", "active")
        if action == "openadr_restore" and known is not None:
            opt, reason = str(known["opt"]), "scheduled again: the book had lost it (restart)"
        else:
            opt, reason = self._policy(parsed, start, now, modification_of_running=in_event)
        act = opt == OPT_IN and parsed.plan is not None and (
            not parsed.test or self.settings.act_on_test_events)
        if parsed.test and not self.settings.act_on_test_events:
            reason += "; a test event: answered, not acted on"
        dr_event = self._schedule(parsed, start, act, existing, now)
        self.state[parsed.event_id] = {
            "mod": parsed.modification, "opt": opt, "reason": reason, "status": parsed.status,
            "acted": act, "test": parsed.test, "ramp_s": parsed.ramp_s,
            "intervals": None if parsed.plan is None else [list(i) for i in
                                                          parsed.plan.intervals],
            "dtstart_vtn": parsed.start.timestamp(), "dtstart_loop": start,
            "end_s": start + parsed.duration_s,
            "planned_end_s": None if dr_event is None else dr_event.end_s,
        }
        self._save_state()
        log.info("OpenADR event %s (modification %d): %s — %s", parsed.event_id,
                 parsed.modification, opt, reason)
        self._audit(key, action, opt, reason, event)
        self._publish(action, parsed.event_id, opt, reason)
        self.control.wake()
        return opt

    def _loop_start(self, parsed: OadrEvent, known: Mapping[str, Any] | None) -> float:
        """dtstart on the loop's clock. A modification keeps the first mapping (moved by
        as much as the VTN moved dtstart), so a simulation clock that runs at its own pace
        does not shift an event that the VTN did not move."""
        if known is not None and "dtstart_vtn" in known:
            return float(known["dtstart_loop"]) + (parsed.start.timestamp()
                                                   - float(known["dtstart_vtn"]))
        return self._to_loop(parsed.start)

    def _policy(self, parsed: OadrEvent, start: float, now: float, *,
                modification_of_running: bool) -> tuple[str, str]:
        plan = parsed.plan
        requested: float | None = None
        flexibility_kw: float | None = None
        if plan is not None:
            grid_kw = self._grid_now_kw()
            if plan.kind == "reduction":
                requested = plan.peak_kw
            elif grid_kw is not None:
                requested = max(0.0, grid_kw - plan.lowest_kw)
            starts_in = start - parsed.ramp_s - now
            if self.settings.check_flexibility and not modification_of_running and \
                    grid_kw is not None and starts_in < FLEXIBILITY_HORIZON_S:
                flexibility_kw = self._flexibility_kw(now)
        return decide(parsed, self.settings, requested_kw=requested,
                      flexibility_kw=flexibility_kw)

    def _schedule(self, parsed: OadrEvent, dtstart: float, act: bool,
                  existing: DrEvent | None, now: float) -> DrEvent | None:
        """Put the event into the book (or change, or opt out of, what is there)."""
        book = self.control.book
        plan = parsed.plan
        key = book_id(parsed.event_id)
        if plan is None or (parsed.test and not self.settings.act_on_test_events):
            if existing is not None and existing.status in ("scheduled", "active"):
                return book.opt_out(key)
            return None
        start = dtstart - parsed.ramp_s
        fresh = DrEvent(id=key, kind=EventKind(plan.kind), target="site", start_s=start,
                        duration_s=parsed.duration_s + parsed.ramp_s, value=0.0,
                        source="openadr", ramp_s=parsed.ramp_s,
                        randomize_s=parsed.randomize_s,
                        modification=0 if existing is None else existing.modification + 1)
        fresh = replace(fresh, value=plan.value_at(now - fresh.begin_s - parsed.ramp_s))
        running = existing is not None and existing.status in ("scheduled", "active")
        if not act:
            if running:
                return book.opt_out(key)
            if fresh.end_s > now:
                book.add(replace(fresh, status="opted_out"))
                return book.events[key]
            return None
        if existing is None or not running:
            if fresh.end_s <= now:
                return None
            book.add(fresh)
            return fresh
        # a modification of an event we are in: keep what already started
        if existing.status == "scheduled":
            book.modify(key, value=fresh.value, duration_s=fresh.duration_s)
            return book.update(key, kind=fresh.kind, start_s=fresh.start_s,
                               ramp_s=fresh.ramp_s, randomize_s=fresh.randomize_s)
        end = replace(existing, start_s=fresh.start_s, randomize_s=fresh.randomize_s).begin_s \
            + fresh.duration_s
        book.modify(key, value=fresh.value, duration_s=max(0.0, end - existing.begin_s))
        return book.update(key, kind=fresh.kind)

    def _cancel(self, event_id: str, reason: str, raw: object, *,
                modification: int | None = None) -> str:
        key = book_id(event_id)
        known = self.state.get(event_id)
        if known is not None and known.get("status") == "cancelled" and \
                (modification is None or known["mod"] == modification):
            return str(known["opt"])
        cancelled = self.control.book.cancel(key)
        opt = OPT_IN if known is None else str(known["opt"])
        entry = dict(known or {"opt": opt, "acted": False, "test": False, "ramp_s": 0.0,
                               "intervals": None, "end_s": self.control.now_s(),
                               "planned_end_s": None})
        entry.update(status="cancelled", reason=reason,
                     mod=modification if modification is not None else entry.get("mod", 0))
        self.state[event_id] = entry
        self._save_state()
        detail = reason if cancelled is not None else f"{reason} (nothing running)"
        log.info("OpenADR event %s: %s", event_id, detail)
        self._audit(key, "openadr_cancel", "cancelled", detail, raw)
        self._publish("openadr_cancel", event_id, opt, detail)
        self.control.wake()
        return opt

    async def _after_parse(self, message_type: str, payload: Mapping[str, Any]) -> None:
        """Implicit cancellation: an event the VTN no longer distributes is over."""
        if message_type != "oadrDistributeEvent":
            return
        present = {str(e.get("event_descriptor", {}).get("event_id"))
                   for e in payload.get("events") or [] if isinstance(e, Mapping)}
        now = self.control.now_s()
        for event_id, entry in list(self.state.items()):
            if event_id in present or entry.get("status") in ("cancelled", "completed"):
                continue
            dr_event = self.control.book.events.get(book_id(event_id))
            if dr_event is not None and dr_event.status in ("scheduled", "active") and \
                    now < float(entry["end_s"]):
                self._cancel(event_id, "no longer distributed by the VTN (implicit "
                             "cancellation)", {"event_id": event_id})

    # -- the tick: intervals, local overrides, housekeeping ------------------------------

    async def tick(self) -> None:
        """Follow multi-interval targets; tell the VTN about local overrides; forget
        events a week after their end."""
        now = self.control.now_s()
        book = self.control.book
        changed = False
        for event_id, entry in list(self.state.items()):
            dr_event = book.events.get(book_id(event_id))
            if entry.get("acted") and entry["opt"] == OPT_IN and dr_event is not None:
                if dr_event.status in ("scheduled", "active") and entry.get("intervals"):
                    plan = Plan(dr_event.kind, "", tuple(tuple(i) for i in entry["intervals"]))
                    value = plan.value_at(now - dr_event.begin_s - float(entry["ramp_s"]))
                    if abs(value - dr_event.value) > 1e-9:
                        book.update(dr_event.id, value=value)
                        log.info("OpenADR event %s: next interval, %g kW", event_id, value)
                        self.control.wake()
                elif self._overridden(entry, dr_event, now):
                    entry.update(opt=OPT_OUT, reason=f"overridden locally ({dr_event.status})")
                    changed = True
                    self._audit(dr_event.id, "openadr_override", OPT_OUT, entry["reason"],
                                {"event_id": event_id, "status": dr_event.status})
                    self._publish("openadr_override", event_id, OPT_OUT, entry["reason"])
                    self._send_opt(event_id, OPT_OUT, int(entry["mod"]))
            if float(entry.get("end_s", now)) < now - KEEP_S:
                del self.state[event_id]
                changed = True
        if changed:
            self._save_state()

    @staticmethod
    def _overridden(entry: Mapping[str, Any], dr_event: DrEvent, now: float) -> bool:
        if entry.get("status") == "cancelled":
            return False
        if dr_event.status in ("cancelled", "opted_out"):
            return True
        planned = entry.get("planned_end_s")
        return dr_event.status == "completed" and planned is not None and \
            dr_event.end_s < float(planned) - 1.0 and now < float(planned)

    def _send_opt(self, event_id: str, opt: str, modification: int) -> None:
        """An unsolicited oadrCreatedEvent: our answer to this event has changed."""
        client = self.client
        if client is None or not self.registered:
            return
        client.responded_events[event_id] = opt  # a repeat of the event gets this answer

        async def send() -> None:
            try:
                async with asyncio.timeout(30.0):
                    await client.created_event(request_id=uuid.uuid4().hex, event_id=event_id,
                                               opt_type=opt, modification_number=modification)
            except TimeoutError:
                log.warning("OpenADR: %s for event %s not delivered (timeout)", opt, event_id)

        task = asyncio.create_task(send(), name=f"openadr opt {event_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- helpers ------------------------------------------------------------------------

    def _to_loop(self, moment: datetime) -> float:
        """A VTN time on the control loop's clock."""
        return self.control.now_s() + (moment.timestamp() - self.wall())

    def _grid_now_kw(self) -> float | None:
        value = self.grid_kw()
        return value if isinstance(value, float) else None

    def _flexibility_kw(self, now: float) -> float | None:
        """The site's downward flexibility now, kW; None (not judged) while a battery's
        readings are missing — just after a start, it would look like none."""
        if not all(battery.ok for battery in self.control.snapshot().batteries):
            return None
        return self.control.flexibility_down_kw()

    def _load_state(self) -> dict[str, dict[str, Any]]:
        store = self.control.store
        text = store.get_state("openadr") if store is not None else None
        if not text:
            return {}
        try:
            data = json.loads(text)
            if not isinstance(data, dict):
                raise ValueError("not an object")
            return {str(k): dict(v) for k, v in data.items()}
        except (ValueError, TypeError) as exc:
            log.error("saved OpenADR state unreadable (%s): starting without it", exc)
            return {}

    def _save_state(self) -> None:
        if self.control.store is not None:
            self.control.store.set_state("openadr", json.dumps(self.state))

    def _audit(self, key: str | None, action: str, result: str, reason: str,
               raw: object) -> None:
        if self.control.store is not None:
            self.control.store.audit(command_id=key, command_type=action, source="openadr",
                                  result=result, reason=reason,
                                  payload=json.dumps(_jsonable(raw), ensure_ascii=False))

    def _publish(self, action: str, event_id: str, opt: str, reason: str) -> None:
        now = self.control.now_s()
        body: dict[str, object] = {"ts": round(now, 3), "type": action,
                                   "id": book_id(event_id), "oadr_event_id": event_id,
                                   "opt": opt, "reason": reason}
        event = self.control.book.events.get(book_id(event_id))
        if event is not None:
            body.update(kind=event.kind, value=event.value, begin=event.begin_s,
                        end=event.end_s, status=event.status)
        self.control.publish_event(body)


class _ReportQueue(asyncio.Queue[Any]):
    """openleadr's queue of outgoing reports, minus those without a value (no grid
    reading yet): an empty oadrUpdateReport helps no one, and some VTNs choke on it."""

    async def put(self, item: Any) -> None:
        if getattr(item, "intervals", None):
            await super().put(item)
        else:
            log.debug("OpenADR report %s skipped: no reading",
                      getattr(item, "report_request_id", "?"))


def _jsonable(value: object) -> object:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def ven_for(site: SiteSpec, control: SiteControl) -> Ven | None:
    """The VEN service for a site with an enabled ``[openadr]`` section, else None.
    Raises ConfigError for a malformed section."""
    settings = openadr_settings(site)
    if settings is None or not settings.enabled:
        return None
    return Ven(settings, control)
