"""The gateway against misbehaving devices, over real sockets and pseudo-terminals."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
from tests_support import eventually, example_on_free_ports, free_port, polling

from controller.lines import TcpLine
from controller.runtime import Gateway, with_serial_ports
from drivers.points import Pacing
from drivers.protocol import Exchange
from drivers.reading import Quality, Reading
from drivers.site import SiteSpec, load_site
from simulators.clock import ManualClock
from simulators.runner import SiteRunner, single_device_site
from simulators.sitefile import build_site

START = datetime.fromisoformat("2026-06-22T11:00:00+08:00").timestamp()


def with_device_settings(path: Path, settings: dict[str, str]) -> Path:
    """Add ``key = value`` lines to every device's table."""
    text = path.read_text(encoding="utf-8")
    extra = "".join(f"{key} = {value}\n" for key, value in settings.items())
    text = re.sub(r"(^\[\[devices\]\]\n)", r"\1" + extra.replace("\\", "\\\\"), text,
                  flags=re.M)
    path.write_text(text, encoding="utf-8")
    return path


@dataclass
class Building:
    runner: SiteRunner
    gateway: Gateway
    readings: list[Reading]


@pytest.fixture
async def building(tmp_path: Path) -> AsyncIterator[Building]:
    """The Jinan building served on free ports (physics frozen at 11:00 in June), polled
    by a gateway with short timeouts and a 2 s backoff ceiling."""
    path = with_device_settings(example_on_free_ports(tmp_path),
                                {"timeout_s": "0.3", "backoff_max_s": "2.0"})
    spec: SiteSpec = load_site(path)
    site = build_site(spec, start_s=START)
    async with SiteRunner(site, ManualClock(START)) as runner, \
            polling(spec, runner.serial_ports) as gateway:
        yield Building(runner, gateway.gateway, gateway.readings)


def realtime_polls(gateway: Gateway, device: str) -> int:
    scheduler = gateway.scheduler_of(device)
    poller = scheduler.device(device)
    return next(g.polls for g in poller.groups if g.group.name == "realtime")


def first_quality(readings: list[Reading], device: str, quality: Quality) -> float | None:
    times = [r.timestamp for r in readings if r.device == device and r.quality is quality]
    return min(times) if times else None


def skipped(gateway: Gateway, device: str) -> int:
    """Cycles of the device's realtime group missed because its line was busy."""
    poller = gateway.scheduler_of(device).device(device)
    return next(g.skipped for g in poller.groups if g.group.name == "realtime")


def realtime_batches_after(readings: list[Reading], device: str, gateway: Gateway,
                           since: float) -> list[list[Reading]]:
    """The device's realtime readings after ``since``, one list per poll (timestamp)."""
    points = gateway.site.devices[device].groups["realtime"].points
    polls: dict[float, list[Reading]] = {}
    for reading in readings:
        if reading.device == device and reading.point in points and reading.timestamp > since:
            polls.setdefault(reading.timestamp, []).append(reading)
    return [polls[t] for t in sorted(polls)]


async def test_bad_devices_never_stall_the_healthy_ones(building: Building) -> None:
    runner, gateway = building.runner, building.gateway
    await eventually(lambda: all(h.state == "ok" and h.polls_ok > 0
                                 for h in gateway.health().values()),
                     what=lambda: f"everyone answering first: {gateway.health()}")
    runner.faults("battery").no_response = True  # times out
    runner.faults("heat_pump").exception = 4  # answers with exceptions
    runner.faults("dc_bus").disconnect = True  # drops the connection
    runner.faults("submeter_1").corrupt = True  # corrupt frames
    runner.faults("pv_inverter").reboot(4.0)  # goes away, comes back by itself
    fault_start = time.time()
    healthy = ("relay_a", "relay_b", "grid_meter", "heat_pump_meter")
    polls = {name: realtime_polls(gateway, name) for name in healthy}
    missed = {name: skipped(gateway, name) for name in healthy}
    expected = {"battery": ("stale", Quality.STALE), "heat_pump": ("error", Quality.ERROR),
                "dc_bus": ("stale", Quality.STALE), "submeter_1": ("error", Quality.ERROR)}
    await eventually(lambda: all(gateway.health()[name].state == state
                                 for name, (state, _) in expected.items()),
                     what=lambda: f"the faulty devices reported: {gateway.health()}")
    # The healthy ones keep every slot of their 1 Hz schedule meanwhile: they poll on,
    # and no cycle is skipped because a neighbour held the line.
    await eventually(lambda: all(realtime_polls(gateway, name) >= polls[name] + 5
                                 for name in healthy), timeout_s=20,
                     what="five more polls of every healthy device")
    for name in healthy:
        assert skipped(gateway, name) == missed[name], name
        assert gateway.health()[name].state == "ok"
    for name, (_, quality) in expected.items():
        assert first_quality(building.readings, name, quality) is not None, name
        # A poll under way when the fault began may still succeed; every later one
        # reports the fault, with no value (never a stale one).
        later = realtime_batches_after(building.readings, name, gateway, fault_start)[1:]
        assert later, name
        assert all(r.quality is not Quality.OK and r.value is None
                   for batch in later for r in batch), name
    await eventually(lambda: gateway.health()["pv_inverter"].state == "ok", timeout_s=20,
                     what="the inverter back after its 4 s reboot")
    assert first_quality(building.readings, "pv_inverter", Quality.STALE) is not None
    failed = {name: gateway.health()[name].polls_failed for name in expected}
    for name in expected:  # faults end: everyone recovers at its next try
        runner.devices[name].faults.clear()
    await eventually(lambda: all(gateway.health()[n].state == "ok" for n in expected),
                     timeout_s=20, what=lambda: f"everyone recovered: {gateway.health()}")
    for name in expected:  # at most the try under way when the fault ended failed
        assert gateway.health()[name].polls_failed <= failed[name] + 1, name


