"""Party scoping: where a request's scope comes from (services/tmf/scope.py) and what it lets a
query see (AccessScope.restrict in services/tmf/repository.py)."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.requests import Request

from services.tmf.errors import BadRequest
from services.tmf.repository import META, OPERATOR, AccessScope
from services.tmf.scope import scope_of
from services.tmf.settings import Settings

TRUSTING = Settings(trust_party_headers=True)
DISTRUSTING = Settings(trust_party_headers=False)


def make_request(headers: dict[str, str] | None = None) -> Request:
    scope: dict[str, Any] = {
        "type": "http", "method": "GET", "path": "/tmf-api/serviceInventory/v4/service",
        "raw_path": b"/tmf-api/serviceInventory/v4/service", "query_string": b"", "root_path": "",
        "scheme": "http", "server": ("testserver", 80), "client": ("127.0.0.1", 1234),
        "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()],
    }
    return Request(scope)


# ------------------------------------------------------------------ scope_of


@pytest.mark.parametrize("headers", [
    {}, {"X-Party-Id": "partner-a"}, {"X-Party-Id": "partner-a", "X-Party-Role": "partner"},
    {"X-Party-Id": "bad id with spaces"}, {"X-Party-Role": "anonymous"},
])
def test_headers_are_ignored_unless_trusted(headers: dict[str, str]) -> None:
    scope = scope_of(make_request(headers), DISTRUSTING)
    assert scope == OPERATOR
    assert scope.unrestricted


def test_default_settings_do_not_trust_headers() -> None:
    assert scope_of(make_request({"X-Party-Id": "partner-a"}), Settings()) == OPERATOR


def test_trusted_party_defaults_to_partner_role() -> None:
    scope = scope_of(make_request({"X-Party-Id": "partner-a"}), TRUSTING)
    assert scope == AccessScope("partner-a", "partner")
    assert not scope.unrestricted


def test_trusted_party_and_role() -> None:
    assert scope_of(make_request({"X-Party-Id": "org:acme.1", "X-Party-Role": "customer"}), TRUSTING) == AccessScope(
        "org:acme.1", "customer"
    )


def test_trusted_operator() -> None:
    assert scope_of(make_request({"X-Party-Role": "operator"}), TRUSTING) == OPERATOR
    assert scope_of(make_request({"X-Party-Id": "noc", "X-Party-Role": "operator"}), TRUSTING).unrestricted


def test_trusted_request_without_a_party_is_restricted() -> None:
    scope = scope_of(make_request(), TRUSTING)
    assert scope.party_id is None
    assert not scope.unrestricted


@pytest.mark.parametrize("headers", [
    {"X-Party-Id": "has space"},
    {"X-Party-Id": "$where"},
    {"X-Party-Id": "-leading-dash"},
    {"X-Party-Id": "x" * 129},
    {"X-Party-Id": "ok", "X-Party-Role": "role with space"},
    {"X-Party-Id": "ok", "X-Party-Role": "{\"$ne\": 1}"},
])
def test_trusted_headers_must_be_plain_identifiers(headers: dict[str, str]) -> None:
    with pytest.raises(BadRequest, match="must be plain identifiers"):
        scope_of(make_request(headers), TRUSTING)


# ------------------------------------------------------------------ AccessScope.restrict


def test_operator_is_unrestricted() -> None:
    query = {"state": "active"}
    restricted = OPERATOR.restrict(query)
    assert restricted == {"state": "active"}
    restricted["x"] = 1
    assert query == {"state": "active"}
    assert OPERATOR.restrict({}) == {}


def test_partner_sees_what_it_is_party_to_or_created() -> None:
    partner = AccessScope("partner-a", "partner")
    visible = {"$or": [{"relatedParty.id": "partner-a"}, {f"{META}.owner": "partner-a"}]}
    assert partner.restrict({}) == visible
    assert partner.restrict({"state": "active"}) == {"$and": [{"state": "active"}, visible]}


def test_restriction_wraps_client_or_instead_of_merging_with_it() -> None:
    partner = AccessScope("partner-a", "partner")
    client_or = {"$or": [{"state": "active"}, {"state": "inactive"}]}
    restricted = partner.restrict(client_or)
    assert restricted["$and"][0] == client_or
    assert restricted["$and"][1]["$or"][0] == {"relatedParty.id": "partner-a"}
