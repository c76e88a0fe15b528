"""Prometheus metrics (``[uplink] metrics_port``): poll success, a latency histogram and
the last successful poll per device; the site's power flows, the battery's state of
charge and every device's energy counters; outbox depth, dropped and dead-lettered
messages, store faults, commands by result; ``pedf_build_info``. Values are read at
scrape time.

The endpoint listens on ``metrics_host`` (127.0.0.1 unless configured); with
``metrics_username`` and ``metrics_password_file`` it asks for HTTP basic auth (then
anything else gets 401). Elsewhere than on loopback the settings require auth, and the
address is logged as a warning."""

from __future__ import annotations

import asyncio
import base64
import hmac
import logging
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
)
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.registry import Collector

from controller.sections import is_loopback
from controller.view import capability, site_flows

if TYPE_CHECKING:
    from controller.app import App

log = logging.getLogger("pedf.metrics")


class GatewayCollector(Collector):
    def __init__(self, app: App) -> None:
        self.app = app

    def collect(self) -> Iterator[Metric]:
        app = self.app
        yield InfoMetricFamily("pedf_build", "The gateway's software and site",
                               value={"version": _version(), "site": app.site.site_id})
        polls = CounterMetricFamily("pedf_polls", "Poll cycles by device and result",
                                    labels=["device", "result"])
        latency = HistogramMetricFamily("pedf_request_latency_seconds",
                                        "Request round trips (every exchange on the line)",
                                        labels=["device"])
        up = GaugeMetricFamily("pedf_device_up", "1 when the device answers", labels=["device"])
        last_ok = GaugeMetricFamily("pedf_device_last_success_timestamp_seconds",
                                    "Unix time of the device's last successful poll",
                                    labels=["device"])
        for name, health in app.gateway.health().items():
            polls.add_metric([name, "ok"], health.polls_ok)
            polls.add_metric([name, "failed"], health.polls_failed)
            latency.add_metric([name], health.latency.cumulative(), health.latency.sum_s)
            up.add_metric([name], 1.0 if health.state == "ok" else 0.0)
            if health.last_ok_wall is not None:
                last_ok.add_metric([name], health.last_ok_wall)
        yield from (polls, latency, up, last_ok)
        yield from site_metrics(app)
        if app.store is not None:
            store = app.store
            waiting, stored = store.depth()
            yield GaugeMetricFamily("pedf_outbox_messages", "Messages waiting", value=waiting)
            yield GaugeMetricFamily("pedf_outbox_bytes", "Outbox bytes", value=stored)
            yield CounterMetricFamily("pedf_outbox_dropped", "Messages dropped by the quota",
                                      value=store.dropped_total)
            yield GaugeMetricFamily("pedf_outbox_dead_letters",
                                    "Messages that can never be published",
                                    value=store.dead_letter_count())
            yield GaugeMetricFamily("pedf_store_writable",
                                    "1 unless the disk is full, read-only or failing",
                                    value=1.0 if store.faults.state == "ok" else 0.0)
            yield CounterMetricFamily("pedf_store_lost_messages",
                                      "Messages lost to storage faults",
                                      value=store.faults.lost_messages)
            yield GaugeMetricFamily("pedf_commands_waiting",
                                    "Commands recorded, not yet decided",
                                    value=store.inbound_depth())
        commands = CounterMetricFamily("pedf_commands", "Commands by result",
                                       labels=["result"])
        for result, count in app.stats.commands.items():
            commands.add_metric([result], count)
        yield commands
        yield GaugeMetricFamily("pedf_uplink_connected", "1 when connected to the broker",
                                value=1.0 if app.stats.connected else 0.0)


Metric = GaugeMetricFamily | CounterMetricFamily | HistogramMetricFamily | InfoMetricFamily

#: Energy capabilities exposed as counters: capability -> direction label.
ENERGY_COUNTERS = {"import_wh": "import", "export_wh": "export", "energy_wh": "total"}


def site_metrics(app: App) -> Iterator[Metric]:
    """The site's power flows (W, from the latest good readings; a flow not known now is
    left out), the battery's state of charge, and each device's energy counters (Wh)."""
    site, latest = app.site, app.gateway.bus.latest
    flows = site_flows(site, latest)
    power = GaugeMetricFamily("pedf_site_power_watts",
                              "Site power flows (grid: + import; battery: + discharge)",
                              labels=["flow"])
    for flow, kw in (("grid", flows.grid_kw), ("pv", flows.pv_kw),
                     ("battery", flows.battery_kw), ("heat_pump", flows.heat_pump_kw),
                     ("dc_bus", flows.dc_bus_kw), ("loads_switched", flows.switched_kw)):
        if kw is not None:
            power.add_metric([flow], kw * 1000.0)
    soc = GaugeMetricFamily("pedf_battery_soc_percent", "Battery state of charge",
                            labels=["device"])
    energy = CounterMetricFamily("pedf_energy_watt_hours",
                                 "Energy registers of the devices", labels=["device",
                                                                            "direction"])
    for name, device in site.devices.items():
        if device.device_map.kind == "battery" and \
                (value := capability(site, latest, name, "soc_pct")) is not None:
            soc.add_metric([name], value)
        for capability_name, direction in ENERGY_COUNTERS.items():
            value = capability(site, latest, name, capability_name)
            if value is not None:
                energy.add_metric([name, direction], value)
    yield from (power, soc, energy)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pedf-toolkit")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "unknown"


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not worth a log line."""


WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def with_basic_auth(wsgi: WsgiApp, username: str, password: str) -> WsgiApp:
    """``wsgi`` behind HTTP basic auth: anything without these credentials gets 401."""
    expected = base64.b64encode(f"{username}:{password}".encode()).decode()

    def guarded(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        given = environ.get("HTTP_AUTHORIZATION", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() == "basic" and hmac.compare_digest(token.strip().encode(),
                                                             expected.encode()):
            return wsgi(environ, start_response)
        start_response("401 Unauthorized", [("WWW-Authenticate", 'Basic realm="pedf"'),
                                            ("Content-Type", "text/plain")])
        return [b"authentication required\n"]

    return guarded


def start_server(host: str, port: int, wsgi: WsgiApp) -> tuple[WSGIServer, threading.Thread]:
    """Serve ``wsgi`` on ``host:port`` (IPv4 or IPv6) in a daemon thread. Raises
    OSError."""
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    server_class = type("MetricsServer", (ThreadingWSGIServer,), {"address_family": family})
    server: WSGIServer = make_server(host, port, wsgi, server_class, handler_class=_Quiet)
    thread = threading.Thread(target=server.serve_forever, name="metrics", daemon=True)
    thread.start()
    return server, thread


async def serve_metrics(app: App) -> None:
    """Serve /metrics on ``metrics_host:metrics_port`` until cancelled."""
    registry = CollectorRegistry()
    registry.register(GatewayCollector(app))
    settings = app.settings
    port, host = settings.metrics_port, settings.metrics_host
    assert port is not None
    wsgi: WsgiApp = make_wsgi_app(registry)
    if settings.metrics_username is not None and settings.metrics_password is not None:
        wsgi = with_basic_auth(wsgi, settings.metrics_username, settings.metrics_password)
    server, thread = start_server(host, port, wsgi)
    if is_loopback(host):
        log.info("Prometheus metrics on http://%s:%d/metrics", host, port)
    else:
        log.warning("Prometheus metrics on http://%s:%d/metrics, beyond this machine "
                    "(basic auth)", host, port)
    try:
        await asyncio.Event().wait()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
