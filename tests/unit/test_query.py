"""TMF630 query grammar and its translation into MongoDB queries (services/tmf/query.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.tmf.errors import BadRequest
from services.tmf.query import (
    MAX_ASSERTIONS,
    MAX_SORT_KEYS,
    MAX_VALUE_LENGTH,
    MAX_VALUES,
    PAGING_PARAMETERS,
    Condition,
    FilterPlan,
    Query,
    check_path,
    compile_regex,
    database_pattern,
    filter_plan,
    normalize_date_time,
    parse_filter_assertions,
    parse_query,
    projection,
    split_assertions,
)
from services.tmf.spec import SchemaIndex

MONGO_OPERATORS = frozenset(
    {"$and", "$or", "$in", "$nin", "$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$regex"}
)


def parse(raw: str, index: SchemaIndex, *, default_limit: int = 20, max_limit: int = 100,
          **kwargs: Any) -> Query:
    return parse_query(raw, index, default_limit=default_limit, max_limit=max_limit, **kwargs)


def plan(raw: str, index: SchemaIndex, regex_max_length: int = 128) -> FilterPlan:
    return filter_plan(parse(raw, index).conditions, index, regex_max_length)


def translate(raw: str, index: SchemaIndex, regex_max_length: int = 128) -> dict[str, Any]:
    """The database query of a filter the database runs whole."""
    translated = plan(raw, index, regex_max_length)
    assert translated.text_matches == [], raw
    return translated.query


def keys_of(node: Any) -> list[str]:
    """Every dictionary key anywhere in a MongoDB query."""
    found: list[str] = []
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            found.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


# ------------------------------------------------------------------ split_assertions


class TestSplitAssertions:
    def test_ampersand_and_semicolon_separate_assertions(self) -> None:
        assert split_assertions("state=active&name=vpn;category=CFS") == [
            ("state", "=", "active"), ("name", "=", "vpn"), ("category", "=", "CFS"),
        ]

    def test_empty_parts_are_ignored(self) -> None:
        assert split_assertions("&&state=active;;&") == [("state", "=", "active")]
        assert split_assertions("") == []

    def test_an_encoded_ampersand_stays_inside_a_value(self) -> None:
        # '&' is the URL's own structure: only a literal one separates parameters.
        assert split_assertions("name=a%26b&state=x") == [("name", "=", "a&b"), ("state", "=", "x")]

    def test_an_encoded_semicolon_separates_like_a_plain_one(self) -> None:
        assert split_assertions("name=a%3Bstate=x") == split_assertions("name=a;state=x") == [
            ("name", "=", "a"), ("state", "=", "x"),
        ]

    @pytest.mark.parametrize("raw", ["name=a%5C%3Bb", "name=a%5C;b", "name=a\\;b", "name=a\\%3Bb"])
    def test_an_escaped_semicolon_stays_inside_a_value(self, raw: str) -> None:
        assert split_assertions(raw) == [("name", "=", "a\\;b")]

    def test_plus_decodes_to_space_and_name_is_trimmed(self) -> None:
        assert split_assertions("name=ACME+VPN") == [("name", "=", "ACME VPN")]
        assert split_assertions("+state+=x") == [("state", "=", "x")]

    @pytest.mark.parametrize(("raw", "expected"), [
        ("startDate>2026", ("startDate", ">", "2026")),
        ("startDate>=2026", ("startDate", ">=", "2026")),
        ("startDate<2026", ("startDate", "<", "2026")),
        ("startDate<=2026", ("startDate", "<=", "2026")),
        ("state==active", ("state", "==", "active")),
        ("startDate%3E2026", ("startDate", ">", "2026")),
        ("startDate%3e%3d2026", ("startDate", ">=", "2026")),
        ("startDate%3C2026", ("startDate", "<", "2026")),
        ("startDate%3C%3D2026", ("startDate", "<=", "2026")),
        ("state%3Dactive", ("state", "=", "active")),
    ])
    def test_literal_operators_plain_and_url_encoded(self, raw: str, expected: tuple[str, str, str]) -> None:
        assert split_assertions(raw) == [expected]

    def test_value_keeps_everything_after_the_first_operator(self) -> None:
        assert split_assertions("name=a=b") == [("name", "=", "a=b")]
        assert split_assertions("name=>5") == [("name", "=", ">5")]
        assert split_assertions("name=") == [("name", "=", "")]

    @pytest.mark.parametrize("raw", ["state", "state!=active", "=active", "%3Dx"])
    def test_parts_without_a_usable_operator_are_refused(self, raw: str) -> None:
        with pytest.raises(BadRequest, match="is not a filter"):
            split_assertions(raw)

    def test_assertion_count_is_limited(self) -> None:
        assert len(split_assertions("&".join(["state=a"] * MAX_ASSERTIONS))) == MAX_ASSERTIONS
        with pytest.raises(BadRequest, match=f"at most {MAX_ASSERTIONS}"):
            split_assertions("&".join(["state=a"] * (MAX_ASSERTIONS + 1)))


# ------------------------------------------------------------------ parse_filter_assertions


class TestParseFilterAssertions:
    def test_plain_equality(self) -> None:
        assert parse_filter_assertions([("state", "=", "active")]) == [Condition("state", "eq", ["active"])]

    def test_comma_separated_values_are_alternatives(self) -> None:
        assert parse_filter_assertions([("state", "=", "active,inactive")]) == [
            Condition("state", "eq", ["active", "inactive"])
        ]

    def test_repeated_path_and_operator_are_grouped(self) -> None:
        conditions = parse_filter_assertions([("state", "=", "a"), ("name", "=", "n"), ("state", "==", "b,c")])
        assert conditions == [Condition("state", "eq", ["a", "b", "c"]), Condition("name", "eq", ["n"])]

    @pytest.mark.parametrize("operator", ["eq", "ne", "gt", "gte", "lt", "lte"])
    def test_operator_suffix(self, operator: str) -> None:
        assert parse_filter_assertions([(f"relatedParty.role.{operator}", "=", "x")]) == [
            Condition("relatedParty.role", operator, ["x"])
        ]

    @pytest.mark.parametrize(("literal", "operator"), [
        (">", "gt"), (">=", "gte"), ("<", "lt"), ("<=", "lte"), ("=", "eq"), ("==", "eq"),
    ])
    def test_literal_forms(self, literal: str, operator: str) -> None:
        assert parse_filter_assertions([("startDate", literal, "v")]) == [Condition("startDate", operator, ["v"])]

    def test_same_path_different_operators_stay_separate(self) -> None:
        conditions = parse_filter_assertions([("startDate.gte", "=", "a"), ("startDate", "<", "b")])
        assert conditions == [Condition("startDate", "gte", ["a"]), Condition("startDate", "lt", ["b"])]

    def test_regex_values_are_not_split_on_commas(self) -> None:
        assert parse_filter_assertions([("name.regex", "=", "a{1,3}")]) == [Condition("name", "regex", ["a{1,3}"])]

    def test_suffix_and_literal_operator_together_are_refused(self) -> None:
        with pytest.raises(BadRequest, match="not both"):
            parse_filter_assertions([("startDate.gt", ">", "2026")])

    @pytest.mark.parametrize("name", [
        "$where", "na$me", "relatedParty.$id", "state.$gt", "$or", "relatedParty..role", ".gt",
        "_id", "_meta.owner", "a b", "a" * 65, "1st", "state[0]",
    ])
    def test_paths_that_are_not_attribute_paths_are_refused(self, name: str) -> None:
        with pytest.raises(BadRequest, match="is not an attribute path"):
            parse_filter_assertions([(name, "=", "x")])

    def test_alternative_count_is_limited(self) -> None:
        ok = ",".join(["a"] * MAX_VALUES)
        assert len(parse_filter_assertions([("state", "=", ok)])[0].values) == MAX_VALUES
        with pytest.raises(BadRequest, match=f"at most {MAX_VALUES}"):
            parse_filter_assertions([("state", "=", ok), ("state", "=", "b")])


class TestCheckPath:
    @pytest.mark.parametrize("path", ["state", "relatedParty.role", "@type", "feature.featureCharacteristic.value"])
    def test_accepts_dotted_attribute_names(self, path: str) -> None:
        assert check_path(path) == path

    @pytest.mark.parametrize("path", ["", "a.", ".a", "a.$b", "$a", "a" * 257, "a\x00b", "a-b"])
    def test_refuses_anything_else(self, path: str) -> None:
        with pytest.raises(BadRequest):
            check_path(path)


# ------------------------------------------------------------------ normalize_date_time


class TestNormalizeDateTime:
    @pytest.mark.parametrize(("given", "expected"), [
        ("2026-10-01T00:00:00Z", "2026-10-01T00:00:00.000Z"),
        ("2026-10-01T00:00:00z", "2026-10-01T00:00:00.000Z"),
        ("2026-10-01T02:30:00+02:00", "2026-10-01T00:30:00.000Z"),
        ("2026-09-30T22:00:00-02:00", "2026-10-01T00:00:00.000Z"),
        ("2026-10-01T00:00:00.123456Z", "2026-10-01T00:00:00.123Z"),
        ("2026-10-01T00:00:00.9999+00:00", "2026-10-01T00:00:00.999Z"),
        ("2026-10-01T00:00:00", "2026-10-01T00:00:00.000Z"),
        ("2026-10-01", "2026-10-01T00:00:00.000Z"),
        ("  2026-10-01T00:00:00Z ", "2026-10-01T00:00:00.000Z"),
        ("0999-01-01T00:00:00Z", "0999-01-01T00:00:00.000Z"),
        ("2027-01-01T00:30:00+01:00", "2026-12-31T23:30:00.000Z"),
    ])
    def test_normalises_to_utc_milliseconds(self, given: str, expected: str) -> None:
        assert normalize_date_time(given) == expected

    @pytest.mark.parametrize("given", [
        "", "yesterday", "2026-13-01", "2026-02-30T00:00:00Z", "2026-10-01T25:00:00Z", "1e9",
        # Valid text whose UTC instant is outside what a datetime can hold.
        "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00",
    ])
    def test_refuses_what_is_not_a_date_time(self, given: str) -> None:
        with pytest.raises(BadRequest, match="is not a date-time") as caught:
            normalize_date_time(given, "filter value for 'startDate'")
        assert "filter value for 'startDate'" in caught.value.message
        assert caught.value.status == 400

    @settings(max_examples=300, deadline=None, database=None)
    @given(
        st.lists(
            st.tuples(
                st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
                st.integers(min_value=-23 * 60 - 59, max_value=23 * 60 + 59),
            ),
            min_size=1, max_size=6,
        )
    )
    def test_string_order_is_time_order(self, moments: list[tuple[datetime, int]]) -> None:
        aware = [naive.replace(tzinfo=timezone(timedelta(minutes=offset))) for naive, offset in moments]
        normalized = [normalize_date_time(moment.isoformat()) for moment in aware]
        for moment, text in zip(aware, normalized, strict=True):
            utc = moment.astimezone(UTC)
            assert text == (f"{utc.year:04d}-{utc.month:02d}-{utc.day:02d}T{utc.hour:02d}:"
                            f"{utc.minute:02d}:{utc.second:02d}.{utc.microsecond // 1000:03d}Z")
        by_text = sorted(range(len(aware)), key=lambda i: normalized[i])
        instants = [aware[i].astimezone(UTC).replace(microsecond=aware[i].microsecond // 1000 * 1000)
                    for i in by_text]
        assert instants == sorted(instants)


# ------------------------------------------------------------------ parse_query


class TestParseQuery:
    def test_defaults(self, service_index: SchemaIndex) -> None:
        assert parse(
            "", service_index, default_limit=7, max_limit=9
        ) == Query(conditions=[], fields=None, offset=0, limit=7, sort=[])

    def test_paging_and_filters_together(self, service_index: SchemaIndex) -> None:
        query = parse("offset=10&limit=5&fields=name,state&sort=-startDate,name&state=active", service_index)
        assert query == Query(
            conditions=[Condition("state", "eq", ["active"])], fields=["name", "state"],
            offset=10, limit=5, sort=[("startDate", -1), ("name", 1)],
        )

    def test_limit_up_to_the_maximum(self, service_index: SchemaIndex) -> None:
        assert parse("limit=100", service_index, max_limit=100).limit == 100
        assert parse("limit=0", service_index).limit == 0

    @pytest.mark.parametrize(("raw", "message"), [
        ("limit=-1", "must not be negative"),
        (f"limit={10**9}", "must not exceed 100"),
        ("limit=101", "must not exceed 100"),
        ("limit=ten", "whole number"),
        ("limit=", "whole number"),
        ("limit=1.5", "whole number"),
        ("offset=-3", "must not be negative"),
        ("offset=x", "whole number"),
        ("offset=99999999999999999999", "must not exceed 2147483647"),
        ("offset=2147483648", "must not exceed 2147483647"),
        (f"offset=1{'0' * 5000}", "must not exceed 2147483647"),
        (f"limit=1{'0' * 5000}", "must not exceed 100"),
        ("offset=1_000", "whole number"),
        ("offset=%2B5", "whole number"),
        ("offset=%E0%A5%A7", "whole number"),  # a Devanagari digit one
    ])
    def test_bad_paging_values(self, service_index: SchemaIndex, raw: str, message: str) -> None:
        with pytest.raises(BadRequest, match=message):
            parse(raw, service_index, max_limit=100)

    @pytest.mark.parametrize("raw", [
        "limit=1&limit=2", "offset=1;offset=1", "fields=name&fields=state", "sort=name&sort=state",
    ])
    def test_duplicate_paging_parameters_are_refused(self, service_index: SchemaIndex, raw: str) -> None:
        with pytest.raises(BadRequest, match="more than once"):
            parse(raw, service_index)

    def test_largest_offset_is_accepted(self, service_index: SchemaIndex) -> None:
        assert parse("offset=2147483647", service_index).offset == 2**31 - 1
        assert parse("offset=007", service_index).offset == 7

    def test_default_limit_above_the_maximum_is_refused(self, service_index: SchemaIndex) -> None:
        with pytest.raises(BadRequest, match="must not exceed"):
            parse("", service_index, default_limit=200, max_limit=100)

    def test_fields(self, service_index: SchemaIndex) -> None:
        assert parse("fields=name,%20state,", service_index).fields == ["name", "state"]
        assert parse("fields=none", service_index).fields == []
        assert parse("fields=", service_index).fields is None

    @pytest.mark.parametrize("raw", ["fields=colour", "fields=name,relatedParty.role", "fields=$where", "fields=_id"])
    def test_unknown_fields_are_refused(self, service_index: SchemaIndex, raw: str) -> None:
        with pytest.raises(BadRequest, match="fields names unknown attributes"):
            parse(raw, service_index)

    def test_sort(self, service_index: SchemaIndex) -> None:
        assert parse("sort=-startDate,%2Bname,relatedParty.role", service_index).sort == [
            ("startDate", -1), ("name", 1), ("relatedParty.role", 1),
        ]
        assert parse("sort=", service_index).sort == []

    @pytest.mark.parametrize("raw", ["sort=colour", "sort=-relatedParty.colour"])
    def test_unknown_sort_attribute_is_refused(self, service_index: SchemaIndex, raw: str) -> None:
        with pytest.raises(BadRequest, match="cannot sort on"):
            parse(raw, service_index)

    @pytest.mark.parametrize("raw", ["sort=$natural", "sort=-_id", "sort=name,,state", "sort=a.$b"])
    def test_sort_keys_must_be_attribute_paths(self, service_index: SchemaIndex, raw: str) -> None:
        with pytest.raises(BadRequest, match="is not an attribute path"):
            parse(raw, service_index)

    def test_sort_key_count_is_limited(self, service_index: SchemaIndex) -> None:
        names = ["name", "state", "category", "serviceType", "startDate", "endDate"]
        assert len(parse("sort=" + ",".join(names[:MAX_SORT_KEYS]), service_index).sort) == MAX_SORT_KEYS
        with pytest.raises(BadRequest, match=f"at most {MAX_SORT_KEYS}"):
            parse("sort=" + ",".join(names[: MAX_SORT_KEYS + 1]), service_index)

    def test_reserved_parameters_are_not_filters(self, service_index: SchemaIndex) -> None:
        reserved = PAGING_PARAMETERS | {"depth"}
        assert parse("depth=3&state=a", service_index, reserved=reserved).conditions == [
            Condition("state", "eq", ["a"])
        ]
        # Without the reservation, depth is an ordinary (and here unknown) attribute.
        assert parse("depth=3", service_index).conditions == [Condition("depth", "eq", ["3"])]

    def test_paging_names_with_other_operators_are_filters(self, service_index: SchemaIndex) -> None:
        query = parse("limit>5", service_index)
        assert query.limit == 20
        assert query.conditions == [Condition("limit", "gt", ["5"])]
        with pytest.raises(BadRequest, match="'limit' is not an attribute of Service"):
            filter_plan(query.conditions, service_index)


# ------------------------------------------------------------------ filter_plan


class TestTranslation:
    def test_no_conditions_is_an_empty_query(self, service_index: SchemaIndex) -> None:
        assert translate("limit=3", service_index) == {}

    @pytest.mark.parametrize(("raw", "expected"), [
        ("state=active", {"state": "active"}),
        ("state==active", {"state": "active"}),
        ("state.eq=active", {"state": "active"}),
        ("state=active,terminated", {"state": {"$in": ["active", "terminated"]}}),
        ("state=active&state=terminated", {"state": {"$in": ["active", "terminated"]}}),
        ("state=active;state=terminated", {"state": {"$in": ["active", "terminated"]}}),
        ("state.ne=active", {"state": {"$ne": "active"}}),
        ("state.ne=active,terminated", {"state": {"$nin": ["active", "terminated"]}}),
        ("relatedParty.role=partner", {"relatedParty.role": "partner"}),
        ("relatedParty.role=customer,partner", {"relatedParty.role": {"$in": ["customer", "partner"]}}),
        ("serviceSpecification.id=spec-1", {"serviceSpecification.id": "spec-1"}),
        ("%40type=Service", {"@type": "Service"}),
        ("name=ACME+VPN", {"name": "ACME VPN"}),
        ("name=a%26b", {"name": "a&b"}),
        ("name=", {"name": ""}),
        ("name=%24where", {"name": "$where"}),
        ("name={\"$gt\":\"\"}", {"name": '{"$gt":""}'}),
        ("id=abc", {"id": "abc"}),
    ])
    def test_equality_and_alternatives(self, service_index: SchemaIndex, raw: str, expected: dict[str, Any]) -> None:
        assert translate(raw, service_index) == expected

    @pytest.mark.parametrize(("raw", "operator"), [
        ("startDate.gt=2026-10-01T02:00:00%2B02:00", "$gt"),
        ("startDate.gte=2026-10-01T00:00:00Z", "$gte"),
        ("startDate.lt=2026-10-01T00:00:00Z", "$lt"),
        ("startDate.lte=2026-10-01", "$lte"),
        ("startDate>2026-10-01T00:00:00Z", "$gt"),
        ("startDate>=2026-10-01T00:00:00Z", "$gte"),
        ("startDate<2026-10-01T00:00:00Z", "$lt"),
        ("startDate<=2026-10-01T00:00:00Z", "$lte"),
        ("startDate%3E2026-10-01T00:00:00Z", "$gt"),
        ("startDate%3E%3D2026-10-01T00:00:00Z", "$gte"),
        ("startDate%3C2026-10-01T00:00:00Z", "$lt"),
        ("startDate%3C%3D2026-10-01T00:00:00Z", "$lte"),
    ])
    def test_comparison_operators(self, service_index: SchemaIndex, raw: str, operator: str) -> None:
        assert translate(raw, service_index) == {"startDate": {operator: "2026-10-01T00:00:00.000Z"}}

    def test_equality_on_a_date_time_is_normalised(self, service_index: SchemaIndex) -> None:
        assert translate("startDate=2026-10-01T02:00:00.5%2B02:00", service_index) == {
            "startDate": "2026-10-01T00:00:00.500Z"
        }
        assert translate("note.date.ne=2026-10-01", service_index) == {
            "note.date": {"$ne": "2026-10-01T00:00:00.000Z"}
        }

    def test_comparison_with_alternatives_is_an_or(self, service_index: SchemaIndex) -> None:
        assert translate("startDate.gt=2026-01-01,2027-01-01", service_index) == {"$or": [
            {"startDate": {"$gt": "2026-01-01T00:00:00.000Z"}},
            {"startDate": {"$gt": "2027-01-01T00:00:00.000Z"}},
        ]}

    def test_several_conditions_are_an_and_in_request_order(self, service_index: SchemaIndex) -> None:
        raw = "state=active&startDate.gte=2026-01-01&startDate<2027-01-01&relatedParty.role=partner"
        assert translate(raw, service_index) == {"$and": [
            {"state": "active"},
            {"startDate": {"$gte": "2026-01-01T00:00:00.000Z"}},
            {"startDate": {"$lt": "2027-01-01T00:00:00.000Z"}},
            {"relatedParty.role": "partner"},
        ]}

    def test_booleans(self, service_index: SchemaIndex) -> None:
        assert translate("isBundle=true", service_index) == {"isBundle": True}
        assert translate("isBundle=false", service_index) == {"isBundle": False}
        assert translate("isBundle.ne=true", service_index) == {"isBundle": {"$ne": True}}
        assert translate("feature.isEnabled=true,false", service_index) == {"feature.isEnabled": {"$in": [True, False]}}

    @pytest.mark.parametrize("value", ["yes", "True", "1", ""])
    def test_boolean_needs_true_or_false(self, service_index: SchemaIndex, value: str) -> None:
        with pytest.raises(BadRequest, match="'isBundle' is a boolean"):
            translate(f"isBundle={value}", service_index)

    @pytest.mark.parametrize(("raw", "expected"), [
        ("serviceCharacteristic.value=fast", {"serviceCharacteristic.value": "fast"}),
        ("serviceCharacteristic.value=5", {"serviceCharacteristic.value": {"$in": ["5", 5.0]}}),
        ("serviceCharacteristic.value=true", {"serviceCharacteristic.value": {"$in": ["true", True]}}),
        ("serviceCharacteristic.value.ne=2.5", {"serviceCharacteristic.value": {"$nin": ["2.5", 2.5]}}),
        ("serviceCharacteristic.value.gt=7", {"$or": [
            {"serviceCharacteristic.value": {"$gt": "7"}}, {"serviceCharacteristic.value": {"$gt": 7.0}},
        ]}),
    ])
    def test_untyped_values_match_every_spelling(self, service_index: SchemaIndex, raw: str,
                                                 expected: dict[str, Any]) -> None:
        assert translate(raw, service_index) == expected

    def test_numbers_and_integers(self, toy_index: SchemaIndex) -> None:
        assert translate("count=5", toy_index) == {"count": 5}
        assert isinstance(translate("count=5", toy_index)["count"], int)
        assert translate("count.gte=-2", toy_index) == {"count": {"$gte": -2}}
        assert translate("count=1,2", toy_index) == {"count": {"$in": [1, 2]}}
        assert translate("ratio<0.25", toy_index) == {"ratio": {"$lt": 0.25}}
        assert translate("ratio=1e3", toy_index) == {"ratio": 1000.0}
        assert translate("child.size=3", toy_index) == {"child.size": 3}
        assert translate("children.size.ne=3", toy_index) == {"children.size": {"$ne": 3}}
        assert translate("label=x", toy_index) == {"label": "x"}
        assert translate("tags=a,b", toy_index) == {"tags": {"$in": ["a", "b"]}}
        assert translate("children.seen>2026-01-01", toy_index) == {
            "children.seen": {"$gt": "2026-01-01T00:00:00.000Z"}
        }

    @pytest.mark.parametrize(("raw", "message"), [
        ("count=5.5", "'count' is an integer"),
        ("count=five", "'count' is an integer"),
        ("count=", "'count' is an integer"),
        ("ratio=abc", "'ratio' is a number"),
        ("ratio=nan", "finite number"),
        ("ratio=inf", "finite number"),
        ("ratio=-Infinity", "finite number"),
        ("flag=1", "'flag' is a boolean"),
        ("child=x", "'child' is an object; filter on one of its attributes"),
        ("children=x", "'children' is an object"),
    ])
    def test_values_that_do_not_fit_the_type(self, toy_index: SchemaIndex, raw: str, message: str) -> None:
        with pytest.raises(BadRequest, match=message):
            translate(raw, toy_index)

    @pytest.mark.parametrize("raw", [
        "startDate=yesterday", "startDate.gt=2026-13-01", "startDate>2026-10-01T00:00:00Z,soon",
        "note.date=0001-01-01T00:00:00%2B01:00",
    ])
    def test_malformed_dates_are_refused(self, service_index: SchemaIndex, raw: str) -> None:
        with pytest.raises(BadRequest, match="is not a date-time"):
            translate(raw, service_index)

    @pytest.mark.parametrize("raw", [
        "colour=red", "relatedParty.colour=red", "serviceSpecification.colour=x", "href=x",
    ])
    def test_unknown_attributes_are_refused(self, service_index: SchemaIndex, raw: str) -> None:
        with pytest.raises(BadRequest, match="not an attribute of Service") as caught:
            translate(raw, service_index)
        assert caught.value.status == 400

    def test_objects_cannot_be_compared_whole(self, service_index: SchemaIndex) -> None:
        with pytest.raises(BadRequest, match=r"filter on one of its attributes, e\.g\. relatedParty\.id"):
            translate("relatedParty=x", service_index)

    @pytest.mark.parametrize(("raw", "operator", "head"), [
        ("state.foo=x", ".foo", "state"),
        ("startDate.after=2026-01-01", ".after", "startDate"),
        ("relatedParty.role.like=p", ".like", "relatedParty.role"),
        ("serviceCharacteristic.value.in=1", ".in", "serviceCharacteristic.value"),
    ])
    def test_unknown_operators_are_named(self, service_index: SchemaIndex, raw: str, operator: str,
                                         head: str) -> None:
        with pytest.raises(BadRequest) as caught:
            translate(raw, service_index)
        assert f"unknown filter operator '{operator}' on '{head}'" in caught.value.message
        assert ".gte" in caught.value.message

    @pytest.mark.parametrize("raw", [
        "$where=1", "%24where=1", "na$me=x", "state.$ne=x", "relatedParty.$id=x", "$or=x",
        "relatedParty.%24role=x", "state%2E%24gt=x", "sort=$natural", "fields=$where",
    ])
    def test_dollar_anywhere_in_a_name_is_refused(self, service_index: SchemaIndex, raw: str) -> None:
        with pytest.raises(BadRequest):
            translate(raw, service_index)

    def test_value_length_is_limited(self, service_index: SchemaIndex) -> None:
        assert translate("name=" + "a" * MAX_VALUE_LENGTH, service_index) == {"name": "a" * MAX_VALUE_LENGTH}
        with pytest.raises(BadRequest, match=f"longer than {MAX_VALUE_LENGTH}"):
            translate("name=" + "a" * (MAX_VALUE_LENGTH + 1), service_index)


class TestRegex:
    def test_patterns_without_repetition_go_to_the_database(self, service_index: SchemaIndex) -> None:
        assert translate("relatedParty.role.regex=part", service_index) == {"relatedParty.role": {"$regex": "part"}}
        assert translate("serviceCharacteristic.value.regex=^1", service_index) == {
            "serviceCharacteristic.value": {"$regex": "^1"}
        }
        # '$' is the end of the text, as in RE2 (a backtracking '$' also matches before a final newline).
        assert translate("name.regex=%5EACME%20VPN%24", service_index) == {"name": {"$regex": "^ACME VPN\\z"}}

    def test_other_patterns_are_matched_here(self, service_index: SchemaIndex) -> None:
        translated = plan("state=active&name.regex=%5EACME.*VPN%24", service_index)
        assert translated.query == {"state": "active"}
        assert translated.paths == ["name"]
        assert translated.matches({"state": "active", "name": "ACME north VPN"})
        assert not translated.matches({"state": "active", "name": "ACME north VPN2"})
        assert not translated.matches({"state": "active"})

    def test_text_matches_look_through_arrays_and_ignore_other_types(self, service_index: SchemaIndex) -> None:
        translated = plan("relatedParty.role.regex=^sup(plier)%3F$", service_index)
        assert translated.query == {}
        assert translated.matches({"relatedParty": [{"role": "customer"}, {"role": "supplier"}]})
        assert not translated.matches({"relatedParty": [{"role": "customer"}, {"role": 5}]})
        numbers = plan("serviceCharacteristic.value.regex=1%2B", service_index)
        assert not numbers.matches({"serviceCharacteristic": [{"value": 11}]})
        assert numbers.matches({"serviceCharacteristic": [{"value": 11}, {"value": "11"}]})

    def test_regex_commas_stay_in_the_pattern(self, service_index: SchemaIndex) -> None:
        [match] = plan("name.regex=a%7B1,3%7D", service_index).text_matches
        assert [p.pattern for p in match.patterns] == ["a{1,3}"]

    def test_several_regexes_are_an_or(self, service_index: SchemaIndex) -> None:
        assert translate("name.regex=^a&name.regex=b$", service_index) == {
            "$or": [{"name": {"$regex": "^a"}}, {"name": {"$regex": "b\\z"}}]
        }
        # One alternative the database must not run: the whole alternative is matched here.
        translated = plan("name.regex=^a&name.regex=b%2B$", service_index)
        assert translated.query == {}
        assert translated.matches({"name": "ax"}) and translated.matches({"name": "xbb"})
        assert not translated.matches({"name": "xba"})

    @pytest.mark.parametrize(("raw", "kind"), [
        ("flag.regex=t", "boolean"), ("count.regex=1", "integer"), ("ratio.regex=1", "number"),
        ("child.regex=x", "object"),
    ])
    def test_regex_only_on_text(self, toy_index: SchemaIndex, raw: str, kind: str) -> None:
        with pytest.raises(BadRequest, match=f"only applies to text attributes; '.*' is {kind}"):
            translate(raw, toy_index)

    def test_regex_on_date_time_text_is_allowed(self, service_index: SchemaIndex) -> None:
        # date-time attributes are strings in the schema and stored as normalised text.
        assert translate("endDate.regex=%5E2026", service_index) == {"endDate": {"$regex": "^2026"}}

    def test_length_limit(self, service_index: SchemaIndex) -> None:
        assert translate("name.regex=" + "a" * 128, service_index) == {"name": {"$regex": "a" * 128}}
        with pytest.raises(BadRequest, match="longer than 128"):
            translate("name.regex=" + "a" * 129, service_index)
        with pytest.raises(BadRequest, match="longer than 10"):
            translate("name.regex=" + "a" * 11, service_index, regex_max_length=10)

    @pytest.mark.parametrize("pattern", [
        "^ACME", "VPN$", "ab|cd", "(ab)+", "(?:ab)+", "(?P<site>ab)+", "[a-z]+", "[(]a+[)]+",
        "(?i)acme", r"\d{3}-\d+", "[]a](b)+", "[^]a](b)+", "(a)(b+)", "(a+)b", "a.*b.*c", "[[a]",
        r"\(a+\)+", "(?i:ab)+", "(ab){2}", r"\Q.\E",
        # Nested repetition is harmless in an engine that does not backtrack.
        "(a+)+", "(a*)*", "(a|aa)*", "(a+){2,}", "(a+)+?", "(a{1,3})+", r"(\d+)*", "x(a+)+y",
    ])
    def test_fine_patterns_are_accepted(self, pattern: str) -> None:
        assert compile_regex(pattern, "name", 128).pattern == pattern

    @pytest.mark.parametrize(("pattern", "construct"), [
        (r"(a)\1", r"a back-reference \1"), (r"(?P<x>a)(?P=x)", "a back-reference (?P=name)"),
        (r"\k<x>", r"a back-reference \k<name>"), (r"(a)\g<1>", r"a back-reference \g"),
        ("(?=a)a", "a look-ahead"), ("(?!a)b", "a negative look-ahead"), ("(?<=a)b", "a look-behind"),
        ("(?<!a)b", "a negative look-behind"), ("a++", "a possessive quantifier"), ("(?R)", "a recursion"),
        ("(?#[)(a+)+", "a comment"), ("(?x)#[\n(a+)+", "the verbose flag x"), ("(?x:(a+) +)", "the verbose flag x"),
        ("(?ix)a", "the verbose flag x"),
    ])
    def test_what_needs_backtracking_is_refused_by_name(self, pattern: str, construct: str) -> None:
        with pytest.raises(BadRequest) as caught:
            compile_regex(pattern, "name", 128)
        assert f"regex for 'name' uses {construct}" in caught.value.message
        assert "linear time" in caught.value.message

    def test_text_that_is_not_unicode(self, service_index: SchemaIndex) -> None:
        with pytest.raises(BadRequest, match="not valid Unicode"):
            compile_regex("a\ud800", "name", 128)
        [match] = plan("name.regex=a%2B", service_index).text_matches
        assert match.matches({"name": "\ud800aa"})
        assert not match.matches({"name": "\ud800"})

    @pytest.mark.parametrize("pattern", ["(", "a)", "[a", "*a", "a{2,1}", "\\", r"a\Z"])
    def test_invalid_patterns_are_refused(self, pattern: str) -> None:
        with pytest.raises(BadRequest, match="is invalid"):
            compile_regex(pattern, "name", 128)


class TestDatabasePattern:
    @pytest.mark.parametrize(("pattern", "expected"), [
        ("acme", "acme"), ("^ACME$", "^ACME\\z"), ("a.c", "a.c"), ("[a-z]x", "[a-z]x"), ("[^]a]", "[^]a]"),
        (r"\.\$\[", r"\.\$\["), (r"a\nb", r"a\nb"), ("é", "é"), ("a}", "a}"),
        # A leading or trailing '.*' adds nothing to a search.
        (".*acme", "acme"), ("acme.*", "acme"), (".*?acme.*?", "acme"), (".*.*x.*", "x"), (".*", ""),
        ("", ""),
    ])
    def test_patterns_that_cannot_backtrack(self, pattern: str, expected: str) -> None:
        assert database_pattern(pattern) == expected

    @pytest.mark.parametrize("pattern", [
        "a+", "a*", "a?", "a{2}", "a|b", "(a)", "(?i)a", "^.*a", "a.*b", ".+a",
        # Their meaning differs between RE2 and the database's engines.
        r"\d", r"\w", r"\s", r"\b", r"\pL", "[[:alpha:]]", r"[\d]", r"\x41", r"\Aa", r"a\z",
    ])
    def test_everything_else_is_matched_by_us(self, pattern: str) -> None:
        assert database_pattern(pattern) is None


# ------------------------------------------------------------------ projection


class TestProjection:
    def test_everything(self) -> None:
        assert projection(None) is None

    def test_none_keeps_the_identity(self) -> None:
        assert projection([]) == {"id": 1, "@type": 1}

    def test_selected_fields(self) -> None:
        assert projection(["name", "state"]) == {"id": 1, "@type": 1, "name": 1, "state": 1}

    def test_href_is_never_projected(self) -> None:
        # href is computed from the public URL, not stored.
        assert projection(["href", "name"]) == {"id": 1, "@type": 1, "name": 1}


# ------------------------------------------------------------------ properties

_NAMES = st.sampled_from([
    "name", "state", "startDate", "isBundle", "relatedParty.role", "serviceCharacteristic.value",
    "note.date", "limit", "offset", "sort", "fields", "href", "id", "$where", "a$b", "_id",
    "relatedParty", "%24gt", "state.%24ne", "feature.isEnabled",
])
_SUFFIXES = st.sampled_from(["", ".eq", ".ne", ".gt", ".gte", ".lt", ".lte", ".regex", ".foo", ".$gt", ".$where"])
_LITERALS = st.sampled_from(["=", "==", ">", ">=", "<", "<=", "%3E", "%3E%3D", "%3C", "%3D", "!="])
_VALUES = st.text(max_size=24) | st.sampled_from([
    "2026-10-01", "2026-10-01T00:00:00Z", "true", "5", "-1", "1e999", "nan", "(a+)+", "$gt", "%24ne",
    '{"$gt": ""}', "$where,$or", "a,b,c", "^ACME", "0001-01-01T00:00:00+01:00",
])
_ASSERTIONS = st.builds(
    lambda name, suffix, literal, value, encode: name + suffix + literal + (quote(value, safe="") if encode else value),
    _NAMES, _SUFFIXES, _LITERALS, _VALUES, st.booleans(),
)
_QUERIES = st.lists(_ASSERTIONS, max_size=6).map("&".join) | st.text(max_size=80)


@settings(max_examples=600, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(raw=_QUERIES)
def test_no_client_string_becomes_an_operator(service_index: SchemaIndex, raw: str) -> None:
    try:
        query = parse_query(raw, service_index, default_limit=20, max_limit=100)
        mongo = filter_plan(query.conditions, service_index).query
    except BadRequest:
        return
    for key in keys_of(mongo):
        if key.startswith("$"):
            assert key in MONGO_OPERATORS, (raw, mongo)
        else:
            # Any other key is an attribute path the API document defines.
            assert service_index.attribute_type(key) is not None, (raw, mongo)
    assert 0 <= query.limit <= 100
    assert query.offset >= 0


class TestSeparators:
    """Clients that percent-encode ',' mean the same as clients that do not; a backslash makes a
    separator literal."""

    @pytest.mark.parametrize("raw", ["state=active,designed", "state=active%2Cdesigned",
                                     "state=active%2cdesigned", "state%3Dactive%2Cdesigned"])
    def test_encoded_commas_split_alternatives(self, raw: str) -> None:
        assert parse_filter_assertions(split_assertions(raw)) == [Condition("state", "eq", ["active", "designed"])]

    @pytest.mark.parametrize("raw", ["name=ACME%5C%2C%20Inc.,Other", "name=ACME\\%2C%20Inc.%2COther",
                                     "name=ACME\\,+Inc.,Other"])
    def test_escaped_commas_stay_inside_a_value(self, raw: str) -> None:
        [condition] = parse_filter_assertions(split_assertions(raw))
        assert condition.values == ["ACME, Inc.", "Other"]

    def test_backslash_escapes(self) -> None:
        [condition] = parse_filter_assertions(split_assertions(r"name=a\\,b\;c,C:\dir"))
        assert condition.values == ["a\\", "b;c", "C:\\dir"]

    def test_a_regex_keeps_its_escapes(self) -> None:
        assert parse_filter_assertions(split_assertions(r"name.regex=a\,b\;c%5C%5Cd")) == [
            Condition("name", "regex", [r"a\,b\;c\\d"])
        ]

    def test_fields_and_sort_take_encoded_commas(self, service_index: SchemaIndex) -> None:
        query = parse("fields=name%2Cstate&sort=-name%2CstartDate", service_index)
        assert query.fields == ["name", "state"]
        assert query.sort == [("name", -1), ("startDate", 1)]

    @settings(max_examples=300, deadline=None, database=None)
    @given(raw=st.lists(st.sampled_from(["a", "=", ",", ";", "&", "%2C", "%00", "%01", "%1F", "%7F", "%0a",
                                         "\x00", "\x07", "\n", "\\", "fields", "sort", "name", "state"]),
                        max_size=30).map("".join) | st.text(max_size=40))
    def test_messages_never_hold_control_characters(self, service_index: SchemaIndex, raw: str) -> None:
        try:
            query = parse(raw, service_index)
            filter_plan(query.conditions, service_index)
        except BadRequest as refused:
            assert not any(ord(c) < 0x20 or ord(c) == 0x7F for c in refused.message), refused.message

    def test_the_old_placeholder_never_shows(self, service_index: SchemaIndex) -> None:
        with pytest.raises(BadRequest) as caught:
            parse("fields=name%2Cnosuch", service_index)
        assert "['nosuch']" in caught.value.message
        assert "\x00" not in caught.value.message


def test_nul_in_query_is_refused():
    import pytest

    from services.tmf.errors import BadRequest
    from services.tmf.query import split_assertions

    with pytest.raises(BadRequest):
        split_assertions("name=a%00b")
