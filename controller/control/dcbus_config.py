"""The site file's ``[dcbus]`` section: how the gateway runs a 直柔 (flexible DC) bus.

::

    [dcbus]
    converter = "dc_converter"      # the interface converter (map with grid-limit mode)
    loads = "dc_loads"              # the DC load controller (optional)
    storage = "dc_storage"          # DC storage (optional)
    band_pct = [90.0, 105.0]        # supervision band, % of the nominal bus voltage
    serve_events = true             # DR / VPP events through the converter's grid limit
    watchdog_s = 10.0               # the converter's grid-limit watchdog the gateway programs
    gain = 0.6                      # share of the grid error corrected per cycle
    storage_curve = [[345, 100], [371, 0], [379, 0], [390, -100]]   # V → % (+ discharge)

    [dcbus.classes.lighting]
    curve = [[349, 50], [367.5, 100]]   # bus voltage (V) → % of demand, 2–4 breakpoints
    priority = 1                        # gives way first (lower = earlier)
    comfort_min_pct = 50                # the curve may never ask for less
    max_reduced_s = 3600                # how long it may stay reduced (flexibility report)

Every error names the file, the key and what was expected, and nothing is applied.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from drivers.dc_curves import BREAKPOINTS, DcLoadClass, VoltageCurve
from drivers.schema import ConfigError, Node
from drivers.site import SiteSpec

__all__ = ["DcBusSettings", "LoadClassSettings", "dcbus_settings"]


@dataclass(frozen=True, slots=True)
class LoadClassSettings:
    load_class: DcLoadClass
    curve: VoltageCurve
    priority: int
    comfort_min_pct: float
    max_reduced_s: float


@dataclass(frozen=True, slots=True)
class DcBusSettings:
    converter: str
    loads: str | None = None
    storage: str | None = None
    band_pct: tuple[float, float] = (90.0, 105.0)
    serve_events: bool = True
    watchdog_s: float = 10.0
    gain: float = 0.6
    storage_curve: VoltageCurve | None = None
    classes: dict[DcLoadClass, LoadClassSettings] = field(default_factory=dict)

    def give_way_order(self) -> list[DcLoadClass]:
        """The classes in the order they give way as the bus falls (priority, then knee)."""
        return sorted(self.classes, key=lambda c: (self.classes[c].priority,
                                                   -(self.classes[c].curve.knee_v or 0.0)))


def _device(site: SiteSpec, node: Node, kind: str, what: str) -> str:
    name = node.str()
    device = site.devices.get(name)
    if device is None or device.device_map.kind != kind:
        raise node.error(f"the name of a {kind} device of this site ({what})")
    return name


def _curve(node: Node, low: float, high: float) -> VoltageCurve:
    entries = node.list()
    if not 2 <= len(entries) <= BREAKPOINTS:
        raise node.error(f"2–{BREAKPOINTS} breakpoints [voltage_v, pct]")
    points = []
    for entry in entries:
        pair = entry.list()
        if len(pair) != 2:
            raise entry.error("a breakpoint [voltage_v, pct]")
        points.append((pair[0].float(min=1, max=2000), pair[1].float(min=low, max=high)))
    try:
        return VoltageCurve(tuple(points))
    except ValueError as exc:
        raise node.error(f"a curve whose {exc}") from None


def _class(name: str, node: Node) -> LoadClassSettings:
    node.only(("curve", "priority", "comfort_min_pct", "max_reduced_s"))
    curve = _curve(node.req("curve"), 0.0, 100.0)
    comfort = node.get("comfort_min_pct")
    comfort_min = 0.0 if comfort is None else comfort.float(min=0, max=100)
    if curve.floor_pct < comfort_min:
        raise node.req("curve").error(
            f"a curve that never asks for less than comfort_min_pct ({comfort_min:g} %); "
            f"its lowest breakpoint is {curve.floor_pct:g} %")
    reduced = node.get("max_reduced_s")
    return LoadClassSettings(DcLoadClass(name), curve, node.req("priority").int(min=0, max=99),
                             comfort_min,
                             3600.0 if reduced is None else reduced.float(min=0, max=86400))


def _check_order(classes: dict[DcLoadClass, LoadClassSettings], node: Node) -> None:
    """A class that gives way earlier (lower priority) must start giving way at a higher
    voltage than one that gives way later."""
    ranked = sorted(classes.values(), key=lambda c: c.priority)
    for earlier, later in itertools.pairwise(ranked):
        if earlier.priority == later.priority:
            continue
        knee_e, knee_l = earlier.curve.knee_v, later.curve.knee_v
        if knee_e is not None and knee_l is not None and knee_l > knee_e:
            raise ConfigError(
                node.file, node.child_path(f"{later.load_class.value}.curve"),
                f"a curve that gives way below {earlier.load_class.value}'s "
                f"({knee_e:g} V): priority {later.priority} gives way after priority "
                f"{earlier.priority}", f"gives way from {knee_l:g} V")


def dcbus_settings(site: SiteSpec) -> DcBusSettings | None:
    """The ``[dcbus]`` section of ``site``, or None when it has none. Raises
    :class:`~drivers.schema.ConfigError` naming file, key and what was expected."""
    node = site.section("dcbus")
    if node is None:
        return None
    node.only(("converter", "loads", "storage", "band_pct", "serve_events", "watchdog_s",
               "gain", "storage_curve", "classes"))
    converter = _device(site, node.req("converter"), "dc_bus",
                        "its interface converter")
    if site.devices[converter].device_map.control("grid_limit") is None:
        raise node.req("converter").error(
            "an interface converter whose map offers grid-limit mode ([controls.grid_limit], "
            "e.g. model dc-interface-converter)")
    loads_node, storage_node = node.get("loads"), node.get("storage")
    band = (90.0, 105.0)
    band_node = node.get("band_pct")
    if band_node is not None:
        pair = band_node.list()
        if len(pair) != 2:
            raise band_node.error("[low_pct, high_pct]")
        band = (pair[0].float(min=50, max=100, min_exclusive=True),
                pair[1].float(min=100, max=150, min_exclusive=True))
    classes: dict[DcLoadClass, LoadClassSettings] = {}
    classes_node = node.get("classes")
    if classes_node is not None:
        for name, child in classes_node.items():
            if name not in {c.value for c in DcLoadClass}:
                raise child.error("a load class: " + ", ".join(c.value for c in DcLoadClass))
            classes[DcLoadClass(name)] = _class(name, child)
        _check_order(classes, classes_node)
    if classes and loads_node is None:
        raise ConfigError(node.file, node.child_path("loads"),
                          "the DC load controller the class curves are written to",
                          missing=True)
    curve_node = node.get("storage_curve")
    if curve_node is not None and storage_node is None:
        raise ConfigError(node.file, node.child_path("storage"),
                          "the DC storage the storage_curve is written to", missing=True)
    serve, watchdog, gain = node.get("serve_events"), node.get("watchdog_s"), node.get("gain")
    return DcBusSettings(
        converter=converter,
        loads=None if loads_node is None else _device(site, loads_node, "dc_loads",
                                                      "its DC load controller"),
        storage=None if storage_node is None else _device(site, storage_node, "dc_storage",
                                                          "its DC storage"),
        band_pct=band,
        serve_events=True if serve is None else serve.bool(),
        watchdog_s=10.0 if watchdog is None else watchdog.float(min=2, max=3600),
        gain=0.6 if gain is None else gain.float(min=0.01, max=1.0),
        storage_curve=None if curve_node is None else _curve(curve_node, -100.0, 100.0),
        classes=classes)
