"""Write recipes: small, safe arithmetic over the requested value and the device's values."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.controls import Expression, ExpressionError, Step, evaluate_steps


def test_arithmetic_comparisons_and_choices() -> None:
    env = {"value": -25_000.0, "max_charge_w": 100_000.0}
    assert Expression.parse("-value / max_charge_w * 100").evaluate(env) == 25.0
    assert Expression.parse("170 if value < 0 else 187").evaluate(env) == 170.0
    assert Expression.parse("abs(value) / 1000").evaluate(env) == 25.0
    assert Expression.parse("max(0, min(100, value))").evaluate(env) == 0.0
    assert Expression.parse("value < 0 and max_charge_w > 0").holds(env)
    assert Expression.parse(3).evaluate({}) == 3.0
    assert Expression.parse("value").names == frozenset({"value"})


def test_steps_with_conditions_and_optional_writes() -> None:
    """A Huawei-style forced charge/discharge: which registers depends on the sign."""
    steps = (
        Step("mode", Expression.parse("1 if value < 0 else 2")),
        Step("charge_w", Expression.parse("-value"), when=Expression.parse("value < 0")),
        Step("discharge_w", Expression.parse("value"), when=Expression.parse("value > 0")),
        Step("timeout", Expression.parse("revert_s"), optional=True),
    )
    assert evaluate_steps(steps, {"value": -5000.0, "revert_s": 60.0}) == [
        ("mode", 1.0, False), ("charge_w", 5000.0, False), ("timeout", 60.0, True)]
    assert evaluate_steps(steps, {"value": 3000.0, "revert_s": 60.0}) == [
        ("mode", 2.0, False), ("discharge_w", 3000.0, False), ("timeout", 60.0, True)]


@pytest.mark.parametrize("source", [
    "__import__('os')", "value.real", "(lambda: 1)()", "[1, 2]", "value ** 2", "'text'",
    "value if", "max", "f(value)", "value[0]", "x := 1",
])
def test_anything_but_arithmetic_is_refused_when_the_map_loads(source: str) -> None:
    with pytest.raises(ExpressionError):
        Expression.parse(source)


def test_evaluation_errors_name_what_is_missing() -> None:
    with pytest.raises(ExpressionError, match="max_charge_w is not known yet"):
        Expression.parse("value / max_charge_w").evaluate({"value": 1.0, "max_charge_w": None})
    with pytest.raises(ExpressionError, match="divides by zero"):
        Expression.parse("value / max_charge_w").evaluate({"value": 1.0, "max_charge_w": 0.0})


@given(st.text(max_size=40), st.floats(allow_nan=False, allow_infinity=False))
def test_arbitrary_text_parses_or_is_refused_never_anything_else(source: str,
                                                                  value: float) -> None:
    try:
        expression = Expression.parse(source)
    except ExpressionError:
        return
    with contextlib.suppress(ExpressionError):
        expression.evaluate(dict.fromkeys(expression.names, value))
