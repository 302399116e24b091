"""Shared fixtures: one real wire-protocol database server per test session, a fresh database
per test, and the whole suite as an ASGI app."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

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
    values: dict[str, object] = {"mongodb_uri": mongo_uri, "database": f"t_{uuid.uuid4().hex[:12]}",
                                 "public_url": PUBLIC_URL,
                                 "allow_private_callbacks": True}
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
def settings(mongo_uri: str) -> Settings:
    return make_settings(mongo_uri)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), base_url=PUBLIC_URL) as test_client:
        # The lifespan has made the issuer's first signing key: the client calls as the operator.
        test_client.headers.update(bearer(settings))
        yield test_client
