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
from tests_support import example_on_free_ports, free_port

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
    async with SiteRunner(site, ManualClock(START)) as runner:
        gateway = Gateway(with_serial_ports(spec, runner.serial_ports))
        readings: list[Reading] = []
        subscription = gateway.bus.subscribe("test", maxsize=100_000)

        async def collect() -> None:
            async for batch in subscription:
                readings.extend(batch)

        stop = asyncio.Event()
        async with asyncio.TaskGroup() as group:
            run = group.create_task(gateway.run(stop, [("collect", collect)]))
            yield Building(runner, gateway, readings)
            stop.set()
            await run


def realtime_polls(gateway: Gateway, device: str) -> int:
    scheduler = gateway.scheduler_of(device)
    poller = scheduler.device(device)
    return next(g.polls for g in poller.groups if g.group.name == "realtime")


def first_quality(readings: list[Reading], device: str, quality: Quality) -> float | None:
    times = [r.timestamp for r in readings if r.device == device and r.quality is quality]
    return min(times) if times else None


async def test_bad_devices_never_stall_the_healthy_ones(building: Building) -> None:
    runner, gateway = building.runner, building.gateway
    await asyncio.sleep(1.5)  # everyone answers first
    assert all(h.state == "ok" for h in gateway.health().values()), gateway.health()
    runner.faults("battery").no_response = True  # times out
    runner.faults("heat_pump").exception = 4  # answers with exceptions
    runner.faults("dc_bus").disconnect = True  # drops the connection
    runner.faults("submeter_1").corrupt = True  # corrupt frames
    runner.faults("pv_inverter").reboot(4.0)  # goes away, comes back by itself
    fault_start = time.time()
    healthy = ("relay_a", "relay_b", "grid_meter", "heat_pump_meter")
    before = {name: realtime_polls(gateway, name) for name in healthy}
    window_start = time.monotonic()
    await asyncio.sleep(6.0)
    window = time.monotonic() - window_start
    for name in healthy:  # 1 Hz groups keep their rate within 10 %
        rate = (realtime_polls(gateway, name) - before[name]) / window
        assert 0.9 <= rate <= 1.1, (name, rate)
        assert gateway.health()[name].state == "ok"
    health = gateway.health()
    expected = {"battery": ("stale", Quality.STALE), "heat_pump": ("error", Quality.ERROR),
                "dc_bus": ("stale", Quality.STALE), "submeter_1": ("error", Quality.ERROR)}
    for name, (state, quality) in expected.items():
        assert health[name].state == state, (name, health[name])
        first = first_quality(building.readings, name, quality)
        assert first is not None, name
        assert first - fault_start <= 1.0 + 0.3 + 0.1, (name, first)  # within one interval
        bad = [r for r in building.readings if r.device == name and r.timestamp > fault_start + 1.5]
        assert all(r.value is None for r in bad if r.quality is not Quality.OK)
        assert not [r for r in bad if r.quality is Quality.OK and r.point in
                    gateway.site.devices[name].groups["realtime"].points]
    assert health["pv_inverter"].state == "ok"  # back after its 4 s reboot
    assert first_quality(building.readings, "pv_inverter", Quality.STALE) is not None
    for name in expected:  # faults end: everyone recovers within one backoff period (2 s)
        runner.devices[name].faults.clear()
    recovery_start = time.monotonic()
    while any(gateway.health()[n].state != "ok" for n in expected):
        assert time.monotonic() - recovery_start < 2.0 + 1.0 + 0.5, gateway.health()
        await asyncio.sleep(0.05)


async def test_rtu_bus_with_a_dead_and_a_late_device(building: Building) -> None:
    runner, gateway = building.runner, building.gateway
    model = runner.site.model
    assert isinstance(runner.clock, ManualClock)
    runner.clock.advance(60.0)  # one physics step, then frozen: values stay put
    runner.refresh()
    site_power = model.site_power_w()
    feeder_power = model.meters["heat_pump_meter"].counter.power_w
    assert abs(site_power - feeder_power) > 10_000  # distinguishable answers
    await asyncio.sleep(1.0)
    runner.faults("heat_pump_meter").latency_s = 0.45  # answers after the 0.3 s timeout
    before = realtime_polls(gateway, "grid_meter")
    started = time.monotonic()
    await asyncio.sleep(4.0)
    runner.faults("heat_pump_meter").latency_s = 0.0
    runner.faults("heat_pump_meter").no_response = True  # now dead
    await asyncio.sleep(3.0)
    rate = (realtime_polls(gateway, "grid_meter") - before) / (time.monotonic() - started)
    # The live meter keeps polling. Its neighbour still costs bus time: every try of the
    # late or dead device holds the shared line for the timeout plus the guard silence
    # (0.3 s + 0.3 s here), which can push a cycle of the live one past its slot.
    assert 0.75 <= rate <= 1.1
    assert gateway.health()["heat_pump_meter"].state == "stale"
    line = gateway.scheduler_of("grid_meter").line
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
        await asyncio.sleep(0.5)
        before = realtime_polls(gateway, "pv_inverter")
        started = time.monotonic()
        await asyncio.sleep(4.0)
        rate = (realtime_polls(gateway, "pv_inverter") - before) / (time.monotonic() - started)
        stop.set()
        await task
    assert 0.9 <= rate <= 1.1
    assert abs(offset) > 3600  # the wall clock really did jump around


async def test_writes_are_verified_and_failures_reported(building: Building) -> None:
    runner, gateway = building.runner, building.gateway
    model = runner.site.model
    await asyncio.sleep(1.2)
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
    await asyncio.sleep(1.0)
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
        await asyncio.sleep(2.5)
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
        await asyncio.sleep(3.0)
        stop.set()
        await task
    assert sent, "nothing was polled"
    assert sent[0] - started >= 1.0  # waited after connecting
    gaps = [b - a for a, b in itertools.pairwise(sent)]
    assert gaps
    assert min(gaps) >= 0.25 - 0.01
