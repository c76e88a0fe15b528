"""The 直柔 bus in the live view: bus voltage against its band, the converter's mode, and
each load class's power fraction, from the latest readings (sites with ``[dcbus]``)."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text

from controller.bus import LatestValues
from controller.control.dcbus import bus_readings
from controller.control.dcbus_config import dcbus_settings
from drivers.site import SiteSpec

__all__ = ["dc_bus_table"]

_STATE_STYLE = {"ok": "green", "low": "red", "high": "red", "unknown": "dim"}


def dc_bus_table(site: SiteSpec, latest: LatestValues) -> Table | None:
    """The table, or None for a site without a ``[dcbus]`` section. Unread values show
    as —. Raises :class:`~drivers.schema.ConfigError` for a malformed section (the
    gateway has refused the file before this runs)."""
    settings = dcbus_settings(site)
    if settings is None:
        return None

    def value(device: str, capability: str) -> float | None:
        point = site.devices[device].device_map.capabilities.get(capability)
        return None if point is None else latest.value(device, point)

    readings = bus_readings(settings, value)
    table = Table(title="直柔 DC bus", title_justify="left")
    table.add_column("")
    table.add_column("now", justify="right")
    table.add_column("")
    voltage, band = readings["bus_voltage_v"], readings["band_v"]
    band_text = "" if band is None else f"band {band[0]:.1f}–{band[1]:.1f} V"
    table.add_row("bus", "—" if voltage is None else f"{voltage:.1f} V",
                  Text(f"{readings['state']}, {band_text}",
                       style=_STATE_STYLE.get(readings["state"], "")))
    converter = readings["converter_w"]
    table.add_row("converter", "—" if converter is None else f"{converter / 1000:.1f} kW",
                  readings["mode"] or "")
    for name, figures in readings["classes"].items():
        fraction, power = figures["fraction_pct"], figures["power_w"]
        table.add_row(name.replace("_", " "), "—" if fraction is None else f"{fraction:.0f} %",
                      "" if power is None else f"{power / 1000:.1f} kW")
    storage = readings["storage"]
    if storage is not None:
        soc, power = storage["soc_pct"], storage["power_w"]
        table.add_row("DC storage", "—" if power is None else f"{power / 1000:+.1f} kW",
                      "" if soc is None else f"SoC {soc:.1f} %")
    return table
