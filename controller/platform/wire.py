"""The city platform's wire protocol, sans I/O: packets, AES-128 bodies, XML messages.

A packet is ``head | length | body | crc | tail`` (see ``dialects.toml``): ``body`` is
the AES-128-encrypted XML message, ``length`` its size, ``crc`` a CRC-16 of the body.
:class:`PacketReader` takes bytes as they arrive and returns whole decrypted messages;
anything that is not a packet of the dialect raises :class:`WireError` with the reason
(the caller closes the connection: after a broken frame the stream cannot be trusted).

Messages (:class:`Message`) are the guide's XML: a ``common`` part (building id,
gateway id, type) and one operation element — ``id_validate`` (login), ``heart_beat``,
``data`` (reports, resends, queries and their answers).
"""

from __future__ import annotations

import hashlib
import tomllib
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field, replace
from enum import Enum
from functools import cache
from pathlib import Path

from cryptography.hazmat.primitives import padding as sympadding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from drivers.schema import Node

DIALECTS_FILE = Path(__file__).with_name("dialects.toml")
#: The largest body accepted (a month of 15-min periods of 40 codes fits easily).
MAX_BODY_BYTES = 1 << 20
TIME_FORMAT = "%Y%m%d%H%M%S"


class WireError(ValueError):
    """Bytes or XML that are not a valid packet or message of the dialect."""


@dataclass(frozen=True, slots=True)
class Dialect:
    """One city's variant: framing, encryption, default report period."""

    name: str
    title: str
    source: str
    head: bytes
    tail: bytes
    length_bytes: int
    length_order: str  # "big" or "little"
    crc: str  # "crc16-modbus" or "none"
    aes_mode: str  # "cbc" or "ecb"
    padding: str  # "pkcs7" or "zero"
    iv: str  # "key" or 32 hex digits
    period_s: int
    heartbeat_s: float

    def with_overrides(self, **changes: object) -> Dialect:
        return replace(self, **{k: v for k, v in changes.items() if v is not None})  # type: ignore[arg-type]


def _hex(node: Node) -> bytes:
    try:
        return bytes.fromhex(node.str())
    except ValueError:
        raise node.error("hexadecimal bytes, e.g. 55AA55AA") from None


@cache
def dialects() -> dict[str, Dialect]:
    """The shipped dialects by name. Raises ConfigError for a broken file."""
    root = Node(str(DIALECTS_FILE), "", tomllib.loads(DIALECTS_FILE.read_text("utf-8")))
    found: dict[str, Dialect] = {}
    for name, node in root.items():
        node.only(("title", "source", "head", "tail", "length_bytes", "length_order", "crc",
                   "aes_mode", "padding", "iv", "period_s", "heartbeat_s"))
        iv = node.req("iv").str()
        if iv != "key" and len(iv) != 32:
            raise node.req("iv").error('"key" or 32 hex digits')
        found[name] = Dialect(
            name, node.req("title").str(), node.req("source").str(), _hex(node.req("head")),
            _hex(node.req("tail")), node.req("length_bytes").int(min=2, max=4),
            node.req("length_order").str(choices=["big", "little"]),
            node.req("crc").str(choices=["crc16-modbus", "none"]),
            node.req("aes_mode").str(choices=["cbc", "ecb"]),
            node.req("padding").str(choices=["pkcs7", "zero"]), iv,
            node.req("period_s").int(min=60, max=86400),
            node.req("heartbeat_s").float(min=1, max=3600))
    return found


