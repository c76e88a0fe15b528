"""The controller against 100 simulated Modbus TCP devices: CPU, throughput, coalescing.

Three parts, each measured side by side in this one run (these machines are shared and
noisy, so read the ratios, not the absolute figures; nothing here is asserted):

1. **CPU at 1 Hz.** A generated site of 100 ``sg-ready-heatpump`` devices, each on its
   own TCP port of a simulator running in a separate process (``pedf sim site``), each
   with three poll groups (the map's realtime, slow and energy points) at 1 Hz. The
   gateway (:class:`controller.runtime.Gateway`) runs in this process; after a warm-up
   the CPU time of this process (``time.process_time``) over a steady-state window is
   divided by the wall time of the window. Goal: at most 0.10 of one core. Requests/s,
   failed polls (should be 0) and skipped cycles are shown to prove the load was real.
2. **Throughput with 5 ms device latency.** The same devices answering 5 ms late
   (``--fault DEVICE:latency=0.005``). The gateway polls every group as fast as it can
   (interval 1 ms: the site file's minimum is 50 ms, so the interval is lowered on the
   loaded site spec), against a naive loop — one pymodbus ``AsyncModbusTcpClient`` per
   device, devices visited one after the other, one request at a time, issuing the same
   request list the gateway's plans issue. Runs alternate (naive, controller, naive,
   controller) so drift in machine load shows; goal: controller/naive ≥ 3×.
3. **Coalescing.** Per shipped map, requests for one poll of every readable point with
   the planner's coalescing vs one request per point (the readable points plus the
   scale factors they need, each once); per map and overall (sums). Goal: ≥ 3× fewer
   overall. The same comparison for each map's default poll groups is shown too.

Both gateway and simulator share this machine's cores; "sim CPU s/s" is the simulator
process's CPU per wall second (Linux ``/proc``), and "round trip ms" the mean request round
trip the gateway measured (naive: wall time per request). The simulator advances the whole
site's physics on every request, so it costs more per request than the controller; when it
nears one core in part 2, round trips grow far beyond the 5 ms added and the controller's
requests/s (and the ratio) are the simulator's limit — a floor for the controller, and the
output says so.

Run: ``python -m benchmarks controller`` from the repository root (about one minute).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException
from pymodbus.pdu import ModbusPDU

from benchmarks.common import Results, free_ports, print_goals, print_table
from controller.runtime import Gateway
from drivers.codec import register_map, with_dependencies
from drivers.maploader import get_map, shipped_models
from drivers.planner import ReadRequest, plan_group
from drivers.points import DeviceMap, Point, Protocol, Table
from drivers.site import DeviceSpec, LineKind, SiteSpec, load_site

REPO = Path(__file__).resolve().parents[1]
MODEL = "sg-ready-heatpump"
GROUPS = ("realtime", "slow", "energy")  # the map's groups, all polled at 1 Hz here
DEVICE_COUNT = 100
HOST = "127.0.0.1"
LATENCY_S = 0.005
WARMUP_S = 3.0  # part 1: connect and settle before the window
STEADY_S = 20.0  # part 1: the measured window
FAST_WARMUP_S = 1.0  # part 2: connect before the window
RUN_S = 8.0  # part 2: each measured run
FAST_INTERVAL_S = 0.001  # part 2: "as fast as possible"
SIM_START_TIMEOUT_S = 60.0
CPU_GOAL = 0.10  # of one core
SPEEDUP_GOAL = 3.0
COALESCING_GOAL = 3.0
SIM_SATURATED = 0.75  # simulator CPU per wall second above which it is the bottleneck


# -- output ---------------------------------------------------------------------------


def device_name(index: int) -> str:
    return f"hp_{index:03d}"


def site_toml(ports: Sequence[int], interval_s: float) -> str:
    """A site of ``len(ports)`` heat pumps, one per port, three groups at ``interval_s``."""
    device_map = get_map(MODEL)
    lines = ["[site]", 'id = "bench-controller"', 'name = "controller benchmark"', ""]
    for index, port in enumerate(ports):
        lines += ["[[devices]]", f'name = "{device_name(index)}"', f'model = "{MODEL}"',
                  'transport = "tcp"', f'host = "{HOST}"', f"port = {port}", "unit = 1"]
        for group in GROUPS:
            points = ", ".join(f'"{p}"' for p in device_map.groups[group].points)
            lines += [f"[devices.groups.{group}]", f"interval_s = {interval_s}",
                      f"points = [{points}]"]
        lines.append("")
    return "\n".join(lines)


def write_site(folder: Path, name: str, interval_s: float) -> Path:
    path = folder / name
    path.write_text(site_toml(free_ports(DEVICE_COUNT), interval_s), encoding="utf-8")
    return path


def with_interval(site: SiteSpec, interval_s: float) -> SiteSpec:
    """The site with every poll group's interval set to ``interval_s`` (may be below the
    site file's 50 ms minimum: the benchmark wants "as fast as possible")."""
    devices = {
        name: dataclasses.replace(device, groups={
            key: dataclasses.replace(group, interval_s=interval_s)
            for key, group in device.groups.items()})
        for name, device in site.devices.items()}
    return dataclasses.replace(site, devices=devices)


