"""The control loop: every cycle, snapshot → strategies → one plan → verified writes.

Cycle (``[control] cycle_s``, 1 s by default; at once when a command arrives):

1. take commands from the :class:`~controller.inbox.CommandInbox` into the event book;
2. advance events (start, end — on schedule, reachable utility or not), fixing each
   reduction event's baseline when it starts;
3. build a :class:`~controller.control.model.Snapshot` from the plant's latest values;
4. compose the strategies (precedence: safety > events > site goals > comfort);
5. bring back loads nobody wants off any more, staggered by the fastcore restore planner
   (a kW-per-step limit, minimum off times; loads past their maximum shed time first);
6. write what changed, and refresh what must be refreshed: battery and inverter limits
   well within their revert timeouts, relay modules within their watchdog — so a dead
   controller hands everything back by itself;
7. record event performance (delivered vs. requested kW per interval) and, periodically,
   the site's flexibility for a VPP.

State that must outlive the process — events, which loads we shed and since when — is in
the store, so after a restart nothing stays shed past its event or its maximum shed time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

import fastcore
from controller import streams
from controller.commands import Command
from controller.control import strategies
from controller.control.actuators import HANDLERS, LoadMemory, LoopState, SgHold, WritePlan
from controller.control.actuators.sg_ready import (
    BLOCK_LIMIT,
    contacts,
    end_long_blocks,
    running_draws,
    sg_holds,
    sg_ready_state,
    sg_writes,
)
from controller.control.baseline import (
    Baseline,
    BaselineInputs,
    BaselineQuality,
    choose_baseline,
    just_before,
)
from controller.control.dcbus import DcBusControl, grid_target_w
from controller.control.demand import DemandTracker
from controller.control.events import DrEvent, EventBook, EventKind, event_from_command
from controller.control.facts import ACTUATOR_CONTROLS
from controller.control.flexibility import flexibility
from controller.control.interface import PlanSource
from controller.control.model import (
    Actuator,
    ActuatorKind,
    ActuatorValue,
    Level,
    PlanSetpoints,
    Proposal,
    SgReadyState,
    Snapshot,
)
from controller.control.plant import Plant
from controller.control.settings import ControlSettings
from controller.control.settlement import settle
from controller.control.snapshot import build_snapshot, tariff_ahead
from controller.control.strategies import Context, Decision, RunningEvent
from controller.inbox import CommandInbox
from controller.store import Outgoing, Store
from controller.tariffs import DEFAULT_TARIFF, BasicChargeBasis, BillSettings, Tariff, load_tariff
from drivers.controls import Control, Failsafe
from drivers.devices import Relay, Write, device_class
from drivers.points import WriteRangeError
from drivers.site import SiteSpec

#: Re-exported: what the loop's users imported from here before the actuators moved out.
__all__ = ["BLOCK_LIMIT", "ControlLoop", "LoadMemory", "SgHold", "build_snapshot",
           "flexibility", "sg_ready_state", "tariff_ahead"]

log = logging.getLogger("pedf.control")

Publish = Callable[[list[Outgoing]], None]


# -- the loop -------------------------------------------------------------------------


@dataclass
class _Interval:
    """One performance interval of a running event, cycle by cycle (kW)."""

    start_s: float
    actual_kw: list[float] = field(default_factory=list)
    limit_kw: list[float] = field(default_factory=list)
    requested_kw: list[float] = field(default_factory=list)


@dataclass
class ControlLoop:
    plant: Plant
    settings: ControlSettings
    inbox: CommandInbox
    store: Store | None = None
    publish: Publish = lambda messages: None
    clock: Callable[[], float] = time.time
    tariff: Tariff = field(default_factory=lambda: load_tariff(DEFAULT_TARIFF))
    bill: BillSettings = field(default_factory=BillSettings)
    window_s: float = 900.0
    #: The optimising planner (None: the rule-based strategies alone).
    planner: PlanSource | None = None
    book: EventBook = field(init=False)
    memory: LoadMemory = field(init=False)
    commanded: dict[Actuator, ActuatorValue] = field(default_factory=dict)
    last_written: dict[Actuator, float] = field(default_factory=dict)
    grid_history: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=20000))
    performance: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    write_failures: int = 0
    cycles: int = 0
    last_decision: Decision | None = None
    _interval: dict[str, _Interval] = field(default_factory=dict)
    _next_flexibility: float = 0.0
    _last_restore: float = -math.inf
    _written: dict[tuple[str, str], tuple[object, float]] = field(default_factory=dict)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _event_loop: asyncio.AbstractEventLoop | None = None
    _pending_states: dict[str, str] = field(default_factory=dict)
    _pending_messages: list[Outgoing] = field(default_factory=list)
    _held_at_start: list[Actuator] = field(default_factory=list)
    demand: DemandTracker = field(init=False)
    state: LoopState = field(init=False)
    _heat_pump_running_w: dict[str, float] = field(default_factory=dict)
    dc: DcBusControl | None = field(init=False, default=None)  # 直柔 bus ([dcbus])

    def __post_init__(self) -> None:
        self.dc = DcBusControl.for_site(self.plant)
        if self.dc is not None:
            self.dc.publish = lambda body: self._emit([Outgoing(streams.DCBUS, body)])
        store = self.store
        self.book = EventBook.load(store.get_state("events") if store else None,
                                   self._save_events)
        self.memory = LoadMemory.from_json(store.get_state("loads") if store else None)
        #: What the actuator handlers read and change (the same dicts as the loop's).
        self.state = LoopState(self.plant, self.settings, self.memory, self.commanded,
                               self.last_written, self._refresh_s)
        self._held_at_start = _held_from_json(store.get_state("held") if store else None)
        self.demand = DemandTracker(self.site.zone, self.window_s,
                                    max_gap_s=max(120.0, 3 * self.settings.cycle_s))
        self.demand.restore(store.get_state("demand") if store else None)

    def _save_events(self, text: str) -> None:
        self._pending_states["events"] = text

    def _emit(self, messages: list[Outgoing]) -> None:
        self._pending_messages.extend(messages)

    async def _flush(self) -> None:
        """Persist state and hand messages out — after the cycle's writes, in a worker
        thread, so SQLite never delays a command's effect."""
        states, self._pending_states = self._pending_states, {}
        messages, self._pending_messages = self._pending_messages, []
        if self.store is not None:
            states["loads"] = self.memory.to_json()
            states["held"] = json.dumps([[a.kind, a.name] for a in self._held_now()])
            store = self.store

            def persist() -> None:
                for key, text in states.items():
                    store.set_state(key, text)

            await asyncio.to_thread(persist)
        if messages:
            await asyncio.to_thread(self.publish, messages)

    @property
    def site(self) -> SiteSpec:
        return self.plant.site

    # -- the narrow interface (controller.control.interface.SiteControl) ---------------

    def now_s(self) -> float:
        """The control clock, UNIX s."""
        return self.clock()

    def grid_power_w(self) -> float | None:
        """The grid meter's latest power, W (+ import); None without a reading."""
        grid = self.site.grid_meter()
        return None if grid is None else self.plant.value(grid.name, "power_w")

    def snapshot(self) -> Snapshot:
        """What the strategies would see now (reads the plant's latest values)."""
        now = self.clock()
        return build_snapshot(
            self.plant, self.settings, now, self.tariff, self.memory, self.commanded,
            self.demand.state(now, billed=self.bill.basis is BasicChargeBasis.DEMAND),
            self._heat_pump_running_w, self.sg_holds(now))

    def flexibility_down_kw(self) -> float:
        """How much less the site could import now, kW (:func:`flexibility`)."""
        return float(flexibility(self.snapshot(), self.settings)["down_kw"])

    def publish_event(self, body: dict[str, Any]) -> None:
        """Hand an event message to the uplinks (``…/events``) now."""
        self.publish([Outgoing(streams.EVENTS, body)])

    # -- running ----------------------------------------------------------------------

    async def run(self) -> None:
        """Cycle every ``cycle_s`` (monotonic, no drift) and at once on a command."""
        self._event_loop = asyncio.get_running_loop()
        next_cycle = time.monotonic()
        await self.release_held(self._held_at_start, "left held by an earlier run")
        self._held_at_start = []
        try:
            await self._cycles(next_cycle)
        finally:  # stopped, cancelled or failed: hand back what does not revert by itself
            await self.release_held(self._held_now(), "control stops")
            if self.dc is not None:
                await self.dc.release("control stops")

    async def _cycles(self, next_cycle: float) -> None:
        while True:
            await self.cycle()
            now = time.monotonic()
            if now >= next_cycle:  # the periodic cycle; one a command woke early is extra
                next_cycle += self.settings.cycle_s
                if next_cycle < now:
                    next_cycle = now
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(next_cycle - now):
                    await self._wake.wait()

    def wake(self) -> None:
        """Run the next cycle now (a command arrived). Safe from any thread."""
        loop = self._event_loop
        if loop is None:
            self._wake.set()
        else:
            loop.call_soon_threadsafe(self._wake.set)

    async def cycle(self) -> Decision:
        now = self.clock()
        self.cycles += 1
        self._take_commands(now)
        self._advance_events(now)
        grid = self.site.grid_meter()
        grid_w = None if grid is None else self.plant.value(grid.name, "power_w")
        if grid_w is not None and self.demand.add(now, grid_w):
            self._pending_states["demand"] = self.demand.to_json()
        snapshot = build_snapshot(
            self.plant, self.settings, now, self.tariff, self.memory, self.commanded,
            self.demand.state(now, billed=self.bill.basis is BasicChargeBasis.DEMAND),
            self._heat_pump_running_w, self.sg_holds(now))
        self._heat_pump_running_w = running_draws(snapshot, self._heat_pump_running_w)
        if snapshot.grid_w is not None:
            self.grid_history.append((now, snapshot.grid_w))
        context = self._context(snapshot, self._planned(snapshot))
        decision = strategies.compose(snapshot, context, strategies.ALL)
        for proposal in end_long_blocks(snapshot):
            decision.claims[proposal.actuator] = proposal
        self._add_restores(snapshot, decision)
        await self._execute(snapshot, decision)
        self._record_performance(snapshot, context)
        if self.dc is not None:
            await self.dc.cycle(now, snapshot.grid_w, grid_target_w(context.events))
        if now >= self._next_flexibility:
            self._next_flexibility = now + self.settings.flexibility_interval_s
            body = flexibility(snapshot, self.settings)
            self._emit([Outgoing(streams.FLEXIBILITY,
                                 body if self.dc is None else self.dc.extend_flexibility(body))])
        await self._flush()
        self.last_decision = decision
        return decision

    # -- commands and events ------------------------------------------------------------

    def _take_commands(self, now: float) -> None:
        while (command := self.inbox.get_nowait()) is not None:
            self.apply_command(command, now)

    def apply_command(self, command: Command, now: float) -> None:
        params = command.params
        if command.type == "cancel":
            if self.book.cancel(params["command_id"]) is None:
                log.warning("cancel %s: no such running or scheduled event",
                            params["command_id"])
        elif command.type == "release":
            self.book.release(command.target, now)
        elif command.type == "modify":
            value = params.get("kw")
            if self.book.modify(params["command_id"], value=value,
                                duration_s=params.get("duration_s")) is None:
                log.warning("modify %s: no such running or scheduled event",
                            params["command_id"])
        else:
            self.book.add(event_from_command(command, now))
        self._event_message(command.type, command.id, now)

    def _advance_events(self, now: float) -> None:
        for transition, event in self.book.tick(now):
            if transition == "started" and event.kind is EventKind.REDUCTION:
                inputs = self._baseline_inputs(event)
                baseline = self._baseline(inputs)
                reference, _ = just_before(inputs)
                self.book.update(event.id, baseline_kw=baseline.kw,
                                 baseline_method=baseline.method.value,
                                 baseline_coverage=round(baseline.coverage, 4),
                                 baseline_quality=baseline.quality.value,
                                 baseline_note=baseline.note, reference_kw=reference)
                (log.info if baseline.quality is BaselineQuality.GOOD else log.warning)(
                    "event %s started: baseline %s", event.id, baseline.describe())
            self._event_message(f"event_{transition}", event.id, now)
        self.book.prune(now)

    def _baseline_inputs(self, event: DrEvent) -> BaselineInputs:
        grid = self.site.grid_meter()
        calendar = self.tariff.calendar
        zone = self.site.zone
        event_days = frozenset(datetime.fromtimestamp(e.begin_s, zone).date()
                               for e in self.book.events.values()
                               if e.kind in (EventKind.REDUCTION, EventKind.CAP)
                               and e.id != event.id
                               and e.status not in ("cancelled", "opted_out"))
        return BaselineInputs(
            samples=list(self.grid_history),
            history=self.store.windows if self.store else (lambda *a: []),
            series=grid.name if grid else "", start_s=event.begin_s,
            duration_s=event.duration_s, zone=zone,
            working_day=lambda day: calendar.day_type(day) == fastcore.WORKDAY,
            window_s=self.window_s, max_gap_s=max(60.0, 3 * self.settings.cycle_s),
            event_days=event_days)

    def _baseline(self, inputs: BaselineInputs) -> Baseline:
        settings = self.settings
        return choose_baseline(settings.baseline_method, inputs,
                               pre_event_s=settings.baseline_pre_event_s,
                               days=settings.baseline_days,
                               min_coverage=settings.baseline_min_coverage)

    def _planned(self, snapshot: Snapshot) -> PlanSetpoints | None:
        """The planner's setpoints now; whatever goes wrong there, the rules carry on."""
        if self.planner is None:
            return None
        try:
            return self.planner.tick(snapshot, self.book.events.values())
        except Exception:  # the planner must never stop the control cycle
            log.exception("planner failed this cycle: the rules act alone")
            return None

    def _context(self, snapshot: Snapshot, plan: PlanSetpoints | None = None) -> Context:
        running = []
        for event in self.book.running(snapshot.now_s):
            fraction = event.ramp_fraction(snapshot.now_s)
            limit = None
            if event.kind is EventKind.REDUCTION:
                if event.baseline_kw is None and event.reference_kw is None:
                    # no sample at all before the event: today's import, now
                    event = self.book.update(event.id, baseline_kw=(snapshot.grid_w or 0.0)
                                             / 1000.0, baseline_method="just_before",
                                             baseline_coverage=0.0,
                                             baseline_quality="low") or event
                # Held against the lower of the baseline and the import just before the
                # event, so import falls by the reduction whatever the baseline says.
                base = min(kw for kw in (event.baseline_kw, event.reference_kw)
                           if kw is not None)
                limit = (base - event.site_kw * fraction) * 1000.0
            elif event.kind is EventKind.CAP:
                start = (snapshot.grid_w or 0.0)
                limit = start + (event.site_kw * 1000.0 - start) * fraction if fraction < 1 \
                    else event.site_kw * 1000.0
            elif event.kind is EventKind.SETPOINT:
                limit = event.site_kw * 1000.0
            running.append(RunningEvent(event, limit, event.kind is EventKind.SETPOINT))
        upcoming = tuple(self.book.upcoming(snapshot.now_s, self.settings.preheat_s))
        return Context(self.settings, tuple(running), upcoming, dict(self.memory.shed_by),
                       plan)

    # -- restore ------------------------------------------------------------------------

    def _add_restores(self, snapshot: Snapshot, decision: Decision) -> None:
        """Loads we shed that nobody claims any more (or that hit their maximum shed
        time) come back, staggered; the rest stay off until their turn."""
        settings = self.settings
        ours = [load for load in snapshot.loads if load.name in self.memory.shed_by]
        overdue = {load.name for load in ours if load.shed_since_s is not None
                   and snapshot.now_s - load.shed_since_s >= load.max_shed_s}
        releasing = [load for load in ours
                     if Actuator("load", load.name) not in decision.claims
                     or load.name in overdue]
        if not releasing:
            return
        step_due = snapshot.now_s - self._last_restore >= settings.restore_step_s
        power = np.array([load.expected_w / 1000.0 for load in releasing], dtype=np.float64)
        priority = np.array([load.priority for load in releasing], dtype=np.int8)
        plan = fastcore.plan_restore(
            power, priority, np.ones(len(releasing), dtype=np.bool_), now_s=snapshot.now_s,
            max_kw_per_step=settings.restore_step_kw, step_s=settings.restore_step_s,
            shed_since_s=np.array([load.shed_since_s if load.shed_since_s is not None
                                   else snapshot.now_s for load in releasing]),
            min_off_s=np.array([load.min_off_s for load in releasing], dtype=np.float64),
            max_shed_s=np.array([load.max_shed_s for load in releasing], dtype=np.float64))
        first_step = [int(i) for i, step, at in zip(plan.load_index, plan.step,
                                                     plan.restore_at_s, strict=True)
                      if step == plan.step.min() and at <= snapshot.now_s] if len(
            plan.load_index) else []
        coming_back = {releasing[i].name for i in first_step} if step_due else set()
        if coming_back:
            self._last_restore = snapshot.now_s
        for load in releasing:
            actuator = Actuator("load", load.name)
            if load.name in coming_back:
                decision.claims[actuator] = Proposal(actuator, True, Level.EVENT,
                                                     "restore", "staggered restore")
            elif load.name not in overdue or actuator not in decision.claims:
                owner = self.memory.shed_by[load.name]
                decision.claims[actuator] = Proposal(actuator, False, Level.EVENT,
                                                     owner, "waiting for its restore step")

    # -- execution ----------------------------------------------------------------------

    async def _execute(self, snapshot: Snapshot, decision: Decision) -> None:
        now = snapshot.now_s
        by_device: dict[str, list[Write]] = {}
        effects: dict[str, list[Callable[[], None]]] = {}
        for actuator, proposal in decision.claims.items():
            try:
                plan = self._plan(actuator, proposal, snapshot, now)
            except WriteRangeError as exc:
                log.warning("%s: cannot write %r: %s", actuator, proposal.value, exc)
                continue
            if plan is not None:
                by_device.setdefault(plan.device, []).extend(plan.writes)
                effects.setdefault(plan.device, []).append(plan.effect)
        self._release_unclaimed(decision, snapshot, by_device, effects)
        self._skip_unchanged(by_device, now)
        self._watchdog_refresh(now, by_device)  # a refresh is the same write, on purpose
        if not by_device:
            return
        devices = list(by_device)
        results = await asyncio.gather(*(self.plant.execute(d, by_device[d]) for d in devices))
        for device, outcome in zip(devices, results, strict=True):
            succeeded = True
            for write, result in zip(by_device[device], outcome, strict=False):
                if result.ok:
                    self._written[(device, write.point)] = (write.value, now)
                else:
                    self._written.pop((device, write.point), None)
                    succeeded = succeeded and write.optional
            if succeeded:
                for effect in effects.get(device, []):
                    effect()
            else:
                self.write_failures += 1
                failed = next(r for r, w in zip(outcome, by_device[device], strict=False)
                              if not r.ok and not w.optional)
                log.warning("%s: write %s failed: %s", device, failed.point, failed.error)
                self._event_message("write_failed", device, now, detail=failed.error)

    def _skip_unchanged(self, by_device: dict[str, list[Write]], now: float) -> None:
        """Drop writes of values the device already took, unless the device is due for a
        refresh (controls that revert by themselves)."""
        for device in list(by_device):
            refresh_s = self._refresh_s(device)
            kept = []
            for write in by_device[device]:
                previous = self._written.get((device, write.point))
                if previous is not None and previous[0] == write.value and (
                        now - previous[1] < refresh_s):
                    continue
                kept.append(write)
            if kept:
                by_device[device] = kept
            else:
                del by_device[device]

    def _revert_s(self, kind: str, control: Control) -> float:
        """How long a device of ``kind`` keeps a setting of ``control`` without a
        refresh: what the gateway programs (the site's setting) or the device's own fixed
        timeout."""
        if control.programs_revert or control.revert_s is None:
            return float(self.settings.battery_revert_s if kind == "battery"
                         else self.settings.inverter_revert_s)
        return control.revert_s

    def _refresh_s(self, device: str) -> float:
        """How often the loop re-writes a held setting of ``device``: a quarter of the
        shortest revert time of its controls that revert by themselves, else never."""
        device_map = self.site.devices[device].device_map
        reverting = [self._revert_s(device_map.kind, c) for c in device_map.controls.values()
                     if c.failsafe is Failsafe.DEVICE_REVERTS]
        return min(reverting) / 4.0 if reverting else math.inf

    def _plan(self, actuator: Actuator, proposal: Proposal, snapshot: Snapshot,
              now: float) -> WritePlan | None:
        """The writes for ``proposal``, by its actuator kind's handler (None: nothing to
        write now, or a kind without a handler). Raises :class:`WriteRangeError`."""
        handler = HANDLERS.get(actuator.kind)
        return None if handler is None else handler.plan(actuator, proposal, snapshot,
                                                         self.state, now)

    def sg_holds(self, now: float) -> dict[str, SgHold]:
        """Per heat pump, until when its SG-Ready state must dwell and by when a block
        must end (:func:`~controller.control.actuators.sg_ready.sg_holds`)."""
        return sg_holds(self.site, self.memory)

    def _release_unclaimed(self, decision: Decision, snapshot: Snapshot,
                           by_device: dict[str, list[Write]],
                           effects: dict[str, list[Callable[[], None]]]) -> None:
        """Batteries and inverter limits we commanded but nobody wants now: hand back."""
        for actuator, value in list(self.commanded.items()):
            if actuator in decision.claims or value is None:
                continue
            if actuator.kind in (ActuatorKind.BATTERY, ActuatorKind.INVERTER_LIMIT):
                plan = self._plan(actuator, Proposal(actuator, None, Level.COMFORT, "release"),
                                  snapshot, snapshot.now_s)
                if plan is not None:
                    by_device.setdefault(plan.device, []).extend(plan.writes)
                    effects.setdefault(plan.device, []).append(plan.effect)

    def _watchdog_refresh(self, now: float, by_device: dict[str, list[Write]]) -> None:
        """Devices with a watchdog (relay modules): arm it once, then touch it often
        enough that it never trips while we run — and trips (loads back on, settings
        dropped) when we do not."""
        self._program_safe_states(by_device)
        timeout = self.settings.relay_watchdog_s
        if timeout <= 0:
            return
        for device in self.site.devices.values():
            if device.device_map.watchdog is None:
                continue
            actuator = Actuator(ActuatorKind.WATCHDOG, device.name)
            if now - self.last_written.get(actuator, -math.inf) < timeout / 3.0:
                continue
            semantic = device_class(device.device_map)(device.device_map,
                                                       self.plant.device_values(device.name))
            try:
                by_device.setdefault(device.name, []).extend(semantic.arm_watchdog(timeout))
            except WriteRangeError as exc:
                log.warning("%s: cannot arm its watchdog: %s", device.name, exc)
                continue
            self.last_written[actuator] = now

    def _program_safe_states(self, by_device: dict[str, list[Write]]) -> None:
        """Relay modules that take a safe state per channel: make each channel's the
        site's (``safe_open``: open; the rest closed) wherever the module reads
        otherwise — ahead of the cycle's other writes to it, so an SG-Ready contact is
        never closed on a channel that would stay closed when the gateway goes away."""
        for device in self.site.devices.values():
            if device.device_map.kind != "relay":
                continue
            relay = Relay(device.device_map, self.plant.device_values(device.name))
            writes = []
            for channel in range(1, relay.channel_count + 1):
                if f"channel_{channel}_safe_on" not in device.device_map.capabilities:
                    continue
                wanted = device.safe_closed(channel)
                if relay.safe_on(channel) is not wanted:
                    writes.append(relay.set_safe_state(channel, wanted))
            if writes:
                by_device[device.name] = writes + by_device.get(device.name, [])

    # -- hand-back of what does not revert by itself -------------------------------------

    def _held_now(self) -> list[Actuator]:
        """Actuators we hold whose control does not revert by itself (fail-safe
        "gateway"): they must be released on shutdown and at the next start."""
        held = []
        for actuator, value in self.commanded.items():
            if value is None:
                continue
            if actuator.kind is ActuatorKind.SG_READY and \
                    contacts(self.site, actuator.name) is not None:
                held.append(actuator)  # contacts: released at once, the watchdog as backup
                continue
            control = self._control(actuator)
            if control is not None and control.failsafe is Failsafe.GATEWAY:
                held.append(actuator)
        return held

    def _control(self, actuator: Actuator) -> Control | None:
        kind_control = ACTUATOR_CONTROLS.get(actuator.kind)
        device = self.site.devices.get(actuator.name)
        if kind_control is None or device is None:
            return None
        return device.device_map.control(kind_control[1])

    async def release_held(self, actuators: list[Actuator], why: str,
                           timeout_s: float = 10.0) -> None:
        """Write the release steps of ``actuators`` (bounded by ``timeout_s``); log what
        could not be released. Never raises."""
        for actuator in actuators:
            try:
                planned = self._release_writes(actuator)
            except WriteRangeError as exc:
                log.error("%s: could not release %s (%s): %s", actuator.name, actuator.kind,
                          why, exc)
                continue
            if planned is None:
                continue
            device_name, what, writes = planned
            try:
                async with asyncio.timeout(timeout_s):
                    results = await self.plant.execute(device_name, writes)
            except TimeoutError:
                log.error("%s: could not release %s (%s): timeout", actuator.name, what, why)
                continue
            failed = [r for r in results if not r.ok]
            if failed:
                log.error("%s: release of %s (%s) failed: %s", actuator.name, what, why,
                          failed[0].error)
            else:
                log.info("%s: released %s (%s)", actuator.name, what, why)
                self.commanded[actuator] = None
                if actuator.kind is ActuatorKind.SG_READY:
                    self.memory.sg_changed(actuator.name, SgReadyState.NORMAL, self.clock())

    def _release_writes(self, actuator: Actuator) -> tuple[str, str, list[Write]] | None:
        """(device written, what, writes) that hand ``actuator`` back: SG-Ready contacts
        both open (normal operation), else the map's release steps. None when there is
        nothing to release. Raises :class:`WriteRangeError`."""
        if actuator.kind is ActuatorKind.SG_READY and \
                contacts(self.site, actuator.name) is not None:
            device_name, writes = sg_writes(self.plant, actuator.name, SgReadyState.NORMAL)
            return device_name, "SG-Ready contacts", writes
        control = self._control(actuator)
        if control is None:
            return None
        device = self.site.devices[actuator.name]
        semantic = device_class(device.device_map)(device.device_map,
                                                   self.plant.device_values(device.name))
        return device.name, control.name, semantic.release_control(control.name)

    # -- reporting ----------------------------------------------------------------------

    def _record_performance(self, snapshot: Snapshot, context: Context) -> None:
        interval = self.settings.performance_interval_s
        for running in context.events:
            event = running.event
            if not event.kind.on_site_import or snapshot.grid_w is None:
                continue
            bucket = self._interval.get(event.id)
            start = snapshot.now_s - (snapshot.now_s - event.begin_s) % interval
            if bucket is not None and bucket.start_s != start:
                self._close_interval(event, bucket)
                bucket = None
            if bucket is None:
                bucket = self._interval[event.id] = _Interval(start)
            bucket.actual_kw.append(snapshot.grid_w / 1000.0)
            bucket.limit_kw.append((running.limit_w or 0.0) / 1000.0)
            bucket.requested_kw.append(event.site_kw * event.ramp_fraction(snapshot.now_s))
        for event_id in [k for k in self._interval if k not in
                         {r.event.id for r in context.events}]:
            finished = self.book.events.get(event_id)
            if finished is not None:
                self._close_interval(finished, self._interval[event_id])
                if finished.kind is EventKind.REDUCTION:
                    self._settle(finished)
            del self._interval[event_id]

    def _close_interval(self, event: DrEvent, bucket: _Interval) -> None:
        start = bucket.start_s
        actual = float(np.mean(bucket.actual_kw))
        limit = float(np.mean(bucket.limit_kw))
        duration = max(0.0, min(self.settings.performance_interval_s, event.end_s - start))
        record: dict[str, Any] = {"event_id": event.id, "kind": event.kind,
                                  "interval_start": start, "duration_s": round(duration, 3),
                                  "actual_kw": round(actual, 3), "limit_kw": round(limit, 3)}
        if event.kind is EventKind.REDUCTION and event.baseline_kw is not None:
            record.update(baseline_kw=round(event.baseline_kw, 3),
                          baseline_method=event.baseline_method,
                          baseline_quality=event.baseline_quality,
                          target_kw=round(float(np.mean(bucket.requested_kw)), 3),
                          delivered_kw=round(event.baseline_kw - actual, 3))
            if event.reference_kw is not None:
                record.update(reference_kw=round(event.reference_kw, 3),
                              reduction_kw=round(event.reference_kw - actual, 3))
        self.performance.setdefault(event.id, []).append(record)
        if self.store is not None:
            self.store.record_performance(record)
        self._emit([Outgoing(streams.DR_PERFORMANCE,
                             {"ts": round(self.clock(), 3), **record})])

    def _settle(self, event: DrEvent) -> None:
        """The event's settlement estimate: stored, published, logged."""
        records = (self.store.performance(event.id) if self.store is not None
                   else self.performance.get(event.id, []))
        result = settle(event.id, event.site_kw, records, self.settings.settlement,
                        interval_s=self.settings.performance_interval_s,
                        baseline={"kw": event.baseline_kw, "method": event.baseline_method,
                                  "coverage": event.baseline_coverage,
                                  "quality": event.baseline_quality})
        if result is None:
            log.warning("event %s: no settlement estimate (no baseline)", event.id)
            return
        body = result.to_dict()
        self._pending_states[f"settlement:{event.id}"] = json.dumps(body)
        self._emit([Outgoing(streams.DR_SETTLEMENT,
                             {"ts": round(self.clock(), 3), **body})])
        log.info("event %s settled: declared %.1f kW, delivered %.1f kW (%.0f %%), "
                 "payment %.2f CNY, penalty %.2f CNY", event.id, result.declared_kw,
                 result.delivered_kw, 100 * result.response_ratio, result.payment_cny,
                 result.penalty_cny)

    def _event_message(self, kind: str, event_id: str, now: float, *, detail: str = "") -> None:
        body: dict[str, Any] = {"ts": round(now, 3), "type": kind, "id": event_id}
        event = self.book.events.get(event_id)
        if event is not None:
            body.update(kind=event.kind, target=event.target, value=event.value,
                        begin=event.begin_s, end=event.end_s, status=event.status)
            if event.baseline_kw is not None:
                body.update(baseline_kw=round(event.baseline_kw, 3),
                            baseline_method=event.baseline_method,
                            baseline_coverage=event.baseline_coverage,
                            baseline_quality=event.baseline_quality)
                if event.baseline_note:
                    body["baseline_note"] = event.baseline_note
            if event.reference_kw is not None:
                body["reference_kw"] = round(event.reference_kw, 3)
        if detail:
            body["detail"] = detail
        self._emit([Outgoing(streams.EVENTS, body)])


def _held_from_json(text: str | None) -> list[Actuator]:
    """Actuators a previous run recorded as held (fail-safe "gateway")."""
    if not text:
        return []
    try:
        return [Actuator(str(kind), str(name)) for kind, name in json.loads(text)]
    except (ValueError, TypeError):
        log.error("saved held-controls state unreadable: ignoring it")
        return []
