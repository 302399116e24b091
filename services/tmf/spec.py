"""Loading our API documents and answering questions about their schemas: the type of a dotted
attribute path (for filter coercion), the first-level attributes (for ``fields``), the read-only
attributes (for PATCH), and validation of a whole resource."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft7Validator, validators
from jsonschema_rs import Draft7
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

from .validation import Check, compile_check

SPEC_URI = "urn:tmf-sqm:api"


def _nullable(check: Any) -> Any:
    """OAS 3.0 ``nullable: true`` lets null through where JSON Schema alone would not."""

    def validate(validator: Any, value: Any, instance: Any, schema: dict[str, Any]) -> Any:
        if instance is None and schema.get("nullable") is True:
            return None
        return check(validator, value, instance, schema)

    return validate


OpenApiValidator = validators.extend(Draft7Validator, {
    "type": _nullable(Draft7Validator.VALIDATORS["type"]),
    "enum": _nullable(Draft7Validator.VALIDATORS["enum"]),
})
COMMON_DOCUMENT = "common.yaml"


def load_document(name: str, *, with_hub: bool = True) -> dict[str, Any]:
    """Load one API document from the ``openapi`` package with the shared components of
    ``common.yaml`` merged into its ``components`` (and, for an API with a hub, the hub paths
    into its ``paths``), so that the result stands alone."""
    folder = resources.files("openapi")
    # Absolute paths are for documents that live outside the package (test-only APIs).
    source = Path(name) if Path(name).is_absolute() else folder.joinpath(name)
    document: dict[str, Any] = yaml.safe_load(source.read_text(encoding="utf-8"))
    common = yaml.safe_load(folder.joinpath(COMMON_DOCUMENT).read_text(encoding="utf-8"))
    merged: dict[str, Any] = copy.deepcopy(document)
    components = merged.setdefault("components", {})
    for section, entries in common.get("components", {}).items():
        target = components.setdefault(section, {})
        clash = set(target) & set(entries)
        if clash:
            raise ValueError(f"{name} redefines shared components {sorted(clash)} from {COMMON_DOCUMENT}")
        target.update(copy.deepcopy(entries))
    if with_hub:
        paths = merged.setdefault("paths", {})
        clash = set(paths) & set(common.get("paths", {}))
        if clash:
            raise ValueError(f"{name} redefines the shared hub paths {sorted(clash)} from {COMMON_DOCUMENT}")
        paths.update(copy.deepcopy(common.get("paths", {})))
    _relax_request_bodies(merged)
    declare_security(merged, Path(name).stem)
    return merged


TOKEN_URL = "/oauth2/token"  # noqa: S105 - a path, not a password
_SAFE = {"get", "head", "options"}
_OPERATIONS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


def declare_security(document: dict[str, Any], api_name: str) -> None:
    """Every operation of ``api_name`` needs an OAuth2 bearer token with the API's read scope
    (safe methods) or write scope; listeners take signed events instead of tokens. Declared the
    same way for every API (the shared hub paths included), so that explorers and generated
    clients know how to get a token. Enforcement is the authentication middleware's."""
    read, write = f"{api_name}.read", f"{api_name}.write"
    schemes = document.setdefault("components", {}).setdefault("securitySchemes", {})
    schemes["oauth2"] = {
        "type": "oauth2",
        "description": "Client credentials (RFC 6749 §4.4) from the suite's token endpoint, or from the "
                       "operator's OIDC provider in production.",
        "flows": {"clientCredentials": {"tokenUrl": TOKEN_URL, "scopes": {
            read: f"read what your party may see in {api_name}",
            write: f"create and change what your party may change in {api_name}"}}},
    }
    for path, operations in document.get("paths", {}).items():
        for method, operation in operations.items():
            if method not in _OPERATIONS or not isinstance(operation, dict):
                continue
            responses = operation.setdefault("responses", {})
            responses.setdefault("401", {"$ref": "#/components/responses/Unauthorized"})
            if "/listener/" in path:
                # Listeners authenticate the producer by the X-Sqm-Signature of each event.
                operation["security"] = []
                continue
            responses.setdefault("403", {"$ref": "#/components/responses/Forbidden"})
            if path == "/hub" or path.startswith("/hub/"):
                # Subscribing is a way of reading: one's own subscriptions need the read scope.
                operation["security"] = [{"oauth2": [read]}]
            else:
                operation["security"] = [{"oauth2": [read if method in _SAFE else write]}]


