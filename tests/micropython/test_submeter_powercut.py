"""Power cuts: the interpreter is killed (SIGKILL: nothing is flushed or closed) while the
firmware saves its energy counters. After a reboot the counters are those of the last
complete save -- at most one save interval is lost -- and never corrupt."""

from __future__ import annotations

import random
import time
from pathlib import Path

from mp_support import MAP, Device, counters_of, free_port, number, poll, sine_wave
from pymodbus.client import AsyncModbusTcpClient

SAVED = r"counters: saved seq=(?P<seq>\d+) mwh=(?P<mwh>\[.*?\]) pulses=(?P<pulses>\[.*?\])"
RESTORED = (r"counters: restored seq=(?P<seq>\d+) boot=(?P<boot>\d+) mwh=(?P<mwh>\[.*?\]) "
            r"pulses=(?P<pulses>\[.*?\])")


def setup(tmp_path: Path, port: int, **sim: object) -> tuple[Path, dict[str, object]]:
    wave = sine_wave()
    root = tmp_path / "flash"
    config = {"modbus_tcp": {"port": port}, "storage": {"save_interval_s": 1.0}}
    sim_all = {"wave": str(wave.write(tmp_path / "wave.bin", 1.0)), "rate": wave.rate,
               "speed": 50, **sim}
    Device.prepare(root, config=config, sim=sim_all)
    return root, sim_all


async def test_a_cut_in_the_middle_of_a_save_loses_only_that_interval(
        build: Path, tmp_path: Path) -> None:
    port = free_port()
    root, sim = setup(tmp_path, port, cut_save=6)  # the 6th save tears: half its bytes
    device = Device(build, root).start()
    try:
        torn = device.wait_for(r"CUT (cnt\d\.bin)")[1]
        device.kill()
        last = device.matches(SAVED)[-1]
    finally:
        device.kill()
    assert int(last["seq"]) == 5
    assert (root / torn).stat().st_size == 86 // 2  # 18 + 3·16 + 2·8 + 4 bytes, half

    Device.prepare(root, config=None, sim={**sim, "cut_save": 0})
    with Device(build, root) as device:
        restored = device.wait_for(RESTORED)
        assert int(restored["seq"]) == 5
        assert counters_of(restored) == counters_of(last)
        assert "a corrupt record was skipped" in restored.string
        assert counters_of(last)[0] > 0  # energy was counted before the cut
        device.wait_for("modbus-tcp: listening")
        client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=3)
        assert await client.connect()
        try:
            values = await poll(client, MAP, ("status", "ch1_import_energy"))
        finally:
            client.close()
        assert "counters restored from backup" in MAP.points["status"].bit_names(
            values["status"])
        assert number(values["ch1_import_energy"]) >= counters_of(last)[0] // 1000  # counting
        # counting goes on from there, and the torn file is rewritten in its turn
        after = device.wait_for(SAVED, after=len(device.lines))
        assert int(after["seq"]) > 5
        assert all(a >= b for a, b in zip(counters_of(after), counters_of(last), strict=True))


def test_random_cuts_never_corrupt_the_counters(build: Path, tmp_path: Path) -> None:
    """Kill the firmware at random moments while it saves every second of device time
    (every 20 ms of wall time): each boot restores the newest complete record, counters
    only ever grow."""
    root, _ = setup(tmp_path, free_port())
    rng = random.Random(1234)
    previous: list[int] = [0] * 6
    for _ in range(4):
        device = Device(build, root).start()
        try:
            device.wait_for(r"boot: ")
            start = len(device.lines)
            device.wait_for(SAVED, after=start + rng.randrange(1, 12))
            time.sleep(rng.uniform(0.0, 0.05))  # somewhere within the next save or two
        finally:
            device.kill()
        saved = device.matches(SAVED)
        restored_line = device.matches(RESTORED)
        if restored_line:
            restored = counters_of(restored_line[0])
            assert all(a >= b for a, b in zip(restored, previous, strict=True))
        previous = counters_of(saved[-1])
        last_seq = int(saved[-1]["seq"])
        with Device(build, root) as check:
            match = check.wait_for(RESTORED)
        # the newest record: the last logged save, or one written just before the kill
        # (after its write, before its log line)
        assert int(match["seq"]) in (last_seq, last_seq + 1)
        assert all(a >= b for a, b in zip(counters_of(match), previous, strict=True))
