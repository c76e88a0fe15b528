"""Run every ``benchmarks/bench_*.py`` (or the ones named on the command line)."""

from __future__ import annotations

import importlib
import pkgutil
import sys

import benchmarks


def main(names: list[str]) -> int:
    available = sorted(m.name.removeprefix("bench_") for m in pkgutil.iter_modules(
        benchmarks.__path__) if m.name.startswith("bench_"))
    chosen = names or available
    for name in chosen:
        if name not in available:
            print(f"unknown benchmark {name!r}; available: {', '.join(available)}")
            return 2
        print(f"\n=== benchmark: {name} ===", flush=True)
        module = importlib.import_module(f"benchmarks.bench_{name}")
        module.main()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
