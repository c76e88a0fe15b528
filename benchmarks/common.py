"""What every benchmark prints and needs: aligned tables, verdicts, free ports, and the
tests' own mosquitto."""

from __future__ import annotations

import contextlib
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

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


def print_goals(goals: Sequence[tuple[str, bool, str]]) -> None:
    """The standard closing block: one line per goal, ``[met    ]`` or ``[NOT MET]``, what
    the goal is, then the figure measured."""
    print("\ngoals (figures from this run; the machine is shared, read them as such):")
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


def mosquitto_class() -> Any:
    """``tests_support.Mosquitto``: the broker the tests run (free port, persistence on)."""
    sys.path.insert(0, str(REPO / "tests"))
    try:
        from tests_support import Mosquitto  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(REPO / "tests"))
    return Mosquitto
