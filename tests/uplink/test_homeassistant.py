"""Home Assistant discovery checked against the rules Home Assistant documents and
enforces, its value templates rendered by Jinja2 (Home Assistant's template engine)
with undefined names made errors; and the retained status after a clean stop, with a
real gateway process and a real mosquitto."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import aiomqtt
import jinja2
import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tests_support import EXAMPLE, Mosquitto, eventually
from uplink_support import PREFIX, building, collecting, site_file_for_run

from controller.homeassistant import discovery_messages
from controller.topics import Topics
from drivers.site import load_site

#: What Home Assistant's MQTT sensor does with a rendered template (components/mqtt/
#: sensor.py): "None" makes the state unknown; an empty string is ignored (debug log)
#: for a numeric sensor; an enum sensor warns about anything not among its options.
KEEP = object()


def configs() -> dict[str, dict[str, Any]]:
    site = load_site(EXAMPLE)
    return {topic: json.loads(payload)
            for topic, payload in discovery_messages(site, Topics(PREFIX))}


def render(template: str, payload: dict[str, Any], state: str = "unknown") -> str:
    # Home Assistant renders in an immutable sandbox; here a missing key also raises.
    env = ImmutableSandboxedEnvironment(undefined=jinja2.StrictUndefined)
    return env.from_string(template).render(value_json=payload,
                                            this={"state": state}).strip()


def ha_sensor_update(config: dict[str, Any], rendered: str) -> object:
    """The new state Home Assistant's MQTT sensor takes (KEEP: unchanged, no warning);
    raises AssertionError where it would log a warning."""
    if rendered == "None":
        return None
    if config.get("device_class") == "enum":
        assert rendered in config["options"], f"HA warns: {rendered!r} is not an option"
        return rendered
    if rendered == "":
        return KEEP
    float(rendered)  # a numeric sensor with a non-number logs an error
    return rendered


def test_every_config_follows_home_assistants_rules() -> None:
    announced = configs()
    identifiers = {i for c in announced.values() for i in c["device"]["identifiers"]}
    for topic, config in announced.items():
        component = topic.split("/")[1]
        assert topic == f"homeassistant/{component}/{config['unique_id']}/config"
        assert "object_id" not in config  # ignored from HA 2026.4
        assert config["default_entity_id"] == f"{component}.{config['unique_id']}"
        via = config["device"].get("via_device")
        assert via is None or via in identifiers, f"{topic}: via_device {via} not announced"
        if config.get("device_class") == "enum":
            assert config["options"]
            assert "state_class" not in config
            assert "unit_of_measurement" not in config
        if config.get("device_class") == "energy":
            assert config["state_class"] == "total_increasing"
    gateway = announced["homeassistant/binary_sensor/pedf_jinan_office_connectivity/config"]
    assert gateway["state_topic"] == f"{PREFIX}/status"
    assert gateway["device"]["identifiers"] == ["pedf_jinan_office"]


def test_sg_ready_and_operating_mode_are_enums_with_their_labels() -> None:
    announced = configs()
    sg = announced["homeassistant/sensor/jinan_office_heat_pump_sg_ready_state/config"]
    assert sg["device_class"] == "enum"
    assert sg["options"] == sorted(["blocked", "normal", "boost recommended", "forced on"])
    mode = announced["homeassistant/sensor/jinan_office_heat_pump_operating_mode/config"]
    assert set(mode["options"]) == {"off", "heating", "cooling", "auto"}
    template = sg["value_template"]
    assert render(template, {"values": {"sg_ready_state": 3}}) == "boost recommended"
    # A message from another poll group keeps a known state and never warns.
    assert render(template, {"values": {"cop": 3.1}}, state="normal") == "normal"
    assert render(template, {"values": {"cop": 3.1}}, state="unknown") == "None"
    assert render(template, {"values": {"sg_ready_state": None}}) == "None"
    assert render(template, {"values": {"sg_ready_state": 9}}) == "None"


def test_submeter_channels_power_and_energy_are_announced() -> None:
    announced = configs()
    for channel in (1, 2, 3):
        power = announced[f"homeassistant/sensor/jinan_office_submeter_1_ch{channel}_power_w"
                          "/config"]
        energy = announced[f"homeassistant/sensor/jinan_office_submeter_1_ch{channel}"
                           "_import_wh/config"]
        assert (power["device_class"], power["unit_of_measurement"]) == ("power", "W")
        assert (energy["device_class"], energy["state_class"]) == ("energy",
                                                                     "total_increasing")
        assert render(power["value_template"],
                      {"values": {f"ch{channel}_power": 812.5}}) == "812.5"


@pytest.mark.parametrize("present", [True, False])
def test_no_template_reads_a_missing_key(present: bool) -> None:
    """Every sensor against a message with only its own key, and with none of them: no
    undefined lookups (StrictUndefined raises), and Home Assistant keeps the state."""
    for config in configs().values():
        if "availability_topic" not in config:
            continue  # the gateway's own connectivity sensor reads the status topic
        template = config["value_template"]
        point = json.loads(template.split("v[", 1)[1].split("]", 1)[0])
        values = {point: 7} if present else {"some_other_point": 1.0}
        if present and config.get("device_class") == "enum":
            values = {point: 2}
        rendered = render(template, {"ts": 1.0, "values": values, "units": {}})
        state = ha_sensor_update(config, rendered)
        if present:
            assert state not in (KEEP, None), config["unique_id"]
        else:
            assert state in (KEEP, None), config["unique_id"]
        stale = render(template, {"values": {point: None}})
        assert ha_sensor_update(config, stale) is None


async def test_a_clean_stop_leaves_offline_retained(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "broker").start()
    try:
        async with building(tmp_path) as (spec, _runner), \
                collecting(broker.port, f"{PREFIX}/status") as status:
            site_file = site_file_for_run(spec.file, broker.port, tmp_path / "state.sqlite")
            gateway = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "controller.cli", "run", str(site_file),
                env={**os.environ, "PYTHONUNBUFFERED": "1"}, stderr=asyncio.subprocess.PIPE)
            await eventually(lambda: any(b.get("state") == "online" for b in
                                         status.on(f"{PREFIX}/status")),
                             timeout_s=30, what="the gateway online")
            gateway.send_signal(signal.SIGTERM)
            _, errors = await gateway.communicate()
            assert gateway.returncode == 0, errors.decode()[-2000:]
        # A newcomer (as Home Assistant after a restart) is given the retained status.
        async with aiomqtt.Client("127.0.0.1", broker.port, identifier="late-reader") as client:
            await client.subscribe(f"{PREFIX}/status", qos=1)
            async with asyncio.timeout(10):
                message = await anext(aiter(client.messages))
        assert message.retain
        assert json.loads(bytes(message.payload))["state"] == "offline"
    finally:
        broker.stop()