def device_requests(device: DeviceSpec) -> list[ReadRequest]:
    """One poll of every group of ``device``, as the gateway plans it."""
    device_map = register_map(device.device_map)
    return [request for group in device.groups.values()
            for request in plan_group(device_map, group.points,
                                      max_registers=device.max_registers)]


# -- the simulator process ------------------------------------------------------------


def process_cpu_s(pid: int) -> float | None:
    """CPU seconds (user + system) of process ``pid`` so far, where ``/proc`` exists."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Simulator:
    process: subprocess.Popen[str]
    errors: Path

    def cpu_s(self) -> float | None:
        return process_cpu_s(self.process.pid)

    def error_tail(self) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.errors.read_text(errors="replace").splitlines()[-20:])
        return ""


def _drain(stream: Iterator[str], ready: threading.Event) -> None:
    """Read the simulator's stdout to its end (so it never blocks on a full pipe)."""
    for line in stream:
        if line.strip() == "Ctrl-C stops.":
            ready.set()


@contextlib.contextmanager
def simulator(site_file: Path, faults: Sequence[str]) -> Iterator[Simulator]:
    """Serve ``site_file`` in a separate ``pedf sim site`` process; stopped with SIGINT
    (killed if it does not stop) whatever happens."""
    command = [sys.executable, "-m", "controller.cli", "sim", "site", str(site_file)]
    for fault in faults:
        command += ["--fault", fault]
    errors = site_file.with_suffix(".stderr")
    with errors.open("w") as stderr:
        process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=stderr,
                                   text=True)
    sim = Simulator(process, errors)
    try:
        _wait_ready(sim)
        yield sim
    finally:
        _stop(process)


def _wait_ready(sim: Simulator) -> None:
    ready = threading.Event()
    assert sim.process.stdout is not None
    threading.Thread(target=_drain, args=(sim.process.stdout, ready), daemon=True).start()
    deadline = time.monotonic() + SIM_START_TIMEOUT_S
    while not ready.wait(0.1):
        if sim.process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the simulator did not start (exit code "
                               f"{sim.process.poll()}):\n{sim.error_tail()}")


def _stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if process.stdout is not None:
        process.stdout.close()


# -- measuring the gateway ------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """Counters at one moment: wall and CPU clocks, the gateway's and the simulator's."""

    wall: float
    cpu: float
    sim_cpu: float | None
    requests: int
    polls_ok: int
    polls_failed: int
    skipped: int
    timeouts: int
    round_trip_ms: float  # mean over devices of their request round trip (EWMA)


@dataclass(frozen=True)
class Window:
    """What happened between two samples."""

    wall_s: float
    cpu_s: float
    sim_cpu_s: float | None
    requests: int
    polls_ok: int
    polls_failed: int
    skipped: int
    timeouts: int
    round_trip_ms: float

    @property
    def cpu_per_wall(self) -> float:
        return self.cpu_s / self.wall_s

    @property
    def sim_cpu_per_wall(self) -> float | None:
        return None if self.sim_cpu_s is None else self.sim_cpu_s / self.wall_s

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.wall_s

    @property
    def cpu_us_per_request(self) -> float:
        return self.cpu_s / max(self.requests, 1) * 1e6


