"""Site-file sections declared once: a rule per key.

A section's *spec* maps every key it allows to a :class:`Key` — the rule that checks the
value and the settings field it fills — or, for a sub-table, to a nested spec.
:func:`read` checks a table against its spec (unknown keys, types, ranges, files) and
returns the fields that were given, with their nodes for the checks across fields
(:class:`Given`). Two keys may fill one field (``password`` / ``password_file``): giving
both is an error. Every error keeps the one form of :class:`~drivers.schema.ConfigError`::

    site.toml: uplink.outbox.quota_mb: expected a number 0.01–1000000, got 0

The rules here are the shared vocabulary; a section with a rule of its own writes it as
a function ``(node, context) -> value`` next to its spec.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, Union

from drivers.schema import ConfigError, Node
from drivers.site import SiteSpec

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

    Settings = TypeVar("Settings", bound=DataclassInstance)

__all__ = [
    "Context",
    "Given",
    "Key",
    "Rule",
    "Spec",
    "apply",
    "choice",
    "existing_file",
    "file_bytes",
    "file_path",
    "flag",
    "integer",
    "is_loopback",
    "megabytes",
    "number",
    "read",
    "text",
    "texts",
    "topic_prefix",
]


@dataclass(frozen=True, slots=True)
class Context:
    """What rules need besides the value: where relative paths start."""

    base: Path

    @classmethod
    def of(cls, site: SiteSpec) -> Context:
        """Relative paths are relative to the site file (or the working directory when
        the site did not come from a file)."""
        if site.file and not site.file.startswith("<"):
            return cls(Path(site.file).resolve().parent)
        return cls(Path.cwd())

    def resolve(self, value: str) -> Path:
        candidate = Path(value)
        return candidate if candidate.is_absolute() else self.base / candidate


Rule = Callable[[Node, Context], object]


@dataclass(frozen=True, slots=True)
class Key:
    """A key of a section: its rule, the settings field it fills ("" = the key), and
    whether the section must have it."""

    rule: Rule
    field: str = ""
    required: bool = False


Spec = Mapping[str, Union[Key, "Spec"]]


@dataclass
class Given:
    """The fields a section gave, their nodes, and the section's own node."""

    section: Node
    values: dict[str, object] = field(default_factory=dict)
    nodes: dict[str, Node] = field(default_factory=dict)
    tables: dict[str, Node] = field(default_factory=dict)  # sub-tables given, by key

    def node(self, *fields: str) -> Node:
        """The node of the first of ``fields`` that was given, else the section's: the
        place to blame when fields do not fit together."""
        for name in fields:
            if name in self.nodes:
                return self.nodes[name]
        return self.section

    def error(self, expected: str, *fields: str) -> ConfigError:
        return self.node(*fields).error(expected)


def read(node: Node, spec: Spec, context: Context) -> Given:
    """Check ``node`` (a table) against ``spec``. Raises ConfigError."""
    given = Given(node)
    _read_into(given, node, spec, context)
    return given


def apply(defaults: Settings, values: Mapping[str, object]) -> Settings:
    """``defaults`` with the given fields replaced (their rules have checked the types)."""
    changes: dict[str, Any] = dict(values)
    return dataclasses.replace(defaults, **changes)


def _read_into(given: Given, node: Node, spec: Spec, context: Context) -> None:
    node.only(spec)
    for key, child in node.items():
        entry = spec[key]
        if not isinstance(entry, Key):
            given.tables[key] = child
            _read_into(given, child, entry, context)
            continue
        name = entry.field or key
        if name in given.nodes:
            other = given.nodes[name].path.rsplit(".", 1)[-1]
            raise child.error(f"either {other} or {key}, not both")
        given.values[name] = entry.rule(child, context)
        given.nodes[name] = child
    for key, entry in spec.items():
        if isinstance(entry, Key) and entry.required:
            node.req(key)  # raises when absent


# -- rules ------------------------------------------------------------------------------


def flag() -> Rule:
    return lambda node, _: node.bool()


def integer(low: int, high: int) -> Rule:
    return lambda node, _: node.int(min=low, max=high)


def number(low: float, high: float, *, above: bool = False) -> Rule:
    """A finite number in [low, high] (``above``: low excluded)."""
    return lambda node, _: node.float(min=low, max=high, min_exclusive=above)


def megabytes(low: float, high: float) -> Rule:
    """A size given in MB (MiB), as whole bytes."""
    return lambda node, _: int(node.float(min=low, max=high) * 1024 * 1024)


def choice(*options: str) -> Rule:
    return lambda node, _: node.str(choices=options)


def text() -> Rule:
    return lambda node, _: node.str()


def texts() -> Rule:
    """An array of non-empty strings, as a tuple."""
    return lambda node, _: tuple(item.str() for item in node.list())


def file_path() -> Rule:
    """A path (relative to the site file), as a string; need not exist yet."""
    return lambda node, context: str(context.resolve(node.str()))


def existing_file() -> Rule:
    def rule(node: Node, context: Context) -> str:
        resolved = context.resolve(node.str())
        if not resolved.is_file():
            raise node.error("an existing file")
        return str(resolved)
    return rule


def file_bytes(*, strip: bool = False) -> Rule:
    """The content of a readable file (``strip``: without surrounding whitespace)."""
    def rule(node: Node, context: Context) -> bytes:
        try:
            data = context.resolve(node.str()).read_bytes()
        except OSError as exc:
            raise node.error(f"a readable file ({exc.strerror})") from None
        return data.strip() if strip else data
    return rule


def topic_prefix() -> Rule:
    """An MQTT topic prefix: no wildcards, no leading or trailing ``/``."""
    def rule(node: Node, _: Context) -> str:
        prefix = node.str()
        if any(c in prefix for c in "#+\0") or prefix.startswith("/") or prefix.endswith("/"):
            raise node.error("a topic prefix without wildcards or leading/trailing /")
        return prefix
    return rule


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses; a listener there is reachable from
    this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
