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

import dataclasses
import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from drivers.capabilities import relay_channel_count
from drivers.energycodes import energy_code
from drivers.maploader import get_map
from drivers.points import AnyMap, Pacing, Point, PollGroup, Protocol, Table
from drivers.protocol import Framing
from drivers.schema import ConfigError, Node, load_toml

__all__ = [
    "SG_READY_MAX_BLOCKED_S",
    "DeviceSpec",
    "LineKind",
    "LineSpec",
    "LoadSpec",
    "SerialSettings",
    "SgReadySpec",
    "SiteSpec",
    "load_site",
    "parse_site",
]

#: Top-level sections a site file may have; owners other than this module parse the rest.
SECTIONS = ("site", "lines", "devices", "loads", "simulation", "logging", "uplink",
            "metering", "control", "openadr", "energy", "platform", "dcbus",
            "console", "planner")

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,47}$")
_NAME_TEXT = "a name of lowercase letters, digits and _ (starting with a letter)"


class LineKind(enum.Enum):
    """How the gateway reaches a line's devices. The value is the name used in files."""

    TCP = "tcp"  # a native TCP connection (Modbus TCP, or DL/T 645 over TCP)
    SERIAL = "serial"  # an RS-485 port of the gateway
    SERIAL_SERVER = "serial_server"  # TCP to a serial device server in transparent mode


@dataclass(frozen=True, slots=True)
class SerialSettings:
    """Character framing of a serial line: baud, data bits, parity (N/E/O), stop bits."""

    baud: int = 9600
    parity: str = "N"
    stop_bits: int = 1
    bytesize: int = 8

    def __str__(self) -> str:
        return f"{self.baud}-{self.bytesize}{self.parity}{self.stop_bits}"

    @property
    def bits_per_char(self) -> int:
        """Start, data, parity and stop bits of one character."""
        return 1 + self.bytesize + (0 if self.parity == "N" else 1) + self.stop_bits

    @property
    def char_time_s(self) -> float:
        """Time on the wire of one character."""
        return self.bits_per_char / self.baud

    @property
    def silence_s(self) -> float:
        """The inter-frame silence: 3.5 characters, at least 1.75 ms above 19200 baud."""
        return 0.00175 if self.baud > 19200 else 3.5 * self.char_time_s


#: Serial defaults by protocol: Modbus RTU 9600 8N1; DL/T 645 meters 2400 8E1.
SERIAL_DEFAULTS = {Protocol.MODBUS: SerialSettings(),
                   Protocol.DLT645: SerialSettings(2400, "E", 1, 8)}


@dataclass(frozen=True, slots=True)
class LineSpec:
    """A line: a byte transport shared by the devices on it, whatever protocol each
    speaks. ``serial`` is set for serial lines and serial servers (the RS-485 side's
    settings, which the gateway's timing follows)."""

    name: str
    kind: LineKind
    host: str = ""
    port: int = 0
    serial_port: str = ""
    serial: SerialSettings | None = None
    path: str = ""  # key path in the site file, for messages

    def __str__(self) -> str:
        if self.kind is LineKind.TCP:
            return f"tcp://{self.host}:{self.port}"
        assert self.serial is not None
        if self.kind is LineKind.SERIAL:
            return f"serial://{self.serial_port}?{self.serial}"
        return f"serial-server://{self.host}:{self.port}?{self.serial}"

    @property
    def framing(self) -> Framing:
        return Framing.STREAM if self.kind is LineKind.TCP else Framing.SERIAL


#: SG-Ready label rules: operating state 1 (blocked) holds the heat pump off for at most
#: two hours (Bundesverband Wärmepumpe, "Regularium für das Label SG Ready", v1.1, read
#: through OpenEMS' SG-Ready controller, which quotes it; the regulation itself was not
#: at hand).
SG_READY_MAX_BLOCKED_S = 7200.0


