"""Acceptance (issue 14): kill -9 the gateway during a burst of 3,000 signed commands,
restart it; every command gets exactly one reply, and no sequence number is missing.

The gateway runs as a real process (``pedf run``) against a real mosquitto with
persistence and the simulated building. A command counts as answered once by distinct
reply ``seq``: a reply whose PUBACK was lost in the kill is delivered again with the same
``seq`` (at least once; receivers remove duplicates by ``seq``), which is not a second
reply. The figures are printed (``pytest -s``) and measured in ``bench_resilience``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import aiomqtt
from tests_support import Mosquitto, eventually
from uplink_support import (
    PREFIX,
    building,
    collecting,
    out_of_order,
    signed_command,
    site_file_for_run,
)

COMMANDS = 3000


def count(state: Path, sql: str) -> int:
    with contextlib.closing(sqlite3.connect(state)) as db:
        return int(db.execute(sql).fetchone()[0])


async def test_kill_9_during_a_command_burst_loses_no_command_and_no_seq(
        tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "broker").start()
    state = tmp_path / "state.sqlite"
    log = tmp_path / "gateway.log"
    try:
        async with building(tmp_path) as (spec, _runner), \
                collecting(broker.port, f"{PREFIX}/#") as collector:
            run = [sys.executable, "-m", "controller.cli", "run",
                   str(site_file_for_run(spec.file, broker.port, state))]
            env = {**os.environ, "PYTHONUNBUFFERED": "1"}
            with log.open("ab") as output:
                first = await asyncio.create_subprocess_exec(*run, env=env, stderr=output)
            await eventually(lambda: collector.on(f"{PREFIX}/telemetry/grid_meter"),
                             timeout_s=30, what="the gateway publishing")
            commands = [signed_command("release", command_id=f"burst-{n:04d}",
                                       lifetime_s=3600) for n in range(COMMANDS)]
            replies = f"{PREFIX}/replies"

            async def burst() -> None:
                async with aiomqtt.Client("127.0.0.1", broker.port, identifier="operator",
                                          protocol=aiomqtt.ProtocolVersion.V5) as client:
                    for command in commands:
                        await client.publish(f"{PREFIX}/commands",
                                             json.dumps(command).encode(), qos=1)

            sending = asyncio.create_task(burst())
            await eventually(lambda: len(collector.on(replies)) >= COMMANDS // 10,
                             timeout_s=60, what="the gateway answering the burst")
            first.send_signal(signal.SIGKILL)  # mid-burst: no chance to flush anything
            await first.wait()
            killed_at = time.monotonic()
            answered_before = len({b["command_id"] for b in collector.on(replies)})
            recorded = count(state, "SELECT COUNT(*) FROM inbound")
            await sending  # the rest waits at the broker for the gateway's session
            with log.open("ab") as output:
                second = await asyncio.create_subprocess_exec(*run, env=env, stderr=output)

            def unanswered() -> set[str]:
                return {c["id"] for c in commands} - {
                    str(b["command_id"]) for b in collector.on(replies)}

            await eventually(lambda: not unanswered(), timeout_s=180,
                             what=lambda: f"{len(unanswered())} commands without a reply")
            all_answered_s = time.monotonic() - killed_at
            await eventually(lambda: count(state, "SELECT COUNT(*) FROM inbound") == 0,
                             timeout_s=30, what="nothing left to decide")
            second.send_signal(signal.SIGTERM)
            assert await second.wait() == 0, log.read_text()[-3000:]
            last = count(state, "SELECT value FROM meta WHERE key = 'next_seq'") - 1
            with contextlib.closing(sqlite3.connect(state)) as db:  # written at the stop:
                waiting = {int(row[0]) for row in db.execute("SELECT seq FROM outbox")}
            assert all(seq > last - 100 for seq in waiting)  # sent at the next start

            def missing() -> set[int]:
                return set(range(1, last + 1)) - set(collector.seqs()) - waiting

            await eventually(lambda: not missing(), timeout_s=30,
                             what=lambda: f"{len(missing())} seqs missing, e.g. "
                                          f"{sorted(missing())[:5]}")
        # Exactly one reply per command: one distinct reply seq per command id.
        seqs_by_command: dict[str, set[int]] = defaultdict(set)
        for body in collector.on(replies):
            seqs_by_command[str(body["command_id"])].add(int(body["seq"]))
        assert {c["id"] for c in commands} <= set(seqs_by_command)
        twice = {cid: seqs for cid, seqs in seqs_by_command.items() if len(seqs) > 1}
        assert not twice, f"{len(twice)} commands answered twice, e.g. {list(twice.items())[:3]}"
        assert out_of_order(collector.messages) == []
        statuses = Counter(b["status"] for b in collector.on(replies))
        delivered = Counter(collector.seqs())
        print(f"\nkill -9 during {COMMANDS} commands: {answered_before} answered before the "
              f"kill, {recorded} recorded and not yet decided at the kill; all answered "
              f"{all_answered_s:.1f} s after it; replies {dict(statuses)}; seq 1–{last} "
              f"complete, {sum(n - 1 for n in delivered.values())} delivered twice "
              f"(same seq)")
    finally:
        broker.stop()
