"""Hub subscriptions and event delivery, in process, to a real listener on loopback."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from openapi_schema_validator import OAS30ReadValidator
from pymongo import MongoClient
from referencing import Registry, Resource
from starlette.testclient import TestClient

from services.app import create_app
from services.tmf.auth.identity import DEFAULT_SCOPES
from services.tmf.delivery import SIGNATURE_HEADER, verify
from services.tmf.spec import load_document
from tests.conftest import INVENTORY, make_settings
from tests.support.auth import bearer
from tests.support.listener import Listener

SERVICE = f"{INVENTORY}/service"
EVENT_TYPES = ["ServiceCreateEvent", "ServiceAttributeValueChangeEvent", "ServiceStateChangeEvent",
               "ServiceDeleteEvent"]


@pytest.fixture
def listener() -> Iterator[Listener]:
    running = Listener().start()
    yield running
    running.stop()


@pytest.fixture
def fast_client(mongo_uri) -> Iterator[TestClient]:
    settings = make_settings(mongo_uri, delivery_backoff_seconds=0.05, delivery_backoff_max_seconds=0.2,
                             delivery_max_attempts=4, delivery_poll_seconds=0.05)
    with TestClient(create_app(settings), base_url="http://testserver") as client:
        client.headers.update(bearer(settings))
        yield client


def subscribe(client, listener, query=None, **extra):
    response = client.post(f"{INVENTORY}/hub", json={"callback": listener.url, "query": query, **extra})
    assert response.status_code == 201, response.text
    return response.json()


def create(client, **attributes):
    body = {"state": "designed", "serviceSpecification": {"id": "spec"}, **attributes}
    response = client.post(SERVICE, json=body)
    assert response.status_code == 201, response.text
    return response.json()


def event_validator(event_type):
    """The event schema our API document declares for this event type, as the listener reads
    it (read-only attributes such as id and href are expected there)."""
    document = load_document("serviceInventory.yaml")
    registry = Registry().with_resource("urn:doc", Resource.opaque(document))
    return OAS30ReadValidator({"$ref": f"urn:doc#/components/schemas/{event_type}"}, registry=registry)


def test_lifecycle_events_reach_the_listener_with_the_tmf_envelope(fast_client, listener):
    subscribe(fast_client, listener)
    service = create(fast_client, name="vpn")
    url = f"{SERVICE}/{service['id']}"
    fast_client.patch(url, json={"description": "changed"}).raise_for_status()
    fast_client.patch(url, json={"state": "active"}).raise_for_status()
    assert fast_client.delete(url).status_code == 204
    events = listener.wait_for(5)
    assert [e["eventType"] for e in events] == [
        "ServiceCreateEvent", "ServiceAttributeValueChangeEvent", "ServiceAttributeValueChangeEvent",
        "ServiceStateChangeEvent", "ServiceDeleteEvent"]
    assert [r.path for r in listener.received] == [
        "/listener/serviceCreateEvent", "/listener/serviceAttributeValueChangeEvent",
        "/listener/serviceAttributeValueChangeEvent", "/listener/serviceStateChangeEvent",
        "/listener/serviceDeleteEvent"]
    created, described, activated, state_changed, deleted = events
    assert created["event"]["service"]["id"] == service["id"]
    assert described["fieldPath"] == "description"
    assert activated["fieldPath"] == "state"
    assert state_changed["event"]["service"]["state"] == "active"
    assert deleted["event"]["service"]["description"] == "changed"
    assert len({e["eventId"] for e in events}) == 5
    for event in events:
        assert event["domain"] == "serviceInventory"
        assert event["correlationId"]
        assert event["eventTime"] == event["timeOcurred"]
    for received in listener.received:
        errors = list(event_validator(received.event["eventType"]).iter_errors(received.event))
        assert errors == []
    broken = {**created, "event": {"service": {**created["event"]["service"], "state": "bogus"}}}
    assert list(event_validator("ServiceCreateEvent").iter_errors(broken))


def test_hub_query_filters_events(fast_client, listener):
    other = Listener().start()
    try:
        subscribe(fast_client, listener, "eventType=ServiceStateChangeEvent&event.service.state=active,terminated")
        subscribe(fast_client, other, "event.service.name.regex=^edge-")
        a = create(fast_client, name="edge-1")
        b = create(fast_client, name="core-1")
        fast_client.patch(f"{SERVICE}/{a['id']}", json={"state": "inactive"}).raise_for_status()
        fast_client.patch(f"{SERVICE}/{b['id']}", json={"state": "active"}).raise_for_status()
        fast_client.patch(f"{SERVICE}/{a['id']}", json={"state": "terminated"}).raise_for_status()
        events = listener.wait_for(2)
        other_events = other.wait_for(5)
        assert [(e["eventType"], e["event"]["service"]["name"], e["event"]["service"]["state"]) for e in events] == [
            ("ServiceStateChangeEvent", "core-1", "active"), ("ServiceStateChangeEvent", "edge-1", "terminated")]
        assert all(e["event"]["service"]["name"] == "edge-1" for e in other_events)
        assert len(other_events) == 5
    finally:
        other.stop()


def test_listener_outage_then_recovery_delivers_everything_in_order(mongo_uri, listener):
    settings = make_settings(mongo_uri, delivery_backoff_seconds=0.05, delivery_backoff_max_seconds=0.3,
                             delivery_max_attempts=1000, delivery_poll_seconds=0.05)
    with TestClient(create_app(settings), base_url="http://testserver") as client:
        client.headers.update(bearer(settings))
        subscribe(client, listener)
        listener.answer = 503
        services = [create(client, name=f"s{i}") for i in range(3)]
        for round_ in range(4):
            for service in services:
                client.patch(f"{SERVICE}/{service['id']}", json={"description": f"r{round_}"}).raise_for_status()
        assert listener.wait_for(1, timeout=0.5) == []
        listener.answer = 201
        events = listener.wait_for(15)
        assert len(events) == 15
        assert listener.refused > 0
        for service in services:
            mine = [e for e in events if e["event"]["service"]["id"] == service["id"]]
            assert mine[0]["eventType"] == "ServiceCreateEvent"
            assert [e["event"]["service"].get("description") for e in mine[1:]] == ["r0", "r1", "r2", "r3"]


def test_dead_letter_visibility_and_redelivery(fast_client, listener):
    subscription = subscribe(fast_client, listener)
    listener.answer = 500
    create(fast_client, name="x")
    hub = f"{INVENTORY}/hub/{subscription['id']}"

    def summary():
        return fast_client.get(f"{hub}/deliverySummary").json()

    for _ in range(400):
        if summary()["dead"] == 1:
            break
        listener.wait_for(1, timeout=0.05)
    state = summary()
    assert state["dead"] == 1
    assert state["lastError"] is None or "500" in state["lastError"]
    dead = fast_client.get(f"{hub}/delivery?state=dead").json()
    assert dead[0]["attempts"] == 4
    assert dead[0]["lastStatus"] == 500
    assert "500" in dead[0]["lastError"]
    listener.answer = 201
    redelivered = fast_client.post(f"{hub}/redelivery", json={})
    assert redelivered.json() == {"subscription": subscription["id"], "queued": 1}
    events = listener.wait_for(1)
    assert [e["eventId"] for e in events] == [dead[0]["eventId"]]


def test_gone_suspends_and_replay_resends(fast_client, listener):
    subscription = subscribe(fast_client, listener)
    hub = f"{INVENTORY}/hub/{subscription['id']}"
    first = create(fast_client, name="before")
    assert len(listener.wait_for(1)) == 1
    listener.answer = 410
    create(fast_client, name="gone")
    for _ in range(400):
        if fast_client.get(hub).json()["status"] == "suspended":
            break
        listener.wait_for(2, timeout=0.05)
    assert fast_client.get(hub).json()["status"] == "suspended"
    create(fast_client, name="after suspension")
    assert fast_client.get(f"{hub}/deliverySummary").json()["suspended"] == 1
    listener.answer = 201
    replay = fast_client.post(f"{hub}/replay", json={"startDateTime": "2000-01-01T00:00:00Z",
                                                     "endDateTime": "2100-01-01T00:00:00Z"})
    assert replay.status_code == 201
    assert replay.json()["queued"] == 3
    events = listener.wait_for(4)
    assert [e["event"]["service"]["name"] for e in events] == ["before", "before", "gone", "after suspension"]
    assert events[1]["eventId"] == events[0]["eventId"]
    assert first["id"] == events[1]["event"]["service"]["id"]


def test_signature_verifies_and_tampering_fails(fast_client, listener):
    secret = "a-long-shared-secret-0123456789"
    subscribe(fast_client, listener, secret=secret)
    create(fast_client, name="signed")
    received = listener.received[0] if listener.wait_for(1) else None
    assert received is not None
    header = received.headers[SIGNATURE_HEADER.lower()]
    assert verify(secret, header, received.body)
    tampered = json.dumps({**received.event, "eventType": "ServiceDeleteEvent"}).encode()
    assert not verify(secret, header, tampered)
    assert not verify("another-secret-0123456789", header, received.body)


@pytest.mark.parametrize("query", ["state.$ne=1", "eventType.foo=x", "event.service.nosuch=1",
                                   "event.service.state.bogus=active", "event.service.name.regex=(a)%5C1",
                                   "whatever=1"])
def test_bad_hub_queries_are_refused(fast_client, listener, query):
    response = fast_client.post(f"{INVENTORY}/hub", json={"callback": listener.url, "query": query})
    assert response.status_code == 400, response.text
    assert response.json()["message"]


def test_registration_is_idempotent(fast_client, listener):
    first = subscribe(fast_client, listener, "eventType=ServiceCreateEvent")
    again = fast_client.post(f"{INVENTORY}/hub",
                             json={"callback": listener.url, "query": "eventType=ServiceCreateEvent"})
    assert again.status_code == 200
    assert again.json()["id"] == first["id"]
    create(fast_client, name="once")
    assert len(listener.wait_for(1)) == 1
    assert len(listener.wait_for(2, timeout=0.3)) == 1


def test_private_callbacks_refused_unless_allowed(mongo_uri):
    settings = make_settings(mongo_uri, allow_private_callbacks=False)
    with TestClient(create_app(settings), base_url="http://testserver") as client:
        client.headers.update(bearer(settings))
        for callback in ["http://127.0.0.1:9000/x", "http://10.1.2.3/x", "http://localhost/x", "http://[::1]/x"]:
            response = client.post(f"{INVENTORY}/hub", json={"callback": callback})
            assert response.status_code == 400, callback
            assert "private" in response.json()["message"]


def test_a_partners_subscription_only_hears_about_its_own_resources(mongo_uri, listener):
    settings = make_settings(mongo_uri, delivery_poll_seconds=0.05)
    with TestClient(create_app(settings), base_url="http://testserver") as client:
        # Registering on the inventory's hub is a write on that API, outside a partner's default scopes.
        partner = bearer(settings, role="partner", party="partner-a",
                         scopes=(*DEFAULT_SCOPES["partner"], "serviceInventory.write"))
        subscribed = client.post(f"{INVENTORY}/hub", json={"callback": listener.url}, headers=partner)
        assert subscribed.status_code == 201, subscribed.text
        operator = bearer(settings)
        mine = client.post(SERVICE, headers=operator, json={
            "name": "theirs", "state": "active", "serviceSpecification": {"id": "s"},
            "relatedParty": [{"id": "partner-a", "role": "supplier", "@referredType": "Organization"}]})
        other = client.post(SERVICE, headers=operator, json={"name": "not theirs", "state": "active",
                                                              "serviceSpecification": {"id": "s"}})
        assert mine.status_code == other.status_code == 201
        client.patch(f"{SERVICE}/{other.json()['id']}", headers=operator, json={"description": "x"}).raise_for_status()
        client.patch(f"{SERVICE}/{mine.json()['id']}", headers=operator, json={"description": "y"}).raise_for_status()
        events = listener.wait_for(2)
        assert [e["event"]["service"]["name"] for e in events] == ["theirs", "theirs"]
        assert client.get(f"{SERVICE}/{other.json()['id']}", headers=partner).status_code == 404
        assert client.get(SERVICE, headers=partner).headers["x-total-count"] == "1"


def test_a_change_is_delivered_by_the_process_that_made_it_without_a_poll(mongo_uri, listener):
    # The dispatcher polls the database once at the start, then only when woken by work the
    # fast path did not take: every delivery here must go by the fast path.
    settings = make_settings(mongo_uri, delivery_poll_seconds=3600)
    with TestClient(create_app(settings), base_url="http://testserver") as client:
        client.headers.update(bearer(settings))
        subscription = subscribe(client, listener)
        service = create(client, name="fast")
        for description in ("one", "two", "three"):
            client.patch(f"{SERVICE}/{service['id']}", json={"description": description}).raise_for_status()
        events = listener.wait_for(4)
        assert [e["eventType"] for e in events] == ["ServiceCreateEvent"] + ["ServiceAttributeValueChangeEvent"] * 3
        assert [e["event"]["service"].get("description") for e in events[1:]] == ["one", "two", "three"]

        with MongoClient(mongo_uri) as mongo:
            deliveries = mongo[settings.database]["delivery"]

            def settled() -> list[dict]:
                rows = list(deliveries.find({"subscriptionId": subscription["id"]}))
                return rows if rows and all(row["state"] == "delivered" for row in rows) else []

            rows: list[dict] = []
            for _ in range(600):  # a safety bound of a minute: outcomes are written in batches
                rows = settled()
                if rows:
                    break
                listener.wait_for(5, timeout=0.1)
            assert len(rows) == 4
            # A delivery a poll claims carries the claim's token; these were never claimed.
            assert [row for row in rows if "claim" in row or row["attempts"] != 1 or row["leaseOwner"]] == []
        assert len(listener.events()) == 4


def test_a_subscription_counts_from_the_very_next_change_in_every_app_instance(mongo_uri, listener):
    """Each app instance (each process) keeps the subscriptions it last read and reads them again
    only when the hub's version moved: a registration or a removal made through one instance
    applies to the next change committed through any other on the same database."""
    settings = make_settings(mongo_uri, delivery_poll_seconds=0.05)
    with MongoClient(mongo_uri) as mongo, TestClient(create_app(settings), base_url="http://testserver") as first, \
            TestClient(create_app(settings), base_url="http://testserver") as second:
        deliveries = mongo[settings.database]["delivery"]
        for client in (first, second):
            client.headers.update(bearer(settings))
            create(client, name="before")  # each instance has read (and kept) that nobody listens
        subscription = subscribe(second, listener)
        create(first, name="through the other instance")
        create(second, name="through the same instance")
        # Deliveries are recorded in the transaction of the change, before it is answered.
        assert deliveries.count_documents({"subscriptionId": subscription["id"]}) == 2
        events = listener.wait_for(2)
        assert sorted(e["event"]["service"]["name"] for e in events) == [
            "through the other instance", "through the same instance"]
        assert second.delete(f"{INVENTORY}/hub/{subscription['id']}").status_code == 204
        create(first, name="after the removal")
        create(second, name="after the removal")
        assert deliveries.count_documents({"subscriptionId": subscription["id"]}) == 2
        again = subscribe(first, listener, "event.service.name=again")
        create(second, name="again")
        assert deliveries.count_documents({"subscriptionId": again["id"]}) == 1
