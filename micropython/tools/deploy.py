"""Deploy the sub-meter firmware to an ESP32 running stock MicroPython, over mpremote.

    python micropython/tools/deploy.py --port /dev/ttyUSB0 [--config site.json]
    python micropython/tools/deploy.py --dry-run        # print the mpremote commands

Builds first (micropython/tools/build.py; skip with --no-build), then, in one mpremote
session: removes stale ``submeter/*.py`` (MicroPython imports a .py before a .mpy of the
same name), copies ``build/esp32/submeter/*.mpy`` and ``main.py``, optionally the config
file as ``config.json``, and resets the board. Needs ``pip install mpremote``.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
FIRMWARE = HERE.parent
sys.path.insert(0, str(HERE))

import build  # noqa: E402

CLEAN = (
    "import os\n"
    "try:\n os.mkdir('submeter')\nexcept OSError:\n pass\n"
    "for n in os.listdir('submeter'):\n"
    " if n.endswith('.py'):\n  os.remove('submeter/' + n)\n"
)


def commands(out: Path, port: str, config: Path | None, reset: bool) -> list[str]:
    """The mpremote command line: one session, steps chained with '+'."""
    mpy = sorted(str(p) for p in (out / "esp32" / "submeter").glob("*.mpy"))
    if not mpy:
        raise SystemExit(f"deploy: no .mpy files in {out / 'esp32'}: build first")
    line = ["mpremote", "connect", port, "exec", CLEAN, "+", "fs", "cp", *mpy, ":submeter/",
            "+", "fs", "cp", str(FIRMWARE / "main.py"), ":main.py"]
    if config is not None:
        line += ["+", "fs", "cp", str(config), ":config.json"]
    if reset:
        line += ["+", "reset"]
    return line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", default="auto", help="serial port (default: auto)")
    parser.add_argument("--config", type=Path, help="a config file to install as config.json")
    parser.add_argument("--out", type=Path, default=FIRMWARE / "build", help="build directory")
    parser.add_argument("--no-build", action="store_true", help="deploy the existing build")
    parser.add_argument("--no-reset", action="store_true", help="do not reset afterwards")
    parser.add_argument("--dry-run", action="store_true", help="print the command only")
    args = parser.parse_args(argv)
    if not args.no_build:
        try:
            build.build(args.out)
        except build.BuildError as exc:
            print(f"build: {exc}", file=sys.stderr)
            return 1
    line = commands(args.out, args.port, args.config, not args.no_reset)
    if args.dry_run:
        print(shlex.join(line))
        return 0
    if shutil.which("mpremote") is None:
        print("deploy: mpremote not found: pip install mpremote", file=sys.stderr)
        return 2
    return subprocess.run(line, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