def window(before: Sample, after: Sample) -> Window:
    sim_cpu = None if before.sim_cpu is None or after.sim_cpu is None \
        else after.sim_cpu - before.sim_cpu
    return Window(after.wall - before.wall, after.cpu - before.cpu, sim_cpu,
                  after.requests - before.requests, after.polls_ok - before.polls_ok,
                  after.polls_failed - before.polls_failed, after.skipped - before.skipped,
                  after.timeouts - before.timeouts, after.round_trip_ms)


def sample_gateway(gateway: Gateway, sim: Simulator) -> Sample:
    schedulers = list(gateway.lines.values())
    devices = [device for scheduler in schedulers for device in scheduler.devices]
    return Sample(
        wall=time.perf_counter(), cpu=time.process_time(), sim_cpu=sim.cpu_s(),
        requests=sum(s.line.stats.requests for s in schedulers),
        polls_ok=sum(d.health.polls_ok for d in devices),
        polls_failed=sum(d.health.polls_failed for d in devices),
        skipped=sum(g.skipped for d in devices for g in d.groups),
        timeouts=sum(s.line.stats.timeouts for s in schedulers),
        round_trip_ms=statistics.fmean(d.health.latency_ms for d in devices),
    )


async def measure_gateway(site: SiteSpec, sim: Simulator, warmup_s: float,
                          window_s: float) -> Window:
    """Run a gateway for ``site``; the counters over ``window_s`` after ``warmup_s``."""
    gateway = Gateway(site)
    stop = asyncio.Event()
    task = asyncio.create_task(gateway.run(stop), name="bench-gateway")
    try:
        await asyncio.sleep(warmup_s)
        before = sample_gateway(gateway, sim)
        await asyncio.sleep(window_s)
        after = sample_gateway(gateway, sim)
    finally:
        stop.set()
        await task
    return window(before, after)


# -- the naive baseline ---------------------------------------------------------------

Reader = Callable[..., Awaitable[ModbusPDU]]


def _reader(client: AsyncModbusTcpClient, table: Table) -> Reader:
    return {Table.COIL: client.read_coils, Table.DISCRETE_INPUT: client.read_discrete_inputs,
            Table.HOLDING: client.read_holding_registers,
            Table.INPUT: client.read_input_registers}[table]


@dataclass
class NaiveTarget:
    client: AsyncModbusTcpClient
    unit: int
    requests: list[tuple[Reader, int, int]]  # (read method, address, count)


async def naive_targets(site: SiteSpec) -> list[NaiveTarget]:
    targets = []
    for device in site.devices.values():
        line = device.line
        assert line.kind is LineKind.TCP
        client = AsyncModbusTcpClient(line.host, port=line.port,
                                      timeout=device.timeout_s, retries=0)
        targets.append(NaiveTarget(client, device.unit, [
            (_reader(client, r.table), r.address, r.count) for r in device_requests(device)]))
        if not await client.connect():
            raise RuntimeError(f"naive loop: cannot connect to {line}")
    return targets


async def naive_loop(targets: Sequence[NaiveTarget], duration_s: float
                     ) -> tuple[int, int, float]:
    """Devices one after the other, one request at a time, until ``duration_s`` is up.
    Returns (answered, failed, wall seconds)."""
    answered = failed = 0
    started = time.perf_counter()
    deadline = started + duration_s
    while True:
        for target in targets:
            for read, address, count in target.requests:
                if time.perf_counter() >= deadline:
                    return answered, failed, time.perf_counter() - started
                try:
                    response = await read(address, count=count, device_id=target.unit)
                except ModbusException:
                    failed += 1
                    continue
                if response.isError():
                    failed += 1
                else:
                    answered += 1


async def measure_naive(site: SiteSpec, sim: Simulator, duration_s: float) -> Window:
    targets = await naive_targets(site)
    try:
        sim_before, cpu_before = sim.cpu_s(), time.process_time()
        answered, failed, wall = await naive_loop(targets, duration_s)
        cpu, sim_after = time.process_time() - cpu_before, sim.cpu_s()
    finally:
        for target in targets:
            target.client.close()
    sim_cpu = None if sim_before is None or sim_after is None else sim_after - sim_before
    requests = answered + failed
    return Window(wall, cpu, sim_cpu, requests, answered, failed, 0, 0,
                  wall / max(requests, 1) * 1000.0)


