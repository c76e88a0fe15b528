"""A plant over the simulated devices without sockets, for accelerated closed-loop tests.

Same maps, same write checks as on the wire (each write goes through the map's checks
and the physics' refusals, and is read back), no lines or scheduling: a simulated day
runs in seconds on a manual clock. The production path never imports this (it lives
with the tests, beside the simulators it drives).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from controller.scheduler import WriteResult
from drivers.devices import Write
from drivers.points import Value
from drivers.site import SiteSpec
from simulators.served import SimulatedDevice
from simulators.servers import served_device
from simulators.sitefile import build_site


class SimPlant:
    """The simulated devices of a site, read and written directly."""

    def __init__(self, site: SiteSpec, devices: Mapping[str, SimulatedDevice]) -> None:
        self.site = site
        self.devices = dict(devices)
        self.writes = 0

    @classmethod
    def build(cls, site: SiteSpec, clock: Callable[[], float], *, start_s: float
              ) -> tuple[SimPlant, Any]:
        """A plant over freshly built simulated devices of ``site`` (no servers), and the
        :class:`~simulators.sitefile.SimulatedSite` behind it (for checking physics)."""
        simulated = build_site(site, start_s=start_s)

        def refresh() -> None:
            simulated.model.advance(clock())

        devices = {name: served_device(spec, simulated.bindings[name], refresh, clock=clock,
                                       zone=site.zone)
                   for name, spec in site.devices.items()}
        return cls(site, devices), simulated

    def value(self, device: str, capability: str) -> float | None:
        point = self.devices[device].device_map.capabilities.get(capability)
        value = None if point is None else self.device_values(device).get(point)
        if value is None or isinstance(value, str):
            return None
        return float(value)

    def device_values(self, device: str) -> Mapping[str, Value]:
        """What a driver reads from the device: its points, those behind transformers on
        the primary side (the device reports the secondary)."""
        served = self.devices[device]
        return served.device_map.primary(served.point_values())

    async def execute(self, device: str, writes: Sequence[Write]) -> list[WriteResult]:
        served = self.devices[device]
        results: list[WriteResult] = []
        stopped = False
        for write in writes:
            started = time.monotonic()
            if stopped:
                results.append(WriteResult(device, write.point, write.value, False,
                                           "not attempted: an earlier write failed"))
                continue
            error = served.write_value(write.point, write.value)
            read_back = served.point_values().get(write.point)
            ok = error is None and _same(read_back, write.value)
            self.writes += 1
            results.append(WriteResult(device, write.point, write.value, ok,
                                       "" if ok else f"refused or not taken ({error})",
                                       (time.monotonic() - started) * 1000.0))
            stopped = not ok and not write.optional
        return results


def _same(read_back: Value, written: Value) -> bool:
    """Whether the device holds what was written (within the resolution of a register)."""
    if isinstance(written, bool) or isinstance(read_back, bool):
        return bool(read_back) == bool(written)
    if isinstance(written, int | float) and isinstance(read_back, int | float):
        return abs(float(read_back) - float(written)) <= max(1e-6, abs(float(written)) * 1e-3)
    return read_back == written
