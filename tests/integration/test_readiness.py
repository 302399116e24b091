"""Readiness and catch-up: an app reports ready only once every consumer is subscribed on its
producer's hub with what it missed queued, so that no event is lost at startup or while a
consumer is away; and the suite's own subscriptions pass the private-address guard that keeps
partners' callbacks out."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

import httpx

from services import inventory
from services.app import create_app
from services.tmf import hub as hub_module
from services.tmf.api import ApiDeclaration, build_app
from services.tmf.auth import AuthSettings
from services.tmf.embedded import free_port
from services.tmf.listener import Consumption
from tests.conftest import INVENTORY, make_settings
from tests.support.auth import bearer, consumer_secret, register_client, signed
from tests.support.listener import Listener
from tests.support.server import serve

ALARMS = "/tmf-api/alarmManagement/v4"
PROBLEMS = "/tmf-api/serviceProblemManagement/v4"
SLA_API = "/tmf-api/slaManagement/v4"
CONSUMER = "/test/consumer/v1"
TAKES = ("ServiceCreateEvent", "ServiceStateChangeEvent")
# A safety bound that tells a stall from normal operation; nothing here measures how fast.
PATIENCE_SECONDS = 60.0


def eventually(predicate: Callable[[], Any], patience: float = PATIENCE_SECONDS) -> Any:
    deadline = time.monotonic() + patience
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.02)
    return predicate()


def answers_ready(client: httpx.Client) -> bool:
    return client.get("/health/ready").status_code == 200


# --- the all-in-one suite ------------------------------------------------------------------------


@contextmanager
def whole_suite(mongo_uri: str, **overrides: Any) -> Iterator[httpx.Client]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    settings = make_settings(mongo_uri, public_url=base, inventory_url=f"{base}{INVENTORY}",
                             alarm_hub_url=f"{base}{ALARMS}", sla_hub_url=f"{base}{SLA_API}",
                             delivery_poll_seconds=0.05, **overrides)
    with serve(create_app(settings), port), httpx.Client(base_url=base, timeout=30) as client:
        client.headers.update(bearer(settings))
        yield client


def link_service(client: httpx.Client, link: str) -> dict[str, Any]:
    created = client.post(f"{INVENTORY}/service", json={
        "name": f"access on {link}", "state": "active", "category": "CFS", "serviceSpecification": {"id": "access"},
        "supportingResource": [{"id": link}]})
    assert created.status_code == 201, created.text
    body: dict[str, Any] = created.json()
    return body


def raise_alarm(client: httpx.Client, link: str) -> dict[str, Any]:
    raised = client.post(f"{ALARMS}/alarm", json={
        "alarmType": "communicationsAlarm", "perceivedSeverity": "critical", "probableCause": "lossOfSignal",
        "alarmedObject": {"id": link, "@referredType": "Resource"}, "sourceSystemId": "nms", "state": "raised",
        "alarmRaisedTime": "2026-11-25T10:00:00Z"})
    assert raised.status_code == 201, raised.text
    body: dict[str, Any] = raised.json()
    return body


def problems_about(client: httpx.Client, link: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = client.get(f"{PROBLEMS}/serviceProblem",
                                             params={"rootCauseResource.id": link}).json()
    return found


def test_an_alarm_raised_the_moment_the_suite_is_ready_opens_a_problem(mongo_uri):
    with whole_suite(mongo_uri) as client:
        # The inventory serves before the suite is ready; what matters is the alarm's event.
        service = link_service(client, "link-early")
        assert eventually(lambda: answers_ready(client))
        alarm = raise_alarm(client, "link-early")
        [problem] = eventually(lambda: problems_about(client, "link-early"))
        assert [a["id"] for a in problem["underlyingAlarm"]] == [alarm["id"]]
        assert [s["id"] for s in problem["affectedService"]] == [service["id"]]
        ready = client.get("/health/ready").json()
        assert ready["status"] == "up"
        assert {s["status"] for s in ready["subscriptions"]} == {"ready"}
        assert len(ready["subscriptions"]) == 2


def test_without_private_callbacks_the_suites_own_subscriptions_still_work(mongo_uri):
    partner = Listener().start()
    try:
        with whole_suite(mongo_uri, allow_private_callbacks=False) as client:
            assert eventually(lambda: answers_ready(client))
            link_service(client, "link-guarded")
            raise_alarm(client, "link-guarded")
            assert eventually(lambda: problems_about(client, "link-guarded"))

            base = str(client.base_url).rstrip("/")
            for callback in [partner.url, f"{partner.url}/tmf-api/serviceProblemManagement/v4",
                             f"{base}/tmf-api/../../partner", "http://localhost:9/x"]:
                refused = client.post(f"{ALARMS}/hub", json={"callback": callback})
                assert refused.status_code == 400, callback
                assert "private" in refused.json()["message"]
            # Only the suite's own services may register the suite's own addresses, not a client,
            # even the operator.
            again = client.post(f"{ALARMS}/hub", json={
                "callback": f"{base}{PROBLEMS}", "query": "eventType=AlarmCreateEvent,AlarmStateChangeEvent"})
            assert again.status_code == 400, again.text
        assert partner.events() == []
    finally:
        partner.stop()


# --- a producer and a consumer in separate apps ----------------------------------------------------


def consumer_app(settings, taken: list[dict[str, Any]], producer: str, pause: float = 0.0,
                 auth: AuthSettings | None = None):
    async def take(context, event):
        taken.append(event)
        # A handler that takes a while, as correlation does when it asks the inventory.
        await asyncio.sleep(pause)

    declaration = ApiDeclaration(
        name="testConsumer", document=str(Path(__file__).parent.parent / "support" / "consumer.yaml"),
        base_path=CONSUMER, resources=(), has_hub=False,
        consumes=(Consumption(TAKES, hub=lambda s: producer, handle=take),))
    return build_app([declaration], settings, auth=auth)


def consumer_key(producer: str) -> str:
    """The key the test consumer keeps its progress and its hub secret under."""
    return f"testConsumer {producer} eventType={','.join(TAKES)}"


class Pair:
    """An inventory (the producer) and a consumer of its service events, each on its own port and
    its own database, as in a split deployment: the producer issues the tokens, and the consumer
    is its client (registered as with ``sqm client add``) and trusts it as its issuer."""

    def __init__(self, mongo_uri: str) -> None:
        self.producer_port, self.consumer_port = free_port(), free_port()
        self.producer_url = f"http://127.0.0.1:{self.producer_port}"
        self.consumer_url = f"http://127.0.0.1:{self.consumer_port}"
        # One attempt: a delivery to a consumer that is away dies at once, so only the catch-up can
        # bring it (with retries it might arrive by itself, and the test would prove nothing).
        self.producer_settings = make_settings(mongo_uri, public_url=self.producer_url, delivery_poll_seconds=0.05,
                                               delivery_max_attempts=1)
        self.consumer_settings = make_settings(mongo_uri, public_url=self.consumer_url, delivery_poll_seconds=0.05)
        self.taken: list[dict[str, Any]] = []
        self.credentials = register_client(self.producer_settings, "test-consumer")

    def producer(self):
        return serve(build_app([inventory.API], self.producer_settings), self.producer_port)

    def consumer(self):
        environment = {"SQM_CLIENT_ID": self.credentials.client_id, "SQM_CLIENT_SECRET": self.credentials.client_secret,
                       "SQM_TOKEN_URL": f"{self.producer_url}/oauth2/token"}
        with mock.patch.dict(os.environ, environment):
            app = consumer_app(self.consumer_settings, self.taken, f"{self.producer_url}{INVENTORY}",
                               auth=AuthSettings(issuer=self.producer_url, builtin_issuer=False))
        return serve(app, self.consumer_port)

    def producer_client(self) -> httpx.Client:
        """The operator on the producer (which must be serving)."""
        return httpx.Client(base_url=self.producer_url, timeout=30, headers=bearer(self.producer_settings))

    def taken_ids(self) -> list[str]:
        return [e["eventId"] for e in self.taken]


def emit(client: httpx.Client, name: str) -> list[str]:
    """A service created and then activated: two events about one resource, in this order."""
    created = client.post(f"{INVENTORY}/service", json={
        "name": name, "state": "designed", "serviceSpecification": {"id": "x"}})
    assert created.status_code == 201, created.text
    client.patch(f"{INVENTORY}/service/{created.json()['id']}", json={"state": "active"}).raise_for_status()
    return [created.json()["id"]] * 2


def taken_about(pair: Pair, service_id: str) -> list[str]:
    return [e["eventType"] for e in pair.taken if e["event"]["service"]["id"] == service_id]


def test_a_consumer_that_was_away_catches_up_after_it_restarts(mongo_uri):
    pair = Pair(mongo_uri)
    with pair.producer(), pair.producer_client() as producer:
        with pair.consumer(), httpx.Client(base_url=pair.consumer_url, timeout=30) as consumer:
            assert eventually(lambda: answers_ready(consumer))
            [subscription] = [s["subscription"] for s in consumer.get("/health/ready").json()["subscriptions"]]
            before, _ = emit(producer, "before")
            assert eventually(lambda: len(taken_about(pair, before)) == 2)

        # The consumer is away: both deliveries fail and are dead-lettered on the producer.
        away, _ = emit(producer, "while away")
        summary = f"{INVENTORY}/hub/{subscription}/deliverySummary"
        assert eventually(lambda: producer.get(summary).json()["dead"] == 2), producer.get(summary).json()
        assert taken_about(pair, away) == []

        with pair.consumer(), httpx.Client(base_url=pair.consumer_url, timeout=30) as consumer:
            assert eventually(lambda: answers_ready(consumer))
            assert consumer.get("/health/ready").json()["subscriptions"][0]["subscription"] == subscription
            assert eventually(lambda: len(taken_about(pair, away)) == 2)
            assert taken_about(pair, away) == list(TAKES)
            after, _ = emit(producer, "after")
            assert eventually(lambda: len(taken_about(pair, after)) == 2)
    # Whatever the catch-up sent again (it starts a margin before the last event taken) was taken once.
    assert len(pair.taken_ids()) == len(set(pair.taken_ids())) == 6


def test_on_first_start_a_consumer_takes_what_was_emitted_before_it_ever_subscribed(mongo_uri, monkeypatch):
    # A replay range may hold only this many events, so the catch-up must replay in windows.
    monkeypatch.setattr(hub_module, "MAX_REPLAY", 2)
    pair = Pair(mongo_uri)
    with pair.producer(), pair.producer_client() as producer:
        earlier = [emit(producer, f"earlier {n}")[0] for n in range(3)]
        with pair.consumer(), httpx.Client(base_url=pair.consumer_url, timeout=30) as consumer:
            assert eventually(lambda: answers_ready(consumer))
            assert eventually(lambda: len(pair.taken) >= 6)
            for service_id in earlier:
                assert taken_about(pair, service_id) == list(TAKES)
            assert len(pair.taken_ids()) == len(set(pair.taken_ids())) == 6


def test_health_live_and_ready_while_the_producer_is_unreachable_and_after(mongo_uri):
    pair = Pair(mongo_uri)
    with pair.consumer(), httpx.Client(base_url=pair.consumer_url, timeout=30) as consumer:
        live = consumer.get("/health/live")
        assert live.status_code == 200
        assert live.json()["status"] == "up"
        ready = consumer.get("/health/ready")
        assert ready.status_code == 503
        body = ready.json()
        assert body["status"] == "down"
        assert body["database"]["status"] == "up"
        assert body["dispatcher"]["status"] == "up"
        [missing] = body["missing"]
        assert "testConsumer" in missing and "ServiceCreateEvent" in missing and pair.producer_url in missing
        [subscription] = body["subscriptions"]
        assert subscription["status"] == "subscribing"
        assert subscription["subscription"] is None
        assert eventually(lambda: "problem" in consumer.get("/health/ready").json()["subscriptions"][0])
        detailed = consumer.get("/health")
        assert detailed.status_code == 200
        assert detailed.json()["status"] == "up"
        assert detailed.json()["ready"] is False

        # The producer comes up with events the consumer has not seen; it subscribes and takes them.
        with pair.producer(), pair.producer_client() as producer:
            emitted = emit(producer, "meanwhile")[0]
            assert eventually(lambda: answers_ready(consumer))
            assert consumer.get("/health").json()["ready"] is True
            assert consumer.get("/health/ready").json()["subscriptions"][0]["status"] == "ready"
            assert eventually(lambda: len(taken_about(pair, emitted)) == 2)
            assert taken_about(pair, emitted) == list(TAKES)


def test_copies_of_one_event_arriving_together_are_taken_once(mongo_uri):
    # A live and a replayed copy of one event may be delivered at the same moment.
    port = free_port()
    taken: list[dict[str, Any]] = []
    settings = make_settings(mongo_uri, public_url=f"http://127.0.0.1:{port}")
    producer = f"http://127.0.0.1:{free_port()}{INVENTORY}"
    app = consumer_app(settings, taken, producer, pause=0.2)
    event = {"eventId": "twice", "eventType": "ServiceCreateEvent", "eventTime": "2026-11-25T10:00:00Z",
             "event": {"service": {"id": "s1"}}}
    with serve(app, port) as base, httpx.Client(base_url=base, timeout=30) as client:
        body, headers = signed(consumer_secret(settings, consumer_key(producer)), event)

        def send(_: int) -> int:
            return client.post(f"{CONSUMER}/listener/serviceCreateEvent", content=body, headers=headers).status_code

        with ThreadPoolExecutor(4) as pool:
            assert list(pool.map(send, range(4))) == [204] * 4
    assert [e["eventId"] for e in taken] == ["twice"]
