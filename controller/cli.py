"""``pedf``: the toolkit's command line."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from importlib import resources
from typing import Any

from controller.config import check_site, logging_settings
from controller.logs import setup_logging
from controller.runtime import Service
from controller.topics import Topics
from drivers.maploader import MapError, get_map, shipped_models
from drivers.points import Pacing
from drivers.schema import ConfigError, Node
from drivers.site import SiteSpec, load_site


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pedf", description="PEDF (光储直柔) smart-building gateway toolkit")
    parser.add_argument("--log-level", default=None,
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument("--log-format", default=None, choices=["text", "json"])
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the gateway for a site file (production)")
    run.add_argument("file")
    run.add_argument("--duration", type=float, default=None, help="stop after S seconds")

    demo = sub.add_parser("demo", help="the simulated Jinan office building with its gateway")
    demo.add_argument("--headless", action="store_true", help="logs only, no live view")
    demo.add_argument("--duration", type=float, default=None, help="stop after S seconds")
    demo.add_argument("--speed", type=float, default=None,
                      help="simulated seconds per real second (default 1)")
    demo.add_argument("--start", default=None, help="simulated start (default today 09:00)")
    demo.add_argument("--state-dir", default=None,
                      help="keep the outbox here (default: a temporary folder)")
    demo.add_argument("--platform", type=int, default=None, metavar="PORT",
                      help="report to a city energy-monitoring platform on 127.0.0.1:PORT "
                           "(pedf platform serve --key jinan-demo-key16 --port PORT)")
    demo.add_argument("--console-port", type=int, default=8080,
                      help="the web console's port on 127.0.0.1 (default 8080, or a free "
                           "one when taken; 0: no console)")

    read = sub.add_parser("read", help="read a device of a site file once")
    read.add_argument("file")
    read.add_argument("device")
    read.add_argument("point", nargs="?")

    scan = sub.add_parser(
        "scan", help="find the devices on a line: Modbus unit ids (and SunSpec models), or "
                     "DL/T 645 meter addresses",
        description=SCAN_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    where = scan.add_mutually_exclusive_group(required=True)
    where.add_argument("--host", help="a TCP device, gateway or serial device server")
    where.add_argument("--serial", metavar="PORT", help="an RS-485 port, e.g. /dev/ttyUSB0")
    scan.add_argument("--port", type=int, default=None,
                      help="TCP port (default 502 for Modbus, 8899 for a serial server)")
    scan.add_argument("--serial-server", action="store_true",
                      help="--host is a serial device server in transparent mode")
    scan.add_argument("--protocol", choices=["modbus", "dlt645"], default="modbus")
    scan.add_argument("--baud", type=int, default=None,
                      help="serial: default 9600 (modbus) or 2400 (dlt645)")
    scan.add_argument("--parity", choices=["N", "E", "O"], default=None,
                      help="serial: default N (modbus) or E (dlt645)")
    scan.add_argument("--stop-bits", type=int, choices=[1, 2], default=1)
    scan.add_argument("--units", default="1-247", help="modbus: unit ids, e.g. 1-247 or 1,3")
    scan.add_argument("--addresses", default=None,
                      help="dlt645: meter addresses to check, comma-separated (12 digits "
                           "each); without it, the meter on a point-to-point line is asked "
                           "for its address")
    scan.add_argument("--timeout", type=float, default=None,
                      help="per request, s (default 1.0: every shipped device answers "
                           "well within it, the ESP32 sub-meter in about 0.32 s)")

    command = sub.add_parser(
        "command", help="build and sign a demand-response command (print it, or --send it)")
    command.add_argument("file", help="the site file (for its key, topics and broker)")
    command.add_argument("type", choices=["shed", "cap_import", "grid_setpoint",
                                          "battery_setpoint", "sg_ready", "release", "cancel",
                                          "modify"])
    command.add_argument("--target", default=None,
                         help='device for battery_setpoint / sg_ready (default "site")')
    command.add_argument("--kw", type=float, help="shed / cap_import: kW")
    command.add_argument("--power-w", type=float, help="battery_setpoint: W, + discharge")
    command.add_argument("--state", type=int, help="sg_ready: 1–4")
    command.add_argument("--duration", type=float, default=900.0, help="s (default 900)")
    command.add_argument("--loads", nargs="+", help="shed: only these loads")
    command.add_argument("--cancel-id", "--command-id", dest="cancel_id",
                         help="cancel / modify: the id of the command it acts on")
    command.add_argument("--start-at", type=float, help="scheduled start, UNIX seconds")
    command.add_argument("--ramp", type=float, help="ramp-in time, s")
    command.add_argument("--id", dest="command_id", help="command id (default: random)")
    command.add_argument("--ed25519-key", help="sign with this PEM private key instead of "
                                                "the site's HMAC key")
    command.add_argument("--send", action="store_true",
                         help="publish it to the site's broker and print the reply")
    command.add_argument("--host", help="broker host (default: the site's)")
    command.add_argument("--port", type=int, help="broker port (default: the site's)")
    command.add_argument("--username", help="broker user name (default: the site's)")
    command.add_argument("--password-file", help="file holding the broker password")

    report = sub.add_parser("report", help="a demand-response event's performance: table and "
                                           "plot (PNG)")
    report.add_argument("file", help="the site file (for its store)")
    report.add_argument("event", nargs="?", help="event id (default: list the events)")
    report.add_argument("--png", help="write the plot here (default: EVENT.png)")

    tariff = sub.add_parser("tariff", help="the time-of-use period and price at a moment, or "
                                           "a day's or a month's calendar (table, PNG strip)")
    tariff.add_argument("file", nargs="?", help="the site file (default: the demo site)")
    tariff.add_argument("--tariff", dest="calendar",
                        help="a shipped calendar or a calendar file instead of the site's")
    when = tariff.add_mutually_exclusive_group()
    when.add_argument("--at", help="ISO date-time (site-local without an offset): the "
                                   "period and price then")
    when.add_argument("--date", help="YYYY-MM-DD: that day's calendar (default: today)")
    when.add_argument("--month", help="YYYY-MM: that month, a row per day")
    tariff.add_argument("--png", help="draw the day as a strip into this PNG")

    plan = sub.add_parser("plan", help="read the site once and plan its next day: table and "
                                       "plot (PNG)")
    plan.add_argument("file", help="the site file")
    plan.add_argument("--png", default="plan.png", help="write the plot here")
    plan.add_argument("--backtest", action="store_true",
                      help="instead: each forecast's day-ahead 15-min nMAE on the store's "
                           "history")

    check = sub.add_parser("check", help="validate a site file without running it")
    check.add_argument("file")

    console = sub.add_parser("console", help="web console helpers")
    console_sub = console.add_subparsers(dest="action", required=True)
    hashing = console_sub.add_parser(
        "hash-password", help="print the scrypt hash of a password for [[console.users]] "
                              "password_hash (asks for it, or reads the first line of stdin)")
    hashing.add_argument("--password-file", help="read the password from this file")

    try:
        from simulators import cli as sim_cli
    except ImportError:  # a gateway without the simulators installed
        pass
    else:
        sim_cli.add_arguments(sub.add_parser("sim", help="serve simulated devices"))
    from controller.platform import cli as platform_cli

    platform_cli.add_arguments(sub.add_parser(
        "platform", help="the city energy-monitoring platform: a reference data centre "
                         "(serve), or a site's uploader alone (upload)"))
    sub.add_parser("codes", help="the 分类分项 energy codes (住建部 guide), Chinese and English")
    kpi = sub.add_parser("kpi", help="the carbon-peaking plan's figures for a day, its month "
                                     "and its year, from a site's store")
    kpi.add_argument("file", help="the site file (for its store)")
    kpi.add_argument("--date", help="YYYY-MM-DD (default: today, site-local)")
    maps = sub.add_parser("maps", help="list the device maps, or show one")
    maps.add_argument("model", nargs="?", help="show the points of this map")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handlers: dict[str, Callable[[argparse.Namespace], int]] = {
        "run": cmd_run, "demo": cmd_demo, "read": cmd_read, "scan": cmd_scan,
        "check": cmd_check, "sim": cmd_sim, "maps": cmd_maps, "command": cmd_command,
        "report": cmd_report, "tariff": cmd_tariff, "console": cmd_console,
        "plan": cmd_plan,
        "platform": _platform("cmd_platform"), "codes": _platform("cmd_codes"),
        "kpi": _platform("cmd_kpi"),
    }
    try:
        status = handlers[args.command](args)
        sys.stdout.flush()  # a closed pipe shows here, inside the handler below
    except ConfigError as exc:
        print(f"pedf {args.command}: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `pedf maps | head`: the reader has all it wanted
        _silence_stdout()
        return 128 + signal.SIGPIPE
    return status


def _platform(name: str) -> Callable[[argparse.Namespace], int]:
    def handler(args: argparse.Namespace) -> int:
        from controller.platform import cli as platform_cli

        command: Callable[[argparse.Namespace], int] = getattr(platform_cli, name)
        return command(args)
    return handler


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's final flush cannot fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _logging(args: argparse.Namespace, site: SiteSpec | None, default_level: str) -> None:
    settings = logging_settings(site) if site is not None else None
    level = args.log_level or (settings.level if settings else default_level)
    fmt = args.log_format or (settings.format if settings else "text")
    setup_logging(level, fmt)


@contextlib.contextmanager
def _stop_on_signals(duration_s: float | None = None) -> Iterator[asyncio.Event]:
    """An event set by SIGINT/SIGTERM (or after ``duration_s``). Installed before anything
    starts, so a signal during start-up also ends the process cleanly."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    timer = loop.call_later(duration_s, stop.set) if duration_s is not None else None
    try:
        yield stop
    finally:
        if timer is not None:
            timer.cancel()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


