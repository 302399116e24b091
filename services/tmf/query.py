"""TMF630 queries: the filter grammar, ``fields``, ``sort``, ``offset``/``limit``, and their
translation into MongoDB queries.

Clients choose attribute paths and values, never operators: every MongoDB operator below comes
from a fixed table, and every path is checked against the resource schema first.

A query string is split on ``&`` (the URL's structure), each parameter is percent-decoded, and
only then are the TMF630 separators applied: ``;`` between assertions, ``,`` between the
alternatives of a value. A backslash makes the next separator literal (``\\,``, ``\\;``, and
``\\\\`` for a backslash), so clients that encode ``,`` as ``%2C`` mean the same as those that do
not.

Regular expressions never run in a backtracking engine unless they cannot backtrack: a pattern
without repetition or alternation goes to the database; every other pattern runs here in RE2,
which matches in time linear in the text.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote_plus

import re2

from .errors import BadRequest
from .spec import AttributeType, SchemaIndex

OPERATORS = ("eq", "ne", "gt", "gte", "lt", "lte", "regex")
LITERAL_OPERATORS = {"=": "eq", "==": "eq", ">": "gt", ">=": "gte", "<": "lt", "<=": "lte"}
_MONGO_OPERATOR = {"eq": "$eq", "ne": "$ne", "gt": "$gt", "gte": "$gte", "lt": "$lt", "lte": "$lte"}
PAGING_PARAMETERS = frozenset({"fields", "offset", "limit", "sort"})
ALWAYS_RETURNED = ("id", "href", "@type")

_ASSERTION = re.compile(r"^(?P<name>[^=<>!]+?)(?P<literal>>=|<=|==|=|>|<)(?P<value>.*)$", re.DOTALL)
_SEGMENT = re.compile(r"^[A-Za-z@][A-Za-z0-9_@]{0,63}$")
# Control characters have no place in a filter, and refusing them keeps every message that
# quotes a query printable.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
ESCAPE = "\\"
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


def split_unescaped(text: str, separator: str) -> list[str]:
    """Split ``text`` on ``separator`` except where a backslash escapes it; escapes are kept
    (a regex reads ``\\,`` as a comma anyway, other values go through :func:`unescape`)."""
    parts: list[str] = []
    start = i = 0
    while i < len(text):
        if text[i] == ESCAPE:
            i += 2
            continue
        if text[i] == separator:
            parts.append(text[start:i])
            start = i + 1
        i += 1
    parts.append(text[start:])
    return parts


def unescape(text: str) -> str:
    """``\\,`` to ``,``, ``\\;`` to ``;`` and ``\\\\`` to ``\\``; any other backslash stays as written."""
    if ESCAPE not in text:
        return text
    out: list[str] = []
    i = 0
    while i < len(text):
        if text[i] == ESCAPE and text[i + 1:i + 2] in {",", ";", ESCAPE}:
            out.append(text[i + 1])
            i += 2
            continue
        out.append(text[i])
        i += 1
    return "".join(out)


def split_assertions(raw_query: str) -> list[tuple[str, str, str]]:
    """Split a raw query string into (name, literal operator, value) triples: on ``&`` first,
    then, once each parameter is percent-decoded, on unescaped ``;``. Values keep their
    backslash escapes until they are split into alternatives."""
    triples = []
    for parameter in raw_query.split("&"):
        decoded = unquote_plus(parameter)
        control = _CONTROL.search(decoded)
        if control is not None:
            raise BadRequest(
                f"a query must not contain control characters (found %{ord(control.group()):02X}); "
                "write a literal comma or semicolon in a value as \\, or \\;"
            )
        for part in split_unescaped(decoded, ";"):
            if not part:
                continue
            match = _ASSERTION.match(part)
            if match is None:
                raise BadRequest(
                    f"'{part[:80]}' is not a filter: write attribute=value, "
                    "attribute.operator=value, or attribute>value"
                )
            triples.append((match["name"].strip(), match["literal"], match["value"]))
            if len(triples) > MAX_ASSERTIONS:
                raise BadRequest(f"a query may hold at most {MAX_ASSERTIONS} assertions")
    return triples


def split_values(value: str) -> list[str]:
    """The comma-separated alternatives of a value, unescaped."""
    return [unescape(v) for v in split_unescaped(value, ",")]


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
        # A regex keeps its backslashes: in the pattern, \\, and \\; already mean , and ;.
        values = [value] if operator == "regex" else split_values(value)
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


_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False
# What RE2 refuses, said in a client's words: (start of RE2's complaint, the construct).
_UNSUPPORTED = (
    ("invalid perl operator: (?=", "a look-ahead (?=...)"),
    ("invalid perl operator: (?!", "a negative look-ahead (?!...)"),
    ("invalid perl operator: (?<=", "a look-behind (?<=...)"),
    ("invalid perl operator: (?<!", "a negative look-behind (?<!...)"),
    ("invalid perl operator: (?R", "a recursion (?R)"),
    ("invalid perl operator: (?#", "a comment (?#...)"),
    ("invalid escape sequence: \\k", "a back-reference \\k<name>"),
    ("invalid escape sequence: \\g", "a back-reference \\g"),
    ("bad repetition operator: ++", "a possessive quantifier"),
    ("bad repetition operator: *+", "a possessive quantifier"),
    ("bad repetition operator: ?+", "a possessive quantifier"),
)
_BACK_REFERENCE = re.compile(r"invalid escape sequence: \\[1-9]")
_VERBOSE_FLAG = re.compile(r"invalid perl operator: \(\?[a-zA-Z-]*x")
_LINEAR_ONLY = "only constructs that match in linear time are supported (RE2 syntax)"


def compile_regex(pattern: str, path: str, max_length: int) -> Any:
    """Compile a client's pattern with RE2, which matches in time linear in the text whatever
    the pattern. What RE2 refuses (back-references, look-arounds, possessive quantifiers, ...)
    is a 400 that names the construct."""
    if len(pattern) > max_length:
        raise BadRequest(f"regex for '{path}' is longer than {max_length} characters")
    try:
        return re2.compile(pattern, _RE2_OPTIONS)
    except UnicodeEncodeError:
        raise BadRequest(f"regex for '{path}' is not valid Unicode text") from None
    except re2.error as exc:
        detail = exc.args[0].decode("utf-8", "replace") if exc.args and isinstance(exc.args[0], bytes) \
            else str(exc)
    construct = next((name for prefix, name in _UNSUPPORTED if detail.startswith(prefix)), None)
    if construct is None and detail == "invalid perl operator: (?P":
        # RE2 quotes only "(?P"; the pattern says which construct it stopped at.
        construct = ("a back-reference (?P=name)" if "(?P=" in pattern
                     else "a recursion (?P>name)" if "(?P>" in pattern else None)
    if construct is None and _BACK_REFERENCE.match(detail):
        construct = "a back-reference \\1"
    if construct is None and _VERBOSE_FLAG.match(detail):
        construct = "the verbose flag x"
    if construct is not None:
        raise BadRequest(f"regex for '{path}' uses {construct}, which is not supported: {_LINEAR_ONLY}")
    raise BadRequest(f"regex for '{path}' is invalid: {detail}")


# Escapes every engine reads alike: an escaped ASCII punctuation character is that character.
_PLAIN_ESCAPES = frozenset("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~") | {"n", "t", "r"}
_REPEATING = frozenset("*+?{|()")


def _database_tokens(pattern: str) -> list[str] | None:
    """The pattern as tokens (a literal, an escape, a class, ``.``, ``^``, ``$``, or a
    quantifier or grouping character), or None when it holds a token whose meaning differs
    between RE2 and the database's engines (``\\d``, ``\\b``, POSIX classes, ...)."""
    tokens: list[str] = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            if pattern[i + 1:i + 2] not in _PLAIN_ESCAPES:
                return None
            tokens.append(pattern[i:i + 2])
            i += 2
        elif char == "[":
            end = i + 1
            if pattern[end:end + 1] == "^":
                end += 1
            if pattern[end:end + 1] == "]":
                end += 1
            while end < len(pattern) and pattern[end] != "]":
                if pattern[end] == "[" or (pattern[end] == "\\" and pattern[end + 1:end + 2] not in _PLAIN_ESCAPES):
                    return None
                end += 2 if pattern[end] == "\\" else 1
            tokens.append(pattern[i:end + 1])
            i = end + 1
        else:
            tokens.append(char)
            i += 1
    return tokens


