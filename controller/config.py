"""The controller's view of a site file: the shared part (``drivers.site``) plus the
sections the controller owns. ``check_site`` validates everything a file contains,
including the simulation section, so ``pedf check`` catches every mistake at once."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from drivers.site import SiteSpec, load_site


@dataclass(frozen=True, slots=True)
class LoggingSettings:
    level: str = "INFO"
    format: str = "text"  # or "json"


def logging_settings(site: SiteSpec) -> LoggingSettings:
    node = site.section("logging")
    if node is None:
        return LoggingSettings()
    node.only(("level", "format"))
    level = node.get("level")
    fmt = node.get("format")
    return LoggingSettings(
        level="INFO" if level is None else level.str(
            choices=("DEBUG", "INFO", "WARNING", "ERROR")),
        format="text" if fmt is None else fmt.str(choices=("text", "json")),
    )


def check_site(path: Path | str) -> SiteSpec:
    """Load ``path`` and validate every section. Raises ConfigError."""
    from simulators.sitefile import build_site

    site = load_site(path)
    logging_settings(site)
    if site.section("simulation") is not None or any(
            d.simulation is not None for d in site.devices.values()):
        build_site(site, start_s=0.0)
    return site
