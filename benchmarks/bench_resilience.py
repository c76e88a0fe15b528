"""The uplink under attack and failure, measured the way issue 14 found it broken.

Everything runs for real: the simulated Jinan building (in this process), the gateway as
its own process (``pedf run``), a mosquitto of our own (``tests_support.Mosquitto``,
persistence on), operator and subscriber clients (aiomqtt; the subscriber is the tests'
``uplink_support.Collector``). The gateway is only seen from outside — through MQTT and
its store file — so this benchmark measures any version of it: run from a copy of an
older tree (``PYTHONPATH=. python -m benchmarks resilience`` there, with this file, its
``common.py`` and the test helpers copied in) to get the "before".

1. **Poison.** Six unsigned payloads of the three kinds that used to crash the publisher
   (``1e400`` in the params, 5,000 nested brackets, a 5,000-digit number), each sent once
   the previous one was answered or the gateway reconnected, then five valid signed
   commands right behind them; then :data:`WATCH_S` s of watching. Figures: how
   long telemetry went dark (gaps over 3 s between telemetry messages), reconnections
   (new retained ``online`` status messages), replies to the poison and to the valid
   commands.
2. **kill -9 during a command burst.** :data:`BURST` signed commands, the gateway killed
   (SIGKILL) once a tenth is answered, the rest sent meanwhile, the gateway restarted.
   Figures: commands never answered (waiting until no reply came for 15 s), commands
   answered twice (two distinct reply ``seq``\\ s), sequence numbers missing at the
   subscriber, and how long after the restart the last command was answered.
3. **Broker outage.** :data:`OUTAGE_S` s without the broker under steady telemetry.
   Figures: messages that arrived out of ``seq`` order within their topic, how long after
   the broker's return delivery resumed (the first message published after it), how long
   the backlog took, sequence numbers missing.
4. **Audit growth.** :data:`JUNK` rejected 65 KB payloads: how much the store file grew
   (between two clean stops of the gateway, so the WAL is folded in; free pages left by
   the earlier runs are reused first) and how much their audit rows hold.

Goals are the issue's: nothing dark, nothing lost, nothing unanswered or answered twice,
no message out of order within its topic, delivery within 5 s of the broker's return, the
audit bounded. Run: ``python -m benchmarks resilience`` (about 4 minutes).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import sqlite3
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt

from benchmarks.common import REPO, Results, helpers_of_the_tests, print_goals
from controller.commands import sign_hmac
from controller.operator import build_command
from drivers.site import load_site
from simulators.clock import ManualClock
from simulators.runner import SiteRunner
from simulators.sitefile import build_site

support = helpers_of_the_tests("tests_support")
uplink = helpers_of_the_tests("uplink_support")
PREFIX: str = uplink.PREFIX
KEY: bytes = uplink.KEY
START: float = uplink.START
WATCH_S = 60.0
BURST = 3000
OUTAGE_S = 70.0  # the old backoff's waits (1, 2 … 30 s) made the first try after it late
JUNK = 1000
DARK_GAP_S = 3.0
RESUME_GOAL_S = 5.0
AUDIT_GOAL_MB = 2.0
AUDIT_ROWS_GOAL_MB = 1.0  # a 512-byte prefix and a reason per row


@dataclass
class Bench:
    folder: Path
    broker: Any  # tests_support.Mosquitto
    site_file: Path
    state: Path
    log: Path
    process: asyncio.subprocess.Process | None = None  # the gateway of the session

    async def start_gateway(self) -> asyncio.subprocess.Process:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with self.log.open("ab") as output:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "controller.cli", "run", str(self.site_file), env=env,
                stderr=output, cwd=str(REPO))
        return self.process

    def next_seq(self) -> int:
        """The sequence number the gateway's next message gets (1 before any)."""
        if not self.state.exists():
            return 1
        return self.count("SELECT COALESCE(MAX(value), 1) FROM meta WHERE key = 'next_seq'")

    def waiting(self) -> set[int]:
        """Sequence numbers still in the outbox: not lost, sent at the next start."""
        with contextlib.closing(sqlite3.connect(self.state)) as db:
            return {int(row[0]) for row in db.execute("SELECT seq FROM outbox")}

    def count(self, sql: str) -> int:
        with contextlib.closing(sqlite3.connect(self.state)) as db:
            return int(db.execute(sql).fetchone()[0])

    def store_bytes(self) -> int:
        """The store's files (the database, and its WAL while a gateway has it open)."""
        return sum(path.stat().st_size for path in self.state.parent.glob(
            self.state.name + "*"))

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[tuple[Any, int]]:
        """A subscriber to everything under the prefix (``uplink_support.Collector``)
        and the gateway, started and publishing; yields the subscriber and the first
        sequence number of the session. The gateway is stopped (SIGTERM) at the end."""
        async with uplink.collecting(self.broker.port, f"{PREFIX}/#",
                                     client_id="bench-watcher") as collector:
            first = self.next_seq()
            await self.start_gateway()
            try:
                await until(lambda: collector.on(f"{PREFIX}/telemetry/grid_meter"), 60)
                yield collector, first
            finally:
                if self.process is not None:
                    await stop(self.process)


