"""Checked access to parsed TOML data, with errors that name the file, key and expectation.

Register maps (``drivers/maps/*.toml``) and site files are both read through :class:`Node`,
so every malformed value produces one kind of message::

    site.toml: devices[3].port: expected an integer 1–65535, got "50a"

A :class:`Node` wraps one value and knows where it came from. Accessors either return a
plain Python value of the expected type or raise :class:`ConfigError`.
"""

from __future__ import annotations

import json
import math
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A value in a data file is missing or has the wrong type, range or shape."""

    def __init__(self, file: str, path: str, expected: str, got: object = None, *,
                 missing: bool = False, got_text: str | None = None) -> None:
        self.file = file
        self.path = path
        self.expected = expected
        if got_text is None:
            got_text = "nothing (key missing)" if missing else describe(got)
        where = f"{file}: {path}" if path else file
        super().__init__(f"{where}: expected {expected}, got {got_text}")

    @classmethod
    def like(cls, other: ConfigError) -> ConfigError:
        """The same error as ``other``, as an instance of this (sub)class."""
        new = cls.__new__(cls)
        ValueError.__init__(new, *other.args)
        new.file, new.path, new.expected = other.file, other.path, other.expected
        return new


def describe(value: object) -> str:
    """Render a parsed value the way it looked in the file (strings in double quotes)."""
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, list):
        return "an array"
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return repr(value)


def load_toml(path: Path | str) -> Node:
    """Parse a TOML file into a root :class:`Node`.

    Raises :class:`ConfigError` naming the file when it is missing, a directory,
    unreadable, not UTF-8, or not valid TOML.
    """
    file = str(path)
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(file, "", "an existing TOML file", missing=True) from None
    except IsADirectoryError:
        raise ConfigError(file, "", "a TOML file", got_text="a directory") from None
    except OSError as exc:
        raise ConfigError(file, "", "a readable TOML file",
                          got_text=exc.strerror or type(exc).__name__) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(file, "", "UTF-8 text",
                          got_text=f"the byte 0x{exc.object[exc.start]:02x} at offset "
                                   f"{exc.start}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(file, "", f"valid TOML ({exc})", "a syntax error") from None
    return Node(file, "", data)


class Node:
    """One value of a parsed data file, with its file name and key path."""

    __slots__ = ("file", "path", "value")

    def __init__(self, file: str, path: str, value: object) -> None:
        self.file = file
        self.path = path
        self.value = value

    # -- errors -------------------------------------------------------------------------

    def error(self, expected: str) -> ConfigError:
        """An error about this value: ``expected`` says what would have been right."""
        return ConfigError(self.file, self.path, expected, self.value)

    # -- tables -------------------------------------------------------------------------

    def _mapping(self) -> Mapping[str, Any]:
        if not isinstance(self.value, Mapping):
            raise self.error("a table")
        return self.value

    def child_path(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def has(self, key: str) -> bool:
        return key in self._mapping()

    def get(self, key: str) -> Node | None:
        """The child ``key`` of this table, or None when absent."""
        mapping = self._mapping()
        if key not in mapping:
            return None
        return Node(self.file, self.child_path(key), mapping[key])

    def req(self, key: str) -> Node:
        """The child ``key`` of this table; raises when it is absent."""
        child = self.get(key)
        if child is None:
            raise ConfigError(self.file, self.child_path(key), "a value", missing=True)
        return child

    def keys(self) -> list[str]:
        return list(self._mapping())

    def items(self) -> Iterator[tuple[str, Node]]:
        for key in self._mapping():
            yield key, Node(self.file, self.child_path(key), self._mapping()[key])

    def only(self, allowed: Iterable[str]) -> Node:
        """Reject keys outside ``allowed`` (catches typos such as ``adress``)."""
        allowed_set = set(allowed)
        for key in self._mapping():
            if key not in allowed_set:
                raise ConfigError(
                    self.file, self.child_path(key),
                    "one of the keys " + ", ".join(sorted(allowed_set)),
                    got_text=f"the unknown key {key!r}",
                )
        return self

    # -- arrays -------------------------------------------------------------------------

    def list(self) -> list[Node]:
        if not isinstance(self.value, list):
            raise self.error("an array")
        return [Node(self.file, f"{self.path}[{i}]", v) for i, v in enumerate(self.value)]

    # -- scalars ------------------------------------------------------------------------

    def str(self, *, choices: Iterable[str] | None = None, nonempty: bool = True) -> str:
        options = sorted(choices) if choices is not None else None
        if not isinstance(self.value, str) or (nonempty and not self.value):
            raise self.error(_choice_text(options) if options else "a non-empty string")
        if options is not None and self.value not in options:
            raise self.error(_choice_text(options))
        return self.value

    def int(self, *, min: int | None = None, max: int | None = None) -> int:
        value = self.value
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(_range_text("an integer", min, max))
        if (min is not None and value < min) or (max is not None and value > max):
            raise self.error(_range_text("an integer", min, max))
        return value

    def float(self, *, min: float | None = None, max: float | None = None,
              min_exclusive: bool = False) -> float:
        value = self.value
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(
            value
        ):
            raise self.error(_range_text("a finite number", min, max, min_exclusive))
        number = float(value)
        too_low = min is not None and (number <= min if min_exclusive else number < min)
        if too_low or (max is not None and number > max):
            raise self.error(_range_text("a number", min, max, min_exclusive))
        return number

    def bool(self) -> bool:
        if not isinstance(self.value, bool):
            raise self.error("true or false")
        return self.value


def _choice_text(options: list[str]) -> str:
    return "one of " + ", ".join(f'"{o}"' for o in options)


def _range_text(kind: str, low: float | None, high: float | None,
                low_exclusive: bool = False) -> str:
    if low is not None and high is not None and not low_exclusive:
        return f"{kind} {_num(low)}–{_num(high)}"
    parts = []
    if low is not None:
        parts.append(f"{'>' if low_exclusive else '>='} {_num(low)}")
    if high is not None:
        parts.append(f"<= {_num(high)}")
    return f"{kind} {' and '.join(parts)}" if parts else kind


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)
