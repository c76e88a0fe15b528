"""Pulse inputs on the firmware (water and gas meters with a pulse output): edges are
counted, served in input registers 55–58, and kept across power cuts — after a cut in
the middle of a save the counts are those of the last complete save, and counting goes
on from there."""

from __future__ import annotations

import re
from pathlib import Path

from mp_support import MAP, Device, free_port, number, poll, sine_wave
from pymodbus.client import AsyncModbusTcpClient

SAVED = r"counters: saved seq=(?P<seq>\d+) mwh=\[.*?\] pulses=\[(?P<pulses>[\d, ]*)\]"
RESTORED = (r"counters: restored seq=(?P<seq>\d+) boot=\d+ mwh=\[.*?\] "
            r"pulses=\[(?P<pulses>[\d, ]*)\]")


def _pulses(match: re.Match[str]) -> list[int]:
    return [int(x) for x in re.findall(r"\d+", match.group("pulses"))]


def _prepare(tmp_path: Path, port: int, **sim: object) -> Path:
    wave = sine_wave()
    root = tmp_path / "flash"
    config = {"modbus_tcp": {"port": port}, "storage": {"save_interval_s": 1.0},
              "pulses": {"pins": [25, 26], "debounce_ms": 20}}
    Device.prepare(root, config=config, sim={
        "wave": str(wave.write(tmp_path / "wave.bin", 1.0)), "rate": wave.rate,
        "speed": 50, "pulse_hz": [5, 2], **sim})
    return root


async def test_pulse_counts_survive_a_power_cut(build: Path, tmp_path: Path) -> None:
    port = free_port()
    root = _prepare(tmp_path, port, cut_save=6)  # the 6th save tears
    device = Device(build, root).start()
    try:
        device.wait_for(r"pulses: 2 channel\(s\) on pins \[25, 26\]")
        device.wait_for(r"CUT cnt\d\.bin")
        device.kill()
        last = device.matches(SAVED)[-1]
    finally:
        device.kill()
    counted = _pulses(last)
    assert counted[0] > 0
    # 5 Hz and 2 Hz of device time: the first input sees 2.5 times the edges of the second
    assert abs(counted[0] - 2.5 * counted[1]) <= 5

    Device.prepare(root, config=None, sim={**_sim(root), "cut_save": 0})
    with Device(build, root) as device:
        restored = device.wait_for(RESTORED)
        assert int(restored["seq"]) == int(last["seq"])
        assert _pulses(restored) == counted  # the torn save is skipped, nothing invented
        device.wait_for("modbus-tcp: listening")
        client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=3)
        assert await client.connect()
        try:
            values = await poll(client, MAP, ("pulse1_count", "pulse2_count"))
        finally:
            client.close()
        assert number(values["pulse1_count"]) >= counted[0]  # served, and counting on
        after = device.wait_for(SAVED, after=len(device.lines))
        assert all(a >= b for a, b in zip(_pulses(after), counted, strict=True))
        assert _pulses(after)[0] > counted[0]


def _sim(root: Path) -> dict[str, object]:
    import json

    sim: dict[str, object] = json.loads((root / "sim.json").read_text())
    return sim


def test_counters_of_the_previous_format_are_read(build: Path, tmp_path: Path) -> None:
    """A device updated from the firmware without pulse inputs keeps its energy: its
    SMC1 record is read (pulse counts start at zero) and rewritten as SMC2."""
    import struct
    import zlib

    root = _prepare(tmp_path, free_port())
    body = struct.pack(">4sHHII", b"SMC1", 3, 900, 7, 2) + struct.pack(
        ">6Q", 5_000_000, 0, 1_000, 0, 0, 42)
    (root / "cnt3.bin").write_bytes(body + struct.pack(">I", zlib.crc32(body)))
    with Device(build, root) as device:
        restored = device.wait_for(RESTORED)
        assert int(restored["seq"]) == 7
        assert _pulses(restored) == [0, 0]
        assert "mwh=[5000000, 0, 1000, 0, 0, 42]" in restored.string
        saved = device.wait_for(SAVED)
        assert int(saved["seq"]) == 8


def test_too_many_pulse_pins_are_refused_with_defaults(build: Path, tmp_path: Path) -> None:
    root = _prepare(tmp_path, free_port())
    text = (root / "config.json").read_text().replace("[25, 26]", "[25, 26, 27]")
    (root / "config.json").write_text(text)
    with Device(build, root) as device:
        line = device.wait_for(r"config: config.json: pulses.pins")
        assert "at most 2 pins" in line.string
        device.wait_for(r"boot: ")
        assert not device.matches(r"pulses: \d channel")
