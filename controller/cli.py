"""``pedf``: the toolkit's command line."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from importlib import resources

from drivers.maploader import MapError, get_map, shipped_models
from simulators import cli as sim_cli
from simulators.view import print_every


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pedf", description="PEDF (光储直柔) smart-building gateway toolkit")
    parser.add_argument("--log-level", default="WARNING",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    sub = parser.add_subparsers(dest="command", required=True)
    sim_cli.add_arguments(sub.add_parser("sim", help="serve simulated devices"))
    demo = sub.add_parser("demo", help="run the simulated Jinan office building")
    demo.add_argument("--speed", type=float, default=None,
                      help="simulated seconds per real second (default 1)")
    demo.add_argument("--start", default=None, help="simulated start (default today 09:00)")
    demo.add_argument("--duration", type=float, default=None,
                      help="stop after this many real seconds")
    maps = sub.add_parser("maps", help="list the device maps, or show one")
    maps.add_argument("model", nargs="?", help="show the points of this map")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "sim":
        return sim_cli.run(args)
    if args.command == "demo":
        return demo(args)
    if args.command == "maps":
        return show_maps(args.model)
    return 2  # pragma: no cover - argparse rejects unknown commands


def demo_site_path() -> str:
    return str(resources.files("simulators.sites") / "jinan-office.toml")


def demo(args: argparse.Namespace) -> int:
    import asyncio

    from drivers.site import load_site
    from simulators.sitefile import build_site

    spec = load_site(demo_site_path())
    site = build_site(spec, start_s=sim_cli._start(args.start, spec), speed=args.speed)
    return asyncio.run(sim_cli.serve(site, [], duration_s=args.duration,
                                     on_running=print_every))


def show_maps(model: str | None) -> int:
    try:
        if model is None:
            for name in shipped_models():
                device_map = get_map(name)
                print(f"{name:<20} {device_map.kind:<10} {device_map.manufacturer}: "
                      f"{device_map.description}")
            return 0
        device_map = get_map(model)
    except (KeyError, MapError) as exc:
        print(f"pedf maps: {exc}", file=sys.stderr)
        return 2
    print(f"{device_map.model}: {device_map.description} ({device_map.documentation})")
    for point in sorted(device_map.points.values(), key=lambda p: (p.table.value, p.address)):
        print(f"  {point.table.value:<14} {point.address:>5} {point.type.value:<6} "
              f"{point.access.value:<2} {point.unit:<4} {point.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