def cmd_run(args: argparse.Namespace) -> int:
    from controller.app import assemble
    from controller.view import log_summary

    site = check_site(args.file)
    _logging(args, site, "INFO")

    async def main() -> None:
        with _stop_on_signals(args.duration) as stop:
            async with assemble(site) as app:
                gateway = app.gateway
                await gateway.run(stop, [*app.services,
                                         ("summary", lambda: log_summary(gateway))])

    try:
        asyncio.run(main())
    except OSError as exc:
        print(f"pedf run: {exc}", file=sys.stderr)
        return 1
    return 0


def demo_site_path() -> str:
    return str(resources.files("simulators.sites") / "jinan-office.toml")


def _with_platform(site: SiteSpec, port: int) -> SiteSpec:
    """The demo site reporting to a city platform on 127.0.0.1:``port`` (its
    ``[platform]`` section enabled)."""
    import dataclasses

    node = site.section("platform")
    assert node is not None
    assert isinstance(node.value, dict)
    enabled = Node(node.file, node.path, {**node.value, "enabled": True, "port": port})
    return dataclasses.replace(site, sections={**site.sections, "platform": enabled})


def cmd_demo(args: argparse.Namespace) -> int:
    import dataclasses
    import tempfile

    from controller.app import assemble
    from controller.config import uplink_settings
    from simulators import cli as sim_cli
    from simulators.clock import ScaledClock
    from simulators.runner import SiteRunner
    from simulators.sitefile import build_site

    site_spec = load_site(demo_site_path())
    if args.platform is not None:
        site_spec = _with_platform(site_spec, args.platform)
    _logging(args, None, "INFO" if args.headless else "WARNING")
    simulated = build_site(site_spec, start_s=sim_cli.parse_start(args.start, site_spec),
                           speed=args.speed)
    clock = ScaledClock(start=simulated.start_s, speed=simulated.speed)
    settings = uplink_settings(site_spec)
    state = tempfile.TemporaryDirectory(prefix="pedf-demo-") if args.state_dir is None \
        else None
    state_dir = args.state_dir if state is None else state.name
    settings = dataclasses.replace(
        settings, store_path=f"{state_dir}/{site_spec.site_id}.sqlite",
        port=settings.port if _port_free(settings.embedded_host, settings.port)
        else _free_port(settings.embedded_host))
    console = None
    if args.console_port:
        from controller.console.demo import demo_console

        console = demo_console(args.console_port if _port_free("127.0.0.1", args.console_port)
                               else _free_port("127.0.0.1"))

    async def main() -> None:

        with _stop_on_signals(args.duration) as stop:
            await run_demo(stop)

    async def run_demo(stop: asyncio.Event) -> None:
        from controller.view import live_view, log_summary

        # Gateway and controller keep the simulation's time, so timeouts they refresh
        # (battery and inverter limits, relay watchdogs) run on the devices' clock.
        async with SiteRunner(simulated, clock) as runner, \
                assemble(site_spec, serial_ports=runner.serial_ports,
                         settings=settings, wall_clock=clock.now,
                         console=console) as app:
            sim_cli.print_endpoints(runner, stop_hint=False)
            _print_mqtt_help(app.settings, app.broker_address)
            _print_console_help(console)
            gateway = app.gateway
            view: Service
            if args.headless:
                def view() -> Any:
                    return log_summary(gateway, clock.now, period_s=5.0)
            else:
                def view() -> Any:
                    return live_view(gateway, clock.now)
            await gateway.run(stop, [*app.services, ("view", view)])

    try:
        asyncio.run(main())
    except OSError as exc:
        print(f"pedf demo: cannot start the simulated building: {exc}", file=sys.stderr)
        return 1
    finally:
        if state is not None:
            state.cleanup()
    return 0