def served_document(document: dict[str, Any], server_url: str) -> bytes:
    """The JSON an API serves as its document: the merged document as written, its ``$ref``s
    kept so that client generators name the types after the schemas, with ``servers`` pointing
    at the API's base path so that a generated client needs only the host."""
    return json.dumps({**document, "servers": [{"url": server_url}]}, ensure_ascii=False).encode("utf-8")
INPUT_SUFFIX = "_Input"
REQUEST_ONLY = ("_Create", "_Update")
_SCHEMAS = "#/components/schemas/"
_NOT_SCHEMAS = frozenset({"example", "examples", "default", "enum", "description"})


def _relax_request_bodies(document: dict[str, Any]) -> None:
    """A required attribute whose schema declares a ``default`` (the ``@referredType`` of a
    reference) is required in what the server returns, but requests may leave it out: the
    server fills the default in. The create and update schemas (``<Type>_Create``,
    ``<Type>_Update``), which only requests use, are relaxed where they stand, so that clients
    generated from the document keep their names; the schemas they share with responses (the
    references) get ``<Name>_Input`` variants without those attributes in ``required``, and
    responses keep the schemas as written."""
    schemas: dict[str, Any] = document.get("components", {}).get("schemas", {})
    variants: dict[str, str | None] = {}

    def variant(name: str) -> str | None:
        if name not in variants:
            variants[name] = None  # a schema that refers to itself keeps that reference as written
            relaxed, changed = relax(schemas[name])
            if changed and name.endswith(REQUEST_ONLY):
                variants[name] = name
                schemas[name] = relaxed
            elif changed:
                variants[name] = f"{name}{INPUT_SUFFIX}"
                schemas[f"{name}{INPUT_SUFFIX}"] = relaxed
        return variants[name]

    def relax(node: Any) -> tuple[Any, bool]:
        if isinstance(node, list):
            items = [relax(item) for item in node]
            return [item for item, _ in items], any(changed for _, changed in items)
        if not isinstance(node, dict):
            return node, False
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(_SCHEMAS) and ref[len(_SCHEMAS):] in schemas:
            target = variant(ref[len(_SCHEMAS):])
            return ({**node, "$ref": f"{_SCHEMAS}{target}"}, True) if target else (node, False)
        relaxed: dict[str, Any] = {}
        changed = False
        for key, value in node.items():
            if key == "properties" and isinstance(value, dict):
                pairs = {name: relax(schema) for name, schema in value.items()}
                relaxed[key] = {name: schema for name, (schema, _) in pairs.items()}
                changed = changed or any(c for _, c in pairs.values())
            elif key in _NOT_SCHEMAS:
                relaxed[key] = value
            else:
                relaxed[key], child_changed = relax(value)
                changed = changed or child_changed
        properties: dict[str, Any] = node["properties"] if isinstance(node.get("properties"), dict) else {}
        required = node.get("required")
        if isinstance(required, list):
            kept = [n for n in required if not (isinstance(properties.get(n), dict) and "default" in properties[n])]
            if len(kept) != len(required):
                changed = True
                if kept:
                    relaxed["required"] = kept
                else:
                    relaxed.pop("required")
        return relaxed, changed

    for path_item in document.get("paths", {}).values():
        for operation in path_item.values():
            body = operation.get("requestBody") if isinstance(operation, dict) else None
            for media in (body or {}).get("content", {}).values():
                if "schema" in media:
                    media["schema"], _ = relax(media["schema"])


@dataclass(frozen=True)
class AttributeType:
    """What a filter value on one attribute path must be coerced to."""

    type: str  # string, number, integer, boolean, or "any"
    format: str | None = None


ANY = AttributeType("any")


