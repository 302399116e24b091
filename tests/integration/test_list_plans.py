"""Lists on the database: the indexes the service declares serve the filters lists run most,
for the operator and for a party-scoped caller (explain, where the server answers it), and the
totals and statuses of pages when no count, or a cached one, gives the total."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from pymongo import MongoClient
from pymongo.errors import OperationFailure
from starlette.testclient import TestClient

from services.tmf.call import Call
from services.tmf.query import filter_plan, parse_query
from services.tmf.repository import Visibility
from services.tmf.settings import Settings
from services.tmf.spec import SchemaIndex, load_document
from tests.conftest import INVENTORY
from tests.support.auth import bearer

SERVICE = f"{INVENTORY}/service"
# serverInfo.host of the embedded server (SecantusDB) in an explain answer.
EMBEDDED_HOST = "secantus"
PARTNER = Call("partner-1", "partner")
OPERATOR = Call("operator", "operator")

# (list request filter, the leading key of the index that must serve it)
FILTERS = [
    ("state=active", "state"),
    ("category=CFS", "category"),
    ("serviceSpecification.id=spec-2", "serviceSpecification.id"),
    ("startDate.gte=2025-01-01T00:00:00Z", "startDate"),
    ("relatedParty.role=supplier", "relatedParty.role"),
    ("relatedParty.id=partner-1", "relatedParty.id"),
]


def service(i: int) -> dict[str, Any]:
    return {"name": f"s{i}", "state": ("active", "inactive", "designed")[i % 3], "category": ("CFS", "RFS")[i % 2],
            "serviceSpecification": {"id": f"spec-{i % 4}"}, "startDate": f"202{4 + i % 2}-03-0{1 + i % 9}T00:00:00Z",
            "relatedParty": [{"id": f"partner-{i % 3}", "role": ("supplier", "provider")[i % 2]}]}


@pytest.fixture(scope="module")
def stored(mongo_uri: str) -> Iterator[tuple[TestClient, Settings]]:
    from services.app import create_app
    from tests.conftest import PUBLIC_URL, make_settings

    settings = make_settings(mongo_uri)
    with TestClient(create_app(settings), base_url=PUBLIC_URL) as client:
        client.headers.update(bearer(settings))
        for i in range(30):
            client.post(SERVICE, json=service(i)).raise_for_status()
        yield client, settings


def database_query(raw: str, call: Call) -> dict[str, Any]:
    """The filter ResourceStore.find sends for this list request and caller."""
    index = SchemaIndex(load_document("serviceInventory.yaml"), "Service")
    query = parse_query(raw, index, default_limit=100, max_limit=1000)
    return Visibility.restrict(filter_plan(query.conditions, index).query, call)


def index_keys(plan: dict[str, Any]) -> list[list[str]]:
    """The key patterns of every index scan in a winning plan."""
    found: list[list[str]] = []
    if plan.get("stage") == "IXSCAN":
        found.append(list(plan["keyPattern"]))
    for child in (plan.get("inputStage"), *plan.get("inputStages", ())):
        if child:
            found.extend(index_keys(child))
    return found


@pytest.mark.parametrize("call", [OPERATOR, PARTNER], ids=["operator", "partner"])
@pytest.mark.parametrize(("raw", "leading"), FILTERS, ids=[f for f, _ in FILTERS])
def test_the_main_list_filters_are_served_by_an_index(stored: tuple[TestClient, Settings], raw: str, leading: str,
                                                      call: Call) -> None:
    _, settings = stored
    with MongoClient(settings.mongodb_uri) as mongo:
        collection = mongo[settings.database]["service"]
        declared = [list(index["key"]) for index in collection.list_indexes()]
        assert any(keys[0] == leading for keys in declared), declared
        try:
            explained = collection.find(database_query(raw, call)).limit(50).explain()
        except OperationFailure as exc:
            pytest.skip(f"this server does not explain queries ({exc.code}): the indexes are declared, "
                        "the plan cannot be checked")
        scans = index_keys(explained["queryPlanner"]["winningPlan"])
        if not scans and explained.get("serverInfo", {}).get("host") == EMBEDDED_HOST and not call.unrestricted:
            # The party's index must at least be usable for this query: the planner is the limit.
            hinted = collection.find(database_query(raw, call)).hint([("_meta.parties", 1)]).limit(50).explain()
            assert index_keys(hinted["queryPlanner"]["winningPlan"]) == [["_meta.parties"]]
            pytest.skip("the embedded server's planner picks an index only when one index holds every "
                        "field of the filter (equalities) or its single range; a party-scoped filter on an "
                        "array (relatedParty) or a range scans the collection there, MongoDB's planner uses "
                        "the party's or the filter's index")
    # The filter's own index, or for a party-scoped caller the party's: either narrows the
    # documents read to the index's matches instead of the whole collection.
    usable = {leading} | ({"_meta.parties"} if not call.unrestricted else set())
    assert scans and any(keys[0] in usable for keys in scans), explained["queryPlanner"]["winningPlan"]


def test_pages_say_whether_more_follow_and_the_total(stored: tuple[TestClient, Settings]) -> None:
    client, _ = stored
    active = 10  # 30 services, every third active
    first = client.get(f"{SERVICE}?state=active&limit=4")
    assert first.status_code == 206
    assert first.headers["x-total-count"] == str(active)
    assert first.headers["x-result-count"] == "4"
    last = client.get(f"{SERVICE}?state=active&offset=8&limit=4")
    assert last.status_code == 206
    assert last.headers["x-total-count"] == str(active)
    assert last.headers["x-result-count"] == "2"
    whole = client.get(f"{SERVICE}?state=active&limit=10")
    assert whole.status_code == 200
    assert whole.headers["x-total-count"] == str(active)
    beyond = client.get(f"{SERVICE}?state=active&offset=40&limit=4")
    assert beyond.status_code == 206
    assert beyond.json() == []
    assert beyond.headers["x-total-count"] == str(active)


def test_unsorted_pages_are_disjoint_and_cover_the_result(stored: tuple[TestClient, Settings]) -> None:
    client, _ = stored
    pages = [client.get(f"{SERVICE}?state=active&offset={offset}&limit=3&fields=id").json()
             for offset in range(0, 12, 3)]
    ids = [s["id"] for page in pages for s in page]
    assert len(ids) == len(set(ids)) == 10
    assert set(ids) == {s["id"] for s in client.get(f"{SERVICE}?state=active").json()}


def test_a_write_is_counted_by_the_next_list(client: TestClient) -> None:
    for i in range(6):
        client.post(SERVICE, json=service(3 * i)).raise_for_status()  # all active
    assert client.get(f"{SERVICE}?state=active&limit=2").headers["x-total-count"] == "6"
    created = client.post(SERVICE, json=service(0))
    created.raise_for_status()
    assert client.get(f"{SERVICE}?state=active&limit=2").headers["x-total-count"] == "7"
    client.patch(f"{SERVICE}/{created.json()['id']}", json={"state": "inactive"},
                 headers={"Content-Type": "application/merge-patch+json"}).raise_for_status()
    assert client.get(f"{SERVICE}?state=active&limit=2").headers["x-total-count"] == "6"
    client.delete(f"{SERVICE}/{client.get(f'{SERVICE}?state=active&limit=1').json()[0]['id']}").raise_for_status()
    assert client.get(f"{SERVICE}?state=active&limit=2").headers["x-total-count"] == "5"


def test_a_partner_counts_only_what_it_may_see(stored: tuple[TestClient, Settings]) -> None:
    client, settings = stored
    partner = bearer(settings, party="partner-1", role="partner")
    listed = client.get(f"{SERVICE}?limit=3", headers=partner)
    assert listed.status_code == 206
    assert listed.headers["x-total-count"] == "10"  # every third service names partner-1
    assert all(any(p["id"] == "partner-1" for p in s["relatedParty"]) for s in listed.json())
    operator = client.get(f"{SERVICE}?limit=3")
    assert operator.headers["x-total-count"] == "30"


def test_collections_kept_beside_the_resources_are_indexed_at_start_up(stored: tuple[TestClient, Settings]) -> None:
    # Read by problem correlation and SLA evaluation, never listed by a client: their indexes come
    # from the API declarations, made when the app starts rather than on first use.
    _, settings = stored
    with MongoClient(settings.mongodb_uri) as mongo:
        database = mongo[settings.database]
        impact = [list(index["key"]) for index in database["serviceProblemImpact"].list_indexes()]
        buckets = [list(index["key"]) for index in database["measurement_bucket"].list_indexes()]
    assert ["services"] in impact
    assert ["service", "metric", "hour"] in buckets