@dataclass(frozen=True, slots=True)
class SgReadySpec:
    """How the gateway sets a heat pump's SG-Ready state, and how long a state must hold.

    ``relay``/``contacts``: the relay module and its two channels wired to the heat
    pump's SG-Ready terminals (contact 1, contact 2 in the label's order: 1:0 blocked,
    0:0 normal, 0:1 boost recommended, 1:1 forced on); None: the map's own SG-Ready
    register (its ``sg_ready`` recipe). ``min_dwell_s``: a state holds at least this long
    before the gateway changes it. ``max_blocked_s``: the longest one block (state 1)."""

    relay: str | None
    contacts: tuple[int, int] | None
    min_dwell_s: float
    max_blocked_s: float
    path: str = ""

    @property
    def by_contacts(self) -> bool:
        return self.relay is not None and self.contacts is not None


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    """One device of the site: its map, where it is, and how to poll it."""

    name: str
    model: str
    device_map: AnyMap
    line: LineSpec
    protocol: Protocol
    unit: int  # Modbus unit id (0 for DL/T 645 devices)
    meter_address: str  # DL/T 645 address, 12 digits ("" for Modbus devices)
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
    password: str = "02000000"  # DL/T 645 writes: level and password, as printed
    operator: str = "00000000"  # DL/T 645 writes: operator code
    sg_ready: SgReadySpec | None = None  # heat pumps: how SG-Ready is set
    safe_open: frozenset[int] = frozenset()  # relays: channels that fall open on a trip
    energy_code: str | None = None  # 分类分项 code of what it meters (drivers.energycodes)
    pulse_meters: tuple[PulseMeterSpec, ...] = ()  # sub-meters: meters on its pulse inputs

    def safe_closed(self, channel: int) -> bool:
        """Relays: whether ``channel`` closes when the module's watchdog trips."""
        return channel not in self.safe_open

    @property
    def station(self) -> str:
        """The device's address on its line, for messages: "unit 3" or "address …"."""
        if self.protocol is Protocol.DLT645:
            return f"address {self.meter_address}"
        return f"unit {self.unit}"


@dataclass(frozen=True, slots=True)
class PulseMeterSpec:
    """A water, gas or heat meter wired to a sub-meter's pulse input: the input, what one
    pulse is worth in the code's unit (m³, kWh), and its 分类 code."""

    channel: int
    unit_per_pulse: float
    energy_code: str


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
    dc_bus: str | None  # the dc_bus device whose bus feeds it (None: on the AC side)
    simulation: Node | None
    path: str
    energy_code: str | None = None  # 分类分项 code (drivers.energycodes)


