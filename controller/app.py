"""The whole gateway process: devices, store, uplink, broker — assembled from a site file.

``async with assemble(site) as app: await app.gateway.run(stop, app.services)``
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

from controller.commands import Verifier
from controller.config import UplinkSettings, uplink_settings
from controller.control.loop import ControlLoop
from controller.control.plant import GatewayPlant
from controller.control.settings import control_settings
from controller.inbox import CommandInbox
from controller.metering import MeteringFeed, metering_settings
from controller.openadr import Ven, ven_for
from controller.runtime import Gateway, Service, with_serial_ports
from controller.store import Outgoing, Store
from controller.uplink import (
    CommandChannel,
    Publisher,
    TelemetryRecorder,
    Topics,
    UplinkStats,
    embedded_broker,
)
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
    broker_address: tuple[str, int] | None = None
    services: list[tuple[str, Service]] = field(default_factory=list)


@contextlib.asynccontextmanager
async def assemble(site: SiteSpec, *, serial_ports: Mapping[str, str] | None = None,
                   settings: UplinkSettings | None = None,
                   wall_clock: Callable[[], float] = time.time) -> AsyncIterator[App]:
    """Build the gateway and, if enabled, the store, metering and uplink (starting the
    embedded broker when no broker is configured). Raises OSError if the broker cannot
    start. ``wall_clock`` stamps readings (simulations pass their clock)."""
    gateway = Gateway(with_serial_ports(site, serial_ports or {}), wall_clock=wall_clock)
    settings = settings or uplink_settings(site)
    app = App(site, gateway, settings, CommandInbox(), UplinkStats())
    if not settings.enabled:
        log.info("uplink disabled")
        yield app
        return
    store = Store(settings.store_path, quota_bytes=settings.quota_bytes,
                  synchronous=settings.synchronous)
    try:
        async with contextlib.AsyncExitStack() as stack:
            host, port = settings.host or settings.embedded_host, settings.port
            if settings.host is None:
                await stack.enter_async_context(embedded_broker(host, port))
                log.info("embedded MQTT broker on %s:%d", host, port)
            app.broker_address = (host, port)
            _wire_uplink(app, store, host, port)
            yield app
    finally:
        store.close()


def _wire_uplink(app: App, store: Store, host: str, port: int) -> None:
    settings, gateway = app.settings, app.gateway
    topics = Topics(settings.topic_prefix)
    notify = asyncio.Event()
    recorder = TelemetryRecorder(store, topics, gateway.bus, notify, app.stats,
                                 health=lambda: _health(gateway),
                                 health_interval_s=settings.health_interval_s)
    commands = None
    if settings.hmac_key is not None or settings.ed25519_public_key_pem is not None:
        commands = CommandChannel(
            app.site, store, topics, app.inbox,
            Verifier(settings.hmac_key, settings.ed25519_public_key_pem),
            gateway.capability, app.stats, max_skew_s=settings.max_skew_s,
            replay_window_s=settings.replay_window_s)
        commands.forget_old()
    else:
        log.warning("no command key configured ([uplink.commands]): commands are refused")
    publisher = Publisher(settings, host, port, store, topics, notify, app.stats, commands)
    settings_metering = metering_settings(app.site)
    metering = MeteringFeed(app.site, store, gateway.bus, topics.metering("window"), notify,
                            settings_metering, clock=gateway.wall_clock)
    app.store, app.topics, app.recorder, app.commands = store, topics, recorder, commands
    app.metering = metering
    app.services += [("uplink recorder", recorder.run), ("uplink publisher", publisher.run),
                     ("metering", metering.run)]
    control = control_settings(app.site)
    if control.enabled:
        def publish(messages: list[Outgoing]) -> None:
            store.append(messages)
            notify.set()

        loop = ControlLoop(GatewayPlant(gateway), control, app.inbox, store, publish,
                           topics.prefix, clock=gateway.wall_clock,
                           tariff=settings_metering.tariff, bill=settings_metering.bill,
                           window_s=settings_metering.demand_window_s)
        app.inbox.on_submit.append(loop.wake)
        app.control = loop
        app.services.append(("control", loop.run))
        app.openadr = ven_for(app.site, loop)
        if app.openadr is not None:
            app.services.append(("openadr", app.openadr.run))
    if settings.home_assistant:
        from controller.homeassistant import discovery_hook

        publisher.on_connect.append(discovery_hook(app.site, topics))
    if settings.metrics_port is not None:
        from controller.metrics import serve_metrics

        app.services.append(("metrics", lambda: serve_metrics(app)))


def _health(gateway: Gateway) -> dict[str, Any]:
    return {name: {k: v for k, v in dataclasses.asdict(h).items()
                   if k in ("state", "polls_ok", "polls_failed", "latency_ms", "last_error",
                            "writes_ok", "writes_failed")}
            for name, h in gateway.health().items()}
