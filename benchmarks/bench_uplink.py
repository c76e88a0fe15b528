"""The uplink: telemetry through the SQLite outbox to mosquitto vs a bare aiomqtt loop.

The issue's benchmark: *telemetry messages/s through the outbox to mosquitto vs a bare
aiomqtt publish loop to the same broker (goal ≥ 0.5×), and the outbox's cost per message.*
Everything is measured side by side in this one run against one mosquitto of our own
(``tests/tests_support.Mosquitto``: a free port, persistence on, like the tests). The
machine is shared and noisy: read the ratios and the medians, not single figures; nothing
here is asserted.

Every message is the same realistic telemetry body (``controller.uplink.telemetry_body``
of a DTSU666 grid meter's realtime points, about 450 bytes with its ``seq``), on the topic
``<prefix>/telemetry/<device>`` of the demo site's nine devices in turn; QoS 1, MQTT 5.

1. **Disk.** The latency of one ``fsync`` of 4 KiB in the temp folder: what every
   ``synchronous = "full"`` commit pays at least once.
2. **The Store alone** (no broker). ``Store.append`` in batches of 1, 10 (one poll cycle
   of the demo site: what the :class:`~controller.uplink.TelemetryRecorder` writes) and
   100 messages, and ``Store.acknowledge`` in batches of 1 to 32; messages/s and µs per
   message, for ``synchronous`` full and normal (median of repeated runs).
3. **Through the broker**, in interleaved rounds (the order rotates every round):

   * *bare*: one ``aiomqtt.Client``, pre-serialised payloads, the publisher's
     concurrency: 32 workers each awaiting its PUBACK, so up to 32 in flight (and paho's
     ``max_inflight_messages = 32``, as the Publisher sets). Start → last PUBACK.
   * *recorder full / normal* (end to end, the gateway's own path): meter polls go onto
     the :class:`~controller.bus.ReadingBus` ten at a time per event-loop turn, and the
     running ``TelemetryRecorder.run`` turns them into telemetry bodies and appends
     whatever is waiting (up to 500 per transaction) while a connected
     :class:`~controller.uplink.Publisher` (max_inflight 32, no CommandChannel) drains
     the outbox. It does more than bare: it builds and serialises every body.
   * *outbox full / normal* (end to end, lockstep): ``TelemetryRecorder.record`` is
     awaited for every 10 messages (one poll cycle of the demo site), so every 10
     messages pay one append and, as the Publisher keeps up, one acknowledge
     transaction. First append → the ``Store.acknowledge`` that deletes the last message.
   * *publisher live full / normal*: the Publisher alone: the outbox filled in one
     append after it connected, then the drain is timed.
   * ×bare = rate / the same round's bare rate; goal for both end-to-end kinds ≥ 0.5×.

   Once, for context: the bare loop strictly sequential (await each publish), and the
   Publisher draining an outbox filled *before* it connected (a reconnect's backlog,
   which takes the Publisher's backlog/live interleaving path).
   "CPU µs/msg" is this process's CPU (all threads, SQLite included) per message, split
   into the event-loop thread ("loop") and the rest ("workers": ``asyncio.to_thread``).
   "broker" is mosquitto's CPU per wall second. The Store is wrapped to count its
   transactions (each is one WAL fsync with "full") and the thread time spent in them.
   aiomqtt logs "There are N pending publish calls." at WARNING whenever more than 10
   publishes await a PUBACK: these are counted ("warns"), not printed.
4. **Subscriber verification.** One bare and one outbox run with a separate aiomqtt
   subscriber (its own process, QoS 1) on the run's topics: it counts what it received
   by ``seq``, so the figure is deliveries, not just PUBACKs — received == N, duplicates
   and missing are reported (the outbox is at-least-once: duplicates are legal, loss is
   not). These runs pay for the fan-out, so they are not used for the ratio.
5. **Summary.** Goals with MET / NOT MET; the outbox cost per message is append (batch
   10) + acknowledge (at the batch size the Publisher actually used), from part 2, next
   to the extra CPU per message over bare measured in part 3. Then a cProfile of the
   event-loop thread, a bare run vs an outbox run, with the functions that cost the
   outbox run the most extra time (worker-thread SQLite time is not in it: see the
   Store figures). It says "why NOT MET" when the goal is missed.

Run: ``python -m benchmarks uplink`` from the repository root (about a minute).
"""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import itertools
import json
import logging
import multiprocessing
import os
import pstats
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import aiomqtt

from benchmarks.common import Results, mosquitto_class, print_goals, print_table, verdict
from controller import streams
from controller.bus import ReadingBus
from controller.config import UplinkSettings
from controller.store import MQTT, Outgoing, Store
from controller.topics import Topics
from controller.uplink import Publisher, TelemetryRecorder, UplinkStats, telemetry_body
from drivers.maploader import get_map
from drivers.reading import Reading

REPO = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
N = 10_000  # messages per broker run
ROUNDS = 5  # interleaved rounds of every kind in ROUND_KINDS
BATCH = 10  # one poll cycle of the demo site's nine devices
MAX_INFLIGHT = 32  # UplinkSettings.max_inflight's default
RATIO_GOAL = 0.5
DEVICES = ("grid_meter", "heat_pump_meter", "pv_inverter", "battery", "heat_pump", "dc_bus",
           "relay_a", "relay_b", "submeter_1")  # examples/jinan-office.toml