def crc16_modbus(data: bytes) -> int:
    """CRC-16/MODBUS (poly 0xA001 reflected, init 0xFFFF)."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


# -- encryption -------------------------------------------------------------------------


def _cipher(dialect: Dialect, key: bytes) -> Cipher[modes.CBC] | Cipher[modes.ECB]:
    if len(key) != 16:
        raise ValueError("the AES-128 key must be 16 bytes")
    if dialect.aes_mode == "ecb":
        return Cipher(algorithms.AES(key), modes.ECB())
    iv = key if dialect.iv == "key" else bytes.fromhex(dialect.iv)
    return Cipher(algorithms.AES(key), modes.CBC(iv))


def encrypt(dialect: Dialect, key: bytes, plain: bytes) -> bytes:
    if dialect.padding == "pkcs7":
        padder = sympadding.PKCS7(128).padder()
        data = padder.update(plain) + padder.finalize()
    else:
        data = plain + b"\0" * (-len(plain) % 16)
    encryptor = _cipher(dialect, key).encryptor()
    return encryptor.update(data) + encryptor.finalize()


def decrypt(dialect: Dialect, key: bytes, body: bytes) -> bytes:
    """Raises WireError when the body is not a whole number of blocks or its padding is
    wrong (a wrong key shows here, or as XML that does not parse)."""
    if not body or len(body) % 16:
        raise WireError(f"encrypted body of {len(body)} bytes is not whole AES blocks")
    decryptor = _cipher(dialect, key).decryptor()
    data = decryptor.update(body) + decryptor.finalize()
    if dialect.padding == "zero":
        return data.rstrip(b"\0")
    unpadder = sympadding.PKCS7(128).unpadder()
    try:
        return unpadder.update(data) + unpadder.finalize()
    except ValueError:
        raise WireError("bad padding after decryption (wrong key?)") from None


# -- packets ----------------------------------------------------------------------------


def encode_packet(dialect: Dialect, key: bytes, xml: bytes) -> bytes:
    body = encrypt(dialect, key, xml)
    crc = crc16_modbus(body).to_bytes(2, "little") if dialect.crc != "none" else b""
    return (dialect.head + len(body).to_bytes(dialect.length_bytes, dialect.length_order)  # type: ignore[arg-type]
            + body + crc + dialect.tail)


@dataclass
class PacketReader:
    """Bytes in, decrypted XML bodies out (see module docstring)."""

    dialect: Dialect
    key: bytes
    buffer: bytearray = field(default_factory=bytearray)

    def feed(self, data: bytes) -> list[bytes]:
        self.buffer += data
        out: list[bytes] = []
        d = self.dialect
        crc_len = 0 if d.crc == "none" else 2
        while self.buffer:
            head_len = len(d.head)
            if len(self.buffer) < head_len:
                if not d.head.startswith(bytes(self.buffer)):
                    raise WireError(f"packet does not start with {d.head.hex()}")
                break
            if self.buffer[:head_len] != d.head:
                raise WireError(f"packet does not start with {d.head.hex()} "
                                f"(got {bytes(self.buffer[:head_len]).hex()})")
            if len(self.buffer) < head_len + d.length_bytes:
                break
            size = int.from_bytes(self.buffer[head_len:head_len + d.length_bytes],
                                  d.length_order)  # type: ignore[arg-type]
            if size > MAX_BODY_BYTES:
                raise WireError(f"body of {size} bytes is over the {MAX_BODY_BYTES} limit")
            start = head_len + d.length_bytes
            end = start + size + crc_len + len(d.tail)
            if len(self.buffer) < end:
                break
            body = bytes(self.buffer[start:start + size])
            if crc_len and int.from_bytes(self.buffer[start + size:start + size + 2],
                                          "little") != crc16_modbus(body):
                raise WireError("CRC mismatch")
            if self.buffer[end - len(d.tail):end] != d.tail:
                raise WireError(f"packet does not end with {d.tail.hex()}")
            del self.buffer[:end]
            out.append(decrypt(d, self.key, body))
        return out


# -- messages ---------------------------------------------------------------------------


class Operation(Enum):
    """What a message does: the element and its ``operation`` attribute."""

    LOGIN_REQUEST = ("id_validate", "request")
    LOGIN_SEQUENCE = ("id_validate", "sequence")
    LOGIN_MD5 = ("id_validate", "md5")
    LOGIN_RESULT = ("id_validate", "result")
    HEARTBEAT = ("heart_beat", "notify")
    HEARTBEAT_TIME = ("heart_beat", "time")
    REPORT = ("data", "report")  # a period's data as it completes
    CONTINUOUS = ("data", "continuous")  # a resent period (断点续传)
    REPORT_ACK = ("data", "report_ack")
    QUERY = ("data", "query")  # the data centre asks for periods
    REPLY = ("data", "reply")  # a period sent in answer to a query

    @property
    def element(self) -> str:
        return self.value[0]

    @property
    def attribute(self) -> str:
        return self.value[1]


@dataclass(frozen=True, slots=True)
class Message:
    """One XML message. ``fields`` are the operation's simple child elements (sequence,
    md5, result, time, start_time, end_time); ``items`` the reported energy per code."""

    building_id: str
    gateway_id: str
    operation: Operation
    fields: dict[str, str] = field(default_factory=dict)
    items: tuple[tuple[str, float], ...] = ()

    def to_xml(self) -> bytes:
        root = ET.Element("root")
        common = ET.SubElement(root, "common")
        ET.SubElement(common, "building_id").text = self.building_id
        ET.SubElement(common, "gateway_id").text = self.gateway_id
        ET.SubElement(common, "type").text = self.operation.attribute
        body = ET.SubElement(root, self.operation.element,
                             {"operation": self.operation.attribute})
        for name, text in self.fields.items():
            ET.SubElement(body, name).text = text
        for code, value in self.items:
            meter = ET.SubElement(body, "meter", {"id": code})
            ET.SubElement(meter, "function", {"id": "energy", "coding": code,
                                              "error": "0"}).text = f"{value:.4f}"
        xml: bytes = ET.tostring(root, "utf-8")
        return b'<?xml version="1.0" encoding="UTF-8"?>' + xml.split(b"?>", 1)[-1].lstrip()


def parse_message(xml: bytes) -> Message:
    """Parse one message. Raises WireError naming what is wrong."""
    if b"<!DOCTYPE" in xml or b"<!ENTITY" in xml:
        raise WireError("DOCTYPE/ENTITY declarations are refused")
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise WireError(f"not XML ({exc})") from None
    common = root.find("common")
    if root.tag != "root" or common is None:
        raise WireError("no <root><common>")
    building = (common.findtext("building_id") or "").strip()
    gateway = (common.findtext("gateway_id") or "").strip()
    if not building or not gateway:
        raise WireError("common needs building_id and gateway_id")
    bodies = [child for child in root if child.tag != "common"]
    if len(bodies) != 1:
        raise WireError("exactly one operation element expected")
    body = bodies[0]
    try:
        operation = Operation((body.tag, body.get("operation", "")))
    except ValueError:
        raise WireError(f"unknown operation <{body.tag} operation="
                        f"\"{body.get('operation')}\">") from None
    fields = {child.tag: (child.text or "").strip() for child in body
              if child.tag != "meter"}
    items: list[tuple[str, float]] = []
    for meter in body.findall("meter"):
        function = meter.find("function")
        code = meter.get("id", "")
        try:
            value = float((function.text or "") if function is not None else "")
        except ValueError:
            raise WireError(f"meter {code}: value is not a number") from None
        if not code or value != value:
            raise WireError("meter without id or with a NaN value")
        items.append((code, value))
    return Message(building, gateway, operation, fields, tuple(items))


def login_digest(sequence: str, key: bytes) -> str:
    """MD5 of the challenge followed by the key, as lowercase hex."""
    return hashlib.md5(sequence.encode() + key, usedforsecurity=False).hexdigest()