async def until(condition: Callable[[], object], timeout_s: float) -> bool:
    """Wait for ``condition()`` at most ``timeout_s``; whether it came true (a benchmark
    records what happened instead of failing)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def quiet_for(count: Callable[[], int], quiet_s: float, timeout_s: float) -> None:
    """Until ``count()`` has not changed for ``quiet_s`` (at most ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    last, since = count(), time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - since < quiet_s:
        await asyncio.sleep(0.2)
        if count() != last:
            last, since = count(), time.monotonic()


async def stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), 30)
        except TimeoutError:
            process.kill()
            await process.wait()


def signed(command_id: str, lifetime_s: float = 3600.0) -> bytes:
    return json.dumps(sign_hmac(build_command("release", params={}, lifetime_s=lifetime_s,
                                              command_id=command_id), KEY)).encode()


def poison() -> list[bytes]:
    params = (b'{"id":"poison-%d","type":"shed","target":"site","issued_at":1795474000,'
              b'"expires_at":1795474960,"params":{"kw":1e400,"duration_s":900},'
              b'"signature":{"alg":"hmac-sha256","value":"' + b"0" * 64 + b'"}}')
    return [params % 1, b"[" * 5000 + b"]" * 5000,
            b'{"id":"poison-3","params":{"kw":' + b"9" * 5000 + b"}}",
            params % 4, b"[" * 5000 + b"]" * 5000,
            b'{"id":"poison-6","params":{"kw":' + b"9" * 5000 + b"}}"]


async def publish_all(port: int, payloads: list[bytes]) -> None:
    async with aiomqtt.Client("127.0.0.1", port, identifier="bench-operator",
                              protocol=aiomqtt.ProtocolVersion.V5) as client:
        for payload in payloads:
            await client.publish(f"{PREFIX}/commands", payload, qos=1)


def arrivals(collector: Any, topic: str = "") -> list[tuple[float, str, dict[str, Any]]]:
    """(arrival time, topic, body) of what ``collector`` got, on topics starting with
    ``topic``."""
    return [(at, name, body) for at, (name, body) in zip(collector.arrived,
                                                          collector.messages, strict=True)
            if name.startswith(topic)]


def answered_or_back(collector: Any, online: Callable[[], int]) -> Callable[[], bool]:
    """A condition: a reply came, or the gateway reconnected, since it was made."""
    replies, reconnected = len(collector.on(f"{PREFIX}/replies")), online()

    def condition() -> bool:
        return len(collector.on(f"{PREFIX}/replies")) > replies or online() > reconnected
    return condition


def dark_seconds(times: list[float], start: float, end: float) -> float:
    """Time in [start, end] inside gaps longer than DARK_GAP_S between telemetry."""
    marks = [start, *sorted(t for t in times if start <= t <= end), end]
    return sum(b - a for a, b in itertools.pairwise(marks) if b - a > DARK_GAP_S)


# -- the runs ---------------------------------------------------------------------------


