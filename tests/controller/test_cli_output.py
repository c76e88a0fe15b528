"""``pedf`` output into a pipe that closes early (``pedf maps | head``)."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest


@pytest.mark.parametrize("args", [["maps"], ["maps", "sdm630"]])
def test_a_reader_that_stops_early_gets_no_traceback(args: list[str]) -> None:
    process = subprocess.Popen([sys.executable, "-m", "controller.cli", *args],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None
    process.stdout.close()  # the reader is gone before anything was written
    _, errors = process.communicate(timeout=60)
    assert errors.decode() == ""
    assert process.returncode == 128 + signal.SIGPIPE  # what a shell reports for SIGPIPE
