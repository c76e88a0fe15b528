"""Run every ``benchmarks/bench_*.py`` (or the ones named on the command line), each
ending with its goals block; ``--json FILE`` also writes their figures and goals there."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import pkgutil
import platform
import sys
import time

import benchmarks
from benchmarks.common import Results, print_goals


def main(argv: list[str]) -> int:
    available = sorted(m.name.removeprefix("bench_") for m in pkgutil.iter_modules(
        benchmarks.__path__) if m.name.startswith("bench_"))
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help=f"benchmarks to run (default all: {', '.join(available)})")
    parser.add_argument("--json", metavar="FILE", help="write the figures and goals here")
    args = parser.parse_args(argv)
    chosen = args.names or available
    for name in chosen:
        if name not in available:
            print(f"unknown benchmark {name!r}; available: {', '.join(available)}")
            return 2
    measured: dict[str, object] = {}
    report = {"started": time.time(),
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                          "platform": platform.platform()},
              "benchmarks": measured}
    for name in chosen:
        print(f"\n=== benchmark: {name} ===", flush=True)
        module = importlib.import_module(f"benchmarks.bench_{name}")
        results = module.main()
        if not isinstance(results, Results):
            results = Results()
        print_goals(results.goals)
        measured[name] = results.as_dict()
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(report, handle, indent=2, ensure_ascii=False)
        print(f"\nfigures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