async def run_poison(bench: Bench, results: Results) -> None:
    print("\n-- 1. poison: 6 poison payloads, each once the gateway answered or came back, "
          f"then 5 valid commands; {WATCH_S:g} s watched after them")
    async with bench.session() as (collector, _):
        started = time.monotonic()

        def online() -> int:
            return sum(b.get("state") == "online" for b in collector.on(f"{PREFIX}/status"))

        online_before = online()
        for payload in poison():  # as an attacker would: one more each time it is back
            seen = answered_or_back(collector, online)
            await publish_all(bench.broker.port, [payload])
            await until(seen, 120)
        valid = [f"valid-{n}-{time.time_ns()}" for n in range(5)]
        await publish_all(bench.broker.port, [signed(v) for v in valid])
        await asyncio.sleep(WATCH_S)  # a fixed window: what it measures is the window
        end = time.monotonic()
    replies = collector.on(f"{PREFIX}/replies")
    answered = {str(b.get("command_id")) for b in replies}
    telemetry = [at for at, _, _ in arrivals(collector, f"{PREFIX}/telemetry/")]
    dark = dark_seconds(telemetry, started, end)
    reconnects = online() - online_before
    valid_answered = sum(v in answered for v in valid)
    poison_answered = len(replies) - valid_answered
    print(f"  telemetry dark {dark:.0f} of {end - started:.0f} s; {reconnects} reconnections; "
          f"replies: {valid_answered}/5 valid, {poison_answered}/6 poison")
    results.figures.update({"poison_dark_s": dark, "poison_window_s": end - started,
                            "poison_reconnects": reconnects,
                            "poison_valid_answered": valid_answered,
                            "poison_answered": poison_answered})
    results.goal("poison: telemetry never dark (no gap > 3 s)", dark == 0,
                 f"dark {dark:.0f} of {end - started:.0f} s")
    results.goal("poison: the 5 valid commands behind it answered", valid_answered == 5,
                 f"{valid_answered}/5")
    results.goal("poison: every poison payload rejected with a reply", poison_answered == 6,
                 f"{poison_answered}/6")


