"""Home Assistant MQTT discovery: the gateway's devices and key sensors appear by
themselves when ``[uplink] home_assistant = true``.

For each device, one sensor per key capability is announced under
``homeassistant/sensor/<site>_<device>_<capability>/config`` (retained), reading its
value from the device's telemetry topic and its availability from the gateway's status.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from controller.uplink import Topics
from drivers.site import SiteSpec

#: Capability -> (device class, state class, unit) for the sensors announced.
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
    "sg_ready_state": (None, "measurement", ""),
    "frequency_hz": ("frequency", "measurement", "Hz"),
}


def discovery_messages(site: SiteSpec, topics: Topics) -> list[tuple[str, bytes]]:
    """(topic, retained payload) of every discovery config."""
    messages = []
    for device in site.devices.values():
        for capability, (device_class, state_class, unit) in SENSORS.items():
            point = device.device_map.capabilities.get(capability)
            if point is None:
                continue
            unique = f"{site.site_id}_{device.name}_{capability}".replace("-", "_")
            config: dict[str, Any] = {
                "name": capability.replace("_", " "),
                "unique_id": unique,
                "object_id": unique,
                "state_topic": topics.telemetry(device.name),
                "value_template": f"{{{{ value_json['values'][{json.dumps(point)}] }}}}",
                "availability_topic": topics.status,
                "availability_template": "{{ value_json.state }}",
                "payload_available": "online",
                "payload_not_available": "offline",
                "state_class": state_class,
                "device": {
                    "identifiers": [f"{site.site_id}_{device.name}"],
                    "name": f"{site.name} {device.name}",
                    "manufacturer": device.device_map.manufacturer,
                    "model": device.model,
                    "via_device": f"pedf_{site.site_id}",
                },
            }
            if device_class:
                config["device_class"] = device_class
            if unit:
                config["unit_of_measurement"] = unit
            messages.append((f"homeassistant/sensor/{unique}/config",
                             json.dumps(config, ensure_ascii=False).encode()))
    return messages


def discovery_hook(site: SiteSpec, topics: Topics) -> Callable[[Any], Awaitable[None]]:
    async def publish(client: Any) -> None:
        for topic, payload in discovery_messages(site, topics):
            await client.publish(topic, payload, qos=1, retain=True)

    return publish
