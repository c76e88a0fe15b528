"""Prometheus metrics (``[uplink] metrics_port``): poll success and latency per device,
outbox depth, dropped messages, commands by result. Values are read at scrape time."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from controller.app import App

log = logging.getLogger("pedf.metrics")


class GatewayCollector(Collector):
    def __init__(self, app: App) -> None:
        self.app = app

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        app = self.app
        polls = CounterMetricFamily("pedf_polls", "Poll cycles by device and result",
                                    labels=["device", "result"])
        latency = GaugeMetricFamily("pedf_request_latency_seconds",
                                    "Mean Modbus round trip", labels=["device"])
        up = GaugeMetricFamily("pedf_device_up", "1 when the device answers", labels=["device"])
        for name, health in app.gateway.health().items():
            polls.add_metric([name, "ok"], health.polls_ok)
            polls.add_metric([name, "failed"], health.polls_failed)
            latency.add_metric([name], health.latency_ms / 1000.0)
            up.add_metric([name], 1.0 if health.state == "ok" else 0.0)
        yield from (polls, latency, up)
        if app.store is not None:
            waiting, stored = app.store.depth()
            yield GaugeMetricFamily("pedf_outbox_messages", "Messages waiting", value=waiting)
            yield GaugeMetricFamily("pedf_outbox_bytes", "Outbox bytes", value=stored)
            yield CounterMetricFamily("pedf_outbox_dropped", "Messages dropped by the quota",
                                      value=app.store.dropped_total)
        commands = CounterMetricFamily("pedf_commands", "Commands by result",
                                       labels=["result"])
        for result, count in app.stats.commands.items():
            commands.add_metric([result], count)
        yield commands
        yield GaugeMetricFamily("pedf_uplink_connected", "1 when connected to the broker",
                                value=1.0 if app.stats.connected else 0.0)


async def serve_metrics(app: App) -> None:
    """Serve /metrics on ``metrics_port`` until cancelled."""
    registry = CollectorRegistry()
    registry.register(GatewayCollector(app))
    port = app.settings.metrics_port
    assert port is not None
    server, thread = start_http_server(port, registry=registry)
    log.info("Prometheus metrics on :%d/metrics", port)
    try:
        await asyncio.Event().wait()
    finally:
        server.shutdown()
        thread.join(timeout=5)
