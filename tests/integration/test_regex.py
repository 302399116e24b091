"""Regex filters and hub queries cannot stall the suite, and lists work with every HTTP client's
encoding of ',' (issue "Trustworthy core", items 5 and 7), on a real wire-protocol database."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote, urlencode

import pytest
import re2
from starlette.testclient import TestClient

from services.tmf.errors import BadRequest
from services.tmf.events import EventFilter
from services.tmf.query import database_pattern
from services.tmf.spec import SchemaIndex, load_document
from tests.conftest import INVENTORY, make_settings, operator_client
from tests.support.listener import Listener

SERVICE = f"{INVENTORY}/service"
# Long enough that a backtracking engine would take years on the patterns below (most of them
# already stall at 30 characters), within the 256 characters a name may have.
N = 250
VALUES = {
    "bang": "a" * N + "!",
    "xs": "x" * N,
    "ab": "a" * N + "b",
    "as": "a" * N,
    "vpn": "ACME VPN",
    "mail": "user.name@example.com",
}
EVERY = set(VALUES)
EMAIL = (r"^([a-zA-Z0-9])(([\-.]|[_]+)?([a-zA-Z0-9]+))*(@){1}[a-z0-9]+[.]{1}"
         r"(([a-z]{2,3})|([a-z]{2,3}[.]{1}[a-z]{2,3}))$")
# Classic catastrophic patterns and what they select among VALUES (a search, as TMF630 .regex
# means), or the construct a refusal must name.
CATALOGUE: list[tuple[str, set[str] | str]] = [
    (r"(a+)+$", {"as"}),
    (r"^(a+)+$", {"as"}),
    (r"(a|aa)*b", {"ab"}),
    (r"(a|a)*b", {"ab"}),
    (r"(a*)*b", {"ab"}),
    (r"a*a*a*a*a*a*b", {"ab"}),
    (r"(.*a){12}", {"bang", "ab", "as"}),
    (r"(\w+\s?)*$", EVERY),
    (r"^(([a-z])+.)+[A-Z]([a-z])+$", set()),
    (r"(x+x+)+y", set()),
    (r"^(a|a?)+$", {"as"}),
    (r"^(\w+)*!$", {"bang"}),
    (r".*.*.*=.*", set()),
    (EMAIL, {"mail"}),
    (r"(a+)+\1", "a back-reference"),
    (r"(?=(a+))\1", "a look-ahead"),
    (r"(a+)++$", "a possessive quantifier"),
    (r"(.*){1,32000}[bc]", "invalid repetition size"),
]


def regex_query(pattern: str) -> str:
    return f"{SERVICE}?name.regex={quote(pattern, safe='')}&fields=description&limit=100"


def app_with(mongo_uri: str, names: dict[str, str]) -> Iterator[TestClient]:
    """One app (and database) for a whole module: starting one costs seconds."""
    with operator_client(make_settings(mongo_uri)) as client:
        for label, name in names.items():
            response = client.post(SERVICE, json={"name": name, "description": label, "state": "active",
                                                  "serviceSpecification": {"id": "spec"}})
            assert response.status_code == 201, response.text
        yield client


@pytest.fixture(scope="module")
def stored(mongo_uri: str) -> Iterator[TestClient]:
    yield from app_with(mongo_uri, VALUES)


def check_answer(response, expected: set[str] | str) -> None:
    if isinstance(expected, str):
        assert response.status_code == 400, response.text
        body = response.json()
        assert body["@type"] == "Error"
        assert expected in body["message"], body["message"]
        assert "regex for 'name'" in body["message"]
    else:
        assert response.status_code == 200, response.text
        assert {s["description"] for s in response.json()} == expected
        assert response.headers["x-total-count"] == str(len(expected))


@pytest.mark.parametrize(("pattern", "expected"), CATALOGUE, ids=[p for p, _ in CATALOGUE])
def test_catastrophic_patterns_are_answered_or_refused(stored: TestClient, pattern: str,
                                                        expected: set[str] | str) -> None:
    check_answer(stored.get(regex_query(pattern)), expected)


def test_a_normal_request_is_served_while_catastrophic_ones_run(stored: TestClient) -> None:
    answered = [(p, e) for p, e in CATALOGUE if isinstance(e, set)]
    hostile = [answered[i % len(answered)] for i in range(20)]
    with ThreadPoolExecutor(max_workers=21) as pool:
        running = [(pool.submit(stored.get, regex_query(p)), e) for p, e in hostile]
        normal = pool.submit(stored.get, f"{SERVICE}?description=vpn&fields=name")
        # A safety timeout, not a speed check: it only tells a stall of minutes (what the
        # database did with these patterns before) from normal operation.
        response = normal.result(timeout=120)
        assert response.status_code == 200, response.text
        assert [s["name"] for s in response.json()] == ["ACME VPN"]
        for future, expected in running:
            check_answer(future.result(timeout=120), expected)


# ------------------------------------------------------------------ hub queries


@pytest.fixture(scope="module")
def service_index() -> SchemaIndex:
    return SchemaIndex(load_document("serviceInventory.yaml"), "Service")


def service_event(name: str) -> dict[str, object]:
    return {"eventType": "ServiceCreateEvent", "event": {"service": {"id": "1", "name": name}}}


@pytest.mark.parametrize(("pattern", "expected"), CATALOGUE, ids=[p for p, _ in CATALOGUE])
def test_catastrophic_hub_queries_are_answered_or_refused(service_index: SchemaIndex, pattern: str,
                                                           expected: set[str] | str) -> None:
    query = "event.service.name.regex=" + quote(pattern, safe="")
    if isinstance(expected, str):
        with pytest.raises(BadRequest) as caught:
            EventFilter(query, "service", service_index)
        assert "regex for 'event.service.name'" in caught.value.message
        assert expected in caught.value.message
        return
    event_filter = EventFilter(query, "service", service_index)
    assert {label for label, name in VALUES.items() if event_filter.matches(service_event(name))} == expected


def test_a_hub_query_with_a_catastrophic_pattern_delivers_the_right_events(mongo_uri: str) -> None:
    settings = make_settings(mongo_uri, delivery_backoff_seconds=0.05, delivery_poll_seconds=0.05)
    listener = Listener().start()
    try:
        with operator_client(settings) as client:
            refused = client.post(f"{INVENTORY}/hub", json={"callback": listener.url,
                                                            "query": "event.service.name.regex=(a)%5C1"})
            assert refused.status_code == 400
            assert "back-reference" in refused.json()["message"]
            query = "eventType=ServiceCreateEvent&event.service.name.regex=" + quote("a*a*a*a*a*a*b", safe="")
            subscribed = client.post(f"{INVENTORY}/hub", json={"callback": listener.url, "query": query})
            assert subscribed.status_code == 201, subscribed.text
            for label in ("bang", "ab", "as"):
                created = client.post(SERVICE, json={"name": VALUES[label], "description": label, "state": "active",
                                                     "serviceSpecification": {"id": "spec"}})
                assert created.status_code == 201
            events = listener.wait_for(1)
            # Deliveries follow creation order, so the one match arriving means the two
            # earlier events were judged and left out.
            assert [e["event"]["service"]["description"] for e in events] == ["ab"]
    finally:
        listener.stop()


# ------------------------------------------------------------------ what the database runs


EQUIVALENCE_VALUES = ["ACME VPN", "ACME VPN\n", "acme vpn", "a.c", "abc", "x$y", "[a]", "é-net",
                      "line1\nline2", "", "a\\b", "ACME, Inc."]
DATABASE_PATTERNS = ["ACME", "^ACME", "VPN$", "^ACME VPN$", "a.c", r"a\.c", "[a-c]b", "[^a]", "^$",
                     "1.l", r"1\nl", r"x\$y", r"\[a\]", "é", ".*VPN.*", "^[A-Z]", "[]a]", r"a\\b",
                     "N$", r"\,", ", I"]


@pytest.fixture(scope="module")
def equivalence(mongo_uri: str) -> Iterator[TestClient]:
    yield from app_with(mongo_uri, {str(i): name for i, name in enumerate(EQUIVALENCE_VALUES)})


@pytest.mark.parametrize("pattern", DATABASE_PATTERNS)
def test_the_database_agrees_with_re2_on_the_patterns_it_runs(equivalence: TestClient, pattern: str) -> None:
    assert database_pattern(pattern) is not None
    expected = {str(i) for i, name in enumerate(EQUIVALENCE_VALUES) if re2.search(pattern, name)}
    # A regex value keeps its backslashes, so a literal ';' would need one; none of these has.
    response = equivalence.get(f"{SERVICE}?name.regex={quote(pattern, safe='')}&fields=description&limit=100")
    assert response.status_code == 200, response.text
    assert {s["description"] for s in response.json()} == expected


# ------------------------------------------------------------------ bounded scans


@pytest.fixture
def small_scan(mongo_uri: str) -> Iterator[TestClient]:
    with operator_client(make_settings(mongo_uri, regex_scan_limit=3)) as client:
        for i in range(5):
            client.post(SERVICE, json={"name": f"edge-{i}", "state": "active" if i < 2 else "designed",
                                       "serviceSpecification": {"id": "spec"}}).raise_for_status()
        yield client


def test_a_scan_past_the_limit_is_refused_not_stalled(small_scan: TestClient) -> None:
    response = small_scan.get(f"{SERVICE}?name.regex=edge-%5B0-9%5D%2B")
    assert response.status_code == 400
    body = response.json()
    assert body["reason"] == "Query too expensive"
    assert "narrow the filter" in body["message"]
    narrowed = small_scan.get(f"{SERVICE}?state=active&name.regex=edge-%5B0-9%5D%2B&fields=name")
    assert narrowed.status_code == 200, narrowed.text
    assert sorted(s["name"] for s in narrowed.json()) == ["edge-0", "edge-1"]
    # A pattern the database runs itself is not scanned here.
    assert len(small_scan.get(f"{SERVICE}?name.regex=edge-").json()) == 5


def test_scanned_results_page_and_count(client: TestClient) -> None:
    for i in range(7):
        client.post(SERVICE, json={"name": f"n{i}" + "x" * i, "state": "active",
                                   "serviceSpecification": {"id": "spec"}}).raise_for_status()
    page = client.get(f"{SERVICE}?name.regex=x%2B$&sort=-name&offset=1&limit=2&fields=state")
    assert page.status_code == 206
    assert page.headers["x-total-count"] == "6"
    assert page.headers["x-result-count"] == "2"
    # The regex read the name, but the client asked only for the state.
    assert [set(s) for s in page.json()] == [{"id", "href", "@type", "state"}] * 2
    names = [s["name"] for s in client.get(f"{SERVICE}?name.regex=x%2B$&sort=-name").json()]
    assert names == [f"n{i}" + "x" * i for i in range(6, 0, -1)]
    empty = client.get(f"{SERVICE}?name.regex=x%2B$&limit=0")
    assert empty.json() == []
    assert empty.headers["x-total-count"] == "6"


# ------------------------------------------------------------------ separators, as clients send them


def test_lists_work_with_every_encoding_of_a_comma(client: TestClient) -> None:
    for name, state in [("ACME, Inc.", "active"), ("Other", "designed"), ("Third", "inactive")]:
        client.post(SERVICE, json={"name": name, "state": state,
                                   "serviceSpecification": {"id": "spec"}}).raise_for_status()

    def names(query: str) -> list[str]:
        response = client.get(f"{SERVICE}?{query}")
        assert response.status_code == 200, response.text
        return sorted(s["name"] for s in response.json())

    # What httpx, requests, URLEncoder and URLSearchParams send for state=active,designed.
    assert names(urlencode({"state": "active,designed"})) == ["ACME, Inc.", "Other"]
    assert names("state=active%2Cdesigned") == names("state=active,designed") == ["ACME, Inc.", "Other"]
    fields = client.get(f"{SERVICE}?" + urlencode({"fields": "name,state", "sort": "name"}))
    assert fields.status_code == 200, fields.text
    assert [set(s) for s in fields.json()] == [{"id", "href", "@type", "name", "state"}] * 3
    # A literal comma is escaped with a backslash, encoded or not.
    assert names(urlencode({"name": "ACME\\, Inc.,Third"})) == ["ACME, Inc.", "Third"]
    assert names("name=ACME\\,%20Inc.") == ["ACME, Inc."]
    unknown = client.get(f"{SERVICE}?fields=name%2Cnosuch")
    assert unknown.status_code == 400
    assert "['nosuch']" in unknown.json()["message"]
    assert "\x00" not in unknown.text
