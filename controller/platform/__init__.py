"""Upload to the city's energy-monitoring platform (住建部 分项能耗数据传输技术导则):
``wire`` (packets, AES, XML; sans I/O), ``settings`` ([platform]), ``uploader`` (the
gateway's client), ``receiver`` (a reference data centre, ``pedf platform serve``)."""

from __future__ import annotations

from zoneinfo import ZoneInfo

from controller.platform.settings import PlatformSettings, platform_settings
from controller.platform.uploader import Uploader
from controller.store import Store
from drivers.site import SiteSpec

__all__ = ["PlatformSettings", "Uploader", "platform_settings", "uploader_for"]


def uploader_for(site: SiteSpec, store: Store, window_s: int) -> Uploader | None:
    """The uploader of a site with an enabled ``[platform]`` (None otherwise). Raises
    ConfigError."""
    settings = platform_settings(site, window_s)
    if not settings.enabled:
        return None
    return Uploader(settings, store, f"{window_s}s", window_s, ZoneInfo(site.timezone))
