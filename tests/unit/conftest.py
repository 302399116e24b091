"""Fixtures for the pure unit tests: schema indexes built from the real API document and from a
small document that has the attribute types the inventory API lacks (integer, number)."""

from __future__ import annotations

import pytest

from services.tmf.spec import SchemaIndex, load_document
from tests.unit.schemas import TOY_DOCUMENT


@pytest.fixture(scope="session")
def service_index() -> SchemaIndex:
    return SchemaIndex(load_document("serviceInventory.yaml"), "Service")


@pytest.fixture(scope="session")
def toy_index() -> SchemaIndex:
    return SchemaIndex(TOY_DOCUMENT, "Thing")
