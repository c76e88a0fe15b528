"""Small helpers shared by tests (import as ``tests_support``; fixtures live in
``tests/conftest.py``)."""

from __future__ import annotations

import re
import socket
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "jinan-office.toml"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def example_on_free_ports(tmp_path: Path) -> Path:
    """The example site with every TCP port replaced by a free one and its RS-485 line
    linked inside ``tmp_path``."""
    text = EXAMPLE.read_text(encoding="utf-8")
    ports = sorted(set(re.findall(r"^port = (\d+)$", text, flags=re.M)))
    for port in ports:
        text = re.sub(rf"^port = {port}$", f"port = {free_port()}", text, flags=re.M)
    text = text.replace('serial_port = "/tmp/pedf-rs485-0"',
                        f'serial_port = "{tmp_path / "rs485-0"}"')
    path = tmp_path / "site.toml"
    path.write_text(text, encoding="utf-8")
    return path



def crc16(frame: bytes) -> bytes:
    """Modbus RTU CRC-16 (poly 0xA001, init 0xFFFF), low byte first."""
    crc = 0xFFFF
    for byte in frame:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return bytes((crc & 0xFF, crc >> 8))
