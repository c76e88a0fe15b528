"""``pedf platform serve`` (the reference data centre), ``pedf platform upload`` (the
uploader alone, from a site's store), ``pedf codes`` (the 分类分项 codes) and ``pedf kpi``
(the plan's figures from a site's store)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
from pathlib import Path

from controller.platform.receiver import Receiver
from controller.platform.wire import dialects
from drivers.energycodes import energy_codes

log = logging.getLogger("pedf.platform")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="platform_command", required=True)
    serve = sub.add_parser("serve", help="a reference data centre: logs and stores reports")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=9006)
    key = serve.add_mutually_exclusive_group(required=True)
    key.add_argument("--key", help="the 16-character AES-128 key")
    key.add_argument("--key-file", help="a file holding the key")
    serve.add_argument("--dialect", default="jianshe-2009", choices=sorted(dialects()))
    serve.add_argument("--db", default="platform.sqlite", help="where reports are stored")
    upload = sub.add_parser("upload", help="run only the uploader of a site file "
                                           "(sends what its store holds, then keeps going)")
    upload.add_argument("file")


def _key(args: argparse.Namespace) -> bytes:
    value = (args.key.encode() if args.key is not None
             else Path(args.key_file).read_bytes().strip())
    if len(value) != 16:
        raise SystemExit("pedf platform: the key must be 16 characters (AES-128)")
    return value


async def _until_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()


def cmd_platform(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.platform_command == "serve":
        return asyncio.run(_serve(args))
    return asyncio.run(_upload(args))


async def _serve(args: argparse.Namespace) -> int:
    receiver = Receiver(dialects()[args.dialect], _key(args), args.db, args.host, args.port)
    async with receiver:
        print(f"pedf platform: data centre on {args.host}:{receiver.port}, dialect "
              f"{args.dialect}, storing into {args.db}", flush=True)
        await _until_signal()
    return 0


async def _upload(args: argparse.Namespace) -> int:
    from controller.config import uplink_settings
    from controller.metering import metering_settings
    from controller.platform import uploader_for
    from controller.store import Store
    from drivers.site import load_site

    site = load_site(args.file)
    window_s = metering_settings(site).demand_window_s
    store = Store(uplink_settings(site).store_path)
    try:
        uploader = uploader_for(site, store, window_s)
        if uploader is None:
            print("pedf platform: the site has no enabled [platform] section")
            return 2
        print(f"pedf platform: uploading to {uploader.settings.host}:"
              f"{uploader.settings.port}", flush=True)
        task = asyncio.create_task(uploader.run(), name="platform uploader")
        await _until_signal()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    finally:
        store.close()
    return 0


def cmd_kpi(args: argparse.Namespace) -> int:
    """Print the day's, month's and year's KPIs of a site from its store."""
    from datetime import date, datetime

    from controller.config import uplink_settings
    from controller.energy import energy_settings
    from controller.kpi import kpi_table
    from controller.metering import metering_settings
    from controller.store import Store
    from drivers.site import load_site

    site = load_site(args.file)
    day = (date.fromisoformat(args.date) if args.date
           else datetime.now(site.zone).date())
    store = Store(uplink_settings(site).store_path)
    try:
        print(kpi_table(store, energy_settings(site),
                        metering_settings(site).carbon.mean_kg_per_kwh, site.zone, day))
    finally:
        store.close()
    return 0


def cmd_codes(_: argparse.Namespace) -> int:
    """Print the shipped 分类分项 codes: code, kind, unit, Chinese and English names."""
    print(f"{'code':<6} {'kind':<5} {'unit':<4} name")
    for code in energy_codes().values():
        indent = "" if code.kind.value == "type" else ("  " if code.code[3:] == "00" else "    ")
        print(f"{code.code:<6} {code.kind.value:<5} {code.unit:<4} {indent}{code.zh} "
              f"({code.en})")
    return 0
