"""The protocol-neutral outbox: streams instead of topics, the one module that names
MQTT topics, the migration of a store whose outbox held MQTT rows, and several consumers
(uplink protocols) sharing one outbox with their own delivery state."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import sqlite3
from pathlib import Path

from tests_support import Mosquitto, eventually
from uplink_support import collecting

from controller import streams
from controller.config import UplinkSettings
from controller.store import MQTT, ROW_OVERHEAD_BYTES, Consumer, Outgoing, Store
from controller.streams import Kind, Stream
from controller.topics import Topics
from controller.uplink import Publisher, UplinkStats

ROOT = Path(__file__).resolve().parents[2]

# -- one place names the topics ---------------------------------------------------------


def documented_outgoing_topics() -> set[str]:
    """The ``out`` topics of the table in docs/mqtt.md, as written there."""
    rows = re.findall(r"^\| `(<prefix>/[^`]+)` \| out \|", (ROOT / "docs/mqtt.md").read_text(),
                      re.MULTILINE)
    return set(rows)


def test_every_stream_goes_out_on_its_documented_topic() -> None:
    documented = documented_outgoing_topics()
    assert len(documented) >= 9  # the table was found
    keys = {Kind.TELEMETRY: "<device>", Kind.METERING: "window"}
    topics = Topics("<prefix>")
    sent = {topics.of(Stream(kind, keys.get(kind, ""))) for kind in Kind
            if kind is not Kind.ADDRESS}
    # status is the connection's own retained message, not a stream of the outbox
    assert sent == documented - {"<prefix>/status"}
    assert topics.of(streams.address("pedf/x/replies/op-7")) == "pedf/x/replies/op-7"
    # and back: every topic is read as the stream that is published on it
    mine = Topics("pedf/x")
    for topic in (*(t.replace("<prefix>", "pedf/x").replace("<device>", "pv_1")
                    for t in documented), "pedf/x/replies/op-7", "pedf/x/telemetry/",
                  "other/events", "pedf/x/metering"):
        assert mine.of(mine.stream_of(topic)) == topic
    assert mine.stream_of("pedf/x/telemetry/pv_1") == streams.telemetry("pv_1")
    assert mine.stream_of("pedf/x/dr/settlement") == streams.DR_SETTLEMENT
    assert mine.stream_of("pedf/x/replies/op-7").kind is Kind.ADDRESS
    assert Stream.parse(streams.telemetry("pv_1").name) == streams.telemetry("pv_1")
    assert Stream.parse(streams.DR_SETTLEMENT.name) == streams.DR_SETTLEMENT


#: A topic built from a prefix or topic variable, a discovery topic, or an outgoing
#: message given a string instead of a stream.
TOPIC_BUILDING = re.compile(r"""f["'][^"'\n]*\{[^}\n]*(?:prefix|topic)[^}\n]*\}/"""
                            r"""|["']homeassistant/|Outgoing\(\s*f?["']""")


def test_no_module_but_topics_builds_a_topic_string() -> None:
    # What the code looked like before: each line must be caught.
    for old in ('Outgoing(f"{self.topic_prefix}/dcbus", body)',
                'replies = f"{prefix}/replies"',
                'return f"{self.prefix}/telemetry/{device}"',
                """[(f"homeassistant/{component}/{config['unique_id']}/config",""",
                'Outgoing("t/telemetry", {"n": n})'):
        assert TOPIC_BUILDING.search(old), old
    sources = {path.relative_to(ROOT).as_posix(): path.read_text()
               for path in (ROOT / "controller").rglob("*.py")}
    assert "controller/control/loop.py" in sources
    assert len(sources) > 50
    assert TOPIC_BUILDING.search(sources.pop("controller/topics.py"))  # it names them
    offenders = {name: match.group(0) for name, text in sources.items()
                 if (match := TOPIC_BUILDING.search(text)) is not None}
    assert offenders == {}


# -- migration of an MQTT-shaped store -----------------------------------------------------