async def test_rtu_bus_with_a_dead_and_a_late_device(building: Building) -> None:
    runner, gateway = building.runner, building.gateway
    model = runner.site.model
    assert isinstance(runner.clock, ManualClock)
    runner.clock.advance(60.0)  # one physics step, then frozen: values stay put
    runner.refresh()
    site_power = model.site_power_w()
    feeder_power = model.meters["heat_pump_meter"].counter.power_w
    assert abs(site_power - feeder_power) > 10_000  # distinguishable answers
    health = gateway.health
    await eventually(lambda: health()["grid_meter"].polls_ok and
                     health()["heat_pump_meter"].polls_ok, what="both meters answering")
    line = gateway.scheduler_of("grid_meter").line
    runner.faults("heat_pump_meter").latency_s = 0.45  # answers after the 0.3 s timeout
    polls, missed = realtime_polls(gateway, "grid_meter"), skipped(gateway, "grid_meter")
    failed = health()["heat_pump_meter"].polls_failed
    await eventually(lambda: line.stats.discarded_bytes > 0 and
                     health()["heat_pump_meter"].polls_failed >= failed + 3,
                     timeout_s=20, what="late answers timed out and thrown away")
    runner.faults("heat_pump_meter").latency_s = 0.0
    runner.faults("heat_pump_meter").no_response = True  # now dead
    failed = health()["heat_pump_meter"].polls_failed
    await eventually(lambda: health()["heat_pump_meter"].state == "stale" and
                     health()["heat_pump_meter"].polls_failed >= failed + 2,
                     timeout_s=20, what="the dead meter stale")
    # The live meter keeps polling. Its neighbour still costs bus time: every try of the
    # late or dead device holds the shared line for the timeout plus the guard silence
    # (0.3 s + 0.3 s here), which can push a cycle of the live one past its slot — but
    # it keeps at least three slots in four.
    polled = realtime_polls(gateway, "grid_meter") - polls
    assert polled >= 3
    assert 3 * (skipped(gateway, "grid_meter") - missed) <= polled
    assert health()["grid_meter"].state == "ok"
    assert line.stats.discarded_bytes > 0  # the late answers were thrown away…
    for reading in building.readings:  # …and never matched to another request
        if reading.point == "total_power" and reading.quality is Quality.OK:
            expected = site_power if reading.device == "grid_meter" else feeder_power
            assert reading.value == pytest.approx(expected, abs=1.0), reading


async def test_wall_clock_jumps_do_not_change_poll_intervals(tmp_path: Path) -> None:
    spec = load_site(example_on_free_ports(tmp_path))
    site = build_site(spec, start_s=START)
    jumps = iter([0.0, 3600.0, -7200.0, 86400.0] * 1000)
    offset = 0.0

    def jumping_clock() -> float:
        nonlocal offset
        offset += next(jumps)
        return time.time() + offset

    async with SiteRunner(site, ManualClock(START)) as runner:
        gateway = Gateway(with_serial_ports(spec, runner.serial_ports), wall_clock=jumping_clock)
        stop = asyncio.Event()
        task = asyncio.create_task(gateway.run(stop))
        seen: list[tuple[int, float]] = []  # (realtime polls, monotonic time first seen)

        def five_more() -> bool:
            polls = realtime_polls(gateway, "pv_inverter")
            if polls and (not seen or polls > seen[-1][0]):
                seen.append((polls, time.monotonic()))
            return len(seen) >= 6

        await eventually(five_more, timeout_s=30, interval_s=0.01,
                         what="five more polls (a wall-clock jump back would stall them)")
        stop.set()
        await task
    # Polls keep their 1 s monotonic schedule: never ahead of it (a jump forward would
    # make a wall-clock schedule poll at once, again and again: five polls within a few
    # ms), never skipped. The first sighting may itself be late on a loaded machine (the
    # next poll then comes on schedule, sooner than a second after it): 0.3 s allowed.
    (first, start), *later = seen
    for polls, at in later:
        assert at - start >= (polls - first) * 1.0 - 0.3, seen
    assert skipped(gateway, "pv_inverter") == 0
    assert abs(offset) > 3600  # the wall clock really did jump around


