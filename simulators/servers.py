"""Which simulator adapter serves a device of a given protocol: one place that knows them."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import tzinfo
from typing import Protocol as TypingProtocol
from typing import TypeVar

from drivers.points import Protocol
from drivers.site import DeviceSpec, SerialSettings
from simulators.bindings import Binding
from simulators.dlt645 import Dlt645Meter, Dlt645SerialServer, Dlt645TcpServer
from simulators.modbus import ServedDevice, SimSerialServer, SimTcpServer
from simulators.served import SimulatedDevice

__all__ = ["Server", "serial_server", "served_device", "tcp_server"]

D = TypeVar("D", bound=SimulatedDevice)


class Server(TypingProtocol):
    """What the runner needs of a protocol server (pymodbus' servers have this shape)."""

    async def serve_forever(self, *, background: bool = False) -> None: ...

    async def shutdown(self) -> None: ...


def served_device(spec: DeviceSpec, binding: Binding, refresh: Callable[[], None], *,
                  clock: Callable[[], float] = time.time, zone: tzinfo | None = None
                  ) -> SimulatedDevice:
    """The simulated device for ``spec``, answering in its protocol at its address.
    ``clock`` and ``zone`` set a meter's own calendar clock (DL/T 645 date and time)."""
    if spec.protocol is Protocol.MODBUS:
        return ServedDevice(spec.name, spec.device_map, binding, spec.unit, refresh=refresh,
                            pacing=spec.pacing)
    return Dlt645Meter(spec.name, spec.device_map, binding, spec.meter_address,
                       refresh=refresh, clock=clock, zone=zone, password=spec.password)


def tcp_server(protocol: Protocol, devices: Sequence[SimulatedDevice], host: str, port: int,
               *, single_client: bool = False) -> Server:
    """A TCP server for ``devices`` (all of ``protocol``)."""
    if protocol is Protocol.MODBUS:
        return SimTcpServer(_of(ServedDevice, devices), host, port, single_client=single_client)
    return Dlt645TcpServer(_of(Dlt645Meter, devices), host, port, single_client=single_client)


def serial_server(protocol: Protocol, devices: Sequence[SimulatedDevice], port: str,
                  serial: SerialSettings) -> Server:
    """A server for ``devices`` (all of ``protocol``) on the serial port ``port``."""
    if protocol is Protocol.MODBUS:
        return SimSerialServer(_of(ServedDevice, devices), port, baud=serial.baud,
                               parity=serial.parity, stop_bits=serial.stop_bits)
    return Dlt645SerialServer(_of(Dlt645Meter, devices), port, serial)


def _of(cls: type[D], devices: Sequence[SimulatedDevice]) -> list[D]:
    picked = [d for d in devices if isinstance(d, cls)]
    if len(picked) != len(devices):
        raise TypeError(f"not every device is a {cls.__name__}")
    return picked