@dataclass(frozen=True, slots=True)
class SiteSpec:
    file: str
    site_id: str
    name: str
    latitude_deg: float
    longitude_deg: float
    timezone: str
    lines: Mapping[str, LineSpec]
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
    line_nodes = _line_nodes(root.get("lines"))
    devices: dict[str, DeviceSpec] = {}
    for node in root.req("devices").list():
        spec = _device(node, line_nodes)
        if spec.name in devices:
            raise node.req("name").error("a device name not used before")
        devices[spec.name] = spec
    devices, lines = _resolve_lines(devices, line_nodes, root)
    loads: dict[str, LoadSpec] = {}
    loads_node = root.get("loads")
    for node in [] if loads_node is None else loads_node.list():
        load = _load(node, devices)
        if load.name in loads or load.name in devices:
            raise node.req("name").error("a load name not used before by a load or device")
        loads[load.name] = load
    _check_channels(loads, root)
    devices = _wire_sg_ready(root, devices, loads)
    return SiteSpec(
        file=root.file,
        site_id=site_id,
        name=_opt_str(site.get("name"), site_id),
        latitude_deg=_opt_float(site.get("latitude"), 36.67, -90, 90),
        longitude_deg=_opt_float(site.get("longitude"), 117.0, -180, 180),
        timezone=timezone,
        lines=lines,
        devices=devices,
        loads=loads,
        sections={k: n for k, n in root.items()
                  if k not in ("site", "lines", "devices", "loads")},
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


_DEVICE_KEYS = ("name", "model", "line", "transport", "host", "port", "protocol", "unit",
                "address", "password", "operator", "timeout_s", "retries", "max_registers",
                "pacing", "groups", "turnaround_s", "unit_switch_delay_s", "backoff_max_s",
                "writes_per_s", "write_burst", "role", "simulation", "sg_ready", "safe_open",
                "energy_code", "pulse_meters")
_SERIAL_KEYS = ("serial_port", "baud", "parity", "stop_bits")
_DIGITS = re.compile(r"^[0-9]{12}$")
_CREDENTIAL = re.compile(r"^[0-9A-Fa-f]{8}$")


def _device(node: Node, line_nodes: Mapping[str, Node]) -> DeviceSpec:
    for key in _SERIAL_KEYS:
        if node.has(key):
            raise node.req(key).error("no serial setting here: serial settings belong to a "
                                      "[[lines]] entry, which the device names with line = …")
    node.only(_DEVICE_KEYS)
    name = _name(node.req("name"))
    model_node = node.req("model")
    try:
        device_map = get_map(model_node.str())
    except KeyError as exc:
        raise model_node.error(f"a shipped device model ({exc.args[0].split('; ')[1]})") from None
    protocol = device_map.protocol
    protocol_node = node.get("protocol")
    if protocol_node is not None and protocol_node.str(
            choices=[p.value for p in Protocol]) != protocol.value:
        raise protocol_node.error(f'"{protocol.value}" ({device_map.model} speaks '
                                  f"{protocol.value}; pick a model of the other protocol)")
    line = _inline_line(node, line_nodes)
    unit, meter_address = 0, ""
    if protocol is Protocol.MODBUS:
        if node.has("address"):
            raise node.req("address").error("no address (Modbus devices have a unit)")
        top = 255 if line.kind is LineKind.TCP else 247
        unit = node.req("unit").int(min=0 if top == 255 else 1, max=top)
    else:
        if node.has("unit"):
            raise node.req("unit").error("no unit (DL/T 645 meters have an address)")
        address_node = node.req("address")
        meter_address = address_node.str()
        if not _DIGITS.fullmatch(meter_address):
            raise address_node.error("the meter's address: 12 decimal digits, as on its label")
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
        line=line,
        protocol=protocol,
        unit=unit,
        meter_address=meter_address,
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
        password=_credential(node.get("password"), "02000000"),
        operator=_credential(node.get("operator"), "00000000"),
        safe_open=_safe_open(node.get("safe_open"), device_map),
        energy_code=_energy_code(node),
        pulse_meters=_pulse_meters(node.get("pulse_meters"), device_map),
    )


def _pulse_meters(node: Node | None, device_map: AnyMap) -> tuple[PulseMeterSpec, ...]:
    """A sub-meter's ``pulse_meters``: ``[{ channel, unit_per_pulse, energy_code }]`` for
    the meters on its pulse inputs (non-electric codes only)."""
    if node is None:
        return ()
    inputs = sum(1 for c in device_map.capabilities if re.fullmatch(r"pulse[0-9]_count", c))
    if not inputs:
        raise node.error(f"no pulse_meters ({device_map.model} has no pulse inputs)")
    meters: list[PulseMeterSpec] = []
    for entry in node.list():
        entry.only(("channel", "unit_per_pulse", "energy_code"))
        channel_node = entry.req("channel")
        channel = channel_node.int(min=1, max=inputs)
        if any(m.channel == channel for m in meters):
            raise channel_node.error("a pulse input not listed before")
        code_node = entry.req("energy_code")
        code = energy_code(code_node)
        if code.startswith("01"):
            raise code_node.error("a code of water, gas, heat or cold (02000 … 05000): "
                                  "electricity is metered by the channels")
        meters.append(PulseMeterSpec(
            channel, entry.req("unit_per_pulse").float(min=0, min_exclusive=True, max=1e6),
            code))
    return tuple(meters)


