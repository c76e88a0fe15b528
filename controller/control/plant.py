"""The control loop's view of the building: latest values in, verified writes out.

:class:`GatewayPlant` is the real thing (Modbus through the gateway). :class:`SimPlant`
talks to the simulated devices directly — same maps, same codec, same write checks as a
Modbus request, no sockets or scheduling — so closed-loop tests can run a simulated day
in seconds on a manual clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from controller.poller import WriteResult
from controller.runtime import Gateway
from drivers.devices import Write
from drivers.points import Table, Value
from drivers.site import SiteSpec


class Plant(Protocol):
    site: SiteSpec

    def value(self, device: str, capability: str) -> float | None:
        """The latest good numeric value behind a capability, else None."""
        ...

    def device_values(self, device: str) -> Mapping[str, Value]:
        """Latest good values by point name (for the semantic device classes)."""
        ...

    async def execute(self, device: str, writes: Sequence[Write]) -> list[WriteResult]:
        """Execute writes in order, each verified; stops at the first failure."""
        ...


class GatewayPlant:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.site = gateway.site

    def value(self, device: str, capability: str) -> float | None:
        return self.gateway.capability(device, capability)

    def device_values(self, device: str) -> Mapping[str, Value]:
        return self.gateway.bus.latest.device_values(device)  # type: ignore[return-value]

    async def execute(self, device: str, writes: Sequence[Write]) -> list[WriteResult]:
        return await self.gateway.execute(device, writes)


class SimPlant:
    """The simulated devices of a running :class:`~simulators.runner.SiteRunner`."""

    def __init__(self, site: SiteSpec, devices: Mapping[str, object]) -> None:
        from simulators.modbus import ServedDevice

        self.site = site
        self.devices: dict[str, ServedDevice] = {
            name: device for name, device in devices.items()
            if isinstance(device, ServedDevice)}
        self.writes = 0

    @classmethod
    def build(cls, site: SiteSpec, clock: Callable[[], float], *, start_s: float
              ) -> tuple[SimPlant, Any]:
        """A plant over freshly built simulated devices of ``site`` (no servers), and the
        :class:`~simulators.sitefile.SimulatedSite` behind it (for checking physics)."""
        from simulators.modbus import ServedDevice
        from simulators.sitefile import build_site

        simulated = build_site(site, start_s=start_s)

        def refresh() -> None:
            simulated.model.advance(clock())

        devices = {name: ServedDevice(name, spec.device_map, simulated.bindings[name],
                                      spec.unit, refresh=refresh)
                   for name, spec in site.devices.items()}
        return cls(site, devices), simulated

    def value(self, device: str, capability: str) -> float | None:
        served = self.devices[device]
        point = served.device_map.capabilities.get(capability)
        value = None if point is None else served.point_values().get(point)
        if value is None or isinstance(value, str):
            return None
        return float(value)

    def device_values(self, device: str) -> Mapping[str, Value]:
        return self.devices[device].point_values()

    async def execute(self, device: str, writes: Sequence[Write]) -> list[WriteResult]:
        served = self.devices[device]
        results: list[WriteResult] = []
        for write in writes:
            started = time.monotonic()
            if results and not results[-1].ok:
                results.append(WriteResult(device, write.point, write.value, False,
                                           "not attempted: an earlier write failed"))
                continue
            if write.table is Table.COIL:
                error = served.write_bits(write.address, [bool(v) for v in write.values])
            else:
                error = served.write_registers(write.address, list(write.values))
            ok = error is None and tuple(served.read(write.table, write.address,
                                                     len(write.values))) == write.values
            self.writes += 1
            results.append(WriteResult(device, write.point, write.value, ok,
                                       "" if ok else f"refused or not taken ({error})",
                                       (time.monotonic() - started) * 1000.0))
        return results
