"""The control loop's view of the building: latest values in, verified writes out.

:class:`GatewayPlant` is the real thing (the devices through the gateway's lines). The
tests have a second plant that talks to the simulated devices directly, without sockets
(``tests/sim_plant.py``), so closed-loop tests can run a simulated day in seconds on a
manual clock; the production path never imports the simulators.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from controller.runtime import Gateway
from controller.scheduler import WriteResult
from drivers.devices import Write
from drivers.points import Value
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
        return self.gateway.bus.latest.device_values(device)

    async def execute(self, device: str, writes: Sequence[Write]) -> list[WriteResult]:
        return await self.gateway.execute(device, writes)
