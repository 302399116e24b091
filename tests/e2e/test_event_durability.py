"""Event delivery across processes, as it runs in production: ``sqm serve`` processes sharing one
MongoDB (an embedded database the test starts and which outlives them), a real listener on
loopback. A server killed with events pending loses none of them; two dispatchers on the same
deliveries never send one twice; a stuck listener does not hold up a healthy one."""

from __future__ import annotations

import asyncio
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import Response

from services.tmf.embedded import EmbeddedDatabase
from tests.support.listener import Listener
from tests.support.sqm_process import INVENTORY, SQM, STOP_TIMEOUT, Server, environment, free_port, pump

SERVICE = f"{INVENTORY}/service"
HUB = f"{INVENTORY}/hub"
# Safety bounds only: nothing here asserts how fast anything is.
DELIVERY_TIMEOUT = 60.0
# A request from a killed server may still be inside the listener; it is settled once the
# listener has had nothing in flight for this long.
QUIET_PERIOD = 0.5

StartServer = Callable[..., Server]


class TrackingListener(Listener):
    """A listener that also knows how many requests it is answering right now, and that can be
    told to hold every request until it is released."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.in_flight = 0
        self.seen_in_flight = 0
        self.hold = False
        self.released = threading.Event()

    async def _receive(self, request: Request) -> Response:
        with self._lock:
            self.in_flight += 1
            self.seen_in_flight = max(self.seen_in_flight, self.in_flight)
        try:
            if self.hold:
                await asyncio.to_thread(self.released.wait, DELIVERY_TIMEOUT)
            return await super()._receive(request)
        finally:
            with self._lock:
                self.in_flight -= 1

    def refused_count(self) -> int:
        with self._lock:
            return self.refused

    def busy(self) -> int:
        with self._lock:
            return self.in_flight

    def wait_quiet(self) -> None:
        """Wait until no request has been in flight for ``QUIET_PERIOD`` (bounded)."""
        deadline = time.monotonic() + DELIVERY_TIMEOUT
        quiet_since = time.monotonic()
        while time.monotonic() < deadline:
            if self.busy():
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since >= QUIET_PERIOD:
                return
            time.sleep(0.02)
        pytest.fail(f"the listener still had requests in flight after {DELIVERY_TIMEOUT:.0f} s")


def wait_until(what: str, condition: Callable[[], Any], timeout: float = DELIVERY_TIMEOUT) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not reached within {timeout:.0f} s (last: {value!r})")
        time.sleep(0.05)


# --- fixtures: one database shared by the servers, listeners, the servers ---------------------------


@pytest.fixture
def database(tmp_path: Path) -> Iterator[EmbeddedDatabase]:
    with EmbeddedDatabase(str(tmp_path / "db"), log_path=tmp_path / "database.log") as running:
        yield running


@pytest.fixture
def listeners() -> Iterator[Callable[..., TrackingListener]]:
    started: list[TrackingListener] = []

    def start(**options: Any) -> TrackingListener:
        listener = TrackingListener(**options)
        listener.start()
        started.append(listener)
        return listener

    yield start
    for listener in started:
        listener.released.set()
        listener.stop()


@pytest.fixture
def servers(tmp_path: Path, database: EmbeddedDatabase,
            listeners: Callable[..., TrackingListener]) -> Iterator[StartServer]:
    """Starts ``sqm serve --mongodb-uri`` on the test's database, all with the same database name;
    whatever still runs at the end is stopped (before the listeners and the database)."""
    started: list[Server] = []
    name = f"e2e_{uuid.uuid4().hex[:12]}"

    def start(**settings: object) -> Server:
        port = free_port()
        env = environment()
        env.update({"SQM_DATABASE": name, "SQM_ALLOW_PRIVATE_CALLBACKS": "true"})
        env.update({f"SQM_{key.upper()}": str(value) for key, value in settings.items()})
        stderr_path = tmp_path / f"sqm-{len(started)}.stderr"
        with stderr_path.open("w") as stderr:
            process = subprocess.Popen(
                [str(SQM), "serve", "--host", "127.0.0.1", "--port", str(port),
                 "--data-dir", str(tmp_path / "unused"), "--mongodb-uri", database.uri],
                stdout=subprocess.PIPE, stderr=stderr, stdin=subprocess.DEVNULL, text=True,
                cwd=tmp_path, env=env,
            )
        server = Server(process, port, stderr_path, database=name, mongodb_uri=database.uri)
        started.append(server)
        server.reader = threading.Thread(target=pump, args=(process.stdout, server.lines), daemon=True)
        server.reader.start()
        server.wait_ready()
        return server

    try:
        yield start
    finally:
        for server in started:
            # Shown by pytest only when the test fails.
            print(f"--- stderr of sqm serve on port {server.port} ---\n{server.stderr()[-20_000:]}")
            if server.process.poll() is None:
                server.process.terminate()
                try:
                    server.process.wait(timeout=STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    server.process.kill()
                    server.process.wait(timeout=STOP_TIMEOUT)
            if server.reader is not None:
                server.reader.join(timeout=STOP_TIMEOUT)
            if server.process.stdout is not None and not (server.reader and server.reader.is_alive()):
                server.process.stdout.close()


# --- the API as a client uses it ----------------------------------------------------------------


def subscribe(client: httpx.Client, listener: Listener) -> str:
    response = client.post(HUB, json={"callback": listener.url})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def create(client: httpx.Client, name: str) -> str:
    body = {"name": name, "description": "0", "state": "inactive", "serviceSpecification": {"id": "spec"}}
    response = client.post(SERVICE, json=body)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def patch(client: httpx.Client, service_id: str, body: dict[str, Any]) -> None:
    response = client.patch(f"{SERVICE}/{service_id}", json=body,
                            headers={"Content-Type": "application/merge-patch+json"})
    assert response.status_code == 200, response.text


def summary(client: httpx.Client, hub_id: str) -> dict[str, Any]:
    response = client.get(f"{HUB}/{hub_id}/deliverySummary")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def deliveries(client: httpx.Client, hub_id: str) -> list[dict[str, Any]]:
    response = client.get(f"{HUB}/{hub_id}/delivery", params={"limit": 1000})
    assert response.status_code == 200, response.text
    rows: list[dict[str, Any]] = response.json()
    assert response.headers["x-total-count"] == str(len(rows))
    return rows


def all_delivered(client: httpx.Client, hub_id: str, expected: int) -> Callable[[], dict[str, Any] | None]:
    def check() -> dict[str, Any] | None:
        counts = summary(client, hub_id)
        return counts if counts["delivered"] == expected else None
    return check


def received_by_service(listener: Listener) -> dict[str, list[tuple[str, str]]]:
    """Per service, (eventType, description the event carries) in the order they arrived."""
    seen: dict[str, list[tuple[str, str]]] = {}
    for event in listener.events():
        service = event["event"]["service"]
        seen.setdefault(service["id"], []).append((event["eventType"], service.get("description", "")))
    return seen


def check_envelopes(listener: Listener) -> None:
    for received in listener.received:
        event = received.event
        name = event["eventType"]
        assert received.path == f"/listener/{name[0].lower()}{name[1:]}"
        assert received.headers["x-sqm-event-id"] == event["eventId"]


# --- the tests ----------------------------------------------------------------------------------


def test_events_pending_when_a_server_is_killed_are_all_delivered_in_order_after_restart(
        servers: StartServer, listeners: Callable[..., TrackingListener]) -> None:
    # The listener is down (503), and slow about it, so that the server always holds leased
    # deliveries, mid-request, when it dies.
    listener = listeners(answer=503, delay=0.3)
    fast_retries = {"delivery_lease_seconds": 2, "delivery_backoff_seconds": 0.05,
                    "delivery_backoff_max_seconds": 0.3, "delivery_max_attempts": 100_000,
                    "delivery_poll_seconds": 0.05}
    first = servers(**fast_retries)

    expected: dict[str, list[tuple[str, str]]] = {}
    with httpx.Client(base_url=first.url, timeout=30, headers=first.operator_headers()) as client:
        hub_id = subscribe(client, listener)
        ids = [create(client, f"svc-{i}") for i in range(20)]
        for service_id in ids:
            expected[service_id] = [("ServiceCreateEvent", "0")]
        # Rounds across services, so that many lanes are open at once.
        for round_ in (1, 2, 3):
            for i, service_id in enumerate(ids):
                if i % 2:
                    continue
                body: dict[str, Any] = {"description": str(round_)}
                expected[service_id].append(("ServiceAttributeValueChangeEvent", str(round_)))
                if round_ == 3:
                    body["state"] = "active"
                    expected[service_id].append(("ServiceStateChangeEvent", "3"))
                patch(client, service_id, body)
        for i, service_id in enumerate(ids):
            if i % 5 == 0:
                response = client.delete(f"{SERVICE}/{service_id}")
                assert response.status_code == 204, response.text
                # A delete event carries the service as it was last.
                expected[service_id].append(("ServiceDeleteEvent", expected[service_id][-1][1]))
        total = sum(len(events) for events in expected.values())
        assert total == 64

        rows = deliveries(client, hub_id)
        event_ids = {row["eventId"] for row in rows}
        assert len(rows) == len(event_ids) == total
        # The dispatcher is retrying: the listener refused several attempts already, and is
        # answering some right now.
        wait_until("the listener refused attempts", lambda: listener.refused_count() >= 16)
        wait_until("a delivery is in flight", listener.busy)
        before = summary(client, hub_id)
        assert before["delivered"] == before["dead"] == before["suspended"] == 0
        assert before["pending"] + before["retrying"] == total

    first.process.kill()
    assert first.process.wait(timeout=STOP_TIMEOUT) == -9
    # What the killed server had sent ends with 503; only then does the listener recover.
    listener.wait_quiet()
    assert listener.events() == []
    listener.delay = 0.0
    listener.answer = 201

    second = servers(**fast_retries)
    with httpx.Client(base_url=second.url, timeout=30, headers=second.operator_headers()) as client:
        after = wait_until("every event delivered after the restart", all_delivered(client, hub_id, total))
        assert after["pending"] == after["retrying"] == after["dead"] == after["suspended"] == 0
        rows = deliveries(client, hub_id)
        assert {row["eventId"] for row in rows} == event_ids
        assert all(row["state"] == "delivered" for row in rows)

    # Settled as delivered means the listener got it: this is everything it will get.
    arrived = [event["eventId"] for event in listener.events()]
    assert Counter(arrived) == Counter(event_ids), "missing or duplicated events"
    assert received_by_service(listener) == expected
    check_envelopes(listener)


def test_two_servers_on_one_database_deliver_each_event_once(
        servers: StartServer, listeners: Callable[..., TrackingListener]) -> None:
    listener = listeners(delay=0.05)
    # Both dispatchers poll often, so that they compete for the same deliveries all the time.
    eager = {"delivery_poll_seconds": 0.02}
    one, two = servers(**eager), servers(**eager)
    count = 60

    with httpx.Client(base_url=one.url, timeout=30, headers=one.operator_headers()) as first, \
            httpx.Client(base_url=two.url, timeout=30, headers=two.operator_headers()) as second:
        hub_id = subscribe(first, listener)
        # The other server sees the subscription: its writes record deliveries for it too.
        assert second.get(f"{HUB}/{hub_id}").status_code == 200

        def create_many(client: httpx.Client, prefix: str) -> list[str]:
            return [create(client, f"{prefix}-{i}") for i in range(count // 2)]

        with ThreadPoolExecutor(max_workers=2) as pool:
            futures = [pool.submit(create_many, first, "one"), pool.submit(create_many, second, "two")]
            created = [service_id for future in futures for service_id in future.result()]
        assert len(set(created)) == count

        wait_until("every event delivered", all_delivered(first, hub_id, count))
        rows = deliveries(second, hub_id)
        assert len(rows) == count
        # Sent and settled once each: a second dispatcher's attempt would count.
        assert [row for row in rows if row["state"] != "delivered" or row["attempts"] != 1] == []
        event_ids = {row["eventId"] for row in rows}

    arrived = [event["eventId"] for event in listener.events()]
    duplicated = [event_id for event_id, n in Counter(arrived).items() if n > 1]
    assert duplicated == [], f"{len(duplicated)} events were delivered more than once"
    assert set(arrived) == event_ids
    assert sorted(received_by_service(listener)) == sorted(created)
    assert all(events == [("ServiceCreateEvent", "0")] for events in received_by_service(listener).values())
    # The listener was slow enough that deliveries overlapped.
    assert listener.seen_in_flight > 1
    check_envelopes(listener)


def test_a_stuck_listener_does_not_hold_up_a_healthy_one(
        servers: StartServer, listeners: Callable[..., TrackingListener]) -> None:
    healthy = listeners()
    # Holds every request it gets until the test ends (and then refuses it): each delivery
    # sent to it keeps its slot in the dispatcher.
    stuck = listeners(answer=503)
    stuck.hold = True
    # More events for the stuck listener than the whole process may send at once: only the cap
    # per subscriber leaves room for the healthy one.
    server = servers(delivery_timeout_seconds=DELIVERY_TIMEOUT, delivery_poll_seconds=0.05,
                     delivery_concurrency=12, delivery_per_subscription=4)
    count = 20

    try:
        with httpx.Client(base_url=server.url, timeout=30, headers=server.operator_headers()) as client:
            stuck_id = subscribe(client, stuck)
            healthy_id = subscribe(client, healthy)
            created = [create(client, f"svc-{i}") for i in range(count)]

            wait_until("every event delivered to the healthy listener", all_delivered(client, healthy_id, count))
            rows = deliveries(client, healthy_id)
            assert [row for row in rows if row["state"] != "delivered" or row["attempts"] != 1] == []
            # Meanwhile the stuck listener still holds its deliveries, and none is lost.
            wait_until("the stuck listener holding deliveries", stuck.busy)
            stuck_summary = summary(client, stuck_id)
            assert stuck_summary["delivered"] == stuck_summary["dead"] == 0
            assert stuck_summary["pending"] + stuck_summary["retrying"] == count
    finally:
        stuck.released.set()

    assert stuck.events() == []
    assert stuck.seen_in_flight <= 4
    assert sorted(e["event"]["service"]["id"] for e in healthy.events()) == sorted(created)
    check_envelopes(healthy)


def test_a_fast_path_delivery_in_flight_when_the_server_is_killed_is_sent_after_restart(
        servers: StartServer, listeners: Callable[..., TrackingListener]) -> None:
    listener = listeners()
    listener.hold = True
    # The first server polls once at its start and never again: the delivery it sends, its fast
    # path sends, straight after the create's commit.
    first = servers(delivery_poll_seconds=3600)
    with httpx.Client(base_url=first.url, timeout=30, headers=first.operator_headers()) as client:
        hub_id = subscribe(client, listener)
        service_id = create(client, "in-flight")
    wait_until("the delivery held by the listener", lambda: listener.busy() == 1)
    first.process.kill()
    first.process.wait(timeout=STOP_TIMEOUT)
    # The killed server's request stays held (and unrecorded) until the test ends; what the
    # listener records from now on came from the restarted server.
    listener.hold = False
    second = servers(delivery_poll_seconds=0.1)
    with httpx.Client(base_url=second.url, timeout=30, headers=second.operator_headers()) as client:
        wait_until("the delivery settled after restart", all_delivered(client, hub_id, 1))
        rows = deliveries(client, hub_id)
    assert [(e["eventType"], e["event"]["service"]["id"]) for e in listener.events()] == [
        ("ServiceCreateEvent", service_id)]
    # The killed server never wrote an outcome: the attempt after restart is the one counted.
    assert [(row["state"], row["attempts"]) for row in rows] == [("delivered", 1)]
    check_envelopes(listener)
