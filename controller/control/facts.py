"""Control facts of a site, from its device maps and site file (never from simulation
tables): which devices the control loop can actuate, by which control, and what an
integrator should know before trusting it (``pedf check`` prints the warnings)."""

from __future__ import annotations

from drivers.controls import Failsafe
from drivers.site import DeviceSpec, SiteSpec

__all__ = ["ACTUATOR_CONTROLS", "control_of", "control_warnings", "controllable"]

#: The control the loop uses for each actuator kind, and the device kind it acts on.
ACTUATOR_CONTROLS = {"battery": ("battery", "power_setpoint"),
                     "inverter_limit": ("inverter", "power_limit"),
                     "sg_ready": ("heat_pump", "sg_ready")}
_KIND_CONTROL = dict(ACTUATOR_CONTROLS.values())
_WHAT = {"battery": "battery setpoints (self-consumption, arbitrage, DR)",
         "inverter": "export limits", "heat_pump": "SG-Ready (thermal storage, DR)"}


def control_of(device: DeviceSpec) -> str | None:
    """The name of the control the loop sets on ``device``, if its kind has one."""
    return _KIND_CONTROL.get(device.device_map.kind)


def controllable(device: DeviceSpec) -> bool:
    """Whether the loop can actuate ``device``: its map has a recipe for the control of
    its kind, or (SG-Ready) the site wires its terminals to relay channels."""
    control = control_of(device)
    if control == "sg_ready" and device.sg_ready is not None and device.sg_ready.by_contacts:
        return True
    return control is not None and device.device_map.control(control) is not None


def _sg_contact_warnings(site: SiteSpec, device: DeviceSpec, watchdog_s: float) -> list[str]:
    """What an integrator should know about a heat pump driven by SG-Ready contacts."""
    wiring = device.sg_ready
    if wiring is None or wiring.relay is None or wiring.contacts is None:
        return []
    relay = site.devices[wiring.relay]
    warnings = []
    closing = [c for c in wiring.contacts if relay.safe_closed(c)]
    if closing:
        channels = ", ".join(str(c) for c in closing)
        warnings.append(
            f"{device.name}: its SG-Ready contacts on {relay.name} channel(s) {channels} "
            "close when the module's watchdog trips — a dead gateway would leave the heat "
            f"pump blocked or forced on; list them in {relay.name}'s safe_open")
    if watchdog_s <= 0 or relay.device_map.watchdog is None:
        warnings.append(
            f"{device.name}: {relay.name} has no watchdog running ([control] "
            "relay_watchdog_s = 0 or none in its map): if the gateway dies, the SG-Ready "
            "contacts stay as last set")
    if device.device_map.control("sg_ready") is not None:
        warnings.append(
            f"{device.name} ({device.model}): SG-Ready is driven by contacts on "
            f"{relay.name}; the map's own SG-Ready register is not used (leave it at "
            "normal, or off, on the device)")
    return warnings


def control_warnings(site: SiteSpec, watchdog_s: float = 120.0) -> list[str]:
    """What the control loop will not do, or cannot undo by itself, on this site."""
    warnings = []
    for device in site.devices.values():
        device_map = device.device_map
        control = control_of(device)
        if control is not None and not controllable(device):
            warnings.append(f"{device.name} ({device.model}) offers no {control} control: "
                            f"{_WHAT[device_map.kind]} cannot act on it")
        warnings.extend(_sg_contact_warnings(site, device, watchdog_s))
        by_contacts = device.sg_ready is not None and device.sg_ready.by_contacts
        for recipe in device_map.controls.values():
            if recipe.name == "sg_ready" and by_contacts:
                continue  # not used: the contacts are
            if recipe.failsafe is Failsafe.GATEWAY:
                warnings.append(
                    f"{device.name} ({device.model}): {recipe.name} does not revert by itself;"
                    " the gateway releases it on shutdown, when control stops, and at its "
                    "next start — while the gateway is down it stays as last set")
        if device_map.kind == "relay" and watchdog_s > 0 and device_map.watchdog is None:
            warnings.append(f"{device.name} ({device.model}) has no watchdog: loads it sheds "
                            "stay off if the gateway dies")
    return warnings
