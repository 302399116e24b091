"""Required attributes with a declared default (the ``@referredType`` of references): found in
the documents, left out of requests, filled in before anything is stored."""

from __future__ import annotations

from typing import Any

import pytest

from services.tmf.patch import fill_defaults
from services.tmf.spec import SchemaIndex, load_document

DOCUMENT: dict[str, Any] = {"components": {"schemas": {
    "Thing": {"type": "object", "required": ["id"], "properties": {
        "id": {"type": "string"},
        "owner": {"$ref": "#/components/schemas/Party"},
        "party": {"type": "array", "items": {"$ref": "#/components/schemas/Party"}},
        "kind": {"type": "string", "default": "plain"},  # not required: never filled
    }},
    "Party": {"type": "object", "required": ["id", "@referredType"], "properties": {
        "id": {"type": "string"},
        "@referredType": {"type": "string", "default": "Organization"},
        "role": {"type": "string"},
    }},
}}}


def test_required_defaults_are_found_through_references_and_arrays() -> None:
    assert SchemaIndex(DOCUMENT, "Thing").required_defaults == {
        "owner": {"@referredType": "Organization"}, "party": {"@referredType": "Organization"}}


def test_fill_defaults_fills_only_what_is_missing() -> None:
    defaults = SchemaIndex(DOCUMENT, "Thing").required_defaults
    body = {"id": "t", "owner": {"id": "a"}, "party": [{"id": "b", "@referredType": "Individual"}, {"id": "c"}]}
    assert fill_defaults(body, defaults) == {
        "id": "t", "owner": {"id": "a", "@referredType": "Organization"},
        "party": [{"id": "b", "@referredType": "Individual"}, {"id": "c", "@referredType": "Organization"}]}
    assert body["owner"] == {"id": "a"}  # the input is left alone
    assert fill_defaults({"id": "t"}, defaults) == {"id": "t"}


def test_request_bodies_may_leave_defaulted_attributes_out_and_responses_may_not() -> None:
    document = load_document("serviceInventory.yaml")
    schemas = document["components"]["schemas"]
    create = document["paths"]["/service"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert create == {"$ref": "#/components/schemas/Service_Create"}
    assert schemas["RelatedParty_Input"]["required"] == ["id"]
    assert "required" not in schemas["ServiceRefOrValue_Input"]
    assert schemas["RelatedParty"]["required"] == ["id", "@referredType"]
    request = SchemaIndex(document, "Service_Create")
    assert request.errors({"state": "active", "serviceSpecification": {"id": "s"},
                           "relatedParty": [{"id": "p"}], "supportingService": [{"id": "x"}]}) == []
    assert request.errors({"state": "active", "serviceSpecification": {"id": "s"},
                           "relatedParty": [{"role": "r"}]}) == ["relatedParty.0: 'id' is a required property"]
    response = SchemaIndex(document, "Service")
    assert "relatedParty.0: '@referredType' is a required property" in response.errors(
        {"id": "1", "relatedParty": [{"id": "p"}]})
    # What is not a request body is left as written, and request-only schemas keep their names.
    assert "Service_Input" not in schemas and "Service_Create_Input" not in schemas


@pytest.mark.parametrize(("document", "schema", "path", "default"), [
    ("serviceInventory.yaml", "Service", "relatedParty", "Organization"),
    ("serviceInventory.yaml", "Service", "supportingService", "Service"),
    ("serviceInventory.yaml", "Service", "supportingResource", "Resource"),
    ("serviceInventory.yaml", "Service", "serviceSpecification", "ServiceSpecification"),
    ("serviceProblemManagement.yaml", "ServiceProblem", "originatorParty", "Organization"),
    ("serviceProblemManagement.yaml", "ServiceProblem", "affectedService", "Service"),
    ("serviceProblemManagement.yaml", "ServiceProblem", "rootCauseResource", "Resource"),
    ("serviceProblemManagement.yaml", "ServiceProblem", "relatedEntity", "Entity"),
    ("serviceProblemManagement.yaml", "ServiceProblem", "underlyingAlarm", "Alarm"),
    ("slaManagement.yaml", "ServiceLevelAgreement", "relatedParty", "Organization"),
    ("alarmManagement.yaml", "Alarm", "affectedService", "Service"),
])
def test_the_documents_declare_the_defaults_the_readme_lists(document: str, schema: str, path: str,
                                                             default: str) -> None:
    assert SchemaIndex(load_document(document), schema).required_defaults[path] == {"@referredType": default}