def database_pattern(pattern: str) -> str | None:
    """The pattern in the form handed to the database, or None when the database must not run
    it. The database's engines backtrack, so only a pattern without repetition or alternation
    goes there: each start position then costs at most the pattern's length. A leading or
    trailing ``.*`` adds nothing to a search and is dropped first (``^.*`` is kept: ``.``
    stops at a newline, so it is not redundant there). ``$`` is sent as ``\\z``, the end of
    the text, which is what it means in RE2; the backtracking engines' ``$`` would also match
    before a final newline. The pattern must already have passed :func:`compile_regex`."""
    tokens = _database_tokens(pattern)
    if tokens is None:
        return None
    while tokens[:2] == [".", "*"]:
        tokens = tokens[3:] if tokens[2:3] == ["?"] else tokens[2:]
    while tokens[-2:] == [".", "*"] or tokens[-3:] == [".", "*", "?"]:
        tokens = tokens[:-3] if tokens[-1] == "?" else tokens[:-2]
    if any(t in _REPEATING for t in tokens):
        return None
    return "".join("\\z" if t == "$" else t for t in tokens)


def regex_search(pattern: Any, text: str) -> bool:
    """Whether an RE2 ``pattern`` (from :func:`compile_regex`) matches somewhere in ``text``."""
    try:
        return pattern.search(text) is not None
    except UnicodeEncodeError:
        # RE2 reads UTF-8; a lone surrogate (possible in JSON text) cannot match anything.
        return pattern.search(text.encode("utf-8", "replace").decode("utf-8")) is not None