#: The outbox and dead-letter tables as stores before the streams wrote them.
OLD_SCHEMA = """
CREATE TABLE outbox (seq INTEGER PRIMARY KEY, topic TEXT NOT NULL, payload BLOB NOT NULL,
    qos INTEGER NOT NULL, retain INTEGER NOT NULL, created REAL NOT NULL, correlation BLOB);
CREATE INDEX outbox_by_topic ON outbox(topic, seq);
CREATE TABLE dead_letters (id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL,
    seq INTEGER NOT NULL, topic TEXT NOT NULL, size INTEGER NOT NULL, sha256 TEXT NOT NULL,
    payload BLOB NOT NULL, reason TEXT NOT NULL);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
OLD_ROWS = [(7, "pedf/old/telemetry/meter", b'{"seq":7,"values":{"p":1}}', None),
            (8, "pedf/old/events", b'{"seq":8,"type":"device_state"}', None),
            (9, "pedf/old/replies/op-7", b'{"seq":9,"status":"accepted"}', b"\x07")]


def old_store(path: Path) -> None:
    db = sqlite3.connect(path)
    db.executescript(OLD_SCHEMA)
    db.executemany("INSERT INTO outbox VALUES (?, ?, ?, 1, 0, 1.0e9, ?)", OLD_ROWS)
    db.execute("INSERT INTO dead_letters(ts, seq, topic, size, sha256, payload, reason) "
               "VALUES (1.0e9, 6, 'x/#', 2, '', X'7B7D', 'a wildcard')")
    db.execute("INSERT INTO meta VALUES ('next_seq', '10')")
    db.commit()
    db.close()


async def test_a_store_with_mqtt_rows_is_migrated_and_publishes_them_on_their_topics(
        tmp_path: Path) -> None:
    # Without the topics' reader, every topic is kept as an address: the same topics.
    plain = tmp_path / "plain.sqlite"
    old_store(plain)
    kept = Store(plain).pending()
    assert [(m.seq, m.stream.key, m.payload) for m in kept] == [r[:3] for r in OLD_ROWS]
    assert all(m.stream.kind is Kind.ADDRESS for m in kept)
    path = tmp_path / "old.sqlite"
    old_store(path)
    topics = Topics("pedf/old")
    store = Store(path, stream_of_topic=topics.stream_of)
    migrated = store.pending()
    assert [(m.seq, topics.of(m.stream), m.payload, m.correlation)
            for m in migrated] == OLD_ROWS
    assert [m.stream for m in migrated] == [  # in order with the new ones of each stream
        streams.telemetry("meter"), streams.EVENTS, streams.address("pedf/old/replies/op-7")]
    assert store.depth() == (3, sum(len(m.stream.name) + len(m.payload) + ROW_OVERHEAD_BYTES
                                    for m in migrated))
    (letter,) = store.dead_letters()
    assert (letter["stream"], letter["consumer"], letter["reason"]) == \
        ("address:x/#", "mqtt", "a wildcard")
    assert store.append([Outgoing(streams.HEALTH, {})])[0] == [10]  # numbers go on
    store.close()
    store = Store(path, stream_of_topic=topics.stream_of)  # opening again changes nothing
    assert [m.seq for m in store.pending()] == [7, 8, 9, 10]
    # The migrated rows go out on exactly the topics they were stored for.
    broker = Mosquitto(tmp_path / "broker").start()
    try:
        async with collecting(broker.port, "pedf/#") as collector:
            publisher = publisher_for(store, broker.port, "pedf/old", MQTT.name)
            task = asyncio.create_task(publisher.run())
            try:
                await eventually(lambda: store.depth()[0] == 0, what="the outbox drained")
                await eventually(lambda: len(collector.seqs()) == 4, what="four messages")
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        assert sorted((topic, body["seq"]) for topic, body in collector.messages
                      if "seq" in body) == [
            ("pedf/old/events", 8), ("pedf/old/health", 10),
            ("pedf/old/replies/op-7", 9), ("pedf/old/telemetry/meter", 7)]
    finally:
        broker.stop()
        store.close()


# -- several consumers ----------------------------------------------------------------------

#: A second uplink that carries the metering windows and events only.
ARCHIVE = Consumer("archive", frozenset({Kind.METERING, Kind.EVENTS}))


def publisher_for(store: Store, port: int, prefix: str, consumer: str) -> Publisher:
    settings = UplinkSettings(host="127.0.0.1", port=port, protocol="5",
                              client_id=f"test-{consumer}", topic_prefix=prefix,
                              store_path=store.path, reconnect_max_s=0.5)
    return Publisher(settings, "127.0.0.1", port, store, Topics(prefix), asyncio.Event(),
                     UplinkStats(), consumer=consumer)


def test_each_consumer_acknowledges_its_own_and_a_message_leaves_when_all_did(
        tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite", consumers=(MQTT, ARCHIVE))
    seqs, _ = store.append([Outgoing(streams.telemetry("meter"), {"n": 1}),
                            Outgoing(streams.metering("window"), {"n": 2}),
                            Outgoing(streams.EVENTS, {"n": 3})])
    assert [m.seq for m in store.pending(consumer="archive")] == seqs[1:]
    assert store.pending_streams("archive") == [streams.EVENTS, streams.metering("window")]
    store.acknowledge(seqs, MQTT.name)  # MQTT delivered everything; the archive is down
    assert store.pending() == []
    assert [m.seq for m in store.pending(consumer="archive")] == seqs[1:]
    assert store.depth()[0] == 2
    assert store.depth("mqtt")[0] == 0
    store.dead_letter(seqs[2], "the archive cannot take it", "archive")
    store.acknowledge(seqs[1:2], "archive")
    assert store.depth() == (0, 0)
    assert store.dead_letters()[0]["consumer"] == "archive"
    store.close()
    # The bits are the store's: a restart with the consumers in another order keeps them.
    again = Store(tmp_path / "s.sqlite", consumers=(ARCHIVE, MQTT))
    more, _ = again.append([Outgoing(streams.EVENTS, {"n": 4})])
    again.acknowledge(more, "archive")
    assert [m.seq for m in again.pending()] == more
    again.append([Outgoing(streams.EVENTS, {"n": 5})])
    again.close()
    # A tool opening the store (no consumers given) leaves the archive's messages alone.
    tool = Store(tmp_path / "s.sqlite")
    assert tool.depth() == (2, tool.depth()[1])
    tool.close()
    # The archive is removed from the gateway's configuration: nothing waits for it.
    alone = Store(tmp_path / "s.sqlite", consumers=(MQTT,))
    assert [json.loads(m.payload)["n"] for m in alone.pending()] == [4, 5]
    alone.acknowledge([m.seq for m in alone.pending()])
    assert alone.depth() == (0, 0)
    alone.close()


def test_the_quota_reports_each_consumers_loss(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite", quota_bytes=8192, report_overflow=True,
                  consumers=(MQTT, ARCHIVE))
    # The archive is down: its windows pile up while MQTT delivers everything.
    for n in range(60):
        seqs, _ = store.append([Outgoing(streams.telemetry("meter"), {"pad": "x" * 100}),
                                Outgoing(streams.metering("window"), {"n": n,
                                                                      "pad": "y" * 100})])
        store.acknowledge(seqs, MQTT.name)
    waiting_archive = store.depth("archive")[0]
    assert 0 < waiting_archive < 60
    reports = [json.loads(m.payload) for m in store.pending(limit=1000)
               if m.stream == streams.EVENTS]
    assert reports
    assert reports == [json.loads(m.payload)  # both get the reports
                       for m in store.pending(consumer="archive", limit=1000)
                       if m.stream == streams.EVENTS]
    # every window the archive did not lose is still there, the newest, in order
    windows = [json.loads(m.payload)["n"] for m in store.pending(consumer="archive",
                                                                 limit=1000)
               if m.stream == streams.metering("window")]
    assert windows == list(range(60 - len(windows), 60))
    lost_windows = 60 - len(windows)
    assert lost_windows > 0
    # MQTT had delivered the rest: of the dropped rows it lost only older reports
    assert store.dropped("archive") == store.dropped_total
    assert store.dropped("mqtt") == store.dropped_total - lost_windows
    last = reports[-1]
    assert last["dropped_total"] == store.dropped_total
    assert last["consumers"]["archive"]["dropped_total"] == store.dropped("archive")
    assert last["consumers"]["mqtt"]["dropped_total"] == store.dropped("mqtt")
    store.close()


async def test_one_consumer_down_the_other_delivering_over_a_real_broker(
        tmp_path: Path) -> None:
    """Two MQTT publishers on one outbox — one to a live mosquitto, one to a broker that
    is down (a local broker and a cloud one, say): the live one delivers everything it
    carries; the other's messages wait for it, and go out once its broker is up."""
    store = Store(tmp_path / "s.sqlite", consumers=(MQTT, ARCHIVE))
    seqs, _ = store.append(
        [Outgoing(streams.telemetry(f"meter_{n % 3}"), {"n": n}) for n in range(30)] +
        [Outgoing(streams.EVENTS, {"n": n}) for n in range(30, 35)])
    live = Mosquitto(tmp_path / "live").start()
    later = Mosquitto(tmp_path / "later")  # not started yet
    tasks: list[asyncio.Task[None]] = []
    try:
        async with collecting(live.port, "live/#", "live-collector") as on_live:
            tasks.append(asyncio.create_task(
                publisher_for(store, live.port, "live", MQTT.name).run()))
            archive = publisher_for(store, later.port, "later", ARCHIVE.name)
            tasks.append(asyncio.create_task(archive.run()))
            await eventually(lambda: store.depth(MQTT.name)[0] == 0, what="MQTT drained")
            await eventually(lambda: len(on_live.seqs()) == 35, what="35 on the live broker")
            assert sorted(on_live.seqs()) == seqs
            assert [m.seq for m in store.pending(consumer="archive")] == seqs[30:]
            assert store.depth()[0] == 5  # only the archive's wait
            later.start()
            async with collecting(later.port, "later/#", "later-collector") as on_later:
                await eventually(lambda: store.depth()[0] == 0, timeout_s=20,
                                 what="the archive drained")
                await eventually(lambda: len(on_later.seqs()) == 5, what="five events")
            assert sorted(on_later.seqs()) == seqs[30:]
            assert {topic for topic, body in on_later.messages if "seq" in body} == {
                "later/events"}
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        live.stop()
        later.stop()
        store.close()