def _safe_open(node: Node | None, device_map: AnyMap) -> frozenset[int]:
    """A relay's ``safe_open``: the channels its watchdog opens (the others close)."""
    if node is None:
        return frozenset()
    if device_map.kind != "relay":
        raise node.error("no safe_open (only relay modules have one)")
    count = relay_channel_count(device_map.capabilities)
    channels: set[int] = set()
    for entry in node.list():
        channel = entry.int(min=1, max=count)
        if f"channel_{channel}_safe_on" not in device_map.capabilities:
            raise entry.error(f"a channel whose watchdog state {device_map.model} lets the "
                              "gateway set (its map has no safe state for it)")
        if channel in channels:
            raise entry.error("a channel not listed before")
        channels.add(channel)
    return frozenset(channels)


def _credential(node: Node | None, default: str) -> str:
    if node is None:
        return default
    text = node.str()
    if not _CREDENTIAL.fullmatch(text):
        raise node.error('8 hexadecimal digits as printed, e.g. "02000000"')
    return text


def _inline_line(node: Node, line_nodes: Mapping[str, Node]) -> LineSpec:
    """The device's line: a named [[lines]] entry (``line = …``) or, inline, a TCP
    endpoint (``transport = "tcp"``, ``host``, ``port``). Serial settings are resolved
    later, when every device of the line is known."""
    line_node = node.get("line")
    if line_node is not None:
        for key in ("transport", "host", "port"):
            if node.has(key):
                raise node.req(key).error(f"no {key} (the device is on line "
                                          f"{line_node.value!r}; the line says how to reach it)")
        entry = line_nodes.get(line_node.str())
        if entry is None:
            raise line_node.error("the name of a [[lines]] entry"
                                  + (f" ({', '.join(line_nodes)})" if line_nodes else
                                     " (this file has none)"))
        return _line(entry, None)
    transport = node.req("transport")
    if transport.str() != LineKind.TCP.value:
        raise transport.error('"tcp" (serial lines and serial servers are [[lines]] entries '
                              "that the device names with line = …)")
    host, port = node.req("host").str(), node.req("port").int(min=1, max=65535)
    return LineSpec(f"tcp://{host}:{port}", LineKind.TCP, host=host, port=port, path=node.path)


_LINE_KEYS = ("name", "transport", "host", "port", "serial_port", "baud", "parity",
              "stop_bits", "bytesize")


def _line_nodes(node: Node | None) -> dict[str, Node]:
    nodes: dict[str, Node] = {}
    for entry in [] if node is None else node.list():
        entry.only(_LINE_KEYS)
        name = _name(entry.req("name"))
        if name in nodes:
            raise entry.req("name").error("a line name not used before")
        _line(entry, None)  # validate now, so errors name the line's own keys
        nodes[name] = entry
    return nodes


def _line(node: Node, default_serial: SerialSettings | None) -> LineSpec:
    name = _name(node.req("name"))
    kind = LineKind(node.req("transport").str(choices=[k.value for k in LineKind]))
    if kind is LineKind.SERIAL:
        for key in ("host", "port"):
            if node.has(key):
                raise node.req(key).error('no host or port for transport = "serial" '
                                          "(serial_port names the device)")
    else:
        if node.has("serial_port"):
            raise node.req("serial_port").error(f'no serial_port for transport = "{kind.value}"')
    if kind is LineKind.TCP:
        for key in ("baud", "parity", "stop_bits", "bytesize"):
            if node.has(key):
                raise node.req(key).error('no serial setting for transport = "tcp"')
    defaults = default_serial or SerialSettings()
    serial = None if kind is LineKind.TCP else SerialSettings(
        baud=defaults.baud if node.get("baud") is None
        else node.req("baud").int(min=300, max=921600),
        parity=defaults.parity if node.get("parity") is None
        else node.req("parity").str(choices=("N", "E", "O")),
        stop_bits=defaults.stop_bits if node.get("stop_bits") is None
        else node.req("stop_bits").int(min=1, max=2),
        bytesize=defaults.bytesize if node.get("bytesize") is None
        else node.req("bytesize").int(min=7, max=8),
    )
    if kind is LineKind.SERIAL:
        return LineSpec(name, kind, serial_port=node.req("serial_port").str(), serial=serial,
                        path=node.path)
    return LineSpec(name, kind, host=node.req("host").str(),
                    port=node.req("port").int(min=1, max=65535), serial=serial, path=node.path)


