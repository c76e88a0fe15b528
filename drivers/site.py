"""The site file: one TOML file describing a gateway's building. Typed and validated.

This module owns the parts every consumer shares — ``[site]``, ``[[devices]]`` and
``[[loads]]`` — and resolves each device's register map. Sections owned by one consumer
(``[simulation]`` for the simulators; control, uplink and tariffs for the controller)
are handed over unparsed as :class:`~drivers.schema.Node` and validated by their owners.
Every error names the file, the key path and what was expected::

    site.toml: devices[3].port: expected an integer 1–65535, got "50a"

Reference: ``docs/configuration.md``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from drivers.maploader import get_map
from drivers.points import DeviceMap, Pacing, PollGroup
from drivers.schema import ConfigError, Node, load_toml

__all__ = [
    "DeviceSpec",
    "Endpoint",
    "LoadSpec",
    "RtuEndpoint",
    "SiteSpec",
    "TcpEndpoint",
    "load_site",
    "parse_site",
]

#: Top-level sections a site file may have; owners other than this module parse the rest.
SECTIONS = ("site", "devices", "loads", "simulation", "logging", "uplink", "metering",
            "control", "openadr")

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,47}$")
_NAME_TEXT = "a name of lowercase letters, digits and _ (starting with a letter)"


@dataclass(frozen=True, slots=True)
class TcpEndpoint:
    host: str
    port: int

    def __str__(self) -> str:
        return f"tcp://{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class RtuEndpoint:
    """A serial RS-485 bus; devices with the same ``serial_port`` share it."""

    serial_port: str
    baud: int = 9600
    parity: str = "N"
    stop_bits: int = 1
    bytesize: int = 8

    def __str__(self) -> str:
        return f"rtu://{self.serial_port}?{self.baud}-{self.bytesize}{self.parity}{self.stop_bits}"

    @property
    def char_time_s(self) -> float:
        """Time on the wire of one character (start, data, parity, stop bits)."""
        bits = 1 + self.bytesize + (0 if self.parity == "N" else 1) + self.stop_bits
        return bits / self.baud

    @property
    def silence_s(self) -> float:
        """The inter-frame silence: 3.5 characters, at least 1.75 ms above 19200 baud."""
        return 0.00175 if self.baud > 19200 else 3.5 * self.char_time_s


Endpoint = TcpEndpoint | RtuEndpoint


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    """One device of the site: its map, where it is, and how to poll it."""

    name: str
    model: str
    device_map: DeviceMap
    endpoint: Endpoint
    unit: int
    groups: Mapping[str, PollGroup]
    pacing: Pacing
    max_registers: int
    timeout_s: float
    retries: int
    turnaround_s: float  # RTU: extra silence before talking to this device
    unit_switch_delay_s: float  # TCP gateway: wait when the previous request went elsewhere
    backoff_max_s: float  # longest wait between retries of a failing device
    writes_per_s: float  # sustained write rate limit
    write_burst: int  # writes allowed back to back before the rate limit applies
    role: str | None  # meters: "grid" (the grid connection) or "feeder"
    simulation: Node | None
    path: str  # key path in the site file, for messages


@dataclass(frozen=True, slots=True)
class LoadSpec:
    """A named electrical load: which relay channel switches it, how it may be shed."""

    name: str
    rated_w: float
    device: str | None  # relay device switching it
    channel: int | None
    priority: int  # 1 = least important (shed first) … 10 = most important
    sheddable: bool
    min_on_s: float
    min_off_s: float
    max_shed_s: float
    group: str | None
    meter: tuple[str, int] | None  # (sub-meter device, channel) metering it
    simulation: Node | None
    path: str


@dataclass(frozen=True, slots=True)
class SiteSpec:
    file: str
    site_id: str
    name: str
    latitude_deg: float
    longitude_deg: float
    timezone: str
    devices: Mapping[str, DeviceSpec]
    loads: Mapping[str, LoadSpec]
    sections: Mapping[str, Node] = field(default_factory=dict)  # owner-parsed sections

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def section(self, name: str) -> Node | None:
        return self.sections.get(name)

    def grid_meter(self) -> DeviceSpec | None:
        """The meter at the grid connection (``role = "grid"``), if the site names one."""
        return next((d for d in self.devices.values() if d.role == "grid"), None)


def load_site(path: Path | str) -> SiteSpec:
    """Load and validate a site file. Raises :class:`ConfigError`."""
    return parse_site(load_toml(path))


def parse_site(root: Node) -> SiteSpec:
    root.only(SECTIONS)
    site = root.req("site").only(("id", "name", "latitude", "longitude", "timezone"))
    site_id = site.req("id").str()
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", site_id):
        raise site.req("id").error("an id of letters, digits, _ . - (used in MQTT topics)")
    timezone_node = site.get("timezone")
    timezone = "Asia/Shanghai" if timezone_node is None else timezone_node.str()
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        assert timezone_node is not None
        raise timezone_node.error('an IANA time zone such as "Asia/Shanghai"') from None
    devices: dict[str, DeviceSpec] = {}
    for node in root.req("devices").list():
        spec = _device(node)
        if spec.name in devices:
            raise node.req("name").error("a device name not used before")
        devices[spec.name] = spec
    _check_buses(devices, root)
    loads: dict[str, LoadSpec] = {}
    loads_node = root.get("loads")
    for node in [] if loads_node is None else loads_node.list():
        load = _load(node, devices)
        if load.name in loads or load.name in devices:
            raise node.req("name").error("a load name not used before by a load or device")
        loads[load.name] = load
    _check_channels(loads, root)
    return SiteSpec(
        file=root.file,
        site_id=site_id,
        name=_opt_str(site.get("name"), site_id),
        latitude_deg=_opt_float(site.get("latitude"), 36.67, -90, 90),
        longitude_deg=_opt_float(site.get("longitude"), 117.0, -180, 180),
        timezone=timezone,
        devices=devices,
        loads=loads,
        sections={k: n for k, n in root.items() if k not in ("site", "devices", "loads")},
    )


def _opt_str(node: Node | None, default: str) -> str:
    return default if node is None else node.str()


def _opt_float(node: Node | None, default: float, low: float, high: float) -> float:
    return default if node is None else node.float(min=low, max=high)


def _name(node: Node) -> str:
    name = node.str()
    if not _NAME.fullmatch(name):
        raise node.error(_NAME_TEXT)
    return name


_DEVICE_KEYS = ("name", "model", "transport", "host", "port", "serial_port", "baud", "parity",
                "stop_bits", "unit", "timeout_s", "retries", "max_registers", "pacing",
                "groups", "turnaround_s", "unit_switch_delay_s", "backoff_max_s",
                "writes_per_s", "write_burst", "role", "simulation")


def _device(node: Node) -> DeviceSpec:
    node.only(_DEVICE_KEYS)
    name = _name(node.req("name"))
    model_node = node.req("model")
    try:
        device_map = get_map(model_node.str())
    except KeyError as exc:
        raise model_node.error(f"a shipped device model ({exc.args[0].split('; ')[1]})") from None
    transport = node.req("transport").str(choices=("tcp", "rtu"))
    endpoint: Endpoint
    if transport == "tcp":
        for key in ("serial_port", "baud", "parity", "stop_bits"):
            if node.has(key):
                raise node.req(key).error('no serial setting for transport = "tcp"')
        endpoint = TcpEndpoint(node.req("host").str(), node.req("port").int(min=1, max=65535))
        unit = node.req("unit").int(min=0, max=255)
    else:
        for key in ("host", "port"):
            if node.has(key):
                raise node.req(key).error('no TCP setting for transport = "rtu"')
        baud_node = node.get("baud")
        baud = 9600 if baud_node is None else baud_node.int(min=300, max=921600)
        parity_node = node.get("parity")
        parity = "N" if parity_node is None else parity_node.str(choices=("N", "E", "O"))
        stop_node = node.get("stop_bits")
        stop_bits = 1 if stop_node is None else stop_node.int(min=1, max=2)
        endpoint = RtuEndpoint(node.req("serial_port").str(), baud, parity, stop_bits)
        unit = node.req("unit").int(min=1, max=247)
    pacing = _pacing(node.get("pacing"), device_map.pacing)
    groups = dict(device_map.groups)
    groups_node = node.get("groups")
    if groups_node is not None:
        for group_name, group_node in groups_node.items():
            groups[group_name] = _group(group_name, group_node, device_map)
    if not groups:
        raise node.error("a device whose map or [devices.groups] defines a poll group")
    max_node = node.get("max_registers")
    role_node = node.get("role")
    role = None
    if role_node is not None:
        if device_map.kind != "meter":
            raise role_node.error("no role (only meters have one)")
        role = role_node.str(choices=("grid", "feeder"))
    return DeviceSpec(
        name=name,
        model=device_map.model,
        device_map=device_map,
        endpoint=endpoint,
        unit=unit,
        groups=groups,
        pacing=pacing,
        max_registers=device_map.max_registers if max_node is None
        else max_node.int(min=1, max=device_map.max_registers),
        timeout_s=_opt_float(node.get("timeout_s"), 1.0, 0.05, 30),
        retries=0 if node.get("retries") is None else node.req("retries").int(min=0, max=5),
        turnaround_s=_opt_float(node.get("turnaround_s"), 0.0, 0, 5),
        unit_switch_delay_s=_opt_float(node.get("unit_switch_delay_s"), 0.0, 0, 5),
        backoff_max_s=_opt_float(node.get("backoff_max_s"), 30.0, 1, 3600),
        writes_per_s=_opt_float(node.get("writes_per_s"), 4.0, 0.01, 100),
        write_burst=8 if node.get("write_burst") is None
        else node.req("write_burst").int(min=1, max=100),
        role=role,
        simulation=node.get("simulation"),
        path=node.path,
    )


def _pacing(node: Node | None, default: Pacing) -> Pacing:
    if node is None:
        return default
    node.only(("request_interval_s", "connect_delay_s", "single_client"))
    interval, delay = node.get("request_interval_s"), node.get("connect_delay_s")
    single = node.get("single_client")
    return Pacing(
        request_interval_s=default.request_interval_s if interval is None
        else interval.float(min=0, max=60),
        connect_delay_s=default.connect_delay_s if delay is None else delay.float(min=0, max=60),
        single_client=default.single_client if single is None else single.bool(),
    )


def _group(name: str, node: Node, device_map: DeviceMap) -> PollGroup:
    node.only(("interval_s", "points"))
    interval = node.req("interval_s").float(min=0.05, max=86400)
    points = []
    for entry in node.req("points").list():
        point = entry.str()
        if point not in device_map.points or not device_map.points[point].access.readable:
            raise entry.error(f"a readable point of {device_map.model} (see pedf maps "
                              f"{device_map.model})")
        points.append(point)
    return PollGroup(name, interval, tuple(points))


def _check_buses(devices: Mapping[str, DeviceSpec], root: Node) -> None:
    """Devices on one serial port must agree on its settings and have distinct units;
    devices behind one TCP endpoint must have distinct units."""
    seen: dict[object, tuple[str, DeviceSpec]] = {}
    buses: dict[str, DeviceSpec] = {}
    for device in devices.values():
        endpoint = device.endpoint
        key = (endpoint.serial_port if isinstance(endpoint, RtuEndpoint) else
               (endpoint.host, endpoint.port), device.unit)
        if key in seen:
            raise ConfigError(root.file, f"{device.path}.unit",
                              f"a unit id not used by {seen[key][0]} on the same endpoint",
                              device.unit)
        seen[key] = (device.name, device)
        if isinstance(endpoint, RtuEndpoint):
            first = buses.setdefault(endpoint.serial_port, device)
            if first.endpoint != endpoint:
                raise ConfigError(root.file, f"{device.path}.baud",
                                  f"the serial settings of {first.name} on the same port "
                                  f"({first.endpoint})", str(endpoint))


_LOAD_KEYS = ("name", "rated_w", "device", "channel", "priority", "sheddable", "min_on_s",
              "min_off_s", "max_shed_s", "group", "meter", "simulation")


def _load(node: Node, devices: Mapping[str, DeviceSpec]) -> LoadSpec:
    node.only(_LOAD_KEYS)
    name = _name(node.req("name"))
    device_node = node.get("device")
    device = channel = None
    if device_node is not None:
        device = device_node.str()
        spec = devices.get(device)
        if spec is None or spec.device_map.kind != "relay":
            raise device_node.error("the name of a relay device of this site")
        channel_node = node.req("channel")
        channel_count = sum(1 for c in spec.device_map.capabilities if c.startswith("channel_"))
        channel = channel_node.int(min=1, max=channel_count)
    elif node.has("channel"):
        raise node.req("channel").error("no channel without a relay device")
    sheddable_node = node.get("sheddable")
    sheddable = device is not None if sheddable_node is None else sheddable_node.bool()
    if sheddable and device is None:
        assert sheddable_node is not None
        raise sheddable_node.error("false (a load without a relay cannot be shed)")
    meter = None
    meter_node = node.get("meter")
    if meter_node is not None:
        meter_node.only(("device", "channel"))
        meter_device = meter_node.req("device")
        meter_spec = devices.get(meter_device.str())
        if meter_spec is None or meter_spec.device_map.kind != "sub_meter":
            raise meter_device.error("the name of a sub-meter device of this site")
        meter = (meter_spec.name, meter_node.req("channel").int(min=1, max=9))
    group_node = node.get("group")
    return LoadSpec(
        name=name,
        rated_w=node.req("rated_w").float(min=0, min_exclusive=True, max=10_000_000),
        device=device,
        channel=channel,
        priority=5 if node.get("priority") is None else node.req("priority").int(min=1, max=10),
        sheddable=sheddable,
        min_on_s=_opt_float(node.get("min_on_s"), 0.0, 0, 86400),
        min_off_s=_opt_float(node.get("min_off_s"), 0.0, 0, 86400),
        max_shed_s=_opt_float(node.get("max_shed_s"), 7200.0, 0, 86400),
        group=None if group_node is None else _name(group_node),
        meter=meter,
        simulation=node.get("simulation"),
        path=node.path,
    )


def _check_channels(loads: Mapping[str, LoadSpec], root: Node) -> None:
    taken: dict[tuple[str, int], str] = {}
    metered: dict[tuple[str, int], str] = {}
    for load in loads.values():
        for table, key, where in ((taken, (load.device, load.channel), "channel"),
                                  (metered, load.meter, "meter")):
            if key is None or key[0] is None:
                continue
            if key in table:
                raise ConfigError(root.file, f"{load.path}.{where}",
                                  f"a {where} not already used by load {table[key]}", str(key))
            table[key] = load.name  # type: ignore[index]
