"""How the gateway controls a device, as map data: write recipes and fail-safe behaviour.

A map declares, per control it offers (``[controls.power_limit]``, ``[controls.power_setpoint]``
…, the names a kind uses are in :mod:`drivers.capabilities`), the writes that set it and
the writes that hand it back, and what happens when the gateway goes away::

    [controls.power_limit]
    set = [
      { point = "controls.WMaxLimPct_RvrtTms", value = "revert_s" },
      { point = "controls.WMaxLimPct", value = "value" },
      { point = "controls.WMaxLim_Ena", value = 1 },
    ]
    release = [{ point = "controls.WMaxLim_Ena", value = 0 }]
    failsafe = "device_reverts"

Values are small arithmetic expressions over ``value`` (what is being set, in the
control's unit), ``revert_s`` / ``timeout_s`` (what the gateway programs) and the
device's latest values by capability or point name: ``"-value / max_charge_w * 100"``,
``"170 if value < 0 else 187"``. A step may have a condition (``when = "value > 0"``) and
may be ``optional`` (its failure does not stop the sequence). Expressions are parsed and
their names checked when the map loads; nothing in them can call or import anything.

Fail-safe, one of three (:class:`Failsafe`):

* ``device_reverts`` — the device drops the setting ``revert_s`` seconds after the last
  write; the gateway refreshes well within that (a quarter of it);
* ``watchdog`` — the device's watchdog register (the map's ``[watchdog]``) must be
  refreshed, or the device hands everything back by itself;
* ``gateway`` — nothing reverts: the gateway writes the release steps on shutdown, when
  it loses control (the control loop stops or fails), and at its next start if it died
  holding the setting.
"""

from __future__ import annotations

import ast
import enum
import math
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass

__all__ = ["Control", "Expression", "ExpressionError", "Failsafe", "Step", "Watchdog",
           "evaluate_steps"]


class ExpressionError(ValueError):
    """An expression cannot be parsed, names something unknown, or cannot be evaluated
    (a name has no value yet, division by zero, a result that is not a finite number)."""


class Failsafe(enum.Enum):
    DEVICE_REVERTS = "device_reverts"
    WATCHDOG = "watchdog"
    GATEWAY = "gateway"


_BINARY: dict[type[ast.operator], Callable[[float, float], float]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
    ast.Div: operator.truediv,
}
_COMPARE: dict[type[ast.cmpop], Callable[[float, float], bool]] = {
    ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge,
    ast.Eq: operator.eq, ast.NotEq: operator.ne,
}
_FUNCTIONS: dict[str, Callable[..., float]] = {"abs": abs, "min": min, "max": max,
                                               "round": round}


@dataclass(frozen=True, slots=True)
class Expression:
    """A parsed arithmetic expression (see the module docstring for what it may use)."""

    text: str
    tree: ast.expr
    names: frozenset[str]

    @classmethod
    def parse(cls, source: str | float | int | bool) -> Expression:
        """Parse ``source`` (a number is a constant). Raises :class:`ExpressionError`
        for syntax outside the allowed arithmetic."""
        text = str(int(source)) if isinstance(source, bool) else str(source)
        try:
            tree = ast.parse(text, mode="eval").body
        except SyntaxError as exc:
            raise ExpressionError(f"{text!r} is not an expression ({exc.msg})") from None
        names: set[str] = set()
        _check(tree, names, text)
        return cls(text, tree, frozenset(names))

    def evaluate(self, env: Mapping[str, float | None]) -> float:
        """The value under ``env`` (names to numbers; None: not known yet). Raises
        :class:`ExpressionError` naming what is missing or wrong."""
        result = _evaluate(self.tree, env, self.text)
        if isinstance(result, bool):
            return float(result)
        if not math.isfinite(result):
            raise ExpressionError(f"{self.text!r} gives {result}")
        return float(result)

    def holds(self, env: Mapping[str, float | None]) -> bool:
        return bool(_evaluate(self.tree, env, self.text))


