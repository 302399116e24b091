"""Applying PATCH bodies (RFC 7396 merge patch and RFC 6902 JSON patch), and the checks every
client document passes before it is stored."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import jsonpatch
import jsonpointer

from .errors import BadRequest, Conflict, UnsupportedMediaType
from .query import normalize_date_time

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
PLAIN_JSON = "application/json"


def patch_style(content_type: str | None) -> str:
    media_type = (content_type or "").split(";")[0].strip().lower()
    if media_type in {MERGE_PATCH, PLAIN_JSON}:
        return MERGE_PATCH
    if media_type == JSON_PATCH:
        return JSON_PATCH
    raise UnsupportedMediaType(
        f"PATCH takes {MERGE_PATCH}, {PLAIN_JSON} (same meaning) or {JSON_PATCH}; got '{media_type}'"
    )


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396: objects merge recursively, null removes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def json_patch(target: dict[str, Any], operations: Any) -> dict[str, Any]:
    if not isinstance(operations, list):
        raise BadRequest(f"a {JSON_PATCH} body is an array of operations")
    try:
        result = jsonpatch.JsonPatch(operations).apply(target)
    except jsonpatch.JsonPatchTestFailed as exc:
        raise Conflict(f"json-patch test failed, nothing was changed: {exc}") from None
    except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as exc:
        raise BadRequest(f"json-patch cannot be applied, nothing was changed: {exc}") from None
    except (TypeError, ValueError, KeyError, IndexError) as exc:
        raise BadRequest(f"json-patch is malformed: {exc}") from None
    if not isinstance(result, dict):
        raise BadRequest("json-patch must leave the resource a JSON object")
    return result


def apply_patch(style: str, current: dict[str, Any], body: Any) -> dict[str, Any]:
    if style == MERGE_PATCH:
        if not isinstance(body, dict):
            raise BadRequest(f"a {MERGE_PATCH} body is a JSON object")
        patched = merge_patch(current, body)
        assert isinstance(patched, dict)
        return patched
    return json_patch(current, body)


def check_keys(document: Any, where: str = "") -> None:
    """Refuse keys MongoDB would treat specially (``$``-prefixed, dotted, empty) anywhere, and
    top-level ``_`` keys, which hold our own bookkeeping."""
    stack: list[tuple[Any, str]] = [(document, where)]
    while stack:
        node, path = stack.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                if not isinstance(key, str) or not key or key.startswith("$") or "." in key or "\x00" in key:
                    raise BadRequest(
                        f"attribute name '{str(key)[:64]}' at '{path or '(body)'}' is not allowed: "
                        "names must not be empty, start with '$' or contain '.'"
                    )
                if not path and key.startswith("_"):
                    raise BadRequest(f"attribute name '{key[:64]}' is not allowed: names must not start with '_'")
                stack.append((value, f"{path}.{key}" if path else key))
        elif isinstance(node, list):
            stack.extend((item, f"{path}[{i}]") for i, item in enumerate(node))


def fill_defaults(document: Any, defaults: Mapping[str, Mapping[str, Any]]) -> Any:
    """Give every object the required attributes it lacks that the document declares a default
    for (see ``SchemaIndex.required_defaults``), so that what is stored and returned is complete
    even when a client left them out. Arrays are looked through, as in filter paths."""

    def walk(node: Any, path: str) -> Any:
        if isinstance(node, list):
            return [walk(item, path) for item in node]
        if not isinstance(node, dict):
            return node
        filled = {k: walk(v, f"{path}.{k}" if path else k) for k, v in node.items()}
        for name, value in defaults.get(path, {}).items():
            filled.setdefault(name, copy.deepcopy(value))
        return filled

    return walk(document, "")


def normalize_dates(document: Any, date_time_paths: frozenset[str]) -> Any:
    """Store every date-time attribute in one UTC form so that filters and sorts compare
    instants, not spellings. Arrays are looked through, as in filter paths."""

    def walk(node: Any, path: str) -> Any:
        if isinstance(node, list):
            return [walk(item, path) for item in node]
        if isinstance(node, dict):
            return {k: walk(v, f"{path}.{k}" if path else k) for k, v in node.items()}
        if path in date_time_paths and isinstance(node, str):
            return normalize_date_time(node, f"'{path}'")
        return node

    return walk(document, "")
