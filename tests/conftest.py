"""Shared fixtures: one real wire-protocol database server per test session, a fresh database
per test, and the whole suite as an ASGI app."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from starlette.testclient import TestClient

from services.app import create_app
from services.tmf.embedded import EmbeddedDatabase
from services.tmf.settings import Settings
from tests.support.auth import bearer

PUBLIC_URL = "http://testserver"
INVENTORY = "/tmf-api/serviceInventory/v4"


@pytest.fixture(scope="session")
def mongo_uri() -> Iterator[str]:
    with EmbeddedDatabase(":memory:") as database:
        yield database.uri


def make_settings(mongo_uri: str, **overrides: object) -> Settings:
    """Settings for a test, on a fresh database; ``overrides`` are named like their variables
    (``delivery_poll_seconds=0.05``, ``inventory_url=...``, see ``Settings.with_values``)."""
    values: dict[str, object] = {"mongodb_uri": mongo_uri, "database": f"t_{uuid.uuid4().hex[:12]}",
                                 "public_url": PUBLIC_URL,
                                 "allow_private_callbacks": True}
    values.update(overrides)
    return Settings().with_values(**values)


@pytest.fixture
def settings(mongo_uri: str) -> Settings:
    return make_settings(mongo_uri)


@contextmanager
def operator_client(settings: Settings, app: Any = None) -> Iterator[TestClient]:
    """``app`` (the whole suite unless given), started, under a client that calls as the operator."""
    with TestClient(app if app is not None else create_app(settings), base_url=PUBLIC_URL) as test_client:
        test_client.headers.update(bearer(settings))
        yield test_client


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    """The whole suite, called as the operator."""
    with operator_client(settings) as test_client:
        yield test_client
