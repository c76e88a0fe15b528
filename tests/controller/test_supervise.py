"""``supervise``: restarts with backoff, and its log says the wait it then takes."""

from __future__ import annotations

import asyncio
import logging
import re
import time

import pytest

from controller.runtime import supervise


async def test_the_logged_wait_is_the_wait_taken(caplog: pytest.LogCaptureFixture) -> None:
    """Three quick failures double the wait; a run longer than ``reset_after_s`` starts
    the backoff afresh, and the log line says so (it used to say the doubled wait)."""
    failed_at: list[float] = []
    started_at: list[float] = []

    async def flaky() -> None:
        started_at.append(time.monotonic())
        if len(started_at) == 4:
            await asyncio.sleep(0.3)  # a long run: longer than reset_after_s
        if len(started_at) <= 4:
            failed_at.append(time.monotonic())
            raise RuntimeError("boom")

    with caplog.at_level(logging.ERROR, logger="pedf.runtime"):
        async with asyncio.timeout(10):
            await supervise("flaky", flaky, backoff_s=0.01, reset_after_s=0.2)
    said = [float(m.group(1)) for record in caplog.records
            if (m := re.search(r"restarting in ([0-9.]+) s", record.getMessage()))]
    assert said == [0.01, 0.02, 0.04, 0.01]
    for wait, failed, restarted in zip(said, failed_at, started_at[1:], strict=True):
        assert restarted - failed >= wait - 0.002  # it waited at least what it said
