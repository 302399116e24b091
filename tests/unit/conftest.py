"""Fixtures for the pure unit tests: schema indexes built from the real API document and from a
small document that has the attribute types the inventory API lacks (integer, number)."""

from __future__ import annotations

from typing import Any

import pytest

from services.tmf.spec import SchemaIndex, load_document

TOY_DOCUMENT: dict[str, Any] = {
    "components": {
        "schemas": {
            "Thing": {
                "type": "object",
                "allOf": [{"$ref": "#/components/schemas/Base"}],
                "properties": {
                    "count": {"type": "integer"},
                    "ratio": {"type": "number"},
                    "flag": {"type": "boolean"},
                    "when": {"type": "string", "format": "date-time"},
                    "tags": {"type": "array", "items": {"type": "string"}},
                    "anything": {"description": "no type: any JSON value"},
                    "child": {"$ref": "#/components/schemas/Child"},
                    "children": {"type": "array", "items": {"$ref": "#/components/schemas/Child"}},
                },
            },
            "Base": {
                "type": "object",
                "properties": {"id": {"type": "string", "readOnly": True}, "label": {"type": "string"}},
            },
            "Child": {
                "type": "object",
                "properties": {
                    "size": {"type": "integer"},
                    "seen": {"type": "string", "format": "date-time"},
                },
            },
        }
    }
}


@pytest.fixture(scope="session")
def service_index() -> SchemaIndex:
    return SchemaIndex(load_document("serviceInventory.yaml"), "Service")


@pytest.fixture(scope="session")
def toy_index() -> SchemaIndex:
    return SchemaIndex(TOY_DOCUMENT, "Thing")
