"""Fault injection for simulated devices: what a bad device does on the wire.

Faults are mutable at runtime (tests switch them on and off while a client polls) and
are applied by the Modbus adapter in one place (:mod:`simulators.modbus`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, fields

__all__ = ["FAULT_HELP", "Faults", "parse_fault"]

FAULT_HELP = """\
latency=S        answer S seconds late
timeout          never answer
exception=N      answer every request with Modbus exception N (e.g. 4, 6)
disconnect       close the TCP connection instead of answering
corrupt          send malformed frames (bad CRC on RTU, bad byte count/length on TCP)
freeze           keep serving the values of the moment the fault was set
sf-change=S      SunSpec scale factors alternate every S seconds (values re-encoded)
reboot=S         go away for S seconds: connections closed, no answers, then back
single-client    (endpoint) accept one TCP connection at a time, close others at once"""


@dataclass
class Faults:
    """The faults active on one simulated device (all off by default)."""

    latency_s: float = 0.0
    no_response: bool = False
    exception: int | None = None
    disconnect: bool = False
    corrupt: bool = False
    freeze: bool = False
    scale_factor_period_s: float = 0.0
    offline_until: float = 0.0  # time.monotonic() until which the device is rebooting

    def clear(self) -> None:
        for f in fields(self):
            setattr(self, f.name, f.default)

    def reboot(self, seconds: float) -> None:
        self.offline_until = time.monotonic() + seconds

    @property
    def offline(self) -> bool:
        return time.monotonic() < self.offline_until

    def scale_factor_delta(self) -> int:
        """0 or +1: how far the served scale factors are shifted right now (coarser, so
        every value that fitted its register still fits)."""
        if self.scale_factor_period_s <= 0:
            return 0
        return int(time.monotonic() / self.scale_factor_period_s) % 2

    @property
    def active(self) -> list[str]:
        names = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "offline_until":
                if self.offline:
                    names.append("rebooting")
            elif value != f.default:
                names.append(f.name if isinstance(value, bool) else f"{f.name}={value}")
        return names


def parse_fault(text: str, faults: Faults) -> bool:
    """Apply one ``--fault`` argument to ``faults``. Returns True for ``single-client``
    (an endpoint option rather than a device fault). Raises ValueError with the list of
    known faults when ``text`` is not one of them."""
    name, _, argument = text.partition("=")
    try:
        if name == "latency":
            faults.latency_s = _positive(argument)
        elif name == "timeout" and not argument:
            faults.no_response = True
        elif name == "exception":
            code = int(argument)
            if not 1 <= code <= 255:
                raise ValueError
            faults.exception = code
        elif name == "disconnect" and not argument:
            faults.disconnect = True
        elif name == "corrupt" and not argument:
            faults.corrupt = True
        elif name == "freeze" and not argument:
            faults.freeze = True
        elif name == "sf-change":
            faults.scale_factor_period_s = _positive(argument)
        elif name == "reboot":
            faults.reboot(_positive(argument))
        elif name == "single-client" and not argument:
            return True
        else:
            raise ValueError
    except ValueError:
        raise ValueError(f"unknown fault {text!r}; faults are:\n{FAULT_HELP}") from None
    return False


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise ValueError
    return value
