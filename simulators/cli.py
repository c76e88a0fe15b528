"""``pedf sim device`` and ``pedf sim site``: serve simulated devices on this machine."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from drivers.maploader import get_map, shipped_models
from drivers.schema import ConfigError
from drivers.site import SiteSpec, load_site
from simulators.clock import ScaledClock
from simulators.faults import FAULT_HELP, Faults, parse_fault
from simulators.runner import SiteRunner, single_device_site
from simulators.sitefile import SimulatedSite, build_site


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="sim_command", required=True)
    device = sub.add_parser(
        "device", help="serve one simulated device on loopback",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="faults (--fault, repeatable):\n" + FAULT_HELP)
    device.add_argument("model", choices=shipped_models(), metavar="MODEL",
                        help="device model: " + ", ".join(shipped_models()))
    device.add_argument("--port", type=int, required=True)
    device.add_argument("--host", default="127.0.0.1")
    device.add_argument("--unit", type=int, default=1, help="Modbus unit id (default 1)")
    device.add_argument("--address", default="000000000001",
                        help="DL/T 645 meter address, 12 digits (default 000000000001)")
    device.add_argument("--serial-server", action="store_true",
                        help="put the device on a virtual RS-485 line behind a serial "
                             "device server at --host:--port (RTU / DL/T 645 frames over "
                             "TCP) instead of a native TCP endpoint")
    device.add_argument("--fault", action="append", default=[], metavar="FAULT")
    _add_time_arguments(device)
    site = sub.add_parser(
        "site", help="serve every device of a site file",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="faults (--fault DEVICE:FAULT, repeatable):\n" + FAULT_HELP)
    site.add_argument("file")
    site.add_argument("--fault", action="append", default=[], metavar="DEVICE:FAULT")
    _add_time_arguments(site)


def _add_time_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--speed", type=float, default=None,
                        help="simulated seconds per real second (default: the site file's, 1)")
    parser.add_argument("--start", default=None,
                        help="simulated start, ISO date-time in the site's time zone "
                             "(default: today 09:00)")
    parser.add_argument("--duration", type=float, default=None,
                        help="stop after this many real seconds")


def run(args: argparse.Namespace) -> int:
    try:
        if args.sim_command == "device":
            if not 1 <= args.port <= 65535:
                raise SystemExit("pedf sim device: --port must be 1–65535")
            spec = single_device_site(args.model, host=args.host, port=args.port,
                                      unit=args.unit, address=args.address,
                                      serial_server=args.serial_server)
            faults = [f"device:{f}" for f in args.fault]
        else:
            spec = load_site(args.file)
            faults = args.fault
        site = build_site(spec, start_s=parse_start(args.start, spec), speed=args.speed)
    except (ConfigError, ValueError) as exc:
        print(f"pedf sim: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(serve(site, faults, duration_s=args.duration))


def parse_start(text: str | None, spec: SiteSpec) -> float | None:
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"--start: expected an ISO date-time, got {text!r}") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=spec.zone)).timestamp()


async def serve(site: SimulatedSite, faults: list[str], *, duration_s: float | None = None,
                on_running: Callable[[SiteRunner], Awaitable[None]] | None = None) -> int:
    """Serve ``site`` until Ctrl-C / SIGTERM (or ``duration_s``); print the endpoints."""
    clock = ScaledClock(start=site.start_s, speed=site.speed)
    device_faults: dict[str, Faults] = {}
    single: set[str] = set()
    try:
        for item in faults:
            device, _, fault = item.partition(":")
            if device not in site.spec.devices:
                raise ValueError(f"--fault {item!r}: no device named {device!r}")
            if parse_fault(fault, device_faults.setdefault(device, Faults())):
                single.add(device)
    except ValueError as exc:
        print(f"pedf sim: {exc}", file=sys.stderr)
        return 2
    runner = SiteRunner(site, clock, single_client=frozenset(single))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):  # before anything starts: no race
        loop.add_signal_handler(signum, stop.set)
    try:
        async with runner:
            for device, device_fault in device_faults.items():
                runner.devices[device].faults = device_fault
            print_endpoints(runner)
            tasks: list[asyncio.Task[Any]] = [
                asyncio.create_task(stop.wait(), name="wait-for-signal")]
            if duration_s is not None:
                tasks.append(asyncio.create_task(asyncio.sleep(duration_s), name="duration"))
            if on_running is not None:
                view = on_running

                async def run_view() -> None:
                    await view(runner)

                tasks.append(asyncio.create_task(run_view(), name="sim-view"))
            try:
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in tasks:
                    task.cancel()
                for task in tasks:
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
    except OSError as exc:
        print(f"pedf sim: cannot serve: {exc} (is another simulator using the port?)",
              file=sys.stderr)
        return 1
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
    print("simulator stopped", flush=True)
    return 0


def print_endpoints(runner: SiteRunner, *, stop_hint: bool = True) -> None:
    site = runner.site
    zone = site.spec.zone
    start = datetime.fromtimestamp(site.start_s, zone).isoformat(timespec="seconds")
    print(f"site {site.spec.site_id}: simulated from {start}, speed {site.speed:g}×", flush=True)
    for endpoint in runner.endpoints:
        where = endpoint.address
        if endpoint.site_port:
            linked = " (linked)" if endpoint.site_port in runner.links else ""
            where = f"{endpoint.site_port}{linked} → {endpoint.address}  (virtual RS-485 line)"
        print(f"  {where}", flush=True)
        for station, name, model in endpoint.devices:
            kind = get_map(model).kind
            print(f"    {station:<20}  {name:<18} {model:<20} {kind}", flush=True)
    for note in site.notes:
        print(f"  note: {note}", flush=True)
    if stop_hint:
        print("Ctrl-C stops.", flush=True)
