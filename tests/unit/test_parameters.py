"""Parameter validation with compiled schemas answers exactly as connexion's own validator."""

from __future__ import annotations

from typing import Any

import pytest
from connexion.validators.parameter import ParameterValidator

from services.tmf.parameters import CompiledParameterValidator

DEFINITIONS: list[dict[str, Any]] = [
    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000}},
    {"name": "fields", "in": "query", "schema": {"type": "string", "maxLength": 8}},
    {"name": "since", "in": "query", "schema": {"type": "string", "format": "date-time"}},
    {"name": "state", "in": "query", "schema": {"type": "string", "enum": ["active", "inactive"]}},
    {"name": "note", "in": "query", "schema": {"type": "string", "nullable": True}},
    {"name": "id", "in": "path", "required": True, "schema": {"type": "string", "maxLength": 5}},
]


@pytest.mark.parametrize("definition", DEFINITIONS, ids=[d["name"] for d in DEFINITIONS])
@pytest.mark.parametrize("value", [None, 0, 5, 5000, "x", "much-too-long", "2026-11-27T10:00:00Z", "yesterday",
                                   "active", "retired", "null"])
def test_the_same_answer_as_connexion(definition: dict[str, Any], value: Any) -> None:
    expected = ParameterValidator.validate_parameter(definition["in"], value, definition)
    assert CompiledParameterValidator.validate_parameter(definition["in"], value, definition) == expected


def test_wrong_values_are_refused_with_the_reason() -> None:
    limit = DEFINITIONS[0]
    assert CompiledParameterValidator.validate_parameter("query", 5000, limit) == (
        ParameterValidator.validate_parameter("query", 5000, limit))
    assert "5000 is greater than the maximum of 1000" in str(
        CompiledParameterValidator.validate_parameter("query", 5000, limit))
    assert CompiledParameterValidator.validate_parameter("path", None, DEFINITIONS[-1]) == (
        "Missing path parameter 'id'")


def test_one_validator_per_definition_and_grouping_per_operation() -> None:
    first = CompiledParameterValidator(DEFINITIONS, uri_parser=None)
    second = CompiledParameterValidator(DEFINITIONS, uri_parser=None)
    assert first.parameters is second.parameters
    assert [p["name"] for p in first.parameters["path"]] == ["id"]
    assert [p["name"] for p in first.parameters["query"]] == ["limit", "fields", "since", "state", "note"]
