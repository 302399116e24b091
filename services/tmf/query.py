"""TMF630 queries: the filter grammar, ``fields``, ``sort``, ``offset``/``limit``, and their
translation into MongoDB queries.

Clients choose attribute paths and values, never operators: every MongoDB operator below comes
from a fixed table, and every path is checked against the resource schema first.
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote_plus

from .errors import BadRequest
from .spec import AttributeType, SchemaIndex

OPERATORS = ("eq", "ne", "gt", "gte", "lt", "lte", "regex")
LITERAL_OPERATORS = {"=": "eq", "==": "eq", ">": "gt", ">=": "gte", "<": "lt", "<=": "lte"}
_MONGO_OPERATOR = {"eq": "$eq", "ne": "$ne", "gt": "$gt", "gte": "$gte", "lt": "$lt", "lte": "$lte"}
PAGING_PARAMETERS = frozenset({"fields", "offset", "limit", "sort"})
ALWAYS_RETURNED = ("id", "href", "@type")

_ASSERTION = re.compile(r"^(?P<name>[^=<>!]+?)(?P<literal>>=|<=|==|=|>|<)(?P<value>.*)$", re.DOTALL)
_SEGMENT = re.compile(r"^[A-Za-z@][A-Za-z0-9_@]{0,63}$")
ENCODED_COMMA = "\x00"
MAX_ASSERTIONS = 50
MAX_VALUES = 100
MAX_VALUE_LENGTH = 1024
MAX_SORT_KEYS = 5


@dataclass
class Condition:
    path: str
    operator: str
    values: list[Any] = field(default_factory=list)


@dataclass
class Query:
    conditions: list[Condition]
    fields: list[str] | None
    offset: int
    limit: int
    sort: list[tuple[str, int]]


def check_path(path: str) -> str:
    if not path or len(path) > 256 or not all(_SEGMENT.match(p) for p in path.split(".")):
        raise BadRequest(
            f"'{path}' is not an attribute path: use attribute names joined by dots, "
            "e.g. relatedParty.role"
        )
    return path


def split_assertions(raw_query: str) -> list[tuple[str, str, str]]:
    """Split a raw query string into (name, literal operator, value) triples, decoding each
    part only after splitting so that encoded ``&``, ``;`` and ``,`` stay inside values (an
    encoded comma travels as ``ENCODED_COMMA`` until values are split on real commas)."""
    triples = []
    for part in re.split(r"[&;]", raw_query):
        if not part:
            continue
        if "%00" in part:
            raise BadRequest("a query must not contain NUL characters")
        decoded = unquote_plus(part.replace("%2C", ENCODED_COMMA).replace("%2c", ENCODED_COMMA))
        match = _ASSERTION.match(decoded)
        if match is None:
            raise BadRequest(
                f"'{decoded[:80]}' is not a filter: write attribute=value, "
                "attribute.operator=value, or attribute>value"
            )
        triples.append((match["name"].strip(), match["literal"], match["value"]))
        if len(triples) > MAX_ASSERTIONS:
            raise BadRequest(f"a query may hold at most {MAX_ASSERTIONS} assertions")
    return triples


def parse_filter_assertions(triples: list[tuple[str, str, str]]) -> list[Condition]:
    """Group assertions on the same path and operator; their values are alternatives (OR)."""
    grouped: dict[tuple[str, str], Condition] = {}
    for name, literal, value in triples:
        path, operator = name, LITERAL_OPERATORS[literal]
        head, _, suffix = name.rpartition(".")
        if head and suffix in OPERATORS:
            if literal not in {"=", "=="}:
                raise BadRequest(
                    f"'{name}{literal}': use either the .{suffix} suffix or the '{literal}' form, not both")
            path, operator = head, suffix
        check_path(path)
        alternatives = [value] if operator == "regex" else value.split(",")
        values = [v.replace(ENCODED_COMMA, ",") for v in alternatives]
        condition = grouped.setdefault((path, operator), Condition(path, operator))
        condition.values.extend(values)
        if len(condition.values) > MAX_VALUES:
            raise BadRequest(f"at most {MAX_VALUES} alternative values per attribute ('{path}')")
    return list(grouped.values())


def normalize_date_time(value: str, where: str = "value") -> str:
    """Parse an ISO 8601 date or date-time and return it as a UTC string with milliseconds,
    the single form stored, so that string order is time order."""
    text = value.strip()
    try:
        parsed = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        # Shifting to UTC can leave the datetime range (year 1 east of UTC, year 9999 west).
        utc = parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        raise BadRequest(
            f"{where} '{value[:64]}' is not a date-time: use ISO 8601, e.g. 2026-10-01T00:00:00Z"
        ) from None
    # isoformat pads the year to four digits (strftime's %Y does not on every platform), which
    # keeps string order equal to time order.
    return utc.replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"


def coerce(value: str, kind: AttributeType, path: str) -> list[Any]:
    """The stored values a filter value can equal (a value of unknown type may be stored as a
    string, a number or a boolean)."""
    if len(value) > MAX_VALUE_LENGTH:
        raise BadRequest(f"filter value for '{path}' is longer than {MAX_VALUE_LENGTH} characters")
    if kind.type == "string":
        if kind.format == "date-time":
            return [normalize_date_time(value, f"filter value for '{path}'")]
        return [value]
    if kind.type == "integer":
        try:
            return [int(value)]
        except ValueError:
            raise BadRequest(f"'{path}' is an integer; '{value[:64]}' is not") from None
    if kind.type == "number":
        try:
            number = float(value)
        except ValueError:
            raise BadRequest(f"'{path}' is a number; '{value[:64]}' is not") from None
        if number != number or number in {float("inf"), float("-inf")}:
            raise BadRequest(f"'{path}' needs a finite number")
        return [number]
    if kind.type == "boolean":
        if value not in {"true", "false"}:
            raise BadRequest(f"'{path}' is a boolean: use true or false")
        return [value == "true"]
    if kind.type == "any":
        candidates: list[Any] = [value]
        if value in {"true", "false"}:
            candidates.append(value == "true")
        try:
            number = float(value)
        except ValueError:
            return candidates
        if math.isfinite(number):
            candidates.append(number)
        return candidates
    raise BadRequest(f"'{path}' is an {kind.type}; filter on one of its attributes, e.g. {path}.id")


_DANGEROUS_REGEX = re.compile(r"\\[1-9]|\\k<|\(\?[=!<]|\(\?P=")
# Comments and the verbose flag change how a pattern tokenises (``#`` starts a comment, spaces
# may separate a group from its quantifier), which the scan in check_regex does not follow.
_UNSCANNABLE_REGEX = re.compile(r"\(\?#|\(\?[A-Za-z-]*x[A-Za-z-]*[:)]")


def check_regex(pattern: str, path: str, max_length: int) -> str:
    """Refuse patterns that could run away: back-references, look-arounds, and quantified
    groups that themselves contain quantifiers or alternatives (``(a+)+``, ``(a|aa)*``)."""
    if len(pattern) > max_length:
        raise BadRequest(f"regex for '{path}' is longer than {max_length} characters")
    if _DANGEROUS_REGEX.search(pattern):
        raise BadRequest(f"regex for '{path}' uses back-references or look-arounds, which are not allowed")
    if _UNSCANNABLE_REGEX.search(pattern):
        raise BadRequest(f"regex for '{path}' uses comments or the verbose flag, which are not allowed")
    try:
        with warnings.catch_warnings():
            # Python warns about constructs it may read differently one day ("possible nested
            # set"); the pattern runs in MongoDB, so only whether it compiles matters here.
            warnings.simplefilter("ignore")
            re.compile(pattern)
    except (re.error, OverflowError, RecursionError) as exc:
        raise BadRequest(f"regex for '{path}' is invalid: {exc}") from None
    stack: list[bool] = []
    risky_inside = False
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            i += 2
            continue
        if char == "[":
            # A class ends at the first unescaped ']' that is not its first member.
            i += 1
            if pattern[i:i + 1] == "^":
                i += 1
            if pattern[i:i + 1] == "]":
                i += 1
            while i < len(pattern) and pattern[i] != "]":
                i += 2 if pattern[i] == "\\" else 1
            i += 1
            continue
        if char == "(":
            stack.append(risky_inside)
            risky_inside = False
            if pattern[i + 1:i + 2] == "?":
                i += 1  # "(?:", "(?P<name>", "(?i)": the '?' is not a quantifier
        elif char == ")" and stack:
            group_risky = risky_inside
            risky_inside = stack.pop() or group_risky
            following = pattern[i + 1: i + 2]
            if group_risky and following and following in "*+?{":
                raise BadRequest(
                    f"regex for '{path}' repeats a group that itself repeats or alternates; "
                    "simplify the pattern"
                )
        elif char in "*+?{|":
            risky_inside = True
        i += 1
    return pattern


def condition_to_mongo(condition: Condition, index: SchemaIndex, regex_max_length: int) -> dict[str, Any]:
    kind = index.attribute_type(condition.path)
    head, _, suffix = condition.path.rpartition(".")
    if kind is None and head and index.attribute_type(head) not in {None, AttributeType("object")}:
        raise BadRequest(
            f"unknown filter operator '.{suffix}' on '{head}'; "
            f"use one of {', '.join('.' + o for o in OPERATORS)}"
        )
    if kind is None or condition.path == "href":
        raise BadRequest(
            f"'{condition.path}' is not an attribute of {index.schema_name} that can be filtered on; "
            "use attribute names from the API document"
        )
    path = condition.path
    if condition.operator == "regex":
        if kind.type not in {"string", "any"}:
            raise BadRequest(f".regex only applies to text attributes; '{path}' is {kind.type}")
        alternatives = [{path: {"$regex": check_regex(v, path, regex_max_length)}} for v in condition.values]
        return alternatives[0] if len(alternatives) == 1 else {"$or": alternatives}
    values = [c for v in condition.values for c in coerce(v, kind, path)]
    if condition.operator == "eq":
        return {path: values[0]} if len(values) == 1 else {path: {"$in": values}}
    if condition.operator == "ne":
        return {path: {"$ne": values[0]}} if len(values) == 1 else {path: {"$nin": values}}
    mongo_operator = _MONGO_OPERATOR[condition.operator]
    alternatives = [{path: {mongo_operator: v}} for v in values]
    return alternatives[0] if len(alternatives) == 1 else {"$or": alternatives}


def conditions_to_mongo(conditions: list[Condition], index: SchemaIndex,
                        regex_max_length: int = 128) -> dict[str, Any]:
    parts = [condition_to_mongo(c, index, regex_max_length) for c in conditions]
    if not parts:
        return {}
    return parts[0] if len(parts) == 1 else {"$and": parts}


MAX_OFFSET = 2**31 - 1


def _whole_number(name: str, raw: str, maximum: int, hint: str = "") -> int:
    digits = raw.removeprefix("-")
    # ASCII digits only: int() would also take "1_000", " 7" and other scripts' digits.
    if not digits or not digits.isascii() or not digits.isdigit():
        raise BadRequest(f"{name} must be a whole number, got '{raw[:32]}'")
    if raw.startswith("-"):
        raise BadRequest(f"{name} must not be negative, got {raw[:32]}")
    # Compare the digits before converting: a hostile value may be thousands of digits long.
    stripped = digits.lstrip("0") or "0"
    if len(stripped) > len(str(maximum)) or int(stripped) > maximum:
        raise BadRequest(f"{name} must not exceed {maximum}, got {raw[:32]}{hint}")
    return int(stripped)


def parse_fields(raw: str | None, index: SchemaIndex) -> list[str] | None:
    if raw is None or raw == "":
        return None
    names = [n.strip() for n in raw.split(",") if n.strip()]
    if names == ["none"]:
        return []
    unknown = [n for n in names if n not in index.top_level]
    if unknown:
        raise BadRequest(
            f"fields names unknown attributes {unknown[:5]} of {index.schema_name}; "
            "use first-level attribute names, or fields=none"
        )
    return names


def parse_sort(raw: str | None, index: SchemaIndex) -> list[tuple[str, int]]:
    if not raw:
        return []
    keys = []
    for item in raw.split(","):
        item = item.strip()
        direction = -1 if item.startswith("-") else 1
        path = check_path(item.lstrip("+-").strip())
        if index.attribute_type(path) is None:
            raise BadRequest(f"cannot sort on '{path}': it is not an attribute of {index.schema_name}")
        keys.append((path, direction))
    if len(keys) > MAX_SORT_KEYS:
        raise BadRequest(f"sort takes at most {MAX_SORT_KEYS} attributes")
    return keys


def parse_query(raw_query: str, index: SchemaIndex, *, default_limit: int, max_limit: int,
                reserved: frozenset[str] = PAGING_PARAMETERS) -> Query:
    """Parse a list request's whole query string."""
    paging: dict[str, str] = {}
    filters = []
    for name, literal, value in split_assertions(raw_query):
        if name in PAGING_PARAMETERS and literal == "=":
            if name in paging:
                raise BadRequest(f"'{name}' is given more than once")
            paging[name] = value
        elif name in reserved and literal == "=":
            continue
        else:
            filters.append((name, literal, value))
    offset = _whole_number("offset", paging["offset"], MAX_OFFSET) if "offset" in paging else 0
    limit = (_whole_number("limit", paging["limit"], max_limit, "; page through larger results with offset")
             if "limit" in paging else default_limit)
    if limit > max_limit:
        raise BadRequest(f"limit must not exceed {max_limit}; page through larger results with offset")
    return Query(
        conditions=parse_filter_assertions(filters),
        fields=parse_fields(paging.get("fields"), index),
        offset=offset,
        limit=limit,
        sort=parse_sort(paging.get("sort"), index),
    )


def projection(fields: list[str] | None) -> dict[str, int] | None:
    """A MongoDB projection for a ``fields`` selection (None: everything)."""
    if fields is None:
        return None
    return {name: 1 for name in (*ALWAYS_RETURNED, *fields) if name != "href"}
