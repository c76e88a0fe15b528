"""The web console and the metrics endpoint under the simulated Jinan building: how long
a live snapshot, a page's data and a Prometheus scrape take, side by side with a static
file from the same server (the HTTP stack's own cost), and what each live-stream client
costs the gateway in CPU.

Run: ``./dev bench console``."""

from __future__ import annotations

import asyncio
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp

from benchmarks.common import Results, free_ports, helpers_of_the_tests, print_table
from controller.app import assemble
from controller.config import uplink_settings
from controller.console.demo import demo_console
from drivers.site import load_site
from simulators.clock import ScaledClock
from simulators.runner import SiteRunner
from simulators.sitefile import build_site

REQUESTS = 200
STREAM_CLIENTS = 20
STREAM_S = 6.0


async def _timed(session: aiohttp.ClientSession, url: str, count: int) -> list[float]:
    """Round trips in ms of ``count`` sequential GETs (body read)."""
    times = []
    for _ in range(count):
        started = time.perf_counter()
        async with session.get(url) as answer:
            await answer.read()
            assert answer.status == 200, (url, answer.status)
        times.append((time.perf_counter() - started) * 1000.0)
    return times


def _p(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 1 else values[0]


async def _cpu_over(seconds: float) -> float:
    """CPU seconds this process used over ``seconds`` of wall time."""
    before = time.process_time()
    await asyncio.sleep(seconds)
    return time.process_time() - before


async def _stream(session: aiohttp.ClientSession, url: str, received: list[int]) -> None:
    async with session.get(url) as answer:
        async for line in answer.content:
            if line.startswith(b"data: "):
                received.append(len(line))


async def measure(folder: Path) -> Results:
    tests_support = helpers_of_the_tests("tests_support")
    spec = load_site(tests_support.example_on_free_ports(folder))
    console_port, metrics_port = free_ports(2)
    console = demo_console(console_port)
    settings = dataclasses.replace(uplink_settings(spec), enabled=False,
                                   store_path=str(folder / "state.sqlite"),
                                   metrics_port=metrics_port)
    clock = ScaledClock(start=tests_support.SIM_START)
    results = Results()
    async with SiteRunner(build_site(spec, start_s=tests_support.SIM_START), clock) as runner, \
            assemble(spec, serial_ports=runner.serial_ports, settings=settings,
                     wall_clock=clock.now, console=console) as app:
        stop = asyncio.Event()
        gateway = asyncio.create_task(app.gateway.run(stop, app.services))
        base = f"http://127.0.0.1:{console_port}"
        jar = aiohttp.CookieJar(unsafe=True)
        async with aiohttp.ClientSession(cookie_jar=jar) as session:
            for _ in range(100):  # until the console listens
                try:
                    await _log_in(session, base)
                    break
                except aiohttp.ClientConnectorError:
                    await asyncio.sleep(0.1)
            await asyncio.sleep(3.0)  # every device polled once
            rows = []
            for name, url in (("static file (HTTP stack)", f"{base}/static/console.css"),
                              ("/api/live", f"{base}/api/live"),
                              ("/api/devices", f"{base}/api/devices"),
                              ("/api/dr", f"{base}/api/dr"),
                              ("/api/energy", f"{base}/api/energy"),
                              ("/metrics", f"http://127.0.0.1:{metrics_port}/metrics")):
                times = await _timed(session, url, REQUESTS)
                rows.append((name, f"{statistics.median(times):.2f}", f"{_p(times, 99):.2f}"))
                key = name.split()[0].strip("/").replace("/", "_")
                results.figures[f"{key}_p50_ms"] = round(statistics.median(times), 3)
                results.figures[f"{key}_p99_ms"] = round(_p(times, 99), 3)
            print_table(["request", "p50 ms", "p99 ms"], rows)
            idle_cpu = await _cpu_over(STREAM_S)
            received: list[int] = []
            streams = [asyncio.create_task(_stream(session, f"{base}/api/stream", received))
                       for _ in range(STREAM_CLIENTS)]
            await asyncio.sleep(1.0)
            start_count = len(received)
            busy_cpu = await _cpu_over(STREAM_S)
            messages = len(received) - start_count
            for task in streams:
                task.cancel()
            await asyncio.gather(*streams, return_exceptions=True)
        stop.set()
        await gateway
    # Both CPU figures include this process's own client side (reading the streams).
    per_client_pct = max(0.0, busy_cpu - idle_cpu) / STREAM_S / STREAM_CLIENTS * 100.0
    print_table(["live stream", "value"], [
        ("gateway + demo building, no clients: CPU %", f"{idle_cpu / STREAM_S * 100:.1f}"),
        (f"with {STREAM_CLIENTS} stream clients: CPU %", f"{busy_cpu / STREAM_S * 100:.1f}"),
        ("per client (server and client side): CPU %", f"{per_client_pct:.2f}"),
        ("messages per client per second",
         f"{messages / STREAM_CLIENTS / STREAM_S:.2f}")])
    results.figures.update(stream_cpu_pct_per_client=round(per_client_pct, 3),
                           stream_messages_per_client_s=round(
                               messages / STREAM_CLIENTS / STREAM_S, 3))
    live_p99 = float(results.figures["api_live_p99_ms"] or 0)
    static_p50 = float(results.figures["static_p50_ms"] or 0)
    live_p50 = float(results.figures["api_live_p50_ms"] or 0)
    results.goal("/api/live p99 well inside the 1 s update period (< 50 ms)",
                 live_p99 < 50.0, f"{live_p99:.1f} ms")
    results.goal("a live snapshot costs < 10x a static file (p50 ratio)",
                 live_p50 < 10 * static_p50, f"{live_p50 / static_p50:.1f}x")
    scrape = float(results.figures["metrics_p99_ms"] or 0)
    results.goal("Prometheus scrape p99 < 100 ms", scrape < 100.0, f"{scrape:.1f} ms")
    results.goal("a live-stream client costs < 0.5 % of a core", per_client_pct < 0.5,
                 f"{per_client_pct:.2f} %")
    rate = messages / STREAM_CLIENTS / STREAM_S
    results.goal("each stream client gets about one message a second (0.8–1.2)",
                 0.8 <= rate <= 1.2, f"{rate:.2f}/s")
    return results


async def _log_in(session: aiohttp.ClientSession, base: str) -> None:
    async with session.get(f"{base}/login") as page:
        token = (await page.text()).split('name="login_token" value="')[1].split('"')[0]
    async with session.post(f"{base}/login", data={"username": "viewer",
                                                   "password": "viewer-demo",
                                                   "login_token": token},
                            allow_redirects=False) as answer:
        assert answer.status == 302, answer.status


def main() -> Results:
    with tempfile.TemporaryDirectory(prefix="pedf-bench-console-") as folder:
        return asyncio.run(measure(Path(folder)))


if __name__ == "__main__":
    from benchmarks.common import print_goals

    print_goals(main().goals)