async def run_kill(bench: Bench, results: Results) -> None:
    print(f"\n-- 2. kill -9 during a burst of {BURST} signed commands, then a restart")
    replies = f"{PREFIX}/replies"
    ids = [f"burst-{time.time_ns()}-{n:04d}" for n in range(BURST)]
    async with bench.session() as (collector, first):
        def answered() -> set[str]:
            return {str(b.get("command_id")) for b in collector.on(replies)} & set(ids)

        sending = asyncio.create_task(publish_all(bench.broker.port, [signed(i) for i in ids]))
        await until(lambda: len(answered()) >= BURST // 10, 120)
        assert bench.process is not None
        bench.process.send_signal(signal.SIGKILL)
        await bench.process.wait()
        killed = time.monotonic()
        before_kill = len(answered())
        await sending  # the rest is at the broker, for the gateway's session
        await bench.start_gateway()
        restarted = time.monotonic()
        await until(lambda: len(answered()) == BURST, 120)
        await quiet_for(lambda: len(collector.on(replies)), 15.0, 120)
        first_reply: dict[str, float] = {}  # a late duplicate delivery is not an answer
        for at, _, body in arrivals(collector, replies):
            first_reply.setdefault(str(body.get("command_id")), at)
        last_reply = max((first_reply[i] for i in ids if i in first_reply), default=killed)
    last = bench.next_seq() - 1
    seqs_by_id: dict[str, set[int]] = defaultdict(set)
    for body in collector.on(replies):
        if body.get("command_id") in set(ids):
            seqs_by_id[str(body["command_id"])].add(int(body["seq"]))
    unanswered = BURST - len(seqs_by_id)
    twice = sum(1 for seqs in seqs_by_id.values() if len(seqs) > 1)
    missing = len(set(range(first, last + 1)) - set(collector.seqs()) - bench.waiting())
    took = last_reply - restarted
    print(f"  {before_kill} answered before the kill; after the restart: {unanswered} never "
          f"answered, {twice} answered twice; {missing} of {last - first + 1} seqs missing; "
          f"the last command answered {took:.1f} s after the restart ({restarted - killed:.0f} s "
          f"after the kill, the burst's publishing done)")
    results.figures.update({"kill_commands": BURST, "kill_answered_before": before_kill,
                            "kill_unanswered": unanswered, "kill_answered_twice": twice,
                            "kill_missing_seqs": missing, "kill_seqs": last - first + 1,
                            "kill_all_answered_after_restart_s": took})
    results.goal(f"kill -9: every one of {BURST} commands answered", unanswered == 0,
                 f"{unanswered} unanswered")
    results.goal("kill -9: no command answered twice", twice == 0, f"{twice} twice")
    results.goal("kill -9: no sequence number missing", missing == 0,
                 f"{missing} of {last - first + 1} missing")


async def run_outage(bench: Bench, results: Results) -> None:
    print(f"\n-- 3. broker outage of {OUTAGE_S:g} s under steady telemetry")
    async with bench.session() as (collector, first):
        await until(lambda: len(collector.on(f"{PREFIX}/telemetry/grid_meter")) >= 3, 60)
        bench.broker.stop()
        await asyncio.sleep(OUTAGE_S)  # the outage is the experiment
        first_new = bench.next_seq()
        bench.broker.start()
        back = time.monotonic()
        await until(lambda: any(s >= first_new for s in collector.seqs()), 120)
        resumed = min((at for at, _, body in arrivals(collector)
                       if isinstance(body.get("seq"), int) and body["seq"] >= first_new),
                      default=float("nan")) - back
        target = set(range(first, first_new))
        await until(lambda: target <= set(collector.seqs()), 180)
        drained = time.monotonic() - back
    late = len(uplink.out_of_order(collector.messages))
    missing = len(set(range(first, first_new)) - set(collector.seqs()))
    print(f"  delivery resumed {resumed:.1f} s after the broker's return; backlog of "
          f"{first_new - first} seqs delivered after {drained:.1f} s; {late} out of order "
          f"within their topic; {missing} missing")
    results.figures.update({"outage_resume_s": resumed, "outage_drain_s": drained,
                            "outage_out_of_order": late, "outage_missing_seqs": missing})
    results.goal(f"outage: delivery resumes within {RESUME_GOAL_S:g} s of the broker's return",
                 resumed <= RESUME_GOAL_S, f"{resumed:.1f} s")
    results.goal("outage: in seq order within each topic", late == 0, f"{late} out of order")
    results.goal("outage: no sequence number missing", missing == 0, f"{missing} missing")


async def run_audit(bench: Bench, results: Results) -> None:
    print(f"\n-- 4. {JUNK} rejected 65 KB payloads")
    before = bench.store_bytes()  # no gateway runs: the database alone
    async with bench.session() as (collector, _):
        junk = [b'{"id":"junk-%d","pad":"' % n + b"x" * 65_000 + b'"}' for n in range(JUNK)]
        replies = len(collector.on(f"{PREFIX}/replies"))
        await publish_all(bench.broker.port, junk)
        await until(lambda: len(collector.on(f"{PREFIX}/replies")) >= replies + JUNK, 120)
    grown = (bench.store_bytes() - before) / 1e6  # stopped cleanly: the WAL is folded in
    audit = bench.count(f"SELECT COALESCE(SUM(LENGTH(payload) + LENGTH(reason)), 0) FROM "
                        f"(SELECT payload, reason FROM audit ORDER BY id DESC LIMIT {JUNK})") / 1e6
    print(f"  the store grew {grown:.2f} MB (free pages of earlier runs are reused); their "
          f"audit rows hold {audit:.2f} MB")
    results.figures.update({"audit_growth_mb": grown, "audit_rows_mb": audit})
    results.goal(f"audit: {JUNK} rejected 65 KB payloads add <= {AUDIT_GOAL_MB:g} MB",
                 grown <= AUDIT_GOAL_MB, f"{grown:.2f} MB")
    results.goal(f"audit: their rows hold <= {AUDIT_ROWS_GOAL_MB:g} MB",
                 audit <= AUDIT_ROWS_GOAL_MB, f"{audit:.2f} MB")


async def run_all(folder: Path, results: Results) -> None:
    site_path = support.example_on_free_ports(folder)
    state = folder / "state.sqlite"
    broker = support.Mosquitto(folder / "broker").start()
    try:
        site_file = uplink.site_file_for_run(site_path, broker.port, state)
        spec = load_site(site_file)
        bench = Bench(folder, broker, site_file, state, folder / "gateway.log")
        async with SiteRunner(build_site(spec, start_s=START), ManualClock(START)):
            for part in (run_poison, run_kill, run_outage, run_audit):
                await part(bench, results)
    finally:
        broker.stop()


def main() -> Results:
    started = time.perf_counter()
    results = Results()
    import controller

    print(f"  gateway code: {Path(controller.__file__).parent}")
    with tempfile.TemporaryDirectory(prefix="pedf-bench-resilience-") as name:
        asyncio.run(run_all(Path(name), results))
    print(f"\n  (benchmark took {time.perf_counter() - started:.0f} s)")
    return results


if __name__ == "__main__":
    print_goals(main().goals)