METER_POINTS = {  # a DTSU666's realtime points with plausible values
    "l1_voltage": 231.4, "l2_voltage": 229.8, "l3_voltage": 232.1, "l1_current": 41.27,
    "l2_current": 38.91, "l3_current": 44.02, "total_power": 27843.5,
    "total_reactive_power": 3120.4, "total_power_factor": 0.994, "frequency": 49.98}
APPEND_COUNTS = {1: 2000, 10: 10_000, 100: 20_000}  # messages per Store.append figure
ACK_BATCHES = (1, 2, 4, 8, 16, 24, 32)
ACK_COUNT = 4000
COMPONENT_REPEATS = 3
PUBLISH_TIMEOUT_S = 30.0
RUN_TIMEOUT_S = 60.0
SUBSCRIBER_IDLE_S = 3.0
PROFILE_N = 4000


# -- output ---------------------------------------------------------------------------


class CountingHandler(logging.Handler):
    """Counts aiomqtt's warnings (``There are N pending publish calls.`` once more than
    10 publishes await their PUBACK) instead of writing each to stderr."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1


MQTT_WARNINGS = CountingHandler()


@contextlib.contextmanager
def counted_mqtt_warnings() -> Iterator[None]:
    logger = logging.getLogger("mqtt")  # aiomqtt's default logger
    logger.addHandler(MQTT_WARNINGS)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(MQTT_WARNINGS)
        logger.propagate = True


# -- messages -------------------------------------------------------------------------


def meter_body(device: str, now: float) -> dict[str, object]:
    """What ``telemetry_body`` makes of one meter poll (units from the shipped map)."""
    device_map = get_map("dtsu666")
    return telemetry_body(tuple(Reading(device, point, value, device_map.point(point).unit, now)
                                 for point, value in METER_POINTS.items()))


def outgoing(count: int) -> list[Outgoing]:
    now = time.time()
    bodies = {device: meter_body(device, now) for device in DEVICES}
    return [Outgoing(streams.telemetry(device), bodies[device])
            for device, _ in zip(itertools.cycle(DEVICES), range(count))]


def reading_batches(count: int) -> list[tuple[Reading, ...]]:
    """``count`` meter polls, as the gateway's pollers put them on the ReadingBus."""
    now = time.time()
    device_map = get_map("dtsu666")
    return [tuple(Reading(device, point, value, device_map.point(point).unit, now)
                  for point, value in METER_POINTS.items())
            for device, _ in zip(itertools.cycle(DEVICES), range(count))]


def serialised(topics: Topics, messages: Sequence[Outgoing]) -> list[tuple[str, bytes]]:
    """The topics and bytes the outbox would publish (seq 1…), built before the bare run."""
    return [(topics.of(m.stream), json.dumps({"seq": seq, **m.body}, separators=(",", ":"),
                                 ensure_ascii=False, allow_nan=False).encode())
            for seq, m in enumerate(messages, start=1)]


# -- the Store, counted ---------------------------------------------------------------


class CountingStore(Store):
    """A Store that counts its outbox transactions and the thread time spent in them,
    and notes when the ``target``-th message is acknowledged."""

    def __init__(self, path: Path, *, synchronous: str) -> None:
        super().__init__(path, synchronous=synchronous)
        self.calls: dict[str, int] = {"append": 0, "acknowledge": 0, "pending": 0}
        self.seconds: dict[str, float] = {"append": 0.0, "acknowledge": 0.0, "pending": 0.0}
        self.acked = 0
        self.target = 0
        self.done_at = 0.0
        self.on_done: Callable[[], None] | None = None

    def _count(self, name: str, started: float) -> None:
        self.calls[name] += 1
        self.seconds[name] += time.perf_counter() - started

    def append(self, messages: Sequence[Outgoing]) -> Any:
        started = time.perf_counter()
        try:
            return super().append(messages)
        finally:
            self._count("append", started)

    def pending(self, *, consumer: str = MQTT.name, after_seq: int = 0, limit: int = 100,
                exclude: Any = ()) -> Any:
        started = time.perf_counter()
        try:
            return super().pending(consumer=consumer, after_seq=after_seq, limit=limit,
                                   exclude=exclude)
        finally:
            self._count("pending", started)

    def acknowledge(self, seqs: Any, consumer: str = MQTT.name) -> None:
        seq_list = list(seqs)
        started = time.perf_counter()
        super().acknowledge(seq_list, consumer)
        self._count("acknowledge", started)
        self.acked += len(seq_list)
        if self.target and self.acked >= self.target and not self.done_at:
            self.done_at = time.perf_counter()
            if self.on_done is not None:
                self.on_done()


# -- 1. disk --------------------------------------------------------------------------


