"""``[planner]``: every key checked, mistakes named by file and key."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests_support import EXAMPLE

from controller.config import check_site
from controller.planner.settings import planner_settings
from drivers.schema import ConfigError
from drivers.site import load_site


def site_with(tmp_path: Path, section: str) -> Path:
    path = tmp_path / "site.toml"
    path.write_text(EXAMPLE.read_text(encoding="utf-8") + "\n" + section.strip() + "\n",
                    encoding="utf-8")
    return path


def test_absent_means_off(tmp_path: Path) -> None:
    assert not planner_settings(load_site(site_with(tmp_path, ""))).enabled


def test_keys_fill_their_fields(tmp_path: Path) -> None:
    (tmp_path / "pv.csv").write_text("time,pv_kw\n1784000000,12.5\n")
    path = site_with(tmp_path, """
        [planner]
        enabled = true
        horizon_h = 48
        deadline_s = 2.5
        forecast_file = "pv.csv"
        [planner.weights]
        comfort_cny_per_kh = 50
        [[planner.deferrable]]
        load = "ev_charger_1"
        energy_kwh = 30
        earliest = "08:00"
        deadline = "17:30"
    """)
    settings = planner_settings(check_site(path))
    assert settings.enabled
    assert settings.horizon_h == 48.0
    assert settings.deadline_s == 2.5
    assert settings.forecast_file == tmp_path / "pv.csv"
    assert settings.weights.comfort_cny_per_kh == 50.0
    assert settings.weights.battery_wear_cny_per_kwh == 0.05  # the default stays
    (item,) = settings.deferrable
    assert (item.load, item.energy_kwh, item.earliest_h, item.deadline_h) == (
        "ev_charger_1", 30.0, 8.0, 17.5)


@pytest.mark.parametrize(("section", "named"), [
    ("horizon_h = 72", "planner.horizon_h"),
    ("colour = 1", "colour"),
    ("[planner.weights]\ncomfort = 1", "comfort"),
    ("[[planner.deferrable]]\nload = \"nope\"\nenergy_kwh = 1\nearliest = \"08:00\"\n"
     "deadline = \"09:00\"", "planner.deferrable[0].load"),
    ("[[planner.deferrable]]\nload = \"ev_charger_1\"\nenergy_kwh = 1\nearliest = \"8am\"\n"
     "deadline = \"09:00\"", "planner.deferrable[0].earliest"),
    ('forecast_file = "missing.csv"', "planner.forecast_file"),
])
def test_mistakes_name_the_key(tmp_path: Path, section: str, named: str) -> None:
    path = site_with(tmp_path, "[planner]\n" + section)
    with pytest.raises(ConfigError) as caught:
        check_site(path)
    assert named in str(caught.value)
    assert "site.toml" in str(caught.value)