def _resolve_lines(devices: Mapping[str, DeviceSpec], line_nodes: Mapping[str, Node],
                   root: Node) -> tuple[dict[str, DeviceSpec], dict[str, LineSpec]]:
    """Give each serial line the defaults of its protocol (2400 8E1 when every device on
    it speaks DL/T 645, else 9600 8N1), put every device on its final line, and check
    that addresses on one line are distinct."""
    lines: dict[str, LineSpec] = {}
    members: dict[str, list[DeviceSpec]] = {}
    for device in devices.values():
        members.setdefault(device.line.name, []).append(device)
    for name, node in line_nodes.items():
        protocols = {d.protocol for d in members.get(name, [])}
        default = SERIAL_DEFAULTS[Protocol.DLT645] if protocols == {Protocol.DLT645} \
            else SERIAL_DEFAULTS[Protocol.MODBUS]
        lines[name] = _line(node, default)
    resolved: dict[str, DeviceSpec] = {}
    seen: dict[tuple[str, str], DeviceSpec] = {}
    for device in devices.values():
        line = lines.setdefault(device.line.name, device.line)
        key = (line.name, device.station)
        other = seen.get(key)
        if other is not None and not _parts_of_one_device(other, device):
            where = "unit" if device.protocol is Protocol.MODBUS else "address"
            shared = other.device_map.shared_unit
            raise ConfigError(root.file, f"{device.path}.{where}",
                              f"a {where} not used by {other.name} on the same line"
                              + (f" (only other parts of a {shared} may share it)"
                                 if shared else ""),
                              device.unit if where == "unit" else device.meter_address)
        seen.setdefault(key, device)
        resolved[device.name] = dataclasses.replace(device, line=line)
    _check_shared_units(resolved, root)
    return resolved, lines


def _parts_of_one_device(first: DeviceSpec, second: DeviceSpec) -> bool:
    """Whether two devices at one unit are parts of one physical device: their maps name
    the same ``shared_unit``."""
    shared = first.device_map.shared_unit
    return bool(shared) and second.device_map.shared_unit == shared


def _check_shared_units(devices: Mapping[str, DeviceSpec], root: Node) -> None:
    """Parts of one device at one unit: different models whose registers do not
    overlap (each register belongs to one part, so a write reaches the right one)."""
    stations: dict[tuple[str, str], list[DeviceSpec]] = {}
    for device in devices.values():
        stations.setdefault((device.line.name, device.station), []).append(device)
    for parts in stations.values():
        if len(parts) < 2:
            continue
        owner: dict[tuple[Table, int], DeviceSpec] = {}
        for part in parts:
            if sum(p.model == part.model for p in parts) > 1:
                raise ConfigError(root.file, f"{part.path}.model",
                                  "one device of each model at a shared unit", part.model)
            for point in part.device_map.points.values():
                if not isinstance(point, Point):
                    continue
                for register in range(point.address, point.end):
                    holder = owner.setdefault((point.table, register), part)
                    if holder is not part:
                        raise ConfigError(
                            root.file, f"{part.path}.model",
                            f"a part whose registers do not overlap those of {holder.name} "
                            f"({point.name} at {point.table.value} {register})", part.model)


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


def _group(name: str, node: Node, device_map: AnyMap) -> PollGroup:
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


