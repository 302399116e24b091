"""TMF events: the v4 envelope, the event names of a resource, and hub query filters
evaluated against events."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog

from .errors import BadRequest
from .query import (
    Condition,
    coerce,
    compile_regex,
    normalize_date_time,
    parse_filter_assertions,
    regex_search,
    split_assertions,
    values_at,
)
from .spec import AttributeType, SchemaIndex

ENVELOPE_TYPES = {
    "eventId": AttributeType("string"), "eventType": AttributeType("string"),
    "eventTime": AttributeType("string", "date-time"), "timeOcurred": AttributeType("string", "date-time"),
    "correlationId": AttributeType("string"), "domain": AttributeType("string"),
    "title": AttributeType("string"), "description": AttributeType("string"),
    "priority": AttributeType("string"), "fieldPath": AttributeType("string"),
}
CREATE, ATTRIBUTE_CHANGE, STATE_CHANGE, DELETE = "Create", "AttributeValueChange", "StateChange", "Delete"
INFORMATION_REQUIRED = "InformationRequired"


def now_text() -> str:
    return normalize_date_time(datetime.now(UTC).isoformat())


def event_type(type_name: str, kind: str) -> str:
    return f"{type_name}{kind}Event"


def listener_path(name: str) -> str:
    """``ServiceStateChangeEvent`` is delivered to ``/listener/serviceStateChangeEvent``, and a
    leading acronym is lowered whole: ``SLAViolationCreateEvent`` to ``slaViolationCreateEvent``."""
    capitals = len(name) - len(name.lstrip("ABCDEFGHIJKLMNOPQRSTUVWXYZ"))
    lowered = capitals - 1 if 1 < capitals < len(name) else max(capitals, 1)
    return f"/listener/{name[:lowered].lower()}{name[lowered:]}"


def envelope(*, api: str, payload_key: str, type_name: str, kind: str, resource: dict[str, Any],
             field_path: list[str] | None = None) -> dict[str, Any]:
    """A TMF v4 event about ``resource`` (its state after the change)."""
    at = now_text()
    name = event_type(type_name, kind)
    words = {CREATE: "created", ATTRIBUTE_CHANGE: "changed", STATE_CHANGE: "changed state",
             DELETE: "deleted", INFORMATION_REQUIRED: "needs information"}[kind]
    event: dict[str, Any] = {
        "eventId": str(uuid.uuid4()),
        "eventTime": at,
        "eventType": name,
        "timeOcurred": at,
        "correlationId": structlog.contextvars.get_contextvars().get("request_id"),
        "domain": api,
        "title": f"{type_name} {words}",
        "description": f"{type_name} {resource.get('id')} {words}",
        "priority": "normal",
        "event": {payload_key: resource},
    }
    if field_path is not None:
        event["fieldPath"] = ",".join(field_path)
    if event["correlationId"] is None:
        del event["correlationId"]
    return event


@dataclass
class _Test:
    path: list[str]
    operator: str
    values: list[Any]
    # RE2 patterns: an event is matched in time linear in its text, whatever the pattern.
    patterns: list[Any]


class EventFilter:
    """A hub ``query`` compiled once: TMF630 assertions over the event envelope and over the
    resource it carries (``event.service.state=active``). Unknown attributes and operators are
    refused when the subscription is registered, not when an event arrives."""

    def __init__(self, query: str | None, payload_key: str, index: SchemaIndex, regex_max_length: int = 128) -> None:
        self.query = query or ""
        self.tests: list[_Test] = []
        conditions = parse_filter_assertions(split_assertions(self.query)) if self.query else []
        for condition in conditions:
            self.tests.append(self._compile(condition, payload_key, index, regex_max_length))

    @staticmethod
    def _compile(condition: Condition, payload_key: str, index: SchemaIndex, regex_max_length: int) -> _Test:
        path = condition.path
        prefix = f"event.{payload_key}."
        if path in ENVELOPE_TYPES:
            kind: AttributeType | None = ENVELOPE_TYPES[path]
        elif path.startswith(prefix):
            inner = path[len(prefix):]
            kind = index.attribute_type(inner)
            head, _, suffix = inner.rpartition(".")
            if kind is None and head and index.attribute_type(head) not in {None, AttributeType("object")}:
                raise BadRequest(f"unknown filter operator '.{suffix}' in the hub query")
        else:
            raise BadRequest(
                f"the hub query cannot filter on '{path}': use event attributes (eventType, domain, "
                f"priority, ...) or attributes of the resource as {prefix}<attribute>"
            )
        if kind is None:
            raise BadRequest(f"'{path}' is not an attribute of the event or of its {payload_key}")
        if condition.operator == "regex":
            patterns = [compile_regex(v, path, regex_max_length) for v in condition.values]
            return _Test(path.split("."), "regex", [], patterns)
        values = [c for v in condition.values for c in coerce(v, kind, path)]
        return _Test(path.split("."), condition.operator, values, [])

    def matches(self, event: dict[str, Any]) -> bool:
        return all(_holds(test, values_at(event, test.path)) for test in self.tests)


def _compare(actual: Any, operator: str, wanted: Any) -> bool:
    if isinstance(actual, bool) != isinstance(wanted, bool):
        return False
    try:
        if operator == "gt":
            return bool(actual > wanted)
        if operator == "gte":
            return bool(actual >= wanted)
        if operator == "lt":
            return bool(actual < wanted)
        if operator == "lte":
            return bool(actual <= wanted)
    except TypeError:
        return False
    return bool(actual == wanted)


def _holds(test: _Test, actual: list[Any]) -> bool:
    if test.operator == "regex":
        return any(isinstance(a, str) and regex_search(p, a) for a in actual for p in test.patterns)
    if test.operator == "ne":
        return not any(_compare(a, "eq", w) for a in actual for w in test.values)
    if test.operator == "eq":
        return any(_compare(a, "eq", w) for a in actual for w in test.values)
    return any(_compare(a, test.operator, w) for a in actual for w in test.values)