# -- part 1 ---------------------------------------------------------------------------


def part_cpu(folder: Path) -> Window:
    print(f"\n-- part 1: {DEVICE_COUNT} TCP devices ({MODEL}), groups {', '.join(GROUPS)} "
          f"at 1 Hz; warm-up {WARMUP_S:g} s, window {STEADY_S:g} s")
    site_file = write_site(folder, "site-1hz.toml", 1.0)
    site = load_site(site_file)
    per_cycle = sum(len(device_requests(d)) for d in site.devices.values())
    with simulator(site_file, ()) as sim:
        result = asyncio.run(measure_gateway(site, sim, WARMUP_S, STEADY_S))
    sim_cpu = result.sim_cpu_per_wall
    print_table(
        ["figure", "value"],
        [["requests planned per second", per_cycle],
         ["requests/s issued", f"{result.requests_per_s:.1f}"],
         ["polls ok / failed", f"{result.polls_ok} / {result.polls_failed}"],
         ["skipped cycles / timeouts", f"{result.skipped} / {result.timeouts}"],
         ["controller CPU s per wall s", f"{result.cpu_per_wall:.4f}"],
         ["controller CPU µs per request", f"{result.cpu_us_per_request:.0f}"],
         ["mean round trip ms (incl. sim queueing)", f"{result.round_trip_ms:.1f}"],
         ["simulator CPU s per wall s", "n/a" if sim_cpu is None else f"{sim_cpu:.3f}"]])
    return result


# -- part 2 ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    kind: str  # "naive" or "controller"
    result: Window


def part_throughput(folder: Path) -> list[Run]:
    print(f"\n-- part 2: the same {DEVICE_COUNT} devices, {LATENCY_S * 1000:g} ms added "
          f"latency each; runs of {RUN_S:g} s, alternating")
    site_file = write_site(folder, "site-fast.toml", 0.05)
    site = load_site(site_file)
    fast = with_interval(site, FAST_INTERVAL_S)
    faults = [f"{name}:latency={LATENCY_S:g}" for name in site.devices]
    runs: list[Run] = []
    with simulator(site_file, faults) as sim:
        for kind in ("naive", "controller", "naive", "controller"):
            if kind == "naive":
                result = asyncio.run(measure_naive(site, sim, RUN_S))
            else:
                result = asyncio.run(measure_gateway(fast, sim, FAST_WARMUP_S, RUN_S))
            runs.append(Run(kind, result))
            print(f"  ... {kind}: {result.requests_per_s:.0f} requests/s", flush=True)
    print_table(
        ["run", "requests/s", "failed", "round trip ms", "CPU s/s", "CPU µs/req",
         "sim CPU s/s"],
        [[f"{i}. {run.kind}", f"{run.result.requests_per_s:.1f}",
          run.result.polls_failed, f"{run.result.round_trip_ms:.1f}",
          f"{run.result.cpu_per_wall:.3f}",
          f"{run.result.cpu_us_per_request:.0f}",
          "n/a" if run.result.sim_cpu_per_wall is None
          else f"{run.result.sim_cpu_per_wall:.3f}"]
         for i, run in enumerate(runs, start=1)])
    note_simulator_bound(runs)
    return runs


def note_simulator_bound(runs: Sequence[Run]) -> None:
    """Say so when the simulator, not the controller, limited the controller's runs."""
    busiest = max((r.result.sim_cpu_per_wall or 0.0 for r in runs if r.kind == "controller"),
                  default=0.0)
    if busiest >= SIM_SATURATED:
        print(f"  note: the simulator process ran at up to {busiest:.2f} of a core during the "
              f"controller runs\n  (round trips far above the {LATENCY_S * 1000:g} ms added): "
              "the controller's requests/s, and the\n  ratio, are bounded by the simulator "
              "here — a floor, not the controller's ceiling.")


