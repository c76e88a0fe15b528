"""What every benchmark prints and needs: aligned tables, verdicts, the goals block and
the figures for ``--json``, free ports, and the tests' own helpers (mosquitto).

Every benchmark's ``main()`` returns its :class:`Results`; the runner
(``python -m benchmarks``) prints the standard goals block after each one — one line per
goal, ``  [met    ] what  figure`` or ``  [NOT MET] what  figure`` — and with
``--json FILE`` writes every benchmark's figures and goals to FILE."""

from __future__ import annotations

import contextlib
import importlib
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple

REPO = Path(__file__).resolve().parents[1]


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Left-align the first column, right-align the others."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(row, widths, strict=True)))

    print("  " + line(cells[0]))
    print("  " + "  ".join("-" * w for w in widths))
    for row in cells[1:]:
        print("  " + line(row))


def verdict(met: bool) -> str:
    return "MET" if met else "NOT MET"


Figure = float | int | str | None


class Goal(NamedTuple):
    """One goal of a benchmark: what it asks, whether this run met it, the figure."""

    what: str
    met: bool
    figure: str


@dataclass
class Results:
    """What a benchmark measured: named figures (units in the names) and its goals."""

    figures: dict[str, Figure] = field(default_factory=dict)
    goals: list[Goal] = field(default_factory=list)

    def goal(self, what: str, met: bool, figure: str) -> None:
        self.goals.append(Goal(what, met, figure))

    def as_dict(self) -> dict[str, Any]:
        return {"figures": self.figures,
                "goals": [{"what": g.what, "met": g.met, "figure": g.figure}
                          for g in self.goals]}


def print_goals(goals: Sequence[tuple[str, bool, str]]) -> None:
    """The standard closing block: one line per goal, ``[met    ]`` or ``[NOT MET]``, what
    the goal is, then the figure measured."""
    print("\ngoals (figures from this run; the machine is shared, read them as such):")
    if not goals:
        print("  (none)")
        return
    width = max(len(name) for name, _, _ in goals)
    for name, met, figure in goals:
        print(f"  [{'met' if met else 'NOT MET':7}] {name:{width}}  {figure}")


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct free TCP ports (all bound to port 0 at once, then released)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind((host, 0))
        return [int(sock.getsockname()[1]) for sock in sockets]


def helpers_of_the_tests(name: str) -> ModuleType:
    """A module of the tests' helpers: ``tests_support`` (mosquitto, site files on free
    ports, waits) or ``uplink_support`` (subscriber, building, gateway)."""
    folders = [str(REPO / "tests"), str(REPO / "tests" / "uplink")]
    sys.path[:0] = folders
    try:
        return importlib.import_module(name)
    finally:
        for folder in folders:
            sys.path.remove(folder)


def mosquitto_class() -> Any:
    """``tests_support.Mosquitto``: the broker the tests run (free port, persistence on)."""
    return helpers_of_the_tests("tests_support").Mosquitto
