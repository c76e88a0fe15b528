"""The poll loop against hostile peers, the reading bus, and task supervision."""

from __future__ import annotations

import asyncio
import dataclasses
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests_support import free_port

from controller.bus import ReadingBus
from controller.lines import line_for
from controller.runtime import supervise
from controller.scheduler import LineScheduler
from drivers.frames import crc16
from drivers.reading import Quality, Reading
from simulators.runner import single_device_site

# A response is built from the request it answers, then mangled.
Mutation = tuple[str, int, bytes]

mutations = st.tuples(
    st.sampled_from(["good", "truncate", "byte_count", "transaction", "unit", "function",
                     "garbage", "random", "silence", "length", "protocol", "close"]),
    st.integers(0, 255),
    st.binary(max_size=40),
)


def respond(request: bytes, mutation: Mutation) -> bytes | None:
    """The answer a hostile server sends to one MBAP request (None: say nothing)."""
    kind, number, noise = mutation
    transaction, _, _, unit, function, _, count = struct.unpack(">HHHBBHH", request[:12])
    data = bytes(2 * count) if function in (3, 4) else bytes((count + 7) // 8)
    pdu = bytes([function, len(data)]) + data
    if kind == "byte_count":
        pdu = pdu[:1] + bytes([(pdu[1] + 1 + number % 5) & 0xFF]) + pdu[2:]
    elif kind == "function":
        pdu = bytes([(function + 1 + number % 10) & 0x7F]) + pdu[1:]
    elif kind == "truncate":
        pdu = pdu[:max(1, len(pdu) - 1 - number % len(pdu))]
    header_transaction = transaction
    if kind == "transaction":
        header_transaction = (transaction + 1 + number) & 0xFFFF
    header_unit = (unit + 1 + number % 200) & 0xFF if kind == "unit" else unit
    length = len(pdu) + 1
    protocol = 0
    if kind == "length":
        length = (length + 1 + number) & 0xFFFF
    if kind == "protocol":
        protocol = 1 + number
    frame = struct.pack(">HHHB", header_transaction, protocol, length, header_unit) + pdu
    if kind == "garbage":
        frame += noise or b"\x00"
    if kind == "random":
        frame = noise
    if kind == "silence":
        return None
    return frame


async def hostile_server(port: int, script: list[Mutation], served: list[int]
                         ) -> asyncio.Server:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request = await reader.readexactly(12)
                mutation = script[served[0] % len(script)]
                served[0] += 1
                if mutation[0] == "close":
                    writer.close()
                    return
                answer = respond(request, mutation)
                if answer:
                    writer.write(answer)
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", port)


async def run_against(script: list[Mutation], requests: int) -> tuple[LineScheduler,
                                                                      list[Reading]]:
    port = free_port()
    site = single_device_site("sg-ready-heatpump", port=port)
    device = dataclasses.replace(site.devices["device"], timeout_s=0.05, backoff_max_s=0.01)
    served = [0]
    server = await hostile_server(port, script, served)
    bus = ReadingBus()
    subscription = bus.subscribe("test", maxsize=10_000)
    scheduler = LineScheduler.for_devices(line_for(device.line), [device], bus)
    for schedule in scheduler.devices[0].groups:  # poll fast
        schedule.group = dataclasses.replace(schedule.group, interval_s=0.05)
    task = asyncio.create_task(scheduler.run())
    try:
        async with asyncio.timeout(30):
            while served[0] < requests:
                assert not task.done(), task.exception()
                await asyncio.sleep(0.01)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        server.close()
        await server.wait_closed()
    readings: list[Reading] = []
    while (batch := subscription.get_nowait()) is not None:
        readings.extend(batch)
    return scheduler, readings


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.lists(mutations, min_size=1, max_size=12))
def test_fuzzed_responses_never_escape_the_poll_loop(script: list[Mutation]) -> None:
    scheduler, readings = asyncio.run(run_against(script, requests=15))
    health = scheduler.devices[0].health
    assert health.state in ("ok", "stale", "error")
    good = all(m[0] == "good" for m in script)
    for reading in readings:
        if reading.quality is not Quality.OK:
            assert reading.value is None
        elif reading.point in ("sg_ready_state", "electric_power", "flow_temp") and not good:
            # Whatever got through is what a well-formed answer said: zeros here.
            assert reading.value in (0, 0.0, None)
    if good:
        assert health.polls_failed == 0


def test_rtu_crc_helper_agrees_with_the_drivers() -> None:
    from tests_support import crc16 as reference

    for frame in (b"\x01\x03\x00\x00\x00\x02", bytes(range(40))):
        assert crc16(frame) == reference(frame)


# -- the bus --------------------------------------------------------------------------


def reading(point: str, value: float) -> Reading:
    return Reading("d", point, value, "W", 0.0)


async def test_bus_drops_the_oldest_batch_for_a_slow_subscriber() -> None:
    bus = ReadingBus()
    slow = bus.subscribe("slow", maxsize=2)
    fast = bus.subscribe("fast", maxsize=100)
    for index in range(5):
        bus.publish((reading("p", index),))
    assert slow.dropped == 3
    kept = [slow.get_nowait(), slow.get_nowait()]
    assert [b[0].value for b in kept if b is not None] == [3, 4]
    assert fast.dropped == 0
    assert fast.queue.qsize() == 5
    assert bus.latest.value("d", "p") == 4.0
    bus.publish((Reading("d", "p", None, "W", 1.0, Quality.STALE),))
    assert bus.latest.value("d", "p") is None  # stale is never reported as a number


async def test_supervise_restarts_a_failing_service() -> None:
    runs: list[int] = []

    async def flaky() -> None:
        runs.append(1)
        if len(runs) < 3:
            raise RuntimeError("boom")

    await asyncio.wait_for(supervise("flaky", flaky, backoff_s=0.01), 5)
    assert len(runs) == 3


async def test_supervise_stops_on_cancel() -> None:
    started = asyncio.Event()

    async def forever() -> None:
        started.set()
        await asyncio.sleep(3600)

    task = asyncio.create_task(supervise("forever", forever))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
