"""API documents and schema questions (services/tmf/spec.py)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from services.tmf.spec import ANY, AttributeType, SchemaIndex, load_document
from tests.unit.schemas import TOY_DOCUMENT


def test_load_document_merges_the_common_components() -> None:
    document = load_document("serviceInventory.yaml")
    schemas = document["components"]["schemas"]
    # Our own schemas and the shared ones, side by side.
    assert {"Service", "Service_Create", "Error", "RelatedParty", "EventSubscription"} <= set(schemas)
    assert "Limit" in document["components"]["parameters"]
    assert document["openapi"].startswith("3.0")


def test_load_document_returns_independent_copies() -> None:
    first = load_document("serviceInventory.yaml")
    first["components"]["schemas"]["RelatedParty"]["properties"].clear()
    second = load_document("serviceInventory.yaml")
    assert "role" in second["components"]["schemas"]["RelatedParty"]["properties"]


def test_common_document_stays_separate() -> None:
    from importlib import resources

    common = yaml.safe_load(resources.files("openapi").joinpath("common.yaml").read_text(encoding="utf-8"))
    assert "Service" not in common["components"]["schemas"]


@pytest.mark.parametrize(("path", "expected"), [
    ("name", AttributeType("string")),
    ("state", AttributeType("string")),
    ("relatedParty.role", AttributeType("string")),
    ("relatedParty.@referredType", AttributeType("string")),
    ("startDate", AttributeType("string", "date-time")),
    ("note.date", AttributeType("string", "date-time")),
    ("isBundle", AttributeType("boolean")),
    ("feature.isEnabled", AttributeType("boolean")),
    ("serviceCharacteristic.value", ANY),
    ("feature.featureCharacteristic.value", ANY),
    ("serviceSpecification", AttributeType("object")),
    ("relatedParty", AttributeType("object")),
    ("serviceSpecification.id", AttributeType("string")),
    ("@schemaLocation", AttributeType("string", "uri")),
])
def test_attribute_type(service_index: SchemaIndex, path: str, expected: AttributeType) -> None:
    assert service_index.attribute_type(path) == expected


@pytest.mark.parametrize("path", [
    "colour", "relatedParty.colour", "name.length", "state.foo", "_id", "relatedParty.role.x", "",
])
def test_unknown_paths_have_no_type(service_index: SchemaIndex, path: str) -> None:
    assert service_index.attribute_type(path) is None
    assert service_index.attribute_schema(path) is None


def test_attribute_types_through_all_of_refs_and_arrays(toy_index: SchemaIndex) -> None:
    assert toy_index.attribute_type("label") == AttributeType("string")
    assert toy_index.attribute_type("count") == AttributeType("integer")
    assert toy_index.attribute_type("ratio") == AttributeType("number")
    assert toy_index.attribute_type("tags") == AttributeType("string")
    assert toy_index.attribute_type("anything") == ANY
    assert toy_index.attribute_type("child.size") == AttributeType("integer")
    assert toy_index.attribute_type("children.seen") == AttributeType("string", "date-time")


def test_top_level(service_index: SchemaIndex) -> None:
    assert {"id", "href", "name", "state", "relatedParty", "@type", "startDate"} <= service_index.top_level
    assert "role" not in service_index.top_level


def test_read_only(service_index: SchemaIndex, toy_index: SchemaIndex) -> None:
    assert service_index.read_only == {"id", "href", "serviceDate"}
    assert toy_index.read_only == {"id"}


def test_date_time_paths(service_index: SchemaIndex, toy_index: SchemaIndex) -> None:
    assert {"startDate", "endDate", "serviceDate", "note.date"} <= service_index.date_time_paths
    assert "name" not in service_index.date_time_paths
    assert toy_index.date_time_paths == {"when", "child.seen", "children.seen"}


def test_errors_are_empty_for_a_valid_service(service_index: SchemaIndex) -> None:
    service = {
        "id": "s1", "href": "http://x/service/s1", "name": "vpn", "state": "active", "isBundle": False,
        "relatedParty": [{"id": "p1", "@referredType": "Organization", "role": "customer"}],
    }
    assert service_index.errors(service) == []


def test_errors_report_a_wrong_type(service_index: SchemaIndex) -> None:
    errors = service_index.errors({"id": "s1", "href": "h", "isBundle": "yes"})
    assert errors == ["isBundle: 'yes' is not of type 'boolean'"]


def test_errors_name_nested_paths_in_order(service_index: SchemaIndex) -> None:
    errors = service_index.errors({
        "id": "s1", "href": "h", "state": "sleeping",
        "relatedParty": [{"id": "p1", "@referredType": "Organization"}, {"id": 5, "@referredType": "x"}],
    })
    assert len(errors) == 2
    assert errors[0].startswith("relatedParty.1.id: 5 is not of type 'string'")
    assert errors[1].startswith("state: 'sleeping' is not one of")


def test_errors_are_capped(service_index: SchemaIndex) -> None:
    service = {"id": "s1", "href": "h", "relatedParty": [{"id": i} for i in range(30)]}
    assert len(service_index.errors(service)) == 10


def test_errors_for_a_missing_required_attribute(service_index: SchemaIndex) -> None:
    assert service_index.errors({"href": "h"}) == ["(body): 'id' is a required property"]


def test_reference_problems_are_reported() -> None:
    looping: dict[str, Any] = {"components": {"schemas": {
        "A": {"$ref": "#/components/schemas/B"}, "B": {"$ref": "#/components/schemas/A"},
    }}}
    with pytest.raises(ValueError, match="reference loop"):
        SchemaIndex(looping, "A")
    remote = copy.deepcopy(TOY_DOCUMENT)
    remote["components"]["schemas"]["Remote"] = {"$ref": "other.yaml#/components/schemas/X"}
    with pytest.raises(ValueError, match="only local references"):
        SchemaIndex(remote, "Remote")
