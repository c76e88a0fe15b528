"""The site variants built from the Chinese vendors' inverter, battery and meter maps
(``tests/sites``): a Huawei shop, a Sungrow workshop, a GoodWe office."""

from __future__ import annotations

import re
from pathlib import Path

from tests_support import distinct_free_ports

from drivers.site import SiteSpec, load_site

SITES = Path(__file__).resolve().parent / "sites"
VENDOR_SITES = ("huawei-shop", "sungrow-workshop", "goodwe-office")


def vendor_site(name: str) -> SiteSpec:
    """The site variant ``name`` (a file of ``tests/sites``, without ``.toml``)."""
    return load_site(SITES / f"{name}.toml")


def vendor_site_on_free_ports(name: str, folder: Path, **device_settings: str) -> SiteSpec:
    """The site variant with every TCP port replaced by a distinct free one, and
    ``key = value`` lines added to every device's table (e.g. ``timeout_s="0.3"``)."""
    text = (SITES / f"{name}.toml").read_text(encoding="utf-8")
    ports = sorted(set(re.findall(r"^port = (\d+)$", text, flags=re.M)))
    for old, new in zip(ports, distinct_free_ports(len(ports)), strict=True):
        text = re.sub(rf"^port = {old}$", f"port = {new}", text, flags=re.M)
    extra = "".join(f"{key} = {value}\n" for key, value in device_settings.items())
    text = re.sub(r"(^\[\[devices\]\]\n)", lambda m: m.group(1) + extra, text, flags=re.M)
    path = folder / f"{name}.toml"
    path.write_text(text, encoding="utf-8")
    return load_site(path)
