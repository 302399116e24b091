"""Validation against the schemas of the API documents: request bodies at the boundary, and
resources before they are stored.

Every schema is compiled once into a native validator that only answers yes or no, which is
all a valid body costs. A body it refuses is checked again by jsonschema, which says what to
fix: every error (up to ten) with its path, in the words clients have always read."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import jsonschema_rs
from connexion.datastructures import MediaTypeDict
from connexion.exceptions import BadRequestProblem
from connexion.json_schema import Draft4RequestValidator
from connexion.validators import JSONRequestBodyValidator
from jsonschema import Draft4Validator

MAX_REPORTED = 10
# Keys whose values are data or names, not schemas: they are copied as they are.
_DATA_KEYS = frozenset({"enum", "default", "example", "examples", "const", "required", "description", "title"})
_SCHEMA_MAPS = frozenset({"properties", "patternProperties", "definitions"})

Check = Callable[[Any], bool]


class SelfReferent(ValueError):
    """A schema that contains itself (possible once references are resolved in place)."""


def json_schema(node: Any, _open: frozenset[int] = frozenset()) -> Any:
    """The JSON Schema equivalent of an OpenAPI 3.0 schema: ``nullable: true`` becomes null
    among the allowed types (and enum values) where the schema names a type (or an enum), as
    OpenAPI 3.0 reads it; everything else is kept. Raises :class:`SelfReferent` for a schema
    that contains itself."""
    if isinstance(node, list):
        return [json_schema(item, _open) for item in node]
    if not isinstance(node, dict):
        return node
    if id(node) in _open:
        raise SelfReferent("the schema contains itself")
    inner = _open | {id(node)}
    converted: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DATA_KEYS or key.startswith("x-"):
            converted[key] = value
        elif key in _SCHEMA_MAPS and isinstance(value, dict):
            converted[key] = {name: json_schema(schema, inner) for name, schema in value.items()}
        else:
            converted[key] = json_schema(value, inner)
    if node.get("nullable") is True:
        kind = converted.get("type")
        if isinstance(kind, str):
            converted["type"] = [kind, "null"]
        elif isinstance(kind, list) and "null" not in kind:
            converted["type"] = [*kind, "null"]
        if isinstance(converted.get("enum"), list) and None not in converted["enum"]:
            converted["enum"] = [*converted["enum"], None]
    return converted


def compile_check(schema: dict[str, Any], *, schemas: dict[str, Any] | None = None,
                  draft: int = jsonschema_rs.Draft4) -> Check | None:
    """A compiled yes/no check of ``schema`` (an OpenAPI 3.0 schema whose references are
    resolved, or point into ``schemas``, the ``components/schemas`` of its document), formats
    included; None when the schema cannot be compiled, so that the caller falls back to
    checking with jsonschema alone. Nothing is ever fetched: references elsewhere fail to
    compile. Patterns run on a linear-time regular expression engine."""
    try:
        converted = json_schema(schema)
        if schemas is not None:
            converted["components"] = {"schemas": {name: json_schema(s) for name, s in schemas.items()}}
        kind = jsonschema_rs.Draft7Validator if draft == jsonschema_rs.Draft7 else jsonschema_rs.Draft4Validator
        validator = kind(converted, validate_formats=True, offline=True, pattern_options=jsonschema_rs.RegexOptions())
    except (SelfReferent, jsonschema_rs.ValidationError, ValueError, TypeError):
        return None
    return validator.is_valid


def error_path(parts: Iterable[Any]) -> str:
    """``[3].observedAt`` for the attribute observedAt of the fourth item."""
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(body)"


class _CompiledBodySchema:
    """One request body schema of one operation: its compiled check and, made when a body
    first fails it, connexion's own jsonschema validator for the messages."""

    def __init__(self, schema: dict[str, Any]) -> None:
        self.schema = schema  # held, so that its id is not reused while it is cached
        self.check = compile_check(schema)
        self._explainer: Any = None

    def problems(self, body: Any) -> list[Any]:
        if self.check is not None and self.check(body):
            return []
        if self._explainer is None:
            self._explainer = Draft4RequestValidator(self.schema, format_checker=Draft4Validator.FORMAT_CHECKER)
        return sorted(self._explainer.iter_errors(body), key=lambda e: [str(p) for p in e.absolute_path])


# Connexion hands every request of an operation the same schema object.
_BODY_SCHEMAS: dict[int, _CompiledBodySchema] = {}


def _compiled_body_schema(schema: dict[str, Any]) -> _CompiledBodySchema:
    compiled = _BODY_SCHEMAS.get(id(schema))
    if compiled is None or compiled.schema is not schema:
        compiled = _BODY_SCHEMAS[id(schema)] = _CompiledBodySchema(schema)
    return compiled


# Where the body this validator parsed is kept for the handler: a handler that takes it from
# there (see :func:`parsed_body`) spares the second parse connexion makes for a ``body`` argument.
PARSED_BODY = "parsed_body"


async def parsed_body(request: Any) -> Any:
    """The JSON body of ``request`` as its validator parsed it (parsed here if it was not)."""
    state = request.scope.get("state") or {}
    if PARSED_BODY in state:
        return state[PARSED_BODY]
    return await request.json()


class ThoroughJSONBodyValidator(JSONRequestBodyValidator):  # type: ignore[misc]
    """Checks a JSON request body once, with the operation's schema compiled on first use.
    Connexion stops at the first schema error; a client sending a batch of samples wants to
    fix all of them in one go, so every error (up to ten) is listed with its path."""

    async def _parse(self, stream: Any, scope: Any) -> Any:
        body = await super()._parse(stream, scope=scope)
        scope.setdefault("state", {})[PARSED_BODY] = body
        return body

    def _validate(self, body: Any) -> dict[str, Any] | None:
        if not self._nullable and body is None:
            raise BadRequestProblem(detail="Request body must not be empty")
        errors = _compiled_body_schema(self._schema).problems(body)
        if errors:
            shown = [f"{error_path(e.absolute_path)}: {e.message}" for e in errors[:MAX_REPORTED]]
            more = f" (and {len(errors) - MAX_REPORTED} more)" if len(errors) > MAX_REPORTED else ""
            raise BadRequestProblem(detail="; ".join(shown) + more)
        return None


VALIDATORS = {"body": MediaTypeDict({"*/*json": ThoroughJSONBodyValidator})}
