"""drivers: register maps as data, one generic sans-I/O codec, a read planner, and
semantic device classes. No sockets, no asyncio: bytes and registers in, values out."""

from drivers.codec import (
    DecodeError,
    RegisterImage,
    WriteRangeError,
    decode,
    decode_points,
    encode,
    encode_write,
)
from drivers.devices import (
    Battery,
    DcBus,
    Device,
    HeatPump,
    Inverter,
    Meter,
    Relay,
    SubMeter,
    Write,
    device_class,
)
from drivers.maploader import MapError, get_map, load_map, shipped_models
from drivers.planner import PlanError, ReadRequest, plan_group, plan_reads
from drivers.points import Access, DeviceMap, Order, Point, PointType, PollGroup, Table, Value
from drivers.reading import Quality, Reading
from drivers.schema import ConfigError

__all__ = [
    "Access",
    "Battery",
    "ConfigError",
    "DcBus",
    "DecodeError",
    "Device",
    "DeviceMap",
    "HeatPump",
    "Inverter",
    "MapError",
    "Meter",
    "Order",
    "PlanError",
    "Point",
    "PointType",
    "PollGroup",
    "Quality",
    "ReadRequest",
    "Reading",
    "RegisterImage",
    "Relay",
    "SubMeter",
    "Table",
    "Value",
    "Write",
    "WriteRangeError",
    "decode",
    "decode_points",
    "device_class",
    "encode",
    "encode_write",
    "get_map",
    "load_map",
    "plan_group",
    "plan_reads",
    "shipped_models",
]
