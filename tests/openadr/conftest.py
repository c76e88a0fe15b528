"""Fixtures for the OpenADR tests (helpers: ``oadr_support``)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from oadr_support import Utility, running_utility


@pytest.fixture
async def utility() -> AsyncIterator[Utility]:
    """A plain-HTTP VTN polling every second, asking for reports every second."""
    async with running_utility() as vtn:
        yield vtn
