"""Fixtures for the end-to-end tests of ``sqm serve``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.sqm_process import StartSqm, embedded_servers


@pytest.fixture
def sqm(tmp_path: Path) -> Iterator[StartSqm]:
    """``sqm(data_dir, port=None, own_group=False, **settings)`` starts ``sqm serve`` with its
    embedded database and waits until it is ready (see ``embedded_servers``)."""
    with embedded_servers(tmp_path) as start:
        yield start
