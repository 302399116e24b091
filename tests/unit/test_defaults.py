"""Required attributes with a declared default (the ``@referredType`` of references): found in
the documents, left out of requests, filled in before anything is stored."""

from __future__ import annotations

from typing import Any

import pytest

from services.tmf.patch import fill_defaults
from services.tmf.spec import SchemaIndex, load_document
from services.tmf.validation import RequestValidator

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


def test_request_validator_lets_defaulted_attributes_out_and_nothing_else() -> None:
    party = DOCUMENT["components"]["schemas"]["Party"]
    validator = RequestValidator(party)
    assert list(validator.iter_errors({"id": "a"})) == []
    assert [e.message for e in validator.iter_errors({"role": "x"})] == ["'id' is a required property"]
    assert [e.validator for e in validator.iter_errors({"id": "a", "@referredType": 5})] == ["type"]


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
