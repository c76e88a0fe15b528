"""分类分项 energy codes (住建部 分项能耗数据采集技术导则) as data: ``energycodes.toml``.

A code is five characters: ``TTLnm`` — two digits of energy type (分类: 01 electricity,
02 water, …), a letter of first-level item (分项: A–D for electricity), a digit of
second-level item and one more character; trailing zeros mean "the whole of the level
above". Every code's ancestors are the codes with its later levels zeroed: 01A10 rolls up
into 01A00, which rolls up into 01000.

``energy_code(node)`` validates a site-file value and raises :class:`ConfigError` naming
the file, the key and the codes allowed.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from enum import Enum
from functools import cache
from pathlib import Path

from drivers.schema import Node

CODES_FILE = Path(__file__).with_name("energycodes.toml")
_SHAPE = re.compile(r"^[0-9]{2}([0A-Z])([0-9])([0-9A-Z])$")


class CodeKind(Enum):
    TYPE = "type"  # 分类: an energy type
    ITEM = "item"  # 分项: a use of an energy type


@dataclass(frozen=True, slots=True)
class EnergyCode:
    """One code with its Chinese and English names; ``unit`` is the type's unit."""

    code: str
    kind: CodeKind
    zh: str
    en: str
    unit: str

    @property
    def energy_type(self) -> str:
        """The 分类 code this code belongs to (01A10 → 01000)."""
        return self.code[:2] + "000"

    @property
    def label(self) -> str:
        return f"{self.code} {self.zh} ({self.en})"


def ancestors(code: str) -> tuple[str, ...]:
    """The codes ``code`` rolls up into, nearest first (01A10 → 01A00, 01000)."""
    found: list[str] = []
    for keep in (4, 3, 2):
        parent = code[:keep].ljust(5, "0")
        if parent != code and parent not in found:
            found.append(parent)
    return tuple(found)


@cache
def energy_codes() -> dict[str, EnergyCode]:
    """The shipped codes by code (checked: shape, unique, parents present)."""
    node = Node(str(CODES_FILE), "", tomllib.loads(CODES_FILE.read_text(encoding="utf-8")))
    codes: dict[str, EnergyCode] = {}
    for item in node.req("codes").list():
        item.only(("code", "kind", "zh", "en", "unit"))
        code_node = item.req("code")
        code = code_node.str()
        if not _SHAPE.fullmatch(code) or code in codes:
            raise code_node.error("a new five-character code such as 01A10")
        kind = CodeKind(item.req("kind").str(choices=[k.value for k in CodeKind]))
        parent_type = codes.get(code[:2] + "000")
        unit_node = item.get("unit")
        if kind is CodeKind.TYPE:
            if code[2:] != "000":
                raise code_node.error("a type code ending in 000")
            unit = item.req("unit").str()
        else:
            if parent_type is None:
                raise code_node.error("an item after its type's code")
            if unit_node is not None:
                raise unit_node.error("no unit (an item has its type's unit)")
            unit = parent_type.unit
        for parent in ancestors(code):
            if parent not in codes:
                raise code_node.error(f"a code after its parent {parent}")
        codes[code] = EnergyCode(code, kind, item.req("zh").str(), item.req("en").str(), unit)
    return codes


def energy_code(node: Node) -> str:
    """A site file's ``energy_code`` value, validated against the shipped codes."""
    code = node.str()
    codes = energy_codes()
    if code not in codes:
        close = [c for c in codes if c[:2] == code[:2]] or list(codes)
        raise node.error("a 分类分项 code of the 住建部 guide, e.g. " + ", ".join(close[:8])
                         + " (`pedf codes` lists them)")
    return code