def fsync_latency(folder: Path, count: int = 200) -> tuple[float, float]:
    """(median, 90th percentile) µs of writing 4 KiB and fsyncing it."""
    path = folder / "fsync-probe"
    samples = []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for _ in range(count):
            os.write(fd, b"\0" * 4096)
            started = time.perf_counter()
            os.fsync(fd)
            samples.append(time.perf_counter() - started)
    finally:
        os.close(fd)
        path.unlink()
    samples.sort()
    return samples[len(samples) // 2] * 1e6, samples[int(len(samples) * 0.9)] * 1e6


# -- 2. the Store alone ---------------------------------------------------------------


_store_counter = itertools.count()


def new_store(folder: Path, synchronous: str) -> CountingStore:
    return CountingStore(folder / f"outbox-{next(_store_counter)}.sqlite",
                         synchronous=synchronous)


def drop_store(store: Store) -> None:
    store.close()
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            Path(store.path + suffix).unlink()


def append_rate(folder: Path, synchronous: str, batch: int, messages: Sequence[Outgoing]
                ) -> float:
    """Seconds per message of Store.append in batches of ``batch``."""
    store = new_store(folder, synchronous)
    try:
        started = time.perf_counter()
        for i in range(0, len(messages), batch):
            store.append(messages[i:i + batch])
        return (time.perf_counter() - started) / len(messages)
    finally:
        drop_store(store)


def acknowledge_rate(folder: Path, synchronous: str, batch: int,
                     messages: Sequence[Outgoing]) -> float:
    """Seconds per message of Store.acknowledge in batches of ``batch`` (oldest first)."""
    store = new_store(folder, synchronous)
    try:
        for i in range(0, len(messages), 100):
            store.append(messages[i:i + 100])
        seqs = list(range(1, len(messages) + 1))
        started = time.perf_counter()
        for i in range(0, len(seqs), batch):
            store.acknowledge(seqs[i:i + batch])
        return (time.perf_counter() - started) / len(messages)
    finally:
        drop_store(store)


@dataclass
class Components:
    append_s: dict[tuple[str, int], float]  # (synchronous, batch) → s per message
    ack_s: dict[tuple[str, int], float]


def part_store(folder: Path) -> Components:
    print("\n-- 2. the Store alone (no broker), median of "
          f"{COMPONENT_REPEATS} interleaved runs")
    topics = Topics("bench/store")
    messages = outgoing(max(*APPEND_COUNTS.values(), ACK_COUNT))
    appends: dict[tuple[str, int], list[float]] = {}
    acks: dict[tuple[str, int], list[float]] = {}
    for _ in range(COMPONENT_REPEATS):
        for synchronous in ("full", "normal"):
            for batch, count in APPEND_COUNTS.items():
                appends.setdefault((synchronous, batch), []).append(
                    append_rate(folder, synchronous, batch, messages[:count]))
            for batch in ACK_BATCHES:
                acks.setdefault((synchronous, batch), []).append(
                    acknowledge_rate(folder, synchronous, batch, messages[:ACK_COUNT]))
    result = Components({k: statistics.median(v) for k, v in appends.items()},
                        {k: statistics.median(v) for k, v in acks.items()})
    print("  Store.append (one transaction per batch; includes JSON serialisation):")
    print_table(["synchronous", "batch", "msgs/s", "µs/msg", "µs/commit"],
                [[s, b, f"{1 / t:,.0f}", f"{t * 1e6:.1f}", f"{t * b * 1e6:.0f}"]
                 for (s, b), t in result.append_s.items()])
    print("  Store.acknowledge (DELETE … WHERE seq IN (…), one transaction per batch):")
    print_table(["synchronous", "batch", "msgs/s", "µs/msg", "µs/commit"],
                [[s, b, f"{1 / t:,.0f}", f"{t * 1e6:.1f}", f"{t * b * 1e6:.0f}"]
                 for (s, b), t in result.ack_s.items()])
    started = time.perf_counter()
    serialised(topics, messages)
    json_us = (time.perf_counter() - started) / len(messages) * 1e6
    print(f"  of which JSON serialisation (json.dumps + encode, as append does): "
          f"{json_us:.1f} µs/msg")
    for batch in APPEND_COUNTS:
        full, normal = result.append_s["full", batch], result.append_s["normal", batch]
        print(f"  fsync impact, append batch {batch:>3}: full costs {(full - normal) * 1e6:.1f} "
              f"µs/msg more than normal ({full / normal:.1f}×)")
    return result


# -- 3. through the broker ------------------------------------------------------------


def cpu_ticks(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Run:
    name: str
    round: int
    count: int
    seconds: float
    cpu_s: float  # this process, all threads
    loop_cpu_s: float  # the event-loop thread only
    broker_cpu_s: float
    warnings: int  # aiomqtt "pending publish calls" warnings during the run
    store: dict[str, dict[str, Any]] = field(default_factory=dict)
    vs_bare: float | None = None  # rate / the same round's bare rate

    @property
    def rate(self) -> float:
        return self.count / self.seconds

    def per_msg_us(self, seconds: float) -> str:
        return f"{seconds / self.count * 1e6:.0f}"

    def row(self) -> list[object]:
        calls = self.store.get("calls", {})
        seconds = self.store.get("seconds", {})
        acks = calls.get("acknowledge", 0)
        return [self.name, self.round or "-", self.count, f"{self.rate:,.0f}",
                "-" if self.vs_bare is None else f"{self.vs_bare:.2f}×",
                self.per_msg_us(self.cpu_s), self.per_msg_us(self.loop_cpu_s),
                self.per_msg_us(max(0.0, self.cpu_s - self.loop_cpu_s)),
                f"{self.cpu_s / self.seconds:.2f}",
                f"{self.broker_cpu_s / self.seconds:.2f}", self.warnings,
                acks or "-", f"{self.count / acks:.1f}" if acks else "-",
                calls.get("pending", "-"),
                self.per_msg_us(sum(seconds.values())) if seconds else "-"]


RUN_HEADERS = ["run", "round", "msgs", "msgs/s", "×bare", "CPU µs/msg", "loop", "workers",
               "cores", "broker", "warns", "ack txns", "msgs/ack", "pending q", "store µs/msg"]


class Broker:
    """The mosquitto of this benchmark and a counter for unique client ids / topics."""

    def __init__(self, folder: Path) -> None:
        self.mosquitto = mosquitto_class()(folder)
        self.port = self.mosquitto.port
        self.ids = itertools.count(1)

    @property
    def pid(self) -> int:
        process = self.mosquitto.process
        return process.pid if isinstance(process, subprocess.Popen) else 0

    def tag(self) -> str:
        return f"r{next(self.ids)}"

    def topics(self) -> Topics:
        """Fresh topics for one run (a subscriber of one run sees nothing of another)."""
        return Topics(f"bench/{self.tag()}")


class Meter:
    """Wall, process CPU, event-loop thread CPU, broker CPU and warnings over a run."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.wall = time.perf_counter()
        self.cpu = time.process_time()
        self.loop_cpu = time.thread_time()  # call from the event-loop thread
        self.broker_cpu = cpu_ticks(broker.pid)
        self.warnings = MQTT_WARNINGS.count

    def run(self, name: str, round_no: int, count: int, end: float | None = None,
            store: CountingStore | None = None) -> Run:
        return Run(name, round_no, count, (end or time.perf_counter()) - self.wall,
                   time.process_time() - self.cpu, time.thread_time() - self.loop_cpu,
                   cpu_ticks(self.broker.pid) - self.broker_cpu,
                   MQTT_WARNINGS.count - self.warnings,
                   {} if store is None else {"calls": dict(store.calls),
                                             "seconds": dict(store.seconds)})


async def bare_run(broker: Broker, name: str, round_no: int,
                   payloads: Sequence[tuple[str, bytes]], workers: int) -> Run:
    """``workers`` coroutines sharing one client, each awaiting its PUBACK."""
    async with aiomqtt.Client(HOST, broker.port, identifier=f"bench-bare-{broker.tag()}",
                              protocol=aiomqtt.ProtocolVersion.V5,
                              max_inflight_messages=MAX_INFLIGHT,
                              # the Publisher's socket option, so only the outbox differs
                              socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
                              ) as client:
        source = iter(payloads)

        async def worker() -> None:
            for topic, payload in source:
                await client.publish(topic, payload, qos=1, timeout=PUBLISH_TIMEOUT_S)

        meter = Meter(broker)
        async with asyncio.timeout(RUN_TIMEOUT_S):
            await asyncio.gather(*(worker() for _ in range(workers)))
        return meter.run(name, round_no, len(payloads))


async def outbox_run(broker: Broker, folder: Path, name: str, round_no: int, synchronous: str,
                     topics: Topics, messages: Sequence[Outgoing], mode: str = "e2e") -> Run:
    """A connected Publisher (max_inflight 32, no CommandChannel) and the outbox.

    ``e2e``: ``TelemetryRecorder.record`` appends the messages in batches of ``BATCH`` as
    fast as it can while the Publisher drains; first append → last acknowledge.
    ``live``: all messages appended in one transaction after the Publisher connected,
    then the drain is timed (the publisher alone). ``backlog``: the outbox filled before
    the Publisher connects (a reconnect's backlog); connected → last acknowledge.
    """
    loop = asyncio.get_running_loop()
    store = new_store(folder, synchronous)
    done = asyncio.Event()
    connected = asyncio.Event()
    store.target = len(messages)

    def on_done() -> None:  # in the worker thread that acknowledged the last message
        loop.call_soon_threadsafe(done.set)

    store.on_done = on_done
    if mode == "backlog":
        store.append(messages)
    settings = UplinkSettings(host=HOST, port=broker.port, protocol="5",
                              client_id=f"bench-outbox-{broker.tag()}",
                              topic_prefix=topics.prefix, store_path=store.path,
                              synchronous=synchronous, max_inflight=MAX_INFLIGHT)
    notify, stats = asyncio.Event(), UplinkStats()

    async def on_connect(_client: aiomqtt.Client) -> None:
        connected.set()

    publisher = Publisher(settings, HOST, broker.port, store, topics, notify, stats,
                          on_connect=[on_connect], publish_timeout_s=PUBLISH_TIMEOUT_S)
    bus = ReadingBus()
    recorder = TelemetryRecorder(store, bus, notify, stats)
    task = asyncio.create_task(publisher.run(), name=f"publisher {name}")
    try:
        async with asyncio.timeout(10):
            await connected.wait()
        if mode != "backlog":
            await asyncio.sleep(0.05)  # the publish loop reads its watermark (0): all live
        if mode == "live":
            store.append(messages)
        store.calls = dict.fromkeys(store.calls, 0)
        store.seconds = dict.fromkeys(store.seconds, 0.0)
        meter = Meter(broker)
        async with asyncio.timeout(RUN_TIMEOUT_S):
            if mode == "e2e":
                for i in range(0, len(messages), BATCH):
                    await recorder.record(list(messages[i:i + BATCH]))
            elif mode == "bus":
                feeding = asyncio.create_task(recorder.run())
                await asyncio.sleep(0)  # the recorder subscribes
                polls = reading_batches(len(messages))
                for i in range(0, len(polls), BATCH):
                    for poll in polls[i:i + BATCH]:
                        bus.publish(poll)
                    await asyncio.sleep(0)
            else:
                notify.set()
            await done.wait()
        run = meter.run(name, round_no, len(messages), store.done_at, store)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if mode == "bus":
            feeding.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await feeding
        drop_store(store)
    if stats.connects != 1:
        print(f"  ! {name}: the publisher connected {stats.connects} times "
              f"({stats.last_error})")
    return run


@dataclass
class BrokerRuns:
    rounds: list[dict[str, Run]]
    sequential: Run
    backlogs: list[Run]

    def median_rate(self, name: str) -> float:
        return statistics.median(r[name].rate for r in self.rounds)

    def ratios(self, name: str) -> list[float]:
        return [r[name].rate / r["bare"].rate for r in self.rounds]

    def median(self, name: str, value: Callable[[Run], float]) -> float:
        return statistics.median(value(r[name]) for r in self.rounds)


ROUND_KINDS = ("bare", "outbox full", "outbox normal", "recorder full", "recorder normal",
               "publisher live full", "publisher live normal")


async def part_broker(broker: Broker, folder: Path) -> BrokerRuns:
    print(f"\n-- 3. through mosquitto: {N} messages per run, QoS 1, MQTT 5, "
          f"{MAX_INFLIGHT} in flight, {ROUNDS} interleaved rounds (order rotates)")
    rounds: list[dict[str, Run]] = []
    for round_no in range(1, ROUNDS + 1):
        runs: dict[str, Run] = {}
        shift = (round_no - 1) % len(ROUND_KINDS)
        for kind in ROUND_KINDS[shift:] + ROUND_KINDS[:shift]:
            topics = broker.topics()
            messages = outgoing(N)
            synchronous = kind.rsplit(" ", 1)[-1]
            if kind == "bare":
                runs[kind] = await bare_run(broker, kind, round_no, serialised(topics, messages),
                                            MAX_INFLIGHT)
            else:
                runs[kind] = await outbox_run(
                    broker, folder, kind, round_no, synchronous, topics, messages,
                    "e2e" if kind.startswith("outbox") else
                    "bus" if kind.startswith("recorder") else "live")
        for run in runs.values():
            run.vs_bare = run.rate / runs["bare"].rate
        rounds.append(runs)
    topics = broker.topics()
    messages = outgoing(N)
    sequential = await bare_run(broker, "bare sequential", 0,
                                serialised(topics, messages[:N // 2]), 1)
    backlogs = [await outbox_run(broker, folder, f"publisher backlog {s}", 0, s,
                                 broker.topics(), messages, "backlog")
                for s in ("full", "normal")]
    bare = statistics.median(r["bare"].rate for r in rounds)
    for run in (sequential, *backlogs):
        run.vs_bare = run.rate / bare
    print_table(RUN_HEADERS, [run.row() for runs in rounds for run in runs.values()]
                + [sequential.row()] + [run.row() for run in backlogs])
    print("""  recorder: end to end, polls on the reading bus → TelemetryRecorder.run → broker;
  outbox: end to end, lockstep (TelemetryRecorder.record awaited per 10 messages);
  publisher live: the outbox filled in one append after connecting, drain timed;
  publisher backlog: filled before connecting (a reconnect's backlog), drain timed;
  ×bare: rate / the same round's bare rate (sequential and backlog: / the median bare);
  CPU µs/msg: this process, all threads = loop (event-loop thread) + workers (to_thread);
  cores: this process's CPU s per wall s; broker: mosquitto's CPU s per wall s;
  warns: aiomqtt's "There are N pending publish calls." warnings (counted, not printed);
  ack txns: Store.acknowledge transactions (one fsync each with "full"); pending q:
  Store.pending queries; store µs/msg: thread wall time inside the Store (SQLite, fsync,
  lock and GIL waits) per message""")
    result = BrokerRuns(rounds, sequential, backlogs)
    for kind in ROUND_KINDS[1:]:
        ratios = result.ratios(kind)
        print(f"  {kind} / bare, per round: " + ", ".join(f"{r:.2f}×" for r in ratios)
              + f"  (median {statistics.median(ratios):.2f}×)")
    print(f"  bare (32 in flight) / bare sequential: {bare / sequential.rate:.1f}×")
    return result


# -- 4. subscriber verification --------------------------------------------------------


def subscriber_process(port: int, topic: str, expected: int, conn: Connection) -> None:
    """Runs in its own process: count what arrives on ``topic`` by ``seq``."""
    conn.send(asyncio.run(subscribe(port, topic, expected, conn)))
    conn.close()


async def subscribe(port: int, topic: str, expected: int, conn: Connection
                    ) -> dict[str, float]:
    received = 0
    seqs: set[int] = set()
    first = last = 0.0
    async with aiomqtt.Client(HOST, port, identifier=f"bench-sub-{os.getpid()}",
                              protocol=aiomqtt.ProtocolVersion.V5) as client:
        await client.subscribe(topic, qos=1)
        conn.send("ready")
        messages = aiter(client.messages)
        with contextlib.suppress(TimeoutError):
            while len(seqs) < expected:
                async with asyncio.timeout(RUN_TIMEOUT_S if not received
                                           else SUBSCRIBER_IDLE_S):
                    message = await anext(messages)
                last = time.perf_counter()
                first = first or last
                received += 1
                payload = message.payload
                if isinstance(payload, bytes | bytearray):
                    seqs.add(int(json.loads(payload)["seq"]))
    return {"received": received, "distinct": len(seqs),
            "missing": len(set(range(1, expected + 1)) - seqs),
            "seconds": last - first}


@dataclass
class Verified:
    run: Run
    received: int
    distinct: int
    missing: int
    seconds: float

    @property
    def ok(self) -> bool:
        return self.missing == 0 and self.distinct == self.run.count


async def verified(broker: Broker, topics: Topics,
                   start: Callable[[], Coroutine[Any, Any, Run]]) -> Verified:
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(target=subscriber_process,
                              args=(broker.port, f"{topics.prefix}/telemetry/#", N, child),
                              daemon=True)
    process.start()
    try:
        loop = asyncio.get_running_loop()
        if not await loop.run_in_executor(None, parent.poll, 30.0):
            raise RuntimeError("the subscriber did not start")
        parent.recv()  # "ready"
        run = await start()
        if not await loop.run_in_executor(None, parent.poll, RUN_TIMEOUT_S):
            raise RuntimeError("the subscriber did not report")
        report = parent.recv()
        return Verified(run, int(report["received"]), int(report["distinct"]),
                        int(report["missing"]), float(report["seconds"]))
    finally:
        process.join(5)
        if process.is_alive():
            process.kill()
            process.join(5)
        parent.close()


async def part_verify(broker: Broker, folder: Path) -> list[Verified]:
    print(f"\n-- 4. subscriber verification: a separate aiomqtt subscriber (own process, "
          f"QoS 1) counts what arrives, by seq ({N} messages)")
    bare_topics, outbox_topics = broker.topics(), broker.topics()
    payloads = serialised(bare_topics, outgoing(N))
    messages = outgoing(N)
    results = [
        await verified(broker, bare_topics, lambda: bare_run(
            broker, "bare + subscriber", 0, payloads, MAX_INFLIGHT)),
        await verified(broker, outbox_topics, lambda: outbox_run(
            broker, folder, "outbox full + subscriber", 0, "full", outbox_topics, messages)),
    ]
    print_table(["run", "published", "msgs/s (PUBACK)", "received", "distinct seq",
                 "duplicates", "missing", "received msgs/s"],
                [[v.run.name, v.run.count, f"{v.run.rate:,.0f}", v.received, v.distinct,
                  v.received - v.distinct, v.missing,
                  f"{v.received / v.seconds:,.0f}" if v.seconds > 0 else "-"]
                 for v in results])
    bare, outbox = results
    print(f"  with the subscriber attached: outbox / bare = "
          f"{outbox.run.rate / bare.run.rate:.2f}× (one pair, for context)")
    return results


# -- summary --------------------------------------------------------------------------


def summary(components: Components, runs: BrokerRuns, checks: list[Verified],
            results: Results) -> bool:
    bare = runs.median_rate("bare")
    results.figures["bare_msgs_per_s"] = bare
    print("\n-- 5. summary (figures from this run; the machine is shared, read them as such;"
          "\n   ratios: median of the rounds' own ratios, rates: medians)")
    rows: list[list[object]] = []
    met_all = True
    for kind in ("recorder full", "recorder normal", "outbox full", "outbox normal"):
        ratios = runs.ratios(kind)
        ratio = statistics.median(ratios)
        met_all &= ratio >= RATIO_GOAL
        how = "bus → recorder → broker" if kind.startswith("recorder") else "lockstep, 10/append"
        rows.append([f"{kind} / bare msgs/s ≥ {RATIO_GOAL}× ({how})",
                     f"{ratio:.2f}× (rounds {min(ratios):.2f}–{max(ratios):.2f}×; "
                     f"{runs.median_rate(kind):,.0f} vs {bare:,.0f}/s)",
                     verdict(ratio >= RATIO_GOAL)])
        results.figures[f"{kind.replace(' ', '_')}_msgs_per_s"] = runs.median_rate(kind)
        results.figures[f"{kind.replace(' ', '_')}_vs_bare"] = ratio
        results.goal(f"{kind} / bare msgs/s >= {RATIO_GOAL}x ({how})", ratio >= RATIO_GOAL,
                     f"{ratio:.2f}x")
    for synchronous in ("full", "normal"):
        kind = f"publisher live {synchronous}"
        ratios = runs.ratios(kind)
        rows.append([f"  context: {kind} / bare (no producer)",
                     f"{statistics.median(ratios):.2f}× (rounds {min(ratios):.2f}–"
                     f"{max(ratios):.2f}×; {runs.median_rate(kind):,.0f}/s)", "-"])
    for check in checks:
        rows.append([f"subscriber got all {check.run.count}: {check.run.name}",
                     f"{check.distinct} distinct, {check.received - check.distinct} dup, "
                     f"{check.missing} missing", verdict(check.ok)])
        results.goal(f"subscriber got all {check.run.count}: {check.run.name}", check.ok,
                     f"{check.missing} missing")
    print_table(["goal", "measured", "verdict"], rows)

    print(f"\n  outbox cost per message: part 2's append in batches of {BATCH} + acknowledge "
          "at the batch size\n  the Publisher used end to end in part 3 "
          "(and, measured in part 3, the extra CPU over bare):")
    cost_rows = []
    totals = {}
    for synchronous in ("full", "normal"):
        kind = f"outbox {synchronous}"
        per_ack = runs.median(kind, lambda r: r.count / r.store["calls"]["acknowledge"])
        ack_batch = min(ACK_BATCHES, key=lambda b: abs(b - per_ack))
        append_us = components.append_s[synchronous, BATCH] * 1e6
        ack_us = components.ack_s[synchronous, ack_batch] * 1e6
        totals[synchronous] = append_us + ack_us
        extra = [(r[kind].cpu_s - r["bare"].cpu_s) / N * 1e6 for r in runs.rounds]
        loop_extra = [(r[kind].loop_cpu_s - r["bare"].loop_cpu_s) / N * 1e6
                      for r in runs.rounds]
        cost_rows.append([synchronous, f"{append_us:.1f}", f"{per_ack:.1f} → {ack_batch}",
                          f"{ack_us:.1f}", f"{append_us + ack_us:.1f}",
                          f"{statistics.median(extra):.0f}",
                          f"{statistics.median(loop_extra):.0f}"])
    print_table(["synchronous", "append µs", "msgs/ack → used", "ack µs", "total µs/msg",
                 "CPU over bare µs/msg", "of it loop thread"], cost_rows)
    where_cpu_goes(runs)
    rate_ratio = runs.median_rate("outbox full") / runs.median_rate("outbox normal")
    print(f"  fsync impact: full costs {totals['full'] - totals['normal']:.1f} µs/msg more than "
          f"normal in the Store ({totals['full'] / totals['normal']:.1f}×); end to end, full "
          f"runs at {rate_ratio:.2f}× normal's msgs/s")
    return met_all


def where_cpu_goes(runs: BrokerRuns) -> None:
    """Per-message CPU of each kind of run (medians of part 3) and what it implies."""
    kinds = ROUND_KINDS

    def us(kind: str, value: Callable[[Run], float]) -> float:
        return runs.median(kind, lambda r: value(r) / r.count * 1e6)

    print("\n  where the CPU goes, µs per message (medians of part 3):")
    print_table(["", *kinds],
                [["event-loop thread", *(f"{us(k, lambda r: r.loop_cpu_s):.0f}" for k in kinds)],
                 ["worker threads", *(f"{max(0.0, us(k, lambda r: r.cpu_s - r.loop_cpu_s)):.0f}"
                                      for k in kinds)],
                 ["whole process", *(f"{us(k, lambda r: r.cpu_s):.0f}" for k in kinds)],
                 ["cores used (CPU s / wall s)",
                  *(f"{runs.median(k, lambda r: r.cpu_s / r.seconds):.2f}" for k in kinds)],
                 ["msgs/s", *(f"{runs.median_rate(k):,.0f}" for k in kinds)]])
    def cores(kind: str) -> float:
        return runs.median(kind, lambda r: r.cpu_s / r.seconds)

    bare = us("bare", lambda r: r.cpu_s)
    print("  msgs/s = cores used ÷ CPU per message, so outbox/bare ≈ (outbox cores ÷ bare cores)"
          " × (bare CPU/msg ÷ outbox CPU/msg)\n  (≈: medians of each, not of the ratio):")
    for kind in ("recorder full", "recorder normal", "outbox full", "outbox normal"):
        scale = cores(kind) / cores("bare")
        cpu = us(kind, lambda r: r.cpu_s)
        print(f"    {kind}: {scale:.2f} × {bare:.0f}/{cpu:.0f} = {scale * bare / cpu:.2f}×;"
              f" for {RATIO_GOAL}× it may spend at most {scale * bare / RATIO_GOAL:.0f} µs/msg")


# -- profile ----------------------------------------------------------------------------


async def profiled(broker: Broker, folder: Path) -> dict[str, pstats.Stats]:
    """cProfile of the event-loop thread: one bare run and one outbox (full) run."""
    result = {}
    for kind in ("bare", "outbox"):
        topics = broker.topics()
        messages = outgoing(PROFILE_N)
        payloads = serialised(topics, messages)
        profile = cProfile.Profile()
        profile.enable()
        try:
            if kind == "bare":
                await bare_run(broker, kind, 0, payloads, MAX_INFLIGHT)
            else:
                await outbox_run(broker, folder, kind, 0, "full", topics, messages)
        finally:
            profile.disable()
        result[kind] = pstats.Stats(profile)
    return result


IDLE = ("~", 0, "<method 'poll' of 'select.epoll' objects>")
SOCKET_IO = (("~", 0, "<method 'send' of '_socket.socket' objects>"),
             ("~", 0, "<method 'recv' of '_socket.socket' objects>"))


def print_profile(stats: dict[str, pstats.Stats], top: int = 16) -> None:
    bare: dict[Any, Any] = stats["bare"].stats  # type: ignore[attr-defined]
    outbox: dict[Any, Any] = stats["outbox"].stats  # type: ignore[attr-defined]

    def own_us(entries: dict[Any, Any], key: Any) -> float:
        return entries[key][2] / PROFILE_N * 1e6 if key in entries else 0.0

    def calls(entries: dict[Any, Any], key: Any) -> int:
        return int(entries[key][1]) if key in entries else 0

    def busy_us(entries: dict[Any, Any]) -> float:
        return sum(own_us(entries, key) for key in entries if key != IDLE)

    def label(key: tuple[str, int, str]) -> str:
        filename, line, function = key
        if filename == "~":
            return function
        parts = Path(filename).parts
        short = "/".join(parts[-2:]) if "site-packages" in parts else Path(filename).name
        return f"{short}:{line} {function}"

    print(f"  event-loop thread, {PROFILE_N} messages each (cProfile inflates every cost "
          "several-fold: compare, don't add up).")
    print(f"  busy (all but epoll waits) µs/msg: bare {busy_us(bare):.0f}, outbox "
          f"{busy_us(outbox):.0f}; event-loop iterations per message: bare "
          f"{calls(bare, RUN_ONCE) / PROFILE_N:.2f}, outbox "
          f"{calls(outbox, RUN_ONCE) / PROFILE_N:.2f}")
    keys = [key for key in set(bare) | set(outbox) if key != IDLE]
    keys.sort(key=lambda key: own_us(outbox, key) - own_us(bare, key), reverse=True)
    print("  functions with the most extra own time in the outbox run:")
    print_table(["function", "calls bare", "calls outbox", "own µs/msg bare", "outbox",
                 "extra"],
                [[label(key)[:66], calls(bare, key), calls(outbox, key),
                  f"{own_us(bare, key):.1f}", f"{own_us(outbox, key):.1f}",
                  f"{own_us(outbox, key) - own_us(bare, key):+.1f}"] for key in keys[:top]])
    send_recv = [(sum(e[k][2] for k in SOCKET_IO if k in e) * 1e6,
                  sum(e[k][1] for k in SOCKET_IO if k in e)) for e in (bare, outbox)]
    (bare_us, bare_calls), (outbox_us, outbox_calls) = send_recv
    if bare_calls and outbox_calls:
        print(f"  socket send+recv: {bare_calls} calls, {bare_us / bare_calls:.1f} µs each (bare)"
              f" vs {outbox_calls} calls, {outbox_us / outbox_calls:.1f} µs each (outbox): the "
              "same system calls, so most\n  likely GIL waits: the event-loop thread releases the "
              "GIL around each call and must win it back from the worker threads")
    modules = (Publisher.run.__code__.co_filename, asyncio.tasks.__file__,
               asyncio.threads.__file__)
    uplink = sorted(((key, value) for key, value in outbox.items() if key[0] in modules),
                    key=lambda item: item[1][3], reverse=True)[:8]
    print("  the outbox run's uplink / asyncio functions by cumulative time:")
    print_table(["function", "calls", "cum µs/msg"],
                [[label(key)[:66], nc, f"{ct / PROFILE_N * 1e6:.1f}"]
                 for key, (_, nc, _, ct, _) in uplink])


_RUN_ONCE = asyncio.base_events.BaseEventLoop._run_once.__code__  # type: ignore[attr-defined]
RUN_ONCE = (_RUN_ONCE.co_filename, _RUN_ONCE.co_firstlineno, _RUN_ONCE.co_name)


def main() -> Results:
    started = time.perf_counter()
    results = Results()
    with tempfile.TemporaryDirectory(prefix="pedf-bench-uplink-") as name:
        folder = Path(name)
        body = serialised(Topics("pedf/demo"), outgoing(1))[0][1]
        broker = Broker(folder / "mosquitto")
        version = subprocess.run([broker.mosquitto.binary, "-h"], capture_output=True,
                                 text=True, check=False).stdout.splitlines()[:1]
        print(f"  payload {len(body)} B, e.g. {body[:90].decode()}…")
        print(f"  {version[0] if version else 'mosquitto'}; {os.cpu_count()} CPUs; "
              f"temp folder {folder}")
        median_us, p90_us = fsync_latency(folder)
        print(f"\n-- 1. disk: write 4 KiB + fsync on the temp folder: median {median_us:.0f} µs,"
              f" p90 {p90_us:.0f} µs")
        components = part_store(folder)
        broker.mosquitto.start()
        try:
            with counted_mqtt_warnings():
                runs = asyncio.run(part_broker(broker, folder))
                checks = asyncio.run(part_verify(broker, folder))
                met = summary(components, runs, checks, results)
                print("\n-- " + ("why NOT MET" if not met else "for information (goals met)")
                      + ": where the event-loop thread's time goes (cProfile, bare vs outbox)")
                print_profile(asyncio.run(profiled(broker, folder)))
        finally:
            broker.mosquitto.stop()
    print(f"\n  (benchmark took {time.perf_counter() - started:.0f} s)")
    return results


if __name__ == "__main__":
    print_goals(main().goals)
