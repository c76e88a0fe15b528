"""A gateway whose store cannot write (disk full, read-only file system) keeps polling,
controlling and publishing what it has; nothing crashes; commands wait unacknowledged
and are answered once the store can write again; the loss is reported."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt
from tests_support import Mosquitto, eventually
from uplink_support import (
    PREFIX,
    Collector,
    building,
    collecting,
    connected,
    gateway,
    publish_command,
    settings_for,
    signed_command,
)

from controller.app import App
from controller.store import Store


def set_pragma(store: Store, pragma: str) -> None:
    """A real SQLite condition on the store's own connection (see test_store)."""
    with store._lock:
        store._db.execute(f"PRAGMA {pragma}").fetchall()


def fill(store: Store) -> None:
    """No page more than now, and the free ones used up: the database is full (as on a
    full disk, pages the publisher frees let a few writes through now and then)."""
    set_pragma(store, "max_page_count = 1")
    size = 1 << 22
    while size >= 512:
        store.set_state(f"filler-{size}", "x" * size)
        size //= 2


@contextlib.asynccontextmanager
async def running(tmp_path: Path) -> AsyncIterator[tuple[Any, Collector, App, Store]]:
    """mosquitto, the building, a subscriber and the connected gateway."""
    broker = Mosquitto(tmp_path / "broker").start()
    try:
        async with building(tmp_path) as (spec, runner), \
                collecting(broker.port, f"{PREFIX}/#") as collector, \
                gateway(spec, runner, settings_for(spec, tmp_path, broker.port)) as app:
            assert app.store is not None
            await connected(app)
            yield broker, collector, app, app.store
    finally:
        broker.stop()


async def lost(store: Store) -> None:
    await eventually(lambda: store.faults.lost_messages > 0, timeout_s=20,
                     what=lambda: f"telemetry lost ({store.faults.as_dict()})")


async def test_a_read_only_store_takes_nothing_down(tmp_path: Path) -> None:
    async with running(tmp_path) as (broker, collector, app, store):
        set_pragma(store, "query_only = 1")  # as on a file system remounted read-only
        await lost(store)
        command = signed_command("release", command_id="during-the-fault")
        async with aiomqtt.Client("127.0.0.1", broker.port, identifier="operator",
                                  protocol=aiomqtt.ProtocolVersion.V5) as client:
            await publish_command(client, json.dumps(command).encode())
        await still_running(app)
        assert app.stats.connected
        assert not collector.on(f"{PREFIX}/replies")  # not recorded: not answered
        set_pragma(store, "query_only = 0")
        await eventually(lambda: collector.on(f"{PREFIX}/replies"), timeout_s=20,
                         what="the command answered")
        report = await reported(collector)
        assert store.faults.state == "ok"
    (reply,) = {body["seq"]: body for body in collector.on(f"{PREFIX}/replies")}.values()
    assert (reply["command_id"], reply["status"]) == ("during-the-fault", "accepted")
    assert "read-only" in str(report["last_error"])


async def test_a_full_disk_during_an_outage_takes_nothing_down(tmp_path: Path) -> None:
    """The broker is away, the outbox grows, the disk fills: messages are lost and
    counted; once there is room and the broker is back, the loss is reported."""
    async with running(tmp_path) as (broker, collector, app, store):
        broker.stop()
        fill(store)
        await lost(store)
        assert store.faults.state == "disk full"
        await still_running(app)
        set_pragma(store, "max_page_count = 1073741823")  # room again
        broker.start()
        report = await reported(collector)
    assert "disk full" in str(report["last_error"])


async def still_running(app: App) -> None:
    """Polling and the control loop go on."""
    control = app.control
    assert control is not None
    polls, cycles = app.gateway.health()["grid_meter"].polls_ok, control.cycles
    await eventually(lambda: app.gateway.health()["grid_meter"].polls_ok > polls + 2,
                     what="polling going on")
    await eventually(lambda: control.cycles > cycles + 2, what="control going on")


async def reported(collector: Collector) -> dict[str, Any]:
    """The ``store_fault`` event, with how many messages were lost."""
    def reports() -> list[dict[str, Any]]:
        return [b for b in collector.on(f"{PREFIX}/events") if b.get("type") == "store_fault"]

    report: dict[str, Any] = (await eventually(reports, timeout_s=20,
                                               what="the loss reported"))[0]
    assert report["lost"] > 0
    return report
