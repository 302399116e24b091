"""The compiled checks of request bodies and resources: every schema of every document
compiles, and they accept and refuse exactly what jsonschema (which explains refusals) does."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest
from connexion.json_schema import Draft4RequestValidator, resolve_refs
from jsonschema import Draft4Validator

from services.app import APIS
from services.tmf.spec import SchemaIndex, load_document
from services.tmf.validation import compile_check, json_schema

DOCUMENTS = {d.name: load_document(d.document, with_hub=d.has_hub) for d in APIS}


def request_bodies() -> Iterator[tuple[str, dict[str, Any]]]:
    """Every request body schema, resolved as connexion hands it to the body validator."""
    for declaration in APIS:
        document = resolve_refs(DOCUMENTS[declaration.name])
        for path, operations in document["paths"].items():
            for method, operation in operations.items():
                body = operation.get("requestBody") if isinstance(operation, dict) else None
                for media, content in (body or {}).get("content", {}).items():
                    if "schema" in content:
                        yield f"{declaration.name} {method.upper()} {path} {media}", content["schema"]


BODIES = dict(request_bodies())


@pytest.mark.parametrize("operation", sorted(BODIES))
def test_every_request_body_schema_compiles(operation: str) -> None:
    assert compile_check(BODIES[operation]) is not None


@pytest.mark.parametrize(("api", "schema"), [
    (d.name, name) for d in APIS for r in d.resources for name in (r.type_name, f"{r.type_name}_Create")
    if name in DOCUMENTS[d.name]["components"]["schemas"]])
def test_every_resource_schema_compiles(api: str, schema: str) -> None:
    assert SchemaIndex(DOCUMENTS[api], schema).check is not None


def test_a_schema_that_contains_itself_is_left_to_jsonschema() -> None:
    looping: dict[str, Any] = {"type": "object", "properties": {}}
    looping["properties"]["child"] = looping
    assert compile_check(looping) is None


def test_nullable_lets_null_through_where_a_type_or_enum_is_named() -> None:
    schema = {"type": "object", "properties": {
        "name": {"type": "string", "nullable": True},
        "state": {"type": "string", "enum": ["a", "b"], "nullable": True},
        "plain": {"type": "string"}}}
    converted = json_schema(schema)
    assert converted["properties"]["name"]["type"] == ["string", "null"]
    assert converted["properties"]["state"]["enum"] == ["a", "b", None]
    assert schema["properties"]["name"]["type"] == "string", "the document itself is left as written"


SAMPLE = {"metric": "availability", "value": 1, "observedAt": "2026-10-01T00:00:00Z", "interval": 60,
          "service": {"id": "vpn"}, "resource": {"id": "probe-1", "name": "probe"}, "source": "collector"}
SAMPLE_VARIANTS: list[tuple[str, Any]] = [
    ("observedAt", "2026-10-01T00:00:00.123+02:00"), ("observedAt", "2026-10-01t00:00:00z"),
    ("observedAt", "2026-13-01T00:00:00Z"), ("observedAt", "2026-02-30T00:00:00Z"),
    ("observedAt", "2026-10-01T24:00:00Z"), ("observedAt", "2026-10-01 00:00:00Z"), ("observedAt", "2026-10-01"),
    ("observedAt", "yesterday"), ("observedAt", 5), ("interval", 0), ("interval", 0.001), ("interval", 86400),
    ("interval", 86400.5), ("interval", -1), ("interval", True), ("value", True), ("value", "1"), ("value", None),
    ("value", 1.5), ("metric", "x" * 64), ("metric", "x" * 65), ("metric", "é" * 64), ("service", {}),
    ("service", {"id": None}), ("service", []), ("source", None), ("resource", {"name": 3}),
]


@pytest.mark.parametrize(("attribute", "value"), SAMPLE_VARIANTS)
def test_a_measurement_is_judged_as_jsonschema_judges_it(attribute: str, value: Any) -> None:
    schema = BODIES["slaManagement POST /measurement application/json"]
    batch = [copy.deepcopy(SAMPLE), {**copy.deepcopy(SAMPLE), attribute: value}]
    explainer = Draft4RequestValidator(schema, format_checker=Draft4Validator.FORMAT_CHECKER)
    check = compile_check(schema)
    assert check is not None
    assert check(batch) == explainer.is_valid(batch)


SERVICE = {"name": "vpn", "state": "active", "serviceSpecification": {"id": "spec", "href": "https://x.example/s"},
           "relatedParty": [{"id": "acme", "role": "customer", "@referredType": "Organization"}],
           "serviceCharacteristic": [{"name": "bandwidthMbps", "value": 100}], "startDate": "2025-01-01T00:00:00Z"}
SERVICE_VARIANTS: list[tuple[str, Any]] = [
    ("state", "sleeping"), ("state", None), ("name", None), ("name", 3), ("isBundle", "yes"),
    ("serviceSpecification", {"id": "spec", "href": "not a uri"}),
    ("serviceSpecification", {"id": "spec", "href": "urn:tmf:spec"}),
    ("serviceSpecification", {"id": "spec", "href": "http://exa mple.com/"}),
    ("serviceSpecification", {"href": "https://x.example/s"}), ("relatedParty", [{"role": "customer"}]),
    ("relatedParty", {"id": "acme"}), ("startDate", "2025-02-29T00:00:00Z"), ("feature", [{}] * 1001),
]


@pytest.mark.parametrize(("attribute", "value"), SERVICE_VARIANTS)
@pytest.mark.parametrize("media", ["application/json", "application/merge-patch+json"])
def test_a_service_body_is_judged_as_jsonschema_judges_it(attribute: str, value: Any, media: str) -> None:
    operation = ("serviceInventory POST /service application/json" if media == "application/json"
                 else "serviceInventory PATCH /service/{id} application/merge-patch+json")
    schema = BODIES[operation]
    body = {**copy.deepcopy(SERVICE), attribute: value}
    explainer = Draft4RequestValidator(schema, format_checker=Draft4Validator.FORMAT_CHECKER)
    check = compile_check(schema)
    assert check is not None
    assert check(body) == explainer.is_valid(body)


@pytest.mark.parametrize(("attribute", "value"), [(None, None), *SERVICE_VARIANTS])
def test_a_stored_service_is_judged_as_jsonschema_judges_it(attribute: str | None, value: Any) -> None:
    index = SchemaIndex(DOCUMENTS["serviceInventory"], "Service")
    service = {**copy.deepcopy(SERVICE), "id": "s1", "href": "https://x.example/service/s1"}
    if attribute is not None:
        service[attribute] = value
    assert index.check is not None
    assert index.check(service) == index.validator.is_valid(service)
    assert (index.errors(service) == []) == index.validator.is_valid(service)