def _port_free(host: str, port: int) -> bool:
    import socket

    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def _free_port(host: str) -> int:
    import socket

    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def _print_mqtt_help(settings: Any, address: tuple[str, int] | None) -> None:
    if address is None:
        return
    host, port = address
    topics = Topics(settings.topic_prefix)
    site = demo_site_path()
    print(f"MQTT broker (embedded) on {host}:{port}; the gateway publishes on "
          f"{topics.everything}", flush=True)
    print(f"  watch:    mosquitto_sub -h {host} -p {port} -t '{topics.everything}' -v",
          flush=True)
    print(f"  command:  ./dev pedf command {site} shed --kw 40 --duration 900 "
          f"--send --port {port}", flush=True)
    print(f"  or:       mosquitto_pub -h {host} -p {port} -t {topics.commands} -m "
          f"\"$(./dev pedf command {site} shed --kw 40 --duration 900)\"", flush=True)


def _print_console_help(console: Any) -> None:
    if console is None:
        return
    from controller.console.demo import DEMO_USERS
    from controller.console.server import url

    users = ", ".join(f"{name} / {password}" for name, password, _ in DEMO_USERS)
    print(f"web console on {url(console)} — demo users (name / password): {users}",
          flush=True)


def cmd_console(args: argparse.Namespace) -> int:
    import getpass
    from pathlib import Path

    from controller.console.auth import hash_password

    if args.password_file:
        password = Path(args.password_file).read_text(encoding="utf-8").splitlines()[0]
    elif sys.stdin.isatty():
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            print("pedf console: the passwords differ", file=sys.stderr)
            return 1
    else:
        password = sys.stdin.readline().rstrip("\n")
    if len(password) < 8:
        print("pedf console: a password needs at least 8 characters", file=sys.stderr)
        return 1
    print(hash_password(password))
    return 0