def _check(node: ast.expr, names: set[str], text: str) -> None:
    if isinstance(node, ast.Constant):
        if isinstance(node.value, int | float) and not isinstance(node.value, complex):
            return
    elif isinstance(node, ast.Name):
        if node.id in _FUNCTIONS:
            raise ExpressionError(f"{text!r}: {node.id} is a function, call it")
        names.add(node.id)
        return
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd | ast.Not):
        _check(node.operand, names, text)
        return
    elif isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        _check(node.left, names, text)
        _check(node.right, names, text)
        return
    elif isinstance(node, ast.Compare) and all(type(op) in _COMPARE for op in node.ops):
        for child in (node.left, *node.comparators):
            _check(child, names, text)
        return
    elif isinstance(node, ast.BoolOp):
        for child in node.values:
            _check(child, names, text)
        return
    elif isinstance(node, ast.IfExp):
        for child in (node.test, node.body, node.orelse):
            _check(child, names, text)
        return
    elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and \
            node.func.id in _FUNCTIONS and not node.keywords and node.args:
        for child in node.args:
            _check(child, names, text)
        return
    raise ExpressionError(
        f"{text!r}: only numbers, names, + - * /, comparisons, and/or/not, "
        f"'a if c else b' and {', '.join(_FUNCTIONS)}() are allowed")


def _evaluate(node: ast.expr, env: Mapping[str, float | None], text: str) -> float:
    if isinstance(node, ast.Constant):
        assert isinstance(node.value, int | float)  # checked when parsed
        return float(node.value)
    if isinstance(node, ast.Name):
        value = env.get(node.id)
        if value is None:
            raise ExpressionError(f"{node.id} is not known yet (read the device first)")
        return float(value)
    if isinstance(node, ast.UnaryOp):
        operand = _evaluate(node.operand, env, text)
        if isinstance(node.op, ast.Not):
            return float(not operand)
        return -operand if isinstance(node.op, ast.USub) else operand
    if isinstance(node, ast.BinOp):
        left, right = _evaluate(node.left, env, text), _evaluate(node.right, env, text)
        try:
            return _BINARY[type(node.op)](left, right)
        except ZeroDivisionError:
            raise ExpressionError(f"{text!r} divides by zero") from None
    if isinstance(node, ast.Compare):
        left = _evaluate(node.left, env, text)
        for op, comparator in zip(node.ops, node.comparators, strict=True):
            right = _evaluate(comparator, env, text)
            if not _COMPARE[type(op)](left, right):
                return 0.0
            left = right
        return 1.0
    if isinstance(node, ast.BoolOp):
        is_and = isinstance(node.op, ast.And)
        result = 0.0
        for child in node.values:
            result = _evaluate(child, env, text)
            if bool(result) != is_and:
                return result
        return result
    if isinstance(node, ast.IfExp):
        chosen = node.body if _evaluate(node.test, env, text) else node.orelse
        return _evaluate(chosen, env, text)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        args = [_evaluate(arg, env, text) for arg in node.args]
        return float(_FUNCTIONS[node.func.id](*args))
    raise ExpressionError(f"{text!r}: cannot evaluate")  # pragma: no cover - parse checks


@dataclass(frozen=True, slots=True)
class Step:
    """One write of a recipe: ``point`` gets ``value`` if ``when`` holds."""

    point: str
    value: Expression
    when: Expression | None = None
    optional: bool = False  # a failure is logged, and the sequence goes on


@dataclass(frozen=True, slots=True)
class Control:
    """How one control of a device is set and released, and its fail-safe.

    ``revert_s``: for ``device_reverts``, the device's own timeout when no step programs
    it, else the default the gateway programs (the site may override it).
    """

    name: str
    set: tuple[Step, ...]
    release: tuple[Step, ...]
    failsafe: Failsafe
    revert_s: float | None = None

    @property
    def programs_revert(self) -> bool:
        """Whether the set steps write the revert timeout (``revert_s`` in a value)."""
        return any("revert_s" in step.value.names for step in self.set)


@dataclass(frozen=True, slots=True)
class Watchdog:
    """A device's communication watchdog: the writes that arm (and refresh) it, and the
    timeout they program by default. The device hands back control by itself when no
    refresh arrives in time."""

    set: tuple[Step, ...]
    timeout_s: float


#: One write a recipe asks for: (point name, value, optional).
PlannedWrite = tuple[str, float, bool]


def evaluate_steps(steps: tuple[Step, ...], env: Mapping[str, float | None]
                   ) -> list[PlannedWrite]:
    """The writes ``steps`` ask for under ``env``, in order, skipping steps whose
    condition does not hold. Raises :class:`ExpressionError` (a name has no value yet,
    division by zero …)."""
    writes: list[PlannedWrite] = []
    for step in steps:
        if step.when is not None and not step.when.holds(env):
            continue
        writes.append((step.point, step.value.evaluate(env), step.optional))
    return writes
