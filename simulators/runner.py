"""Run a simulated site: physics advanced by a clock, every device served on its line.

``async with SiteRunner(site, clock) as running:`` starts, per line of the site file, a
TCP server (a native TCP line), or a virtual RS-485 line with one server per protocol on
it (a serial line), or such a line behind a TCP port (a serial device server); on exit it
stops them all. ``running.serial_ports`` maps each serial port named in the site file to
the pseudo-terminal a client must open instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import tomllib
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from drivers.points import Protocol
from drivers.schema import Node
from drivers.site import DeviceSpec, LineKind, LineSpec, SiteSpec, parse_site
from simulators.clock import Clock
from simulators.faults import Faults
from simulators.serialbus import SerialServerBridge, VirtualSerialLine
from simulators.served import SimulatedDevice
from simulators.servers import Server, serial_server, served_device, tcp_server
from simulators.sitefile import SimulatedSite

log = logging.getLogger("pedf.sim")


@dataclass
class Endpoint:
    """What runs where, for printing and for clients."""

    address: str  # tcp://host:port, or the pty a client opens
    devices: list[tuple[str, str, str]]  # (station, device name, model)
    site_port: str = ""  # serial port named in the site file (serial lines only)


@dataclass
class SiteRunner:
    site: SimulatedSite
    clock: Clock
    tick_s: float = 0.2
    single_client: frozenset[str] = frozenset()  # device names whose endpoint allows one
    serial_time_scale: float = 1.0  # < 1 makes the virtual RS-485 lines faster than real
    min_step_s: float = 0.02  # simulated seconds between physics steps
    devices: dict[str, SimulatedDevice] = field(default_factory=dict)
    endpoints: list[Endpoint] = field(default_factory=list)
    serial_ports: dict[str, str] = field(default_factory=dict)
    links: list[str] = field(default_factory=list)  # serial-port symlinks we created
    _servers: list[Server] = field(default_factory=list)
    _lines: list[VirtualSerialLine] = field(default_factory=list)
    _bridges: list[SerialServerBridge] = field(default_factory=list)
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
            self.devices[device.name] = served_device(device, binding, self.refresh,
                                                      clock=self.clock.now, zone=spec.zone)
        members: dict[str, list[DeviceSpec]] = defaultdict(list)
        for device in spec.devices.values():
            members[device.line.name].append(device)
        for name, devices in members.items():
            line = spec.lines[name]
            if line.kind is LineKind.TCP:
                await self._serve_tcp(line, devices)
            else:
                await self._serve_serial(line, devices)
        self.refresh()
        self._ticker = asyncio.create_task(self._tick(), name="sim-physics-ticker")

    def _by_protocol(self, devices: list[DeviceSpec]) -> dict[Protocol, list[SimulatedDevice]]:
        grouped: dict[Protocol, list[SimulatedDevice]] = {}
        for device in devices:
            grouped.setdefault(device.protocol, []).append(self.devices[device.name])
        return grouped

    async def _serve_tcp(self, line: LineSpec, devices: list[DeviceSpec]) -> None:
        grouped = self._by_protocol(devices)
        if len(grouped) > 1:
            raise ValueError(f"{line}: one TCP endpoint serves one protocol")
        ((protocol, served),) = grouped.items()
        single = any(d.name in self.single_client or d.pacing.single_client for d in devices)
        server = tcp_server(protocol, served, line.host, line.port, single_client=single)
        await self._listen(server, str(line))
        self.endpoints.append(Endpoint(str(line), self._listing(devices)))

    async def _serve_serial(self, line: LineSpec, devices: list[DeviceSpec]) -> None:
        serial = line.serial
        assert serial is not None
        grouped = self._by_protocol(devices)
        virtual = await VirtualSerialLine(
            baud=serial.baud, bits_per_char=serial.bits_per_char,
            time_scale=self.serial_time_scale, drops=len(grouped)).start()
        self._lines.append(virtual)
        # A pseudo-terminal carries bytes, not characters: Linux drops PARENB and refuses a
        # later reconfiguration that asks for it again (EINVAL, e.g. when pymodbus sets the
        # port's timeout after opening it). The devices' side opens it without parity; the
        # virtual line times every character with the line's parity bit all the same.
        pty_side = dataclasses.replace(serial, parity="N")
        for port, (protocol, served) in zip(virtual.device_ports, grouped.items(), strict=True):
            await self._listen(serial_server(protocol, served, port, pty_side), port)
        if line.kind is LineKind.SERIAL_SERVER:
            bridge = await SerialServerBridge(virtual, line.host, line.port).start()
            self._bridges.append(bridge)
            self.endpoints.append(Endpoint(str(line), self._listing(devices)))
            return
        self.serial_ports[line.serial_port] = virtual.gateway_port
        if _link(line.serial_port, virtual.gateway_port):
            self.links.append(line.serial_port)
        self.endpoints.append(Endpoint(virtual.gateway_port, self._listing(devices),
                                       site_port=line.serial_port))

    async def _listen(self, server: Server, where: str) -> None:
        try:
            await server.serve_forever(background=True)
        except RuntimeError:  # pymodbus reports a failed bind this way (and logs why)
            raise OSError(f"cannot listen on {where}: address in use or not permitted") from None
        self._servers.append(server)

    @staticmethod
    def _listing(devices: Iterable[DeviceSpec]) -> list[tuple[str, str, str]]:
        return sorted((d.station, d.name, d.model) for d in devices)

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
        for bridge in self._bridges:
            await bridge.close()
        self._bridges.clear()
        for server in self._servers:
            with contextlib.suppress(Exception):
                await server.shutdown()
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
                       unit: int = 1, address: str = "000000000001",
                       serial_server: bool = False) -> SiteSpec:
    """A one-device site for ``pedf sim device``: the device plus a little building for
    it to measure (an office base load; relays and sub-meters get loads on their channels).
    A Modbus device answers at ``unit``, a DL/T 645 meter at ``address``; with
    ``serial_server`` the device sits on an RS-485 line behind a serial device server at
    ``host:port`` (RTU or DL/T 645 frames over TCP), else on a native TCP endpoint."""
    from drivers.maploader import get_map

    device_map = get_map(model)
    station = f'unit = {unit}' if device_map.protocol is Protocol.MODBUS \
        else f'address = "{address}"'
    where = ['line = "bus"'] if serial_server else [
        'transport = "tcp"', f'host = "{host}"', f'port = {port}']
    lines = [
        '[site]', f'id = "sim-{model}"', 'name = "single simulated device"',
        '[simulation.base_load]', 'rated_w = 40000.0', 'profile = "plugs"',
    ]
    if serial_server:
        lines += ['[[lines]]', 'name = "bus"', 'transport = "serial_server"',
                  f'host = "{host}"', f'port = {port}']
    lines += ['[[devices]]', 'name = "device"', f'model = "{model}"', *where, station]
    kind = device_map.kind
    if kind in ("dc_storage", "dc_loads"):  # on a 直柔 bus: its converter, next unit
        lines += ['simulation = { bus = "converter", lighting_w = 8000.0, '
                  'fan_coil_w = 10000.0 }' if kind == "dc_loads"
                  else 'simulation = { bus = "converter" }',
                  '[[devices]]', 'name = "converter"', 'model = "dc-interface-converter"',
                  *where, f'unit = {unit % 247 + 1}']
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