def values_at(node: Any, path: list[str]) -> list[Any]:
    """The values at a dotted path, looking through arrays at every step as MongoDB does."""
    if not path:
        return node if isinstance(node, list) else [node]
    if isinstance(node, list):
        return [v for item in node for v in values_at(item, path)]
    if isinstance(node, Mapping) and path[0] in node:
        return values_at(node[path[0]], path[1:])
    return []


@dataclass(frozen=True)
class TextMatch:
    """A regex condition evaluated here with RE2: some text at ``path`` matches one of the
    patterns."""

    path: str
    patterns: tuple[Any, ...]

    def matches(self, document: Mapping[str, Any]) -> bool:
        texts = [v for v in values_at(document, self.path.split(".")) if isinstance(v, str)]
        return any(regex_search(p, t) for t in texts for p in self.patterns)


@dataclass
class FilterPlan:
    """How a list of conditions is evaluated: ``query`` by the database, then each of
    ``text_matches`` (all must hold) by us over what the query selects."""

    query: dict[str, Any]
    text_matches: list[TextMatch] = field(default_factory=list)

    def matches(self, document: Mapping[str, Any]) -> bool:
        return all(m.matches(document) for m in self.text_matches)

    @property
    def paths(self) -> list[str]:
        """The attributes the text matches read (a projection must keep them)."""
        return [m.path for m in self.text_matches]


def _regex_condition(condition: Condition, regex_max_length: int) -> dict[str, Any] | TextMatch:
    path = condition.path
    compiled = tuple(compile_regex(v, path, regex_max_length) for v in condition.values)
    for_database = [database_pattern(v) for v in condition.values]
    if any(p is None for p in for_database):
        return TextMatch(path, compiled)
    alternatives = [{path: {"$regex": p}} for p in for_database]
    return alternatives[0] if len(alternatives) == 1 else {"$or": alternatives}


def condition_to_mongo(condition: Condition, index: SchemaIndex, regex_max_length: int) -> dict[str, Any] | TextMatch:
    """One condition as a MongoDB query, or, for a regex the database must not run, as a
    :class:`TextMatch`."""
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
        return _regex_condition(condition, regex_max_length)
    values = [c for v in condition.values for c in coerce(v, kind, path)]
    if condition.operator == "eq":
        return {path: values[0]} if len(values) == 1 else {path: {"$in": values}}
    if condition.operator == "ne":
        return {path: {"$ne": values[0]}} if len(values) == 1 else {path: {"$nin": values}}
    mongo_operator = _MONGO_OPERATOR[condition.operator]
    alternatives = [{path: {mongo_operator: v}} for v in values]
    return alternatives[0] if len(alternatives) == 1 else {"$or": alternatives}


def filter_plan(conditions: list[Condition], index: SchemaIndex, regex_max_length: int = 128) -> FilterPlan:
    """Translate conditions (all must hold) into a database query plus the regex tests that
    run here."""
    parts: list[dict[str, Any]] = []
    text_matches: list[TextMatch] = []
    for condition in conditions:
        translated = condition_to_mongo(condition, index, regex_max_length)
        if isinstance(translated, TextMatch):
            text_matches.append(translated)
        else:
            parts.append(translated)
    query: dict[str, Any] = {} if not parts else parts[0] if len(parts) == 1 else {"$and": parts}
    return FilterPlan(query, text_matches)


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
    names = [n.strip() for n in split_values(raw) if n.strip()]
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
    for item in split_values(raw):
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