async def test_writes_are_verified_and_failures_reported(building: Building) -> None:
    runner, gateway = building.runner, building.gateway
    model = runner.site.model
    await eventually(lambda: all(h.polls_ok for h in gateway.health().values()),
                     what="every device read once (writes need their scale factors)")
    ok = await gateway.write("heat_pump", "sg_ready_state", 1)
    assert ok.ok, ok
    assert model.heat_pumps["heat_pump"].sg_ready_state == 1
    out_of_range = await gateway.write("heat_pump", "flow_setpoint", 80.0)
    assert not out_of_range.ok
    assert "outside 20–60 °C" in out_of_range.error
    assert model.heat_pumps["heat_pump"].flow_setpoint_c == 40.0
    read_only = await gateway.write("heat_pump", "electric_power", 5)
    assert not read_only.ok
    assert "read-only" in read_only.error
    unknown = await gateway.write("nope", "x", 1)
    assert not unknown.ok
    assert "no device named 'nope'" in unknown.error
    refused = await gateway.write("battery", "storage_basic.WChaMax", 50_000.0)
    assert not refused.ok
    assert "exception 03" in refused.error
    runner.faults("dc_bus").freeze = True  # a device that ignores what it is told
    runner.devices["dc_bus"].point_values()
    echoed = await gateway.write("dc_bus", "voltage_setpoint", 380.0)  # FC 6: bad echo
    assert not echoed.ok
    assert "does not echo" in echoed.error
    mismatch = await gateway.write("dc_bus", "power_setpoint", 5000.0)  # FC 16: read back
    assert not mismatch.ok
    assert "read-back [0, 0] differs from written [0, 5000]" in \
        mismatch.error
    runner.faults("dc_bus").freeze = False
    scaled = await gateway.write("pv_inverter", "controls.WMaxLimPct", 42.5)
    assert scaled.ok, scaled
    assert model.pv["pv_inverter"].limit_pct == pytest.approx(42.5)
    assert gateway.health()["heat_pump"].writes_ok == 1


async def test_writes_are_rate_limited_per_device(building: Building) -> None:
    gateway = building.gateway
    await eventually(lambda: gateway.health()["relay_a"].polls_ok, what="relay_a read once")
    # The site default is a burst of 8, then 4 writes/s: 12 writes need ≥ 1 s.
    started = time.monotonic()
    results = await asyncio.gather(*(gateway.write("relay_a", f"relay_{1 + i % 4}", i % 2 == 0)
                                     for i in range(12)))
    elapsed = time.monotonic() - started
    assert all(r.ok for r in results), results
    assert elapsed >= (12 - 8) / 4.0 - 0.05


async def test_single_client_devices_are_polled_over_one_connection(tmp_path: Path) -> None:
    path = with_device_settings(example_on_free_ports(tmp_path),
                                {"pacing": "{ single_client = true }"})
    spec = load_site(path)
    site = build_site(spec, start_s=START)
    async with SiteRunner(site, ManualClock(START)) as runner:
        gateway = Gateway(with_serial_ports(spec, runner.serial_ports))
        stop = asyncio.Event()
        task = asyncio.create_task(gateway.run(stop))
        await eventually(lambda: all(h.polls_ok >= 2 for h in gateway.health().values()),
                         timeout_s=20, what=lambda: f"two polls each: {gateway.health()}")
        health = gateway.health()
        lines = {name: s.line for name, s in gateway.lines.items()}
        stop.set()
        await task
    assert all(h.state == "ok" for h in health.values()), health
    relay_line = lines[spec.devices["relay_a"].line.name]
    assert isinstance(relay_line, TcpLine)
    assert relay_line.stats.connects == 1  # two units, one connection
    assert health["relay_a"].polls_ok >= 2
    assert health["relay_b"].polls_ok >= 2


async def test_request_pacing_and_connect_delay(tmp_path: Path) -> None:
    port = free_port()
    spec = single_device_site("sunspec-inverter", port=port)
    device = dataclasses.replace(
        spec.devices["device"],
        pacing=Pacing(request_interval_s=0.25, connect_delay_s=1.0))
    spec = dataclasses.replace(spec, devices={"device": device})
    site = build_site(spec, start_s=START)
    async with SiteRunner(site, ManualClock(START)):
        gateway = Gateway(spec)
        line = gateway.scheduler_of("device").line
        assert isinstance(line, TcpLine)
        sent: list[float] = []
        original = line.exchange

        async def recording(exchange: Exchange, timeout_s: float, *,
                            turnaround_s: float = 0.0) -> None:
            await original(exchange, timeout_s, turnaround_s=turnaround_s)
            sent.append(time.monotonic())

        line.exchange = recording  # type: ignore[method-assign]
        stop = asyncio.Event()
        started = time.monotonic()
        task = asyncio.create_task(gateway.run(stop))
        await eventually(lambda: len(sent) >= 5, timeout_s=20, what="five requests sent")
        stop.set()
        await task
    assert sent, "nothing was polled"
    assert sent[0] - started >= 1.0  # waited after connecting
    gaps = [b - a for a, b in itertools.pairwise(sent)]
    assert gaps
    assert min(gaps) >= 0.25 - 0.01