_LOAD_KEYS = ("name", "rated_w", "device", "channel", "priority", "sheddable", "min_on_s",
              "min_off_s", "max_shed_s", "group", "meter", "dc_bus", "simulation",
              "energy_code")


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
        channel = channel_node.int(min=1, max=relay_channel_count(spec.device_map.capabilities))
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
    dc_bus = None
    dc_bus_node = node.get("dc_bus")
    if dc_bus_node is not None:
        dc_bus = dc_bus_node.str()
        bus_spec = devices.get(dc_bus)
        if bus_spec is None or bus_spec.device_map.kind != "dc_bus":
            raise dc_bus_node.error("the name of a dc_bus device of this site")
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
        dc_bus=dc_bus,
        simulation=node.get("simulation"),
        path=node.path,
        energy_code=_energy_code(node),
    )


def _energy_code(node: Node) -> str | None:
    code_node = node.get("energy_code")
    return None if code_node is None else energy_code(code_node)


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


_SG_READY_KEYS = ("relay", "contacts", "min_dwell_s", "max_blocked_s")


def _wire_sg_ready(root: Node, devices: Mapping[str, DeviceSpec],
                   loads: Mapping[str, LoadSpec]) -> dict[str, DeviceSpec]:
    """Heat pumps' ``sg_ready`` tables: which relay channels drive their SG-Ready contacts
    (channels no load and no other heat pump uses), and the dwell and blocking limits."""
    wired = dict(devices)
    taken = {(load.device, load.channel): f"load {load.name}" for load in loads.values()
             if load.device is not None}
    for node in root.req("devices").list():
        table = node.get("sg_ready")
        if table is None:
            continue
        device = devices[node.req("name").str()]
        if device.device_map.kind != "heat_pump":
            raise table.error("no sg_ready (only heat pumps have one)")
        table.only(_SG_READY_KEYS)
        relay_node, contacts_node = table.get("relay"), table.get("contacts")
        relay = contacts = None
        if (relay_node is None) != (contacts_node is None):
            missing = "contacts" if contacts_node is None else "relay"
            raise ConfigError(root.file, f"{table.path}.{missing}",
                              "relay and contacts together (the relay module and its two "
                              "channels wired to the SG-Ready terminals)", missing=True)
        if relay_node is not None and contacts_node is not None:
            relay = relay_node.str()
            relay_spec = devices.get(relay)
            if relay_spec is None or relay_spec.device_map.kind != "relay":
                raise relay_node.error("the name of a relay device of this site")
            entries = contacts_node.list()
            if len(entries) != 2:
                raise contacts_node.error("two channels: [contact 1, contact 2]")
            count = relay_channel_count(relay_spec.device_map.capabilities)
            first, second = (entry.int(min=1, max=count) for entry in entries)
            if first == second:
                raise entries[1].error("a channel other than contact 1's")
            for entry, channel in zip(entries, (first, second), strict=True):
                user = taken.get((relay, channel))
                if user is not None:
                    raise entry.error(f"a channel not already used by {user}")
                taken[(relay, channel)] = f"heat pump {device.name}"
            contacts = (first, second)
        elif device.device_map.control("sg_ready") is None:
            raise ConfigError(root.file, f"{table.path}.relay",
                              f"relay and contacts ({device.model} has no SG-Ready register "
                              "the gateway could write)", missing=True)
        dwell_node, blocked_node = table.get("min_dwell_s"), table.get("max_blocked_s")
        wired[device.name] = dataclasses.replace(device, sg_ready=SgReadySpec(
            relay=relay, contacts=contacts,
            min_dwell_s=600.0 if dwell_node is None else dwell_node.float(min=0, max=86400),
            max_blocked_s=SG_READY_MAX_BLOCKED_S if blocked_node is None
            else blocked_node.float(min=60, max=SG_READY_MAX_BLOCKED_S),
            path=table.path))
    return wired
