"""Home Assistant MQTT discovery: the gateway's devices and key sensors appear by
themselves when ``[uplink] home_assistant = true``.

What is announced (retained, on every connect):

* the gateway itself, as a device with one ``binary_sensor`` (connectivity) reading the
  retained status topic, so that the ``via_device`` of every other device names a device
  Home Assistant knows (an unannounced one becomes an empty placeholder: core PR
  #131588);
* for each device, one ``sensor`` per key capability, including each channel of a
  multi-channel sub-meter (power, energy, voltage, current), under
  ``homeassistant/sensor/<site>_<device>_<capability>/config``; a capability whose point
  has an enum (SG-Ready state, operating mode) is an ``enum`` sensor with its labels.

Telemetry is published per poll group, so a device's message may lack a sensor's key.
Each value template tests for its key first and otherwise renders what Home Assistant
ignores: an empty string for a numeric sensor (logged at debug level only), and for an
enum sensor its current state, or ``None`` while it has none. A value of ``null`` (the
reading is stale or failed) renders ``None``, which Home Assistant shows as unknown. No
template looks up a missing key, so none logs a warning (core#48851).

``default_entity_id`` (``sensor.<unique id>``) suggests the entity id: ``object_id`` is
deprecated since Home Assistant 2025.10 and ignored from 2026.4.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from controller.topics import Topics, discovery_topic
from drivers.site import DeviceSpec, SiteSpec

#: Capability -> (device class, state class, unit) for the numeric sensors announced.
SENSORS: dict[str, tuple[str | None, str, str]] = {
    "power_w": ("power", "measurement", "W"),
    "import_wh": ("energy", "total_increasing", "Wh"),
    "export_wh": ("energy", "total_increasing", "Wh"),
    "energy_wh": ("energy", "total_increasing", "Wh"),
    "soc_pct": ("battery", "measurement", "%"),
    "bus_voltage_v": ("voltage", "measurement", "V"),
    "indoor_temp_c": ("temperature", "measurement", "°C"),
    "outdoor_temp_c": ("temperature", "measurement", "°C"),
    "flow_temp_c": ("temperature", "measurement", "°C"),
    "frequency_hz": ("frequency", "measurement", "Hz"),
}
#: Capabilities announced as enum sensors (their points carry the labels).
ENUMS = ("sg_ready_state", "operating_mode")
#: A sub-meter channel's capability (``ch3_power_w``): the part after the channel is
#: looked up in :data:`CHANNEL_SENSORS`.
CHANNEL = re.compile(r"^ch(\d+)_(.+)$")
CHANNEL_SENSORS: dict[str, tuple[str | None, str, str]] = {
    **{k: SENSORS[k] for k in ("power_w", "import_wh", "export_wh")},
    "voltage_v": ("voltage", "measurement", "V"),
    "current_a": ("current", "measurement", "A"),
}


def numeric_template(point: str) -> str:
    """The value of ``point`` when the message has it (``None`` for null), else ``''``."""
    key = json.dumps(point)
    return ("{% set v = value_json['values'] %}"
            f"{{{{ v[{key}] if {key} in v else '' }}}}")


def enum_template(point: str, labels: Mapping[int, str]) -> str:
    """The label of ``point``'s code when the message has it (``None`` for null or an
    unknown code); otherwise the entity's current state if it is a label, else ``None``."""
    key = json.dumps(point)
    table = json.dumps({str(code): label for code, label in sorted(labels.items())},
                       ensure_ascii=False)
    options = json.dumps(sorted(set(labels.values())), ensure_ascii=False)
    return ("{% set v = value_json['values'] %}"
            f"{{% set labels = {table} %}}"
            f"{{% if {key} in v %}}{{{{ labels.get(v[{key}] | string, 'None') }}}}"
            f"{{% elif this.state in {options} %}}{{{{ this.state }}}}"
            "{% else %}None{% endif %}")


def gateway_identifier(site: SiteSpec) -> str:
    return f"pedf_{site.site_id}".replace("-", "_")


def discovery_messages(site: SiteSpec, topics: Topics) -> list[tuple[str, bytes]]:
    """(topic, retained payload) of every discovery config: the gateway first."""
    configs = [_gateway_config(site, topics)]
    for device in site.devices.values():
        configs += [_sensor_config(site, topics, device, capability, point)
                    for capability, point in device.device_map.capabilities.items()
                    if capability in ENUMS or _kind(capability) is not None]
    return [(discovery_topic(component, config["unique_id"]),
             json.dumps(config, ensure_ascii=False).encode()) for component, config in configs]


def _kind(capability: str) -> tuple[str | None, str, str] | None:
    if capability in SENSORS:
        return SENSORS[capability]
    if (match := CHANNEL.match(capability)) is not None:
        return CHANNEL_SENSORS.get(match.group(2))
    return None


def _gateway_config(site: SiteSpec, topics: Topics) -> tuple[str, dict[str, Any]]:
    unique = f"{gateway_identifier(site)}_connectivity"
    return "binary_sensor", {
        "name": "connectivity",
        "unique_id": unique,
        "default_entity_id": f"binary_sensor.{unique}",
        "state_topic": topics.status,
        "value_template": "{{ value_json.state }}",
        "payload_on": "online",
        "payload_off": "offline",
        "device_class": "connectivity",
        "entity_category": "diagnostic",
        "device": {"identifiers": [gateway_identifier(site)],
                   "name": f"{site.name} gateway",
                   "manufacturer": "PEDF Toolkit", "model": "pedf gateway"},
    }


def _sensor_config(site: SiteSpec, topics: Topics, device: DeviceSpec, capability: str,
                   point_name: str) -> tuple[str, dict[str, Any]]:
    unique = f"{site.site_id}_{device.name}_{capability}".replace("-", "_")
    config: dict[str, Any] = {
        "name": capability.replace("_", " "),
        "unique_id": unique,
        "default_entity_id": f"sensor.{unique}",
        "state_topic": topics.telemetry(device.name),
        "availability_topic": topics.status,
        "availability_template": "{{ value_json.state }}",
        "payload_available": "online",
        "payload_not_available": "offline",
        "device": {
            "identifiers": [f"{site.site_id}_{device.name}"],
            "name": f"{site.name} {device.name}",
            "manufacturer": device.device_map.manufacturer,
            "model": device.model,
            "via_device": gateway_identifier(site),
        },
    }
    point = device.device_map.points.get(point_name)
    labels = point.enum if point is not None else {}
    if capability in ENUMS:  # a mode: its labels are the options
        config["device_class"] = "enum"
        config["options"] = sorted(set(labels.values()))
        config["value_template"] = enum_template(point_name, labels)
        return "sensor", config
    device_class, state_class, unit = _kind(capability) or (None, "measurement", "")
    config["value_template"] = numeric_template(point_name)
    config["state_class"] = state_class
    if device_class:
        config["device_class"] = device_class
    if unit:
        config["unit_of_measurement"] = unit
    return "sensor", config


def discovery_hook(site: SiteSpec, topics: Topics) -> Callable[[Any], Awaitable[None]]:
    async def publish(client: Any) -> None:
        for topic, payload in discovery_messages(site, topics):
            await client.publish(topic, payload, qos=1, retain=True)

    return publish
