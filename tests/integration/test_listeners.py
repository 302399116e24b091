"""The consuming side: an API that listens to the inventory's events subscribes on the public
hub at startup (once, across restarts), takes each event once, and refuses what is not an event."""

from __future__ import annotations

from pathlib import Path

import httpx

from services import inventory
from services.tmf.api import ApiDeclaration, build_app
from services.tmf.embedded import free_port
from services.tmf.listener import Consumption
from tests.conftest import INVENTORY, make_settings
from tests.support.auth import bearer, consumer_secret, signed
from tests.support.listener import Listener
from tests.support.server import serve

CONSUMER = "/test/consumer/v1"
CONSUMED = ("ServiceCreateEvent", "ServiceStateChangeEvent")


def consumer_suite(settings, taken):
    async def take(context, event):
        taken.append(event)

    consumer = ApiDeclaration(
        name="testConsumer", document=str(Path(__file__).parent.parent / "support" / "consumer.yaml"),
        base_path=CONSUMER, resources=(), has_hub=False,
        consumes=(Consumption(CONSUMED, hub=lambda s: f"{s.public_url}{INVENTORY}", handle=take),))
    return build_app([inventory.API, consumer], settings)


def consumer_key(settings):
    """The key the test consumer keeps its progress and its hub secret under."""
    return f"testConsumer {settings.public_url}{INVENTORY} eventType={','.join(CONSUMED)}"


def deliver(client, settings, event, secret=None):
    """Post ``event`` to the consumer's listener as the inventory's hub would, signed."""
    body, headers = signed(secret or consumer_secret(settings, consumer_key(settings)), event)
    return client.post(f"{CONSUMER}/listener/serviceCreateEvent", content=body, headers=headers)


def wait(predicate, attempts=600):
    probe = Listener()
    for _ in range(attempts):
        if predicate():
            return True
        probe.wait_for(1, timeout=0.02)
    return predicate()


def test_consumer_subscribes_once_and_takes_each_event_once(mongo_uri):
    port = free_port()
    settings = make_settings(mongo_uri, public_url=f"http://127.0.0.1:{port}", delivery_poll_seconds=0.05)
    taken: list[dict] = []
    for restart in range(2):
        with serve(consumer_suite(settings, taken), port) as base, httpx.Client(base_url=base) as client:
            assert wait(lambda: client.get("/health/ready").status_code == 200)
            client.headers.update(bearer(settings))
            created = client.post(f"{INVENTORY}/service", json={
                "name": f"s{restart}", "state": "designed", "serviceSpecification": {"id": "x"}})
            assert created.status_code == 201
            client.patch(f"{INVENTORY}/service/{created.json()['id']}", json={"state": "active"}).raise_for_status()
            expected = 2 * (restart + 1)
            assert wait(lambda expected=expected: len(taken) >= expected)
    assert [e["eventType"] for e in taken] == ["ServiceCreateEvent", "ServiceStateChangeEvent"] * 2
    with serve(consumer_suite(settings, taken), port) as base, httpx.Client(base_url=base) as client:
        client.headers.update(bearer(settings))
        hub_ids = set()
        for _ in range(3):
            registered = client.post(f"{INVENTORY}/hub", json={
                "callback": f"{base}{CONSUMER}", "query": "eventType=ServiceCreateEvent,ServiceStateChangeEvent"})
            assert registered.status_code == 200
            hub_ids.add(registered.json()["id"])
        assert len(hub_ids) == 1
        replayed = deliver(client, settings, taken[0])
        assert replayed.status_code == 204
        assert len(taken) == 4
        fresh = {**taken[0], "eventId": "new-event-id"}
        assert deliver(client, settings, fresh).status_code == 204
        assert len(taken) == 5


def test_listener_refuses_what_is_not_an_event(mongo_uri):
    port = free_port()
    settings = make_settings(mongo_uri, public_url=f"http://127.0.0.1:{port}")
    taken: list[dict] = []
    with serve(consumer_suite(settings, taken), port) as base, httpx.Client(base_url=base) as client:
        for body in [{"hello": "world"}, [], {"eventId": "e1", "eventType": "ServiceCreateEvent"},
                     {"eventId": "e2", "eventTime": "2026-01-01T00:00:00Z", "eventType": "ServiceDeleteEvent",
                      "event": {"service": {}}}]:
            response = deliver(client, settings, body)
            assert response.status_code == 400, body
            assert response.json()["message"]
        assert taken == []