class SchemaIndex:
    """Questions about one schema (e.g. ``Service``) of one API document."""

    MAX_DEPTH = 6

    def __init__(self, document: dict[str, Any], schema_name: str) -> None:
        self.document = document
        self.schema_name = schema_name
        self.schema = self._resolve({"$ref": f"#/components/schemas/{schema_name}"})

    def _resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        seen = 0
        while "$ref" in schema:
            ref = schema["$ref"]
            if not ref.startswith("#/"):
                raise ValueError(f"only local references are supported, got {ref}")
            node: Any = self.document
            for part in ref[2:].split("/"):
                node = node[part]
            schema = node
            seen += 1
            if seen > 20:
                raise ValueError(f"reference loop at {ref}")
        return schema

    def _properties(self, schema: dict[str, Any]) -> dict[str, dict[str, Any]]:
        schema = self._resolve(schema)
        props: dict[str, dict[str, Any]] = {}
        for part in schema.get("allOf", []):
            props.update(self._properties(part))
        props.update(schema.get("properties", {}))
        return props

    def _element(self, schema: dict[str, Any]) -> dict[str, Any]:
        schema = self._resolve(schema)
        while schema.get("type") == "array" and "items" in schema:
            schema = self._resolve(schema["items"])
        return schema

    def attribute_schema(self, path: str) -> dict[str, Any] | None:
        """The schema of a dotted path (arrays are looked through), or None if unknown."""
        schema: dict[str, Any] = self.schema
        for part in path.split("."):
            props = self._properties(self._element(schema))
            if part not in props:
                return None
            schema = props[part]
        return self._element(schema)

    def attribute_type(self, path: str) -> AttributeType | None:
        schema = self.attribute_schema(path)
        if schema is None:
            return None
        kind = schema.get("type")
        if kind in {"string", "number", "integer", "boolean"}:
            return AttributeType(kind, schema.get("format"))
        if kind is None and not self._properties(schema):
            return ANY
        return AttributeType(str(kind or "object"))

    @cached_property
    def top_level(self) -> frozenset[str]:
        return frozenset(self._properties(self.schema))

    @cached_property
    def read_only(self) -> frozenset[str]:
        return frozenset(
            name for name, prop in self._properties(self.schema).items()
            if self._resolve(prop).get("readOnly") or prop.get("readOnly")
        )

    @cached_property
    def date_time_paths(self) -> frozenset[str]:
        """Every dotted path (arrays looked through) whose value is a date-time string."""
        found: set[str] = set()

        def walk(schema: dict[str, Any], prefix: str, depth: int) -> None:
            if depth > self.MAX_DEPTH:
                return
            element = self._element(schema)
            if element.get("type") == "string" and element.get("format") == "date-time":
                found.add(prefix)
                return
            for name, prop in self._properties(element).items():
                walk(prop, f"{prefix}.{name}" if prefix else name, depth + 1)

        walk(self.schema, "", 0)
        return frozenset(found)

    @cached_property
    def required_defaults(self) -> dict[str, dict[str, Any]]:
        """For every dotted path (arrays looked through, "" for the resource itself) to an object
        whose schema lists an attribute as ``required`` and gives it a ``default``: those
        attributes and defaults. Requests may leave such attributes out; the server fills them
        in (e.g. the ``@referredType`` of a reference)."""
        found: dict[str, dict[str, Any]] = {}

        def walk(schema: dict[str, Any], prefix: str, depth: int) -> None:
            if depth > self.MAX_DEPTH:
                return
            element = self._element(schema)
            properties = self._properties(element)
            defaults = {name: self._resolve(properties[name])["default"] for name in self._required(element)
                        if name in properties and "default" in self._resolve(properties[name])}
            if defaults:
                found[prefix] = defaults
            for name, prop in properties.items():
                walk(prop, f"{prefix}.{name}" if prefix else name, depth + 1)

        walk(self.schema, "", 0)
        return found

    def _required(self, schema: dict[str, Any]) -> set[str]:
        schema = self._resolve(schema)
        names = set(schema.get("required", []))
        for part in schema.get("allOf", []):
            names |= self._required(part)
        return names

    @cached_property
    def validator(self) -> Any:
        registry: Registry[Any] = Registry().with_resource(
            SPEC_URI, Resource.from_contents(self.document, default_specification=DRAFT7)
        )
        return OpenApiValidator(
            {"$ref": f"{SPEC_URI}#/components/schemas/{self.schema_name}"}, registry=registry,
            format_checker=Draft7Validator.FORMAT_CHECKER,
        )

    @cached_property
    def check(self) -> Check | None:
        """The schema compiled to a native yes/no check (None if it cannot be compiled)."""
        schemas = self.document.get("components", {}).get("schemas", {})
        return compile_check({"$ref": f"#/components/schemas/{self.schema_name}"}, schemas=schemas, draft=Draft7)

    def errors(self, instance: Any) -> list[str]:
        """Readable messages for every way ``instance`` breaks the schema (empty when valid)."""
        if self.check is not None and self.check(instance):
            return []
        messages = []
        for error in sorted(self.validator.iter_errors(instance), key=lambda e: list(e.absolute_path)):
            where = ".".join(str(p) for p in error.absolute_path) or "(body)"
            messages.append(f"{where}: {error.message}")
        return messages[:10]
