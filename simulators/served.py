"""A simulated device's values, protocol-neutral: live values from the physics through
the device's map, writes checked by the map and applied to the physics. The protocol
adapters (:mod:`simulators.modbus`, :mod:`simulators.dlt645`) encode these values on the
wire and inject faults; this class is what they share."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from drivers.points import AnyMap, PointBase, Value, WriteRangeError
from simulators.bindings import Binding
from simulators.faults import Faults

log = logging.getLogger("pedf.sim")

__all__ = ["SimulatedDevice"]


@dataclass
class SimulatedDevice:
    """One simulated device: its map, its physics binding, its faults and written
    settings."""

    name: str
    device_map: AnyMap
    binding: Binding
    refresh: Callable[[], None] = lambda: None  # advances the physics to "now"
    faults: Faults = field(default_factory=Faults)
    settings: dict[str, Value] = field(default_factory=dict)  # written config points
    _frozen: dict[str, Value] | None = None
    _reverse: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._reverse = {point: cap for cap, point in self.device_map.capabilities.items()}

    def point_values(self) -> dict[str, Value]:
        """Every point's current engineering value (None: serve "not implemented")."""
        if self.faults.freeze:
            if self._frozen is None:
                self._frozen = self._live_values()
            return self._frozen
        self._frozen = None
        return self._live_values()

    def _live_values(self) -> dict[str, Value]:
        """Every point's value as the device reports it: constants, the physics by
        capability and by ``[simulation.quantities]``, points with transformer ``ratios``
        on the secondary side (the physics is the primary, seen through the site's
        transformers), then the settings written to the device (a ratio programmed into
        a meter changes what it reports as its ratio, not what its inputs see)."""
        self.refresh()
        device_map = self.device_map
        values: dict[str, Value] = dict(device_map.sim_constants)
        points = device_map.points
        quantities = self.binding.values()
        for capability, value in quantities.items():
            name = device_map.capabilities.get(capability)
            if name is not None:
                values[name] = value
        for name, quantity in device_map.sim_quantities.items():
            if quantity in quantities:
                values[name] = quantities[quantity]
        values.update({k: v for k, v in self.binding.extra_points().items() if k in points})
        values = device_map.secondary(values)
        values.update(self.settings)
        return values

    def write_value(self, point_name: str, value: Value) -> str | None:
        """Apply a write of ``value`` (engineering units) to ``point_name`` after the
        map's checks; the reason it was refused, or None."""
        point = self.device_map.points.get(point_name)
        if point is None:
            return f"{self.name}: no point {point_name!r}"
        try:
            point.check_write(value)
        except WriteRangeError as exc:
            return str(exc)
        return self.apply([(point, value)])

    def apply(self, updates: Sequence[tuple[PointBase, Value]]) -> str | None:
        """Apply checked writes to the physics (capabilities) or keep them as settings;
        the reason the physics refused one, or None. All updates before a refusal stay."""
        self.refresh()
        for point, value in updates:
            capability = self._reverse.get(point.name)
            if capability is None:
                self.settings[point.name] = value
                continue
            try:
                self.binding.write(capability, value)
            except KeyError:
                self.settings[point.name] = value
            except ValueError as exc:
                log.info("%s: write %s = %r refused: %s", self.name, point.name, value, exc)
                return f"{point.name} = {value!r} refused: {exc}"
        return None