def cmd_read(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from controller.tools import read_device

    site = load_site(args.file)
    setup_logging(args.log_level or "WARNING", args.log_format or "text")
    device = site.devices.get(args.device)
    if device is None:
        print(f"pedf read: {args.file}: no device named {args.device!r}; devices: "
              + ", ".join(site.devices), file=sys.stderr)
        return 2
    try:
        values = asyncio.run(read_device(device, None if args.point is None else [args.point]))
    except KeyError as exc:
        print(f"pedf read: {exc.args[0]}", file=sys.stderr)
        return 2
    table = Table(title=f"{device.name} ({device.model}, {device.station} on {device.line})")
    for column in ("point", "value", "unit", "where"):
        table.add_column(column, justify="right" if column == "value" else "left")
    for item in values:
        table.add_row(item.point.name, item.text(), item.point.unit, item.point.location)
    Console().print(table)
    return 1 if values and all(item.error for item in values) else 0


SCAN_HELP = """\
Find the devices on a line.

Modbus (TCP, RS-485, or RTU through a serial device server): each unit id is probed with
a read of the SunSpec base addresses; a unit that answers, with data or an exception, is
listed with its SunSpec models.

DL/T 645-2007 (RS-485 or a serial server): without --addresses, the meter is asked for
its address with the read-address command sent to the wildcard address AAAAAAAAAAAA.
Every meter on the line answers that command at once, so it only works with ONE meter on
the line (point-to-point, e.g. a meter on the bench or a line opened at its first meter);
on a multi-drop line the answers collide. With --addresses, each given address is asked
for its address data item, one by one, which works on any line.
"""


def cmd_scan(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    from controller.lines import LinkDownError
    from controller.tools import SCAN_TIMEOUT_S, parse_units, scan_line, scan_spec

    setup_logging(args.log_level or "WARNING", args.log_format or "text")
    try:
        spec = scan_spec(host=args.host, serial_port=args.serial, port=args.port,
                         serial_server=args.serial_server, protocol=args.protocol,
                         baud=args.baud, parity=args.parity, stop_bits=args.stop_bits)
        targets: list[int] | list[str] = (
            parse_units(args.units) if args.protocol == "modbus" else
            [a.strip() for a in args.addresses.split(",")] if args.addresses else [])
    except ValueError as exc:
        print(f"pedf scan: {exc}", file=sys.stderr)
        return 2
    console = Console(stderr=True)
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"scanning {spec}", total=max(1, len(targets)))
        try:
            found = asyncio.run(scan_line(
                spec, args.protocol, targets, timeout_s=args.timeout or SCAN_TIMEOUT_S,
                progress=lambda target: progress.update(task, advance=1,
                                                        description=str(target))))
        except (LinkDownError, ValueError) as exc:
            print(f"pedf scan: {exc}", file=sys.stderr)
            return 1
    table = Table(title=f"{spec}: {len(found)} device(s) answering")
    for column in ("unit / address", "SunSpec base", "models", "note"):
        table.add_column(column)
    for item in found:
        table.add_row(item.station, "—" if item.sunspec_base is None else str(item.sunspec_base),
                      " ".join(str(m) for m in item.models), item.note)
    Console().print(table)
    return 0 if found else 1


def cmd_command(args: argparse.Namespace) -> int:
    import dataclasses
    from pathlib import Path

    from controller.config import uplink_settings
    from controller.operator import build_command, send, sign

    site = load_site(args.file)
    settings = uplink_settings(site)
    params: dict[str, Any] = {}
    if args.type in ("shed", "cap_import", "grid_setpoint"):
        params["kw"] = args.kw
    if args.type == "modify":
        params["command_id"] = args.cancel_id
        if args.kw is not None:
            params["kw"] = args.kw
    if args.type == "shed" and args.loads:
        params["loads"] = args.loads
    if args.type == "battery_setpoint":
        params["power_w"] = args.power_w
    if args.type == "sg_ready":
        params["state"] = args.state
    if args.type not in ("release", "cancel", "modify"):
        params["duration_s"] = args.duration
    if args.type == "cancel":
        params["command_id"] = args.cancel_id
    if args.start_at is not None and args.type not in ("release", "cancel", "modify"):
        params["start_at"] = args.start_at
    if args.ramp is not None and args.type in ("shed", "cap_import", "grid_setpoint"):
        params["ramp_s"] = args.ramp
    missing = [k for k, v in params.items() if v is None]
    if missing:
        print(f"pedf command: {args.type} needs --{missing[0].replace('_', '-')}",
              file=sys.stderr)
        return 2
    command = build_command(args.type, target=args.target or "site", params=params,
                            lifetime_s=args.duration + 60.0, command_id=args.command_id)
    try:
        signed = sign(command, settings, Path(args.ed25519_key) if args.ed25519_key else None)
    except (ValueError, OSError) as exc:
        print(f"pedf command: {exc}", file=sys.stderr)
        return 2
    if not args.send:
        print(json.dumps(signed))
        return 0
    host = args.host or settings.host or settings.embedded_host
    port = args.port or settings.port
    if args.username is not None:
        try:
            password = None if args.password_file is None else \
                Path(args.password_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            print(f"pedf command: --password-file: {exc}", file=sys.stderr)
            return 2
        settings = dataclasses.replace(settings, username=args.username, password=password)
    try:
        reply = asyncio.run(send(signed, settings, host, port))
    except (OSError, TimeoutError, Exception) as exc:  # aiomqtt.MqttError and friends
        print(f"pedf command: no reply from the gateway via {host}:{port}: "
              f"{exc or 'timeout'}", file=sys.stderr)
        return 1
    print(json.dumps(reply))
    return 0 if reply.get("status") == "accepted" else 1


def cmd_report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rich.console import Console

    from controller.config import uplink_settings
    from controller.report import plot, settlement_table, table
    from controller.store import Store

    site = load_site(args.file)
    path = uplink_settings(site).store_path
    if not Path(path).exists():
        print(f"pedf report: no store at {path} (has the gateway run?)", file=sys.stderr)
        return 1
    store = Store(path)
    try:
        if args.event is None:
            events = store.performance_events()
            print("\n".join(events) if events else "no event performance recorded yet")
            return 0
        records = store.performance(args.event)
        settlement = store.get_state(f"settlement:{args.event}")
    finally:
        store.close()
    if not records:
        print(f"pedf report: no performance recorded for event {args.event!r}",
              file=sys.stderr)
        return 1
    Console().print(table(args.event, records, site.zone))
    if settlement is not None:
        Console().print(settlement_table(json.loads(settlement)))
    image = plot(args.event, records, Path(args.png or f"{args.event}.png"), site.zone)
    print(f"plot: {image}")
    return 0


def cmd_tariff(args: argparse.Namespace) -> int:
    from datetime import date, datetime
    from pathlib import Path

    from rich.console import Console

    from controller import tariffview
    from controller.metering import metering_settings
    from controller.tariffs import load_tariff

    site = load_site(args.file or demo_site_path())
    settings = metering_settings(site)
    tariff = settings.tariff if args.calendar is None else load_tariff(
        args.calendar, base=Path.cwd())
    zone = site.zone
    try:
        if args.at is not None:
            local = datetime.fromisoformat(args.at)
            local = local.replace(tzinfo=zone) if local.tzinfo is None else local.astimezone(
                zone)
        day = (date.fromisoformat(args.date) if args.date else
               local.date() if args.at is not None else datetime.now(zone).date())
        month = None if args.month is None else datetime.strptime(args.month, "%Y-%m")
    except ValueError as exc:
        print(f"pedf tariff: {exc}", file=sys.stderr)
        return 2
    console = Console()
    console.print(tariffview.header(tariff, settings.carbon), highlight=False)
    if args.at is not None:
        console.print(tariffview.moment(tariff, local), highlight=False)
    elif month is not None:
        console.print(tariffview.month_table(tariff, month.year, month.month))
    else:
        console.print(tariffview.day_table(tariff, day))
    if args.png:
        print(f"plot: {tariffview.strip(tariff, day, Path(args.png))}")
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    from rich.console import Console

    from controller.control.actuators import LoadMemory
    from controller.control.settings import control_settings
    from controller.control.snapshot import build_snapshot
    from controller.metering import metering_settings
    from controller.planner import planner_service
    from controller.planner.view import plan_png, plan_table, read_plant

    site = load_site(args.file)
    setup_logging(args.log_level or "WARNING", args.log_format or "text")
    control, metering = control_settings(site), metering_settings(site)
    if args.backtest:
        return _backtest(site, metering.tariff)
    service = planner_service(site, control, metering)
    plant = read_plant(site)
    snapshot = build_snapshot(plant, control, time.time(), metering.tariff,
                              LoadMemory(), {})
    plan = service.solve_now(snapshot, ())
    Console().print(plan_table(plan, site.zone))
    print(f"plot: {plan_png(plan, site.zone, Path(args.png))}")
    return 0 if plan.status.value != "failed" else 1


def _backtest(site: SiteSpec, tariff: Any) -> int:
    import time
    from pathlib import Path

    from controller.config import uplink_settings
    from controller.planner.backtest import backtest_store
    from controller.store import Store

    path = uplink_settings(site).store_path
    if not Path(path).exists():
        print(f"pedf plan: no store at {path} (has the gateway run?)", file=sys.stderr)
        return 1
    store = Store(path)
    try:
        scores = backtest_store(site, store, tariff, time.time())
    finally:
        store.close()
    for name, score in scores.items():
        print(f"{name}: day-ahead 15-min nMAE " + (
            "— (less than a week and a day of history)" if score is None
            else f"{100 * score:.1f} %"))
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from controller.config import listeners, uplink_settings

    site = check_site(args.file)
    simulation = _check_simulation(site)
    used = {d.line.name for d in site.devices.values()}
    print(f"{args.file}: ok — site {site.site_id}: {len(site.devices)} devices on "
          f"{len(used)} line(s), {len(site.loads)} loads "
          f"({sum(1 for load in site.loads.values() if load.sheddable)} sheddable)")
    for line in site.lines.values():
        members = [f"{d.name} ({d.model}, {d.station})" for d in site.devices.values()
                   if d.line.name == line.name]
        print(f"  line {line}: " + (", ".join(members) if members else "no devices"))
    from controller.control.facts import control_warnings
    from controller.control.settings import control_settings

    for warning in control_warnings(site, control_settings(site).relay_watchdog_s):
        print(f"  warning: {warning}")
    if simulation:
        print(f"  {simulation}")
    from controller.console.settings import console_settings

    found = listeners(uplink_settings(site), console_settings(site))
    if not found:
        print("pedf run listens on nothing (it only connects out)")
    for address, what in found:
        print(f"pedf run listens on {address}: {what}")
    return 0


def _check_simulation(site: SiteSpec) -> str:
    """Validate the ``[simulation]`` parts with the simulators, when they are installed
    (a gateway may run without them). Raises ConfigError."""
    if site.section("simulation") is None and all(
            d.simulation is None for d in site.devices.values()):
        return ""
    try:
        from simulators.sitefile import build_site
    except ImportError:
        return "simulation sections not checked: the simulators are not installed"
    build_site(site, start_s=0.0)
    return "simulation sections: ok"


def cmd_sim(args: argparse.Namespace) -> int:
    from simulators import cli as sim_cli

    setup_logging(args.log_level or "WARNING", args.log_format or "text")
    return sim_cli.run(args)


def cmd_maps(args: argparse.Namespace) -> int:
    try:
        if args.model is None:
            for name in shipped_models():
                device_map = get_map(name)
                print(f"{name:<20} {device_map.kind:<10} {device_map.manufacturer}: "
                      f"{device_map.description}")
                if device_map.documentation:
                    print(f"{'':<31} document: {device_map.documentation}")
            return 0
        device_map = get_map(args.model)
    except (KeyError, MapError) as exc:
        print(f"pedf maps: {exc}", file=sys.stderr)
        return 2
    print(f"{device_map.model}: {device_map.description} ({device_map.documentation})")
    print(f"  protocol: {device_map.protocol.value}")
    if device_map.shared_unit:
        print(f"  part of a {device_map.shared_unit}: shares its unit id with its other parts")
    pacing = device_map.pacing
    if pacing != Pacing():
        print(f"  pacing: {pacing.request_interval_s:g} s between requests, "
              f"{pacing.connect_delay_s:g} s after connecting"
              + (", one client at a time" if pacing.single_client else ""))
    for point in device_map.points.values():
        print(f"  {point.location:<28} {point.access.value:<2} {point.unit:<4} {point.name}")
    for name, control in device_map.controls.items():
        print(f"  control {name}: {len(control.set)} write(s), fail-safe "
              f"{control.failsafe.value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
