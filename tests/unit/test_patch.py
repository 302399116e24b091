"""PATCH bodies and the checks on every stored document (services/tmf/patch.py)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.tmf.errors import BadRequest, Conflict, UnsupportedMediaType
from services.tmf.patch import (
    JSON_PATCH,
    MERGE_PATCH,
    apply_patch,
    check_keys,
    json_patch,
    merge_patch,
    normalize_dates,
    patch_style,
)
from services.tmf.spec import SchemaIndex

# ------------------------------------------------------------------ patch_style


@pytest.mark.parametrize(("content_type", "style"), [
    ("application/merge-patch+json", MERGE_PATCH),
    ("application/json", MERGE_PATCH),
    ("application/json;charset=utf-8", MERGE_PATCH),
    ("Application/Merge-Patch+JSON ; charset=UTF-8", MERGE_PATCH),
    ("application/json-patch+json", JSON_PATCH),
    ("application/json-patch+json; charset=utf-8", JSON_PATCH),
    ("  APPLICATION/JSON-PATCH+JSON", JSON_PATCH),
])
def test_patch_style(content_type: str, style: str) -> None:
    assert patch_style(content_type) == style


@pytest.mark.parametrize("content_type", [
    None, "", "text/plain", "application/xml", "application/json-patch", "application/merge-patch",
    "application/jsonx", "multipart/form-data; boundary=x",
])
def test_other_media_types_are_unsupported(content_type: str | None) -> None:
    with pytest.raises(UnsupportedMediaType) as caught:
        patch_style(content_type)
    assert caught.value.status == 415
    assert MERGE_PATCH in caught.value.message
    assert JSON_PATCH in caught.value.message


def test_unsupported_media_type_is_named_without_parameters() -> None:
    with pytest.raises(UnsupportedMediaType, match="got 'text/plain'"):
        patch_style("text/plain; charset=utf-8")


# ------------------------------------------------------------------ merge patch (RFC 7396)

# The examples of RFC 7396, appendix A.
RFC_7396_EXAMPLES: list[tuple[Any, Any, Any]] = [
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    (["a", "b"], ["c", "d"], ["c", "d"]),
    ({"a": "b"}, ["c"], ["c"]),
    ({"a": "foo"}, None, None),
    ({"a": "foo"}, "bar", "bar"),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
]


@pytest.mark.parametrize(("target", "patch", "expected"), RFC_7396_EXAMPLES)
def test_merge_patch_rfc_7396_examples(target: Any, patch: Any, expected: Any) -> None:
    assert merge_patch(target, patch) == expected


def test_merge_patch_merges_nested_objects_and_replaces_arrays() -> None:
    current = {
        "name": "vpn", "state": "active",
        "serviceSpecification": {"id": "s1", "name": "IP-VPN", "version": "1"},
        "relatedParty": [{"id": "p1", "role": "customer"}, {"id": "p2", "role": "partner"}],
    }
    patch = {
        "state": "inactive", "description": None,
        "serviceSpecification": {"version": "2", "name": None},
        "relatedParty": [{"id": "p3", "role": "partner"}],
    }
    assert merge_patch(current, patch) == {
        "name": "vpn", "state": "inactive",
        "serviceSpecification": {"id": "s1", "version": "2"},
        "relatedParty": [{"id": "p3", "role": "partner"}],
    }


def test_merge_patch_changes_neither_input() -> None:
    current = {"a": {"b": [1, 2]}, "c": 1}
    patch = {"a": {"d": {"e": [3]}}, "c": None}
    before = (copy.deepcopy(current), copy.deepcopy(patch))
    result = merge_patch(current, patch)
    assert (current, patch) == before
    result["a"]["d"]["e"].append(4)
    assert patch == before[1]


def test_apply_patch_merge_needs_an_object() -> None:
    assert apply_patch(MERGE_PATCH, {"a": 1}, {"b": 2}) == {"a": 1, "b": 2}
    bodies: list[Any] = [[], "x", None, 3]
    for body in bodies:
        with pytest.raises(BadRequest, match="body is a JSON object"):
            apply_patch(MERGE_PATCH, {"a": 1}, body)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=4),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=3), children, max_size=3),
    max_leaves=10,
)


def _reference_merge(target: Any, patch: Any) -> Any:
    """RFC 7396 section 2, transcribed literally."""
    if isinstance(patch, dict):
        if not isinstance(target, dict):
            target = {}
        target = dict(target)
        for name, value in patch.items():
            if value is None:
                target.pop(name, None)
            else:
                target[name] = _reference_merge(target.get(name), value)
        return target
    return patch


@settings(max_examples=300, deadline=None, database=None)
@given(json_values, json_values)
def test_merge_patch_matches_the_rfc_algorithm(target: Any, patch: Any) -> None:
    original = copy.deepcopy(target)
    assert merge_patch(target, patch) == _reference_merge(copy.deepcopy(target), patch)
    assert target == original


# ------------------------------------------------------------------ json patch (RFC 6902)

DOCUMENT: dict[str, Any] = {"name": "vpn", "note": [{"text": "a"}, {"text": "b"}], "spec": {"id": "s1"}}


@pytest.mark.parametrize(("operations", "expected"), [
    ([{"op": "add", "path": "/state", "value": "active"}], {**DOCUMENT, "state": "active"}),
    ([{"op": "add", "path": "/note/-", "value": {"text": "c"}}],
     {**DOCUMENT, "note": [{"text": "a"}, {"text": "b"}, {"text": "c"}]}),
    ([{"op": "add", "path": "/note/0", "value": {"text": "z"}}],
     {**DOCUMENT, "note": [{"text": "z"}, {"text": "a"}, {"text": "b"}]}),
    ([{"op": "remove", "path": "/note/0"}], {**DOCUMENT, "note": [{"text": "b"}]}),
    ([{"op": "remove", "path": "/spec"}], {"name": "vpn", "note": [{"text": "a"}, {"text": "b"}]}),
    ([{"op": "replace", "path": "/spec/id", "value": "s2"}], {**DOCUMENT, "spec": {"id": "s2"}}),
    ([{"op": "move", "from": "/spec/id", "path": "/specId"}], {**DOCUMENT, "spec": {}, "specId": "s1"}),
    ([{"op": "copy", "from": "/name", "path": "/alias"}], {**DOCUMENT, "alias": "vpn"}),
    ([{"op": "test", "path": "/name", "value": "vpn"}, {"op": "replace", "path": "/name", "value": "x"}],
     {**DOCUMENT, "name": "x"}),
    ([], DOCUMENT),
])
def test_json_patch_operations(operations: list[dict[str, Any]], expected: dict[str, Any]) -> None:
    original = copy.deepcopy(DOCUMENT)
    assert json_patch(DOCUMENT, operations) == expected
    assert original == DOCUMENT


def test_apply_patch_json_patch() -> None:
    assert apply_patch(JSON_PATCH, {"a": 1}, [{"op": "remove", "path": "/a"}]) == {}


def test_failed_test_operation_is_a_conflict_and_changes_nothing() -> None:
    target = copy.deepcopy(DOCUMENT)
    operations = [
        {"op": "replace", "path": "/name", "value": "changed"},
        {"op": "test", "path": "/spec/id", "value": "other"},
    ]
    with pytest.raises(Conflict, match="test failed, nothing was changed") as caught:
        json_patch(target, operations)
    assert caught.value.status == 409
    assert target == DOCUMENT


@pytest.mark.parametrize("operations", [
    [{"op": "replace", "path": "/missing", "value": 1}],
    [{"op": "remove", "path": "/missing"}],
    [{"op": "remove", "path": "/note/9"}],
    [{"op": "add", "path": "/missing/deeper", "value": 1}],
    [{"op": "add", "path": "/a~2b", "value": 1}],
    [{"op": "add", "path": "name", "value": 1}],
    [{"op": "move", "from": "/spec", "path": "/spec/inner"}],
    [{"op": "copy", "from": "/nothing", "path": "/x"}],
    [{"op": "add", "path": "/note/x", "value": 1}],
])
def test_operations_that_cannot_apply_are_bad_requests(operations: list[dict[str, Any]]) -> None:
    target = copy.deepcopy(DOCUMENT)
    with pytest.raises(BadRequest) as caught:
        json_patch(target, operations)
    assert caught.value.status == 400
    assert target == DOCUMENT


@pytest.mark.parametrize("operations", [
    [{"op": "frobnicate", "path": "/name"}],
    [{"path": "/name", "value": 1}],
    [{"op": "add", "value": 1}],
    [{"op": "add", "path": "/x"}],
    [{"op": "move", "path": "/x"}],
    [1],
    ["add"],
    [None],
    [["op", "add"]],
    [{"op": ["add"], "path": "/x", "value": 1}],
])
def test_malformed_operations_are_bad_requests(operations: list[Any]) -> None:
    with pytest.raises(BadRequest):
        json_patch(copy.deepcopy(DOCUMENT), operations)


@pytest.mark.parametrize("body", [{"op": "add", "path": "/a", "value": 1}, "[]", None, 5])
def test_json_patch_body_must_be_a_list(body: Any) -> None:
    with pytest.raises(BadRequest, match="array of operations"):
        json_patch(copy.deepcopy(DOCUMENT), body)


@pytest.mark.parametrize("value", [[1], "text", None, 5])
def test_json_patch_must_leave_an_object(value: Any) -> None:
    with pytest.raises(BadRequest, match="must leave the resource a JSON object"):
        json_patch(copy.deepcopy(DOCUMENT), [{"op": "replace", "path": "", "value": value}])


operations = st.fixed_dictionaries(
    {"op": st.sampled_from(["add", "remove", "replace", "move", "copy", "test", "bogus"]),
     "path": st.sampled_from(["", "/", "/name", "/note/0", "/note/-", "/spec/id", "/x/y", "x", "/~2"])},
    optional={"value": json_values, "from": st.sampled_from(["", "/name", "/note/1", "/zz", "/spec"])},
)


@settings(max_examples=300, deadline=None, database=None)
@given(st.lists(operations | json_values, max_size=4) | json_values)
def test_json_patch_either_applies_or_refuses_cleanly(body: Any) -> None:
    target = copy.deepcopy(DOCUMENT)
    try:
        result = json_patch(target, body)
    except (BadRequest, Conflict):
        pass
    else:
        assert isinstance(result, dict)
    assert target == DOCUMENT


# ------------------------------------------------------------------ check_keys


@pytest.mark.parametrize("document", [
    {},
    {"name": "x", "@type": "Service", "relatedParty": [{"id": "p", "@referredType": "Organization"}]},
    {"a": {"_inner": 1, "b": [{"c_": 2}, [{"d": None}]]}},
    {"name": "$value.with.dots"},
    [1, "x", {"a": 1}],
    "scalar",
])
def test_check_keys_accepts_ordinary_documents(document: Any) -> None:
    check_keys(document)


@pytest.mark.parametrize(("document", "where"), [
    ({"$set": {"a": 1}}, "'(body)'"),
    ({"a": {"$gt": 1}}, "'a'"),
    ({"relatedParty": [{"id": "p"}, {"$where": "1"}]}, "'relatedParty[1]'"),
    ({"a": [[{"b": {"$x": 1}}]]}, "'a[0][0].b'"),
    ({"a.b": 1}, "'(body)'"),
    ({"note": [{"text.x": "y"}]}, "'note[0]'"),
    ({"": 1}, "'(body)'"),
    ({"a": {"": 1}}, "'a'"),
    ({"a": {"b\x00c": 1}}, "'a'"),
])
def test_check_keys_refuses_keys_mongodb_treats_specially(document: Any, where: str) -> None:
    with pytest.raises(BadRequest) as caught:
        check_keys(document)
    assert f"at {where} is not allowed" in caught.value.message


@pytest.mark.parametrize("key", ["_id", "_meta", "_"])
def test_check_keys_refuses_top_level_underscore_keys(key: str) -> None:
    with pytest.raises(BadRequest, match=f"'{key}' is not allowed: names must not start with '_'"):
        check_keys({"name": "x", key: {"owner": "me"}})


def test_check_keys_refuses_non_string_keys() -> None:
    with pytest.raises(BadRequest):
        check_keys({1: "x"})


# ------------------------------------------------------------------ normalize_dates


def test_normalize_dates_rewrites_date_times_at_every_depth(service_index: SchemaIndex) -> None:
    document = {
        "name": "2026-10-01T02:00:00+02:00",
        "startDate": "2026-10-01T02:00:00+02:00",
        "endDate": "2026-12-31",
        "note": [{"text": "2026-10-01", "date": "2026-10-01T00:00:00.123456Z"}, {"text": "no date"}],
        "feature": [{"featureRelationship": [{"validFor": {"startDateTime": "2026-01-01T01:00:00+01:00"}}]}],
    }
    original = copy.deepcopy(document)
    assert normalize_dates(document, service_index.date_time_paths) == {
        "name": "2026-10-01T02:00:00+02:00",
        "startDate": "2026-10-01T00:00:00.000Z",
        "endDate": "2026-12-31T00:00:00.000Z",
        "note": [{"text": "2026-10-01", "date": "2026-10-01T00:00:00.123Z"}, {"text": "no date"}],
        "feature": [{"featureRelationship": [{"validFor": {"startDateTime": "2026-01-01T00:00:00.000Z"}}]}],
    }
    assert document == original


def test_normalize_dates_leaves_non_strings_to_schema_validation() -> None:
    document = {"startDate": 5, "endDate": None, "note": [{"date": True}, {"date": {"x": "y"}}]}
    assert normalize_dates(document, frozenset({"startDate", "endDate", "note.date"})) == document


def test_normalize_dates_looks_through_arrays() -> None:
    document = {"note": [{"date": ["2026-10-01", "2026-10-01T01:00:00+01:00"]}]}
    assert normalize_dates(document, frozenset({"note.date"})) == {
        "note": [{"date": ["2026-10-01T00:00:00.000Z", "2026-10-01T00:00:00.000Z"]}]
    }


@pytest.mark.parametrize(("document", "path"), [
    ({"startDate": "soon"}, "startDate"),
    ({"note": [{"date": "2026-10-01T00:00:00Z"}, {"date": "2026-02-30"}]}, "note.date"),
    ({"endDate": "9999-12-31T23:00:00-05:00"}, "endDate"),
])
def test_normalize_dates_refuses_what_is_not_a_date_time(service_index: SchemaIndex, document: dict[str, Any],
                                                         path: str) -> None:
    with pytest.raises(BadRequest, match="is not a date-time") as caught:
        normalize_dates(document, service_index.date_time_paths)
    assert f"'{path}'" in caught.value.message
