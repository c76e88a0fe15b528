"""The whole gateway process, assembled from a site file.

``async with assemble(site) as app: await app.gateway.run(stop, app.services)``

What runs does not depend on the uplink: the lines and their devices, the store (control
state, metering history), metering, the control loop with its safety strategies, the
OpenADR client (with an ``[openadr]`` section) and metrics (with a port) run whether or
not ``[uplink] enabled``. The MQTT uplink — the embedded broker when no broker is named,
the telemetry recorder, the publisher, signed commands — is added when it is enabled;
without it, messages meant for the uplink are not kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from controller import streams
from controller.broker import GATEWAY_USER, embedded_broker
from controller.channel import CommandChannel
from controller.commands import Verifier
from controller.config import UplinkSettings, uplink_settings
from controller.console.settings import ConsoleSettings, console_settings
from controller.control.loop import ControlLoop
from controller.control.plant import GatewayPlant
from controller.control.settings import control_settings
from controller.inbox import CommandInbox
from controller.metering import MeteringFeed, MeteringSettings, metering_settings
from controller.openadr import Ven, ven_for
from controller.planner import planner_for
from controller.platform import Uploader, uploader_for
from controller.runtime import Gateway, Service, with_serial_ports
from controller.sections import is_loopback
from controller.store import MQTT, Outgoing, Store
from controller.topics import Topics
from controller.uplink import Publisher, TelemetryRecorder, UplinkStats
from drivers.site import SiteSpec

log = logging.getLogger("pedf.app")


@dataclass
class App:
    site: SiteSpec
    gateway: Gateway
    settings: UplinkSettings
    inbox: CommandInbox
    stats: UplinkStats
    store: Store | None = None
    topics: Topics | None = None
    recorder: TelemetryRecorder | None = None
    commands: CommandChannel | None = None
    metering: MeteringFeed | None = None
    control: ControlLoop | None = None
    openadr: Ven | None = None  # the OpenADR VEN, with an [openadr] section
    platform: Uploader | None = None  # the city platform's uploader, with [platform]
    broker_address: tuple[str, int] | None = None
    services: list[tuple[str, Service]] = field(default_factory=list)


@contextlib.asynccontextmanager
async def assemble(site: SiteSpec, *, serial_ports: Mapping[str, str] | None = None,
                   settings: UplinkSettings | None = None,
                   wall_clock: Callable[[], float] = time.time,
                   console: ConsoleSettings | None = None) -> AsyncIterator[App]:
    """Build the gateway, the store, metering, control and, if enabled, the uplink
    (starting the embedded broker when no broker is configured) and the web console
    (``console``, else the site's ``[console]``). Raises OSError if the broker cannot
    start. ``wall_clock`` stamps readings (simulations pass their clock)."""
    gateway = Gateway(with_serial_ports(site, serial_ports or {}), wall_clock=wall_clock)
    settings = settings or uplink_settings(site)
    app = App(site, gateway, settings, CommandInbox(), UplinkStats())
    topics = Topics(settings.topic_prefix)
    store = Store(settings.store_path, quota_bytes=settings.quota_bytes,
                  synchronous=settings.synchronous, audit_max_rows=settings.audit_max_rows,
                  audit_max_age_s=settings.audit_max_age_s,
                  dead_letter_max_rows=settings.dead_letter_max_rows,
                  dead_letter_max_age_s=settings.dead_letter_max_age_s,
                  report_overflow=True, consumers=(MQTT,), stream_of_topic=topics.stream_of)
    app.store = store
    notify = asyncio.Event()
    app.topics = topics
    try:
        async with contextlib.AsyncExitStack() as stack:
            if settings.enabled:
                host, port = settings.host or settings.embedded_host, settings.port
                if settings.host is None:
                    password = await stack.enter_async_context(embedded_broker(
                        host, port, prefix=settings.topic_prefix, users=settings.broker_users))
                    log.info("embedded MQTT broker on %s:%d", host, port)
                    if not is_loopback(host):
                        log.warning("the embedded MQTT broker listens on %s, beyond this "
                                    "machine: %d user(s) may connect", host,
                                    len(settings.broker_users))
                    # The gateway is a client of its own broker, as its own user.
                    app.settings = dataclasses.replace(settings, username=GATEWAY_USER,
                                                       password=password)
                app.broker_address = (host, port)
                _wire_uplink(app, store, topics, notify, host, port)
            else:
                log.info("uplink disabled: control, metering and safety run; nothing is "
                         "published")
            metering = metering_settings(site)
            _wire_metering(app, store, notify, metering)
            _wire_control(app, store, notify, metering)
            if settings.metrics_port is not None:
                from controller.metrics import serve_metrics

                app.services.append(("metrics", lambda: serve_metrics(app)))
            console = console_settings(site) if console is None else console
            if console.enabled:
                from controller.console.server import serve_console

                app.services.append(("console", lambda: serve_console(
                    app, console, app.gateway.wall_clock)))
            yield app
    finally:
        store.close()


def _wire_uplink(app: App, store: Store, topics: Topics, notify: asyncio.Event, host: str,
                 port: int) -> None:
    settings, gateway = app.settings, app.gateway
    recorder = TelemetryRecorder(store, gateway.bus, notify, app.stats,
                                 health=lambda: _health(gateway),
                                 health_interval_s=settings.health_interval_s)
    commands = None
    if settings.hmac_key is not None or settings.ed25519_public_key_pem is not None:
        commands = CommandChannel(
            app.site, store, topics, app.inbox,
            Verifier(settings.hmac_key, settings.ed25519_public_key_pem),
            gateway.capability, app.stats, max_skew_s=settings.max_skew_s,
            replay_window_s=settings.replay_window_s,
            response_topic_prefix=settings.response_topic_prefix)
        app.services.append(("commands", commands.run))
    else:
        log.warning("no command key configured ([uplink.commands]): commands are refused")
    publisher = Publisher(settings, host, port, store, topics, notify, app.stats,
                          on_recorded=None if commands is None else commands.recorded.set,
                          decided=None if commands is None else commands.decided)
    app.recorder, app.commands = recorder, commands
    app.services += [("uplink recorder", recorder.run), ("uplink publisher", publisher.run)]
    if settings.home_assistant:
        from controller.homeassistant import discovery_hook

        publisher.on_connect.append(discovery_hook(app.site, topics))


def _wire_metering(app: App, store: Store, notify: asyncio.Event,
                   settings: MeteringSettings) -> None:
    uploader = uploader_for(app.site, store, settings.demand_window_s)
    if uploader is not None:  # the city platform: with or without MQTT
        app.platform = uploader
        app.services.append(("platform uploader", uploader.run))
    feed = MeteringFeed(app.site, store, app.gateway.bus,
                        streams.metering("window") if app.settings.enabled else None,
                        notify, settings, clock=app.gateway.wall_clock,
                        events=app.settings.enabled)
    app.metering = feed
    app.services.append(("metering", feed.run))


def _wire_control(app: App, store: Store, notify: asyncio.Event,
                  metering: MeteringSettings) -> None:
    control = control_settings(app.site)
    if not control.enabled:
        log.warning("[control] enabled = false: no safety strategies, no demand response")
        return
    uplink = app.settings.enabled

    def publish(messages: list[Outgoing]) -> None:
        if uplink:
            store.append(messages)
            notify.set()

    loop = ControlLoop(GatewayPlant(app.gateway), control, app.inbox, store, publish,
                       clock=app.gateway.wall_clock,
                       tariff=metering.tariff, bill=metering.bill,
                       window_s=metering.demand_window_s,
                       planner=planner_for(app.site, control, metering))
    app.inbox.on_submit.append(loop.wake)
    app.control = loop
    app.services.append(("control", loop.run))
    app.openadr = ven_for(app.site, loop)
    if app.openadr is not None:
        app.services.append(("openadr", app.openadr.run))


def _health(gateway: Gateway) -> dict[str, Any]:
    return {name: {k: v for k, v in dataclasses.asdict(h).items()
                   if k in ("state", "polls_ok", "polls_failed", "latency_ms", "last_error",
                            "writes_ok", "writes_failed")}
            for name, h in gateway.health().items()}
