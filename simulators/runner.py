"""Run a simulated site: physics advanced by a clock, every device served over Modbus.

``async with SiteRunner(site, clock) as running:`` starts one server per TCP endpoint
and one virtual RS-485 line plus server per serial port of the site file; on exit it
stops them all. ``running.serial_ports`` maps each serial port named in the site file to
the pseudo-terminal a client must open instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tomllib
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from drivers.schema import Node
from drivers.site import RtuEndpoint, SiteSpec, TcpEndpoint, parse_site
from simulators.clock import Clock
from simulators.faults import Faults
from simulators.modbus import ServedDevice, SimSerialServer, SimTcpServer
from simulators.serialbus import VirtualSerialLine
from simulators.sitefile import SimulatedSite

log = logging.getLogger("pedf.sim")


@dataclass
class Endpoint:
    """What runs where, for printing and for clients."""

    address: str  # tcp://host:port, or the pty a client opens
    devices: list[tuple[int, str, str]]  # (unit, device name, model)
    site_port: str = ""  # serial port named in the site file (RTU only)


@dataclass
class SiteRunner:
    site: SimulatedSite
    clock: Clock
    tick_s: float = 0.2
    single_client: frozenset[str] = frozenset()  # device names whose endpoint allows one
    serial_time_scale: float = 1.0  # < 1 makes the virtual RS-485 lines faster than real
    min_step_s: float = 0.02  # simulated seconds between physics steps
    devices: dict[str, ServedDevice] = field(default_factory=dict)
    endpoints: list[Endpoint] = field(default_factory=list)
    serial_ports: dict[str, str] = field(default_factory=dict)
    links: list[str] = field(default_factory=list)  # serial-port symlinks we created
    _servers: list[SimTcpServer | SimSerialServer] = field(default_factory=list)
    _lines: list[VirtualSerialLine] = field(default_factory=list)
    _ticker: asyncio.Task[None] | None = None

    def refresh(self) -> None:
        """Advance the physics to the clock's time, in steps of at least ``min_step_s``
        simulated seconds: a burst of requests reads one consistent state instead of
        stepping every model once per request."""
        now = self.clock.now()
        if now - self.site.model.t_s >= self.min_step_s:
            self.site.model.advance(now)

    def faults(self, device: str) -> Faults:
        return self.devices[device].faults

    async def __aenter__(self) -> SiteRunner:
        try:
            await self._start()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _start(self) -> None:
        spec = self.site.spec
        for device in spec.devices.values():
            binding = self.site.bindings.get(device.name)
            if binding is None:
                raise ValueError(f"device {device.name} has nothing to simulate")
            self.devices[device.name] = ServedDevice(
                device.name, device.device_map, binding, device.unit, refresh=self.refresh)
        tcp: dict[tuple[str, int], list[str]] = defaultdict(list)
        rtu: dict[RtuEndpoint, list[str]] = defaultdict(list)
        for device in spec.devices.values():
            if isinstance(device.endpoint, TcpEndpoint):
                tcp[(device.endpoint.host, device.endpoint.port)].append(device.name)
            else:
                rtu[device.endpoint].append(device.name)
        for (host, port), names in tcp.items():
            served = [self.devices[n] for n in names]
            single = any(n in self.single_client for n in names) or any(
                spec.devices[n].pacing.single_client for n in names)
            server = SimTcpServer(served, host, port, single_client=single)
            await self._listen(server, f"tcp://{host}:{port}")
            self.endpoints.append(Endpoint(f"tcp://{host}:{port}", self._listing(names)))
        for endpoint, names in rtu.items():
            line = await VirtualSerialLine(
                baud=endpoint.baud, bits_per_char=1 + endpoint.bytesize + endpoint.stop_bits
                + (0 if endpoint.parity == "N" else 1), time_scale=self.serial_time_scale,
            ).start()
            self._lines.append(line)
            serial = SimSerialServer([self.devices[n] for n in names], line.device_port,
                                     baud=endpoint.baud, parity=endpoint.parity,
                                     stop_bits=endpoint.stop_bits)
            await self._listen(serial, line.device_port)
            self.serial_ports[endpoint.serial_port] = line.gateway_port
            if _link(endpoint.serial_port, line.gateway_port):
                self.links.append(endpoint.serial_port)
            self.endpoints.append(Endpoint(line.gateway_port, self._listing(names),
                                           site_port=endpoint.serial_port))
        self.refresh()
        self._ticker = asyncio.create_task(self._tick(), name="sim-physics-ticker")

    async def _listen(self, server: SimTcpServer | SimSerialServer, where: str) -> None:
        try:
            await server.serve_forever(background=True)
        except RuntimeError:  # pymodbus reports a failed bind this way (and logs why)
            raise OSError(f"cannot listen on {where}: address in use or not permitted") from None
        self._servers.append(server)

    def _listing(self, names: Iterable[str]) -> list[tuple[int, str, str]]:
        spec = self.site.spec
        return sorted((spec.devices[n].unit, n, spec.devices[n].model) for n in names)

    async def _tick(self) -> None:
        while True:
            try:
                self.refresh()
            except Exception:  # keep serving even if one step of the physics fails
                log.exception("physics step failed")
            await asyncio.sleep(self.tick_s)

    async def close(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        for server in self._servers:
            with contextlib.suppress(Exception):
                await server.shutdown()  # type: ignore[no-untyped-call]
        self._servers.clear()
        for line in self._lines:
            await line.close()
        self._lines.clear()
        for path in self.links:
            with contextlib.suppress(OSError):
                os.unlink(path)
        self.links.clear()


def _link(path: str, target: str) -> bool:
    """Make ``path`` a symlink to the simulated line's ``target``, as ``socat … link=``
    does, so a gateway configured with ``path`` finds the simulator. Only a free path or
    a dangling symlink is taken: a real device or another live simulator is never
    replaced. Returns whether the link was made."""
    try:
        if os.path.islink(path):
            if os.path.exists(path):
                log.warning("%s is in use (a live link); connect to %s instead", path, target)
                return False
            os.unlink(path)
        elif os.path.exists(path):
            log.warning("%s exists; connect to %s instead", path, target)
            return False
        os.symlink(target, path)
    except OSError as exc:
        log.info("cannot create %s (%s); connect to %s instead", path, exc, target)
        return False
    return True


def single_device_site(model: str, *, host: str = "127.0.0.1", port: int = 5020,
                       unit: int = 1) -> SiteSpec:
    """A one-device site for ``pedf sim device``: the device plus a little building for
    it to measure (an office base load; relays and sub-meters get loads on their channels)."""
    lines = [
        '[site]', f'id = "sim-{model}"', 'name = "single simulated device"',
        '[simulation.base_load]', 'rated_w = 40000.0', 'profile = "plugs"',
        '[[devices]]', 'name = "device"', f'model = "{model}"', 'transport = "tcp"',
        f'host = "{host}"', f'port = {port}', f'unit = {unit}',
    ]
    from drivers.maploader import get_map

    kind = get_map(model).kind
    if kind == "sub_meter":
        for channel, (profile, watts) in enumerate(
                (("lighting", 3000), ("plugs", 2000), ("hvac_fan", 4000)), start=1):
            lines += ['[[loads]]', f'name = "load_{channel}"', f'rated_w = {watts}.0',
                      f'meter = {{ device = "device", channel = {channel} }}',
                      f'simulation = {{ profile = "{profile}" }}']
    if kind == "relay":
        for channel in range(1, 17):
            lines += ['[[loads]]', f'name = "load_{channel}"', 'rated_w = 2000.0',
                      'device = "device"', f'channel = {channel}',
                      'simulation = { profile = "lighting" }']
    text = "\n".join(lines) + "\n"
    return parse_site(Node(f"<sim device {model}>", "", tomllib.loads(text)))
