"""A small API document with the attribute types the inventory API lacks (integer, number),
an ``allOf``, and nested objects behind references and arrays."""

from __future__ import annotations

from typing import Any

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
