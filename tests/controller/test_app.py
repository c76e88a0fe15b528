"""What runs does not depend on the uplink, and a gateway runs without the simulators."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests_support import EXAMPLE, ROOT, with_uplink

from controller.app import assemble
from drivers.site import load_site


async def test_control_metering_and_safety_run_without_the_uplink(tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_text(EXAMPLE.read_text(encoding="utf-8"), encoding="utf-8")
    with_uplink(path, f'[uplink]\nenabled = false\n[uplink.outbox]\npath = "{tmp_path}/s.db"\n')
    async with assemble(load_site(path)) as app:
        services = {name for name, _ in app.services}
        assert app.broker_address is None  # no broker, embedded or not
        assert app.control is not None
        assert app.metering is not None
        assert {"control", "metering"} <= services
        assert not {"uplink publisher", "uplink recorder"} & services
        # nothing is kept for an uplink that does not exist
        assert app.metering.stream is None


PRODUCTION_ONLY = """
import sys
sys.modules["simulators"] = None  # as on a gateway without the simulators installed
import controller.app, controller.control.loop, controller.cli, controller.tools
from controller.cli import main
sys.exit(main(["check", sys.argv[1]]))
"""


def test_the_production_path_imports_nothing_from_the_simulators() -> None:
    result = subprocess.run([sys.executable, "-c", PRODUCTION_ONLY, str(EXAMPLE)],
                            capture_output=True, text=True, timeout=60, cwd=ROOT, check=False)
    assert result.returncode == 0, result.stderr
    assert "ok — site jinan-office" in result.stdout
    assert "simulation sections not checked: the simulators are not installed" in result.stdout
