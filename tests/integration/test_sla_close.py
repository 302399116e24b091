"""Closing a period writes its violation, rebate, statement lines, evaluation and their events in
one transaction: a close that fails half-way leaves nothing behind, and closing again (or at
the same moment) settles the period exactly once."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from decimal import Decimal

import httpx
import pytest
from pymongo import MongoClient

from services.app import create_app
from services.tmf.embedded import free_port
from services.tmf.settings import Settings
from tests.conftest import make_settings
from tests.integration.test_sla_month import OCTOBER, Clock, availability_rule
from tests.support.auth import bearer
from tests.support.server import serve

SLA_API = "/tmf-api/slaManagement/v4"
NOVEMBER = datetime(2026, 11, 1, tzinfo=UTC)


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime(2026, 11, 1, 0, 5, tzinfo=UTC))


@pytest.fixture
def suite(mongo_uri: str, clock: Clock) -> Iterator[tuple[httpx.Client, Settings]]:
    port = free_port()
    # The scheduler runs once, at start-up, when there is nothing to close: every close is the test's.
    settings = make_settings(mongo_uri, public_url=f"http://127.0.0.1:{port}", sla_close_interval_seconds=3600)
    with serve(create_app(settings, clock=clock), port) as base, \
            httpx.Client(base_url=base + SLA_API, headers=bearer(settings), timeout=60) as client:
        yield client, settings


def make_sla(client: httpx.Client, name: str, service: str, customer: str) -> str:
    body = {"name": name, "evaluationPeriod": {"kind": "month", "timeZone": "UTC"},
            "relatedParty": [{"id": "operator", "name": "operator", "role": "SLAProvider",
                              "@referredType": "Organization"},
                             {"id": customer, "name": customer, "role": "SLAConsumer",
                              "@referredType": "Organization"}],
            "relatedEntity": [{"id": service, "role": "coveredService", "@referredType": "Service"}],
            "charge": {"unit": "EUR", "value": 1000.05}, "rule": [availability_rule(99.9)]}
    created = client.post("/sla", json=body)
    assert created.status_code == 201, created.text
    # One down minute: far under the month's budget, so nothing is raised early, but the only
    # evaluated minute at close, 0 %: the 50 % tier, 500.03 EUR (500.025 rounded half up).
    sample = {"metric": "availability", "value": 0, "service": {"id": service}, "interval": 60,
              "observedAt": "2026-10-07T12:00:00Z"}
    taken = client.post("/measurement", json=[sample])
    assert taken.status_code == 201 and taken.json()["violationsRaised"] == 0, taken.text
    return str(created.json()["id"])


def close(client: httpx.Client, sla_id: str) -> httpx.Response:
    return client.post("/slaEvaluation", json={
        "sla": {"id": sla_id}, "close": True,
        "period": {"startDateTime": OCTOBER.isoformat(), "endDateTime": NOVEMBER.isoformat()}})


def statement(client: httpx.Client, party_id: str) -> dict | None:
    found = client.get(f"/settlementStatement?party.id={party_id}").json()
    assert len(found) <= 1
    return found[0] if found else None


def counts(client: httpx.Client, sla_id: str) -> tuple[int, int, int]:
    """Violations, rebates and evaluations of the SLA."""
    return tuple(len(client.get(f"/{name}?sla.id={sla_id}").json())  # type: ignore[return-value]
                 for name in ("slaViolation", "rebate", "slaEvaluation"))


def test_a_close_that_fails_half_way_leaves_nothing_and_closing_again_settles_once(suite):
    client, settings = suite
    first = make_sla(client, "First", "vpn-a", "customer-a")
    second = make_sla(client, "Second", "vpn-b", "customer-b")
    assert close(client, first).status_code == 201
    owed_before = statement(client, "operator")
    assert owed_before is not None and owed_before["owed"]["value"] == 500.03

    with MongoClient(settings.mongodb_uri) as mongo:
        database = mongo[settings.database]
        events_before = database["event"].count_documents({})
        # A total the close cannot read makes it fail while it adds its line to the operator's
        # statement: after the violation and the rebate were written in its transaction, before
        # the customer's statement and the evaluation.
        stored = {"_id": owed_before["id"]}
        database["settlementStatement"].update_one(stored, {"$set": {"owed.value": "not a number"}})
        try:
            failed = close(client, second)
        finally:
            database["settlementStatement"].update_one(stored, {"$set": {"owed.value": 500.03}})
        assert failed.status_code == 500, failed.text
        assert counts(client, second) == (0, 0, 0)
        assert statement(client, "customer-b") is None
        assert statement(client, "operator") == owed_before
        assert database["event"].count_documents({}) == events_before

        closed = close(client, second)
        assert closed.status_code == 201, closed.text
        assert closed.json()["rebate"]["amount"] == {"unit": "EUR", "value": 500.03}
        assert counts(client, second) == (1, 1, 1)
        # Violation, rebate, two statements (one created, one changed) and the evaluation.
        assert database["event"].count_documents({}) == events_before + 5

    again = close(client, second)
    assert again.status_code == 201 and again.json()["id"] == closed.json()["id"]
    operator = statement(client, "operator")
    assert operator is not None and len(operator["line"]) == 2
    assert Decimal(repr(operator["owed"]["value"])) == Decimal("1000.06")
    customer = statement(client, "customer-b")
    assert customer is not None and len(customer["line"]) == 1 and customer["owedTo"]["value"] == 500.03


def test_closes_of_one_period_at_the_same_moment_settle_it_once(suite):
    client, _ = suite
    sla_id = make_sla(client, "Raced", "vpn-r", "customer-r")
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: close(client, sla_id), range(4)))
    assert [a.status_code for a in answers] == [201] * 4, [a.text for a in answers]
    assert len({a.json()["id"] for a in answers}) == 1
    assert counts(client, sla_id) == (1, 1, 1)
    for party_id in ("operator", "customer-r"):
        found = statement(client, party_id)
        assert found is not None and [line["amount"]["value"] for line in found["line"]] == [500.03]


@pytest.fixture
def scheduled(mongo_uri: str, clock: Clock) -> Iterator[httpx.Client]:
    port = free_port()
    # The scheduler looks for ended periods every 0.1 s.
    settings = make_settings(mongo_uri, public_url=f"http://127.0.0.1:{port}", sla_close_interval_seconds=0.1)
    with serve(create_app(settings, clock=clock), port) as base, \
            httpx.Client(base_url=base + SLA_API, headers=bearer(settings), timeout=60) as client:
        yield client


def test_the_scheduler_closes_many_slas_at_once_each_exactly_once(scheduled, clock):
    client = scheduled
    clock.now = datetime(2026, 10, 1, tzinfo=UTC)
    slas = []
    for i in range(9):
        clock.now = datetime(2026, 10, 1, tzinfo=UTC)
        created = client.post("/sla", json={
            "name": f"Scheduled {i}", "evaluationPeriod": {"kind": "month", "timeZone": "UTC"},
            "relatedParty": [{"id": "operator", "name": "operator", "role": "SLAProvider"},
                             {"id": f"customer-{i % 3}", "name": f"customer {i % 3}", "role": "SLAConsumer"}],
            "relatedEntity": [{"id": f"svc-{i}", "role": "coveredService", "@referredType": "Service"}],
            "charge": {"unit": "EUR", "value": 100 + i + 0.01}, "rule": [availability_rule(99.9)]})
        assert created.status_code == 201, created.text
        slas.append(created.json()["id"])
    clock.now = datetime(2026, 10, 31, 23, 59, tzinfo=UTC)
    samples = [{"metric": "availability", "value": 0, "service": {"id": f"svc-{i}"}, "interval": 60,
                "observedAt": "2026-10-07T12:00:00Z"} for i in range(9)]
    assert client.post("/measurement", json=samples).status_code == 201
    clock.now = datetime(2026, 11, 1, 0, 5, tzinfo=UTC)
    closed: list[dict] = []
    for _ in range(600):  # a safety bound of a minute or more, not a timing: closes take well under a second
        closed = client.get("/slaEvaluation?state=closed").json()
        if len(closed) == 9:
            break
        threading.Event().wait(0.1)
    assert sorted(e["sla"]["id"] for e in closed) == sorted(slas)
    # 50 % of each charge, rounded half up to cents: 50.01, 50.51, ... 54.01.
    expected = [(Decimal(100 + i) + Decimal("0.01")) / 2 for i in range(9)]
    expected = [amount.quantize(Decimal("0.01"), rounding="ROUND_HALF_UP") for amount in expected]
    operator = statement(client, "operator")
    assert operator is not None
    assert sorted(Decimal(repr(line["amount"]["value"])) for line in operator["line"]) == sorted(expected)
    assert Decimal(repr(operator["owed"]["value"])) == sum(expected)
    for c in range(3):
        customer = statement(client, f"customer-{c}")
        assert customer is not None and len(customer["line"]) == 3
        assert Decimal(repr(customer["owedTo"]["value"])) == sum(expected[c::3])
