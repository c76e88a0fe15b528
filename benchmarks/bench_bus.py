"""Bus efficiency: how close the gateway gets to what an RS-485 line can physically carry.

Two runs, each a generated site with one serial line of 8 meters, served by ``pedf sim
site`` (:class:`simulators.runner.SiteRunner`: a virtual RS-485 line of real
pseudo-terminals that delivers every byte no earlier than the line's baud rate allows,
``time_scale`` 1) in a separate process, and polled by the real
:class:`controller.runtime.Gateway` in this one:

* Modbus RTU, 9600 baud 8N1 (10 bits a character), 8 ``dtsu666`` meters (units 1–8);
* DL/T 645-2007, 2400 baud 8E1 (11 bits a character), 8 ``dlt645-3phase`` meters.

Every meter's ``realtime`` group is polled every 50 ms (the site file's minimum), far
faster than the line can serve 8 meters, so the line is saturated and the scheduler
skips cycles (counted, expected). The map's slower groups keep their intervals.

**The physical limit.** An exchange cannot take less than its request and its reply on
the wire plus the silences the line requires: ``(request bytes + reply bytes + 3.5 +
3.5) × bits per character / baud``, where the two 3.5-character silences are the ones
Modbus RTU requires between frames — before the request (which the gateway keeps) and
before the reply (the slave detects the end of the request by that silence). The same
silences are counted for DL/T 645, whose gateway keeps them too (the standard itself
asks a meter to answer after 20–500 ms, more than 3.5 characters at 2400 baud; the
simulated meters answer at once). Request bytes include the four FEH wake-up bytes the
gateway sends before every DL/T 645 frame; replies are counted as they arrive (the
simulated meters send no FEH). Bytes are counted on the gateway's line over the
measured window, so the limit is that of the traffic actually carried: ``limit
exchanges/s = exchanges / Σ minimum exchange times``, and the efficiency is ``Σ minimum
exchange times / window``. Goal: at least 85 %, and no meter starves (every meter's
poll count at least 80 % of the busiest one's).

**Where the time goes.** Each exchange is split, from the times the gateway wrote its
request and received the reply's bytes: the request on the wire; the *device turnaround*
from the request's last byte reaching the device to the reply's first byte leaving it
(the simulator's reply latency and the relay's scheduling; the standard wants at least
3.5 characters here); the reply on the wire; and the *gateway turnaround* from the
reply's last byte to the next request (the 3.5-character silence the gateway must keep,
plus its own event-loop and scheduling latency). The excess of each turnaround over 3.5
characters is what each side loses; the output says both. Where the simulated devices
answer sooner than that silence (the DL/T 645 simulator answers within a few
milliseconds), the efficiency can pass 100 %: the limit counts a silence the simulator
does not keep, and the output says so.

Run: ``python -m benchmarks bus`` from the repository root (about two minutes).
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.bench_controller import simulator
from benchmarks.common import Results, print_goals, print_table
from controller.lines import Line, LinkStats
from controller.runtime import Gateway
from controller.scheduler import LineScheduler
from drivers.maploader import get_map
from drivers.site import load_site

DEVICES = 8
POLL_INTERVAL_S = 0.05  # the site file's minimum: saturates the line
SILENCE_CHARS = 3.5  # before the request and before the reply
EFFICIENCY_GOAL = 0.85
FAIRNESS_GOAL = 0.80  # least-polled meter's polls / most-polled meter's polls


@dataclass(frozen=True)
class Case:
    """One line to measure."""

    title: str
    model: str
    baud: int
    parity: str  # N or E
    warmup_s: float
    window_s: float

    @property
    def bits_per_char(self) -> int:
        return 10 if self.parity == "N" else 11

    @property
    def char_s(self) -> float:
        """Seconds one character takes on the wire."""
        return self.bits_per_char / self.baud

    def station(self, index: int) -> str:
        if get_map(self.model).protocol.value == "dlt645":
            return f'address = "{202400000001 + index:012d}"'
        return f"unit = {index + 1}"


CASES = (
    Case("Modbus RTU 9600 8N1", "dtsu666", 9600, "N", warmup_s=3.0, window_s=20.0),
    Case("DL/T 645 2400 8E1", "dlt645-3phase", 2400, "E", warmup_s=8.0, window_s=60.0),
)


def site_toml(case: Case, serial_port: Path) -> str:
    """A site of one RS-485 line with ``DEVICES`` meters of ``case.model``, whose
    realtime group is polled every ``POLL_INTERVAL_S``."""
    points = ", ".join(f'"{p}"' for p in get_map(case.model).groups["realtime"].points)
    lines = ["[site]", 'id = "bench-bus"', 'name = "bus efficiency benchmark"', "",
             "[simulation.base_load]", "rated_w = 30000.0", 'profile = "plugs"', "",
             "[[lines]]", 'name = "rs485"', 'transport = "serial"',
             f'serial_port = "{serial_port}"', f"baud = {case.baud}",
             f'parity = "{case.parity}"', "stop_bits = 1", ""]
    for index in range(DEVICES):
        lines += ["[[devices]]", f'name = "meter_{index + 1}"', f'model = "{case.model}"',
                  'line = "rs485"', case.station(index),
                  "[devices.groups.realtime]", f"interval_s = {POLL_INTERVAL_S}",
                  f"points = [{points}]", ""]
    return "\n".join(lines)


# -- what the gateway's line saw ------------------------------------------------------


@dataclass
class WireLog:
    """Times and sizes of what the line sent and received (monotonic seconds)."""

    sent: list[tuple[float, int]] = field(default_factory=list)
    received: list[tuple[float, int]] = field(default_factory=list)
    recording: bool = False


def tap(line: Line, log: WireLog) -> None:
    """Record the line's writes and arrivals (wrapping the instance's two methods)."""
    send: Callable[[bytes], None] = line._send
    receive: Callable[[bytes], None] = line._received

    def sent(frame: bytes) -> None:
        if log.recording:
            log.sent.append((time.monotonic(), len(frame)))
        send(frame)

    def received(data: bytes) -> None:
        if log.recording:
            log.received.append((time.monotonic(), len(data)))
        receive(data)

    line._send = sent  # type: ignore[method-assign]
    line._received = received  # type: ignore[method-assign]


@dataclass(frozen=True)
class Exchange:
    """One request and its reply, as the gateway saw them."""

    sent_at: float
    request_bytes: int
    reply_bytes: int
    reply_done_at: float  # the reply's last byte arrived
    next_sent_at: float | None  # the line's next request


def exchanges(log: WireLog) -> tuple[list[Exchange], int]:
    """The answered exchanges in ``log`` and how many requests got no bytes back."""
    result: list[Exchange] = []
    unanswered = 0
    arrivals = log.received
    index = 0
    for number, (sent_at, size) in enumerate(log.sent):
        next_sent = log.sent[number + 1][0] if number + 1 < len(log.sent) else None
        reply_bytes, done_at = 0, 0.0
        while index < len(arrivals) and (next_sent is None or arrivals[index][0] < next_sent):
            if arrivals[index][0] >= sent_at:
                done_at = arrivals[index][0]
                reply_bytes += arrivals[index][1]
            index += 1
        if reply_bytes == 0:
            unanswered += 1
            continue
        result.append(Exchange(sent_at, size, reply_bytes, done_at, next_sent))
    return result, unanswered


# -- one run --------------------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    case: Case
    wall_s: float
    exchanges: int  # requests sent in the window
    answered: list[Exchange]
    unanswered: int
    stats: LinkStats  # counters over the window
    polls: dict[str, int]  # per meter, every group, over the window
    skipped: int
    failed_polls: int

    @property
    def bytes_on_wire(self) -> int:
        return sum(e.request_bytes + e.reply_bytes for e in self.answered)

    @property
    def min_time_s(self) -> float:
        """Σ minimum exchange times: bytes and two 3.5-character silences each."""
        chars = self.bytes_on_wire + 2 * SILENCE_CHARS * len(self.answered)
        return chars * self.case.char_s

    @property
    def achieved_per_s(self) -> float:
        return len(self.answered) / self.wall_s

    @property
    def limit_per_s(self) -> float:
        return len(self.answered) / self.min_time_s

    @property
    def efficiency(self) -> float:
        return self.min_time_s / self.wall_s

    @property
    def fairness(self) -> float:
        counts = list(self.polls.values())
        return min(counts) / max(counts) if max(counts) else 0.0


def stats_delta(before: LinkStats, after: LinkStats) -> LinkStats:
    return LinkStats(**{name: getattr(after, name) - getattr(before, name)
                        for name in LinkStats.__dataclass_fields__})


def polls_by_device(scheduler: LineScheduler) -> dict[str, int]:
    return {d.spec.name: sum(g.polls for g in d.groups) for d in scheduler.devices}


async def measure(case: Case, site_file: Path) -> Result:
    gateway = Gateway(load_site(site_file))
    (scheduler,) = gateway.lines.values()
    log = WireLog()
    tap(scheduler.line, log)
    stop = asyncio.Event()
    task = asyncio.create_task(gateway.run(stop), name="bench-gateway")
    try:
        await asyncio.sleep(case.warmup_s)
        polls = polls_by_device(scheduler)
        stats = LinkStats(**vars(scheduler.line.stats))
        skipped = sum(g.skipped for d in scheduler.devices for g in d.groups)
        failed = sum(d.health.polls_failed for d in scheduler.devices)
        log.recording = True
        started = time.monotonic()
        await asyncio.sleep(case.window_s)
        log.recording = False
        wall = time.monotonic() - started
        polls = {name: count - polls[name] for name, count in
                 polls_by_device(scheduler).items()}
        stats = stats_delta(stats, scheduler.line.stats)
        skipped = sum(g.skipped for d in scheduler.devices for g in d.groups) - skipped
        failed = sum(d.health.polls_failed for d in scheduler.devices) - failed
    finally:
        stop.set()
        await task
    answered, unanswered = exchanges(log)
    # the window's last exchange may still be under way: its next request is unknown
    return Result(case, wall, len(log.sent), answered, unanswered, stats, polls, skipped,
                  failed)


def run_case(case: Case, folder: Path) -> Result:
    print(f"\n-- {case.title}: {DEVICES} × {case.model}, realtime group every "
          f"{POLL_INTERVAL_S * 1000:g} ms; warm-up {case.warmup_s:g} s, window "
          f"{case.window_s:g} s", flush=True)
    serial_port = folder / f"tty-{case.model}"
    site_file = folder / f"site-{case.model}.toml"
    site_file.write_text(site_toml(case, serial_port), encoding="utf-8")
    with simulator(site_file, ()) as sim:
        if not serial_port.exists():
            raise RuntimeError(f"the simulator did not link {serial_port}:\n"
                               f"{sim.error_tail()}")
        result = asyncio.run(measure(case, site_file))
    report(result)
    return result


# -- output ---------------------------------------------------------------------------


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def report(result: Result) -> None:
    case, answered = result.case, result.answered
    char = case.char_s
    silence = SILENCE_CHARS * char
    timed = [e for e in answered if e.next_sent_at is not None]
    request = [e.request_bytes * char for e in timed]
    reply = [e.reply_bytes * char for e in timed]
    device = [e.reply_done_at - e.sent_at - q - a for e, q, a in zip(timed, request, reply,
                                                                         strict=True)]
    gateway = [e.next_sent_at - e.reply_done_at for e in timed if e.next_sent_at is not None]
    cycle = [e.next_sent_at - e.sent_at for e in timed if e.next_sent_at is not None]
    minimum = [q + a + 2 * silence for q, a in zip(request, reply, strict=True)]
    counts = sorted(result.polls.values())
    stats = result.stats
    print_table(["figure", "value"], [
        ["exchanges answered / unanswered", f"{len(answered)} / {result.unanswered}"],
        ["bytes per exchange (request / reply, mean)",
         f"{statistics.fmean(e.request_bytes for e in answered):.1f} / "
         f"{statistics.fmean(e.reply_bytes for e in answered):.1f}"],
        ["character time ms (bits / baud)", f"{char * 1000:.3f} ({case.bits_per_char} / "
                                            f"{case.baud})"],
        ["achieved exchanges/s", f"{result.achieved_per_s:.2f}"],
        ["physical limit exchanges/s", f"{result.limit_per_s:.2f}"],
        ["efficiency (achieved / limit)", f"{result.efficiency:.1%}"],
        ["polls per meter over the window (min / max)", f"{counts[0]} / {counts[-1]}"],
        ["skipped cycles (the line is saturated)", result.skipped],
        ["failed polls / timeouts / bad frames", f"{result.failed_polls} / {stats.timeouts} "
                                                 f"/ {stats.bad_frames}"],
        ["bytes discarded before a request", stats.discarded_bytes],
    ])
    if not timed:
        return
    print("  where an exchange's time goes (ms, median / p90 over the window):")
    rows = [
        ["request on the wire", median_p90(request), ""],
        ["device turnaround (simulator + relay)", median_p90(device),
         f"{ms(statistics.median(device) - silence)} over 3.5 chars"],
        ["reply on the wire", median_p90(reply), ""],
        ["gateway turnaround (silence + loop)", median_p90(gateway),
         f"{ms(statistics.median(gateway) - silence)} over 3.5 chars"],
        ["whole exchange", median_p90(cycle),
         f"minimum {median_p90(minimum)}"],
    ]
    print_table(["part", "median / p90", "note"], rows)
    device_excess = statistics.median(device) - silence
    gateway_excess = statistics.median(gateway) - silence
    print(f"  the gateway loses {ms(gateway_excess)} ms an exchange beyond the silence it must "
          f"keep ({gateway_excess / statistics.median(minimum):.1%} of a minimum exchange);")
    if device_excess < 0:
        print(f"  the simulated devices answer {ms(-device_excess)} ms sooner than the "
              "3.5-character silence the limit counts, so the limit is not a hard one "
              "here\n  (a real Modbus slave waits out that silence; a DL/T 645 meter "
              "answers after 20-500 ms).")
    else:
        print(f"  the simulated devices add {ms(device_excess)} ms an exchange beyond that "
              "silence (reply latency, relay).")


def median_p90(values: Sequence[float]) -> str:
    ordered = sorted(values)
    return f"{ms(statistics.median(ordered))} / {ms(ordered[int(0.9 * (len(ordered) - 1))])}"


def main() -> Results:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="pedf-bench-bus-") as folder:
        measured = [run_case(case, Path(folder)) for case in CASES]
    results = Results()
    for result in measured:
        counts = result.polls.values()
        results.figures[f"{result.case.title}: efficiency"] = result.efficiency
        results.figures[f"{result.case.title}: fairness"] = result.fairness
        results.goal(f"{result.case.title}, {DEVICES} meters: ≥ {EFFICIENCY_GOAL:.0%} of the "
                     "line's physical limit", result.efficiency >= EFFICIENCY_GOAL,
                     f"{result.efficiency:.1%} ({result.achieved_per_s:.2f} of "
                     f"{result.limit_per_s:.2f} exchanges/s)")
        results.goal(f"{result.case.title}: no meter starves (min/max polls ≥ "
                     f"{FAIRNESS_GOAL:.0%})", result.fairness >= FAIRNESS_GOAL,
                     f"{min(counts)}–{max(counts)} polls per meter ({result.fairness:.0%})")
    print(f"\n  (benchmark took {time.perf_counter() - started:.0f} s)")
    return results


if __name__ == "__main__":
    print_goals(main().goals)