def speedups(runs: Sequence[Run]) -> tuple[float, float]:
    """(mean controller / mean naive, worst controller / best naive) requests/s."""
    naive = [r.result.requests_per_s for r in runs if r.kind == "naive"]
    controller = [r.result.requests_per_s for r in runs if r.kind == "controller"]
    return (statistics.fmean(controller) / statistics.fmean(naive),
            min(controller) / max(naive))


# -- part 3 ---------------------------------------------------------------------------


def request_counts(device_map: DeviceMap[Point], names: Sequence[str]) -> tuple[int, int]:
    """(one request per point incl. the scale factors needed, coalesced plan)."""
    return (len(with_dependencies(device_map, tuple(names))),
            len(plan_group(device_map, names)))


def part_coalescing() -> tuple[int, int]:
    print("\n-- part 3: requests per poll, one request per point vs coalesced")
    full_rows: list[list[object]] = []
    group_rows: list[list[object]] = []
    totals = [0, 0]
    group_totals = [0, 0]
    for model in shipped_models():
        any_map = get_map(model)
        if any_map.protocol is not Protocol.MODBUS:
            continue  # DL/T 645 maps are read by data identifier: nothing to coalesce
        device_map = register_map(any_map)
        readable = [p.name for p in device_map.points.values() if p.access.readable]
        per_point, coalesced = request_counts(device_map, readable)
        totals[0] += per_point
        totals[1] += coalesced
        full_rows.append([model, len(readable), per_point, coalesced,
                          f"{per_point / coalesced:.1f}×"])
        for group in device_map.groups.values():
            g_point, g_plan = request_counts(device_map, group.points)
            group_totals[0] += g_point
            group_totals[1] += g_plan
            group_rows.append([f"{model}/{group.name}", f"{group.interval_s:g}",
                               g_point, g_plan, f"{g_point / g_plan:.1f}×"])
    full_rows.append(["overall", "", totals[0], totals[1], f"{totals[0] / totals[1]:.1f}×"])
    group_rows.append(["overall", "", group_totals[0], group_totals[1],
                       f"{group_totals[0] / group_totals[1]:.1f}×"])
    print("  full poll of every readable point:")
    print_table(["map", "readable", "per point", "coalesced", "ratio"], full_rows)
    print("  the maps' default poll groups (one poll of each):")
    print_table(["map/group", "interval s", "per point", "coalesced", "ratio"], group_rows)
    return totals[0], totals[1]


# -- summary --------------------------------------------------------------------------


def summary(cpu: Window, runs: Sequence[Run], coalescing: tuple[int, int]) -> Results:
    mean_speedup, worst_speedup = speedups(runs)
    overall = coalescing[0] / coalescing[1]
    results = Results({"controller_cpu_per_wall": cpu.cpu_per_wall,
                       "requests_per_s": cpu.requests_per_s,
                       "speedup_vs_naive_mean": mean_speedup,
                       "speedup_vs_naive_worst_pair": worst_speedup,
                       "coalescing_ratio": overall})
    results.goal(f"controller CPU at 1 Hz ≤ {CPU_GOAL:.2f} of a core",
                 cpu.cpu_per_wall <= CPU_GOAL,
                 f"{cpu.cpu_per_wall:.3f} ({cpu.requests_per_s:.0f} req/s, "
                 f"{cpu.polls_failed} failed polls)")
    results.goal(f"requests/s vs naive pymodbus loop ≥ {SPEEDUP_GOAL:g}×",
                 mean_speedup >= SPEEDUP_GOAL,
                 f"{mean_speedup:.1f}× mean (worst pair {worst_speedup:.1f}×)")
    results.goal(f"coalescing ≥ {COALESCING_GOAL:g}× fewer requests",
                 overall >= COALESCING_GOAL, f"{overall:.1f}× ({coalescing[0]} → {coalescing[1]})")
    return results


def main() -> Results:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="pedf-bench-") as folder:
        cpu = part_cpu(Path(folder))
        runs = part_throughput(Path(folder))
    coalescing = part_coalescing()
    results = summary(cpu, runs, coalescing)
    print(f"\n  (benchmark took {time.perf_counter() - started:.0f} s)")
    return results


if __name__ == "__main__":
    print_goals(main().goals)
