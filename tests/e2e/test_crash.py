"""A crash of the whole machine, as near as a test gets to one: ``sqm serve`` and its embedded
database killed together (SIGKILL to their process group, as an OOM kill or a power cut would)
in the middle of a burst of creates from several clients. Every create that was answered 201
must be there after a restart on the same data dir, and its event must reach the listener."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.listener import Listener
from tests.support.sqm_process import INVENTORY, STOP_TIMEOUT, StartSqm, group_members

SERVICE = f"{INVENTORY}/service"
CLIENTS = 8
# Creates answered before the kill: enough that many are in flight, in every client, when it comes.
ACKNOWLEDGED_BEFORE_KILL = 120
# Safety bounds only, to tell a stall of minutes from normal operation: nothing here asserts
# how fast anything is.
BURST_TIMEOUT = 180.0
DELIVERY_TIMEOUT = 180.0
# Leases a killed server held expire this soon, so that the restarted one sends what it was
# sending (the default, 60 s, would only make the test longer).
SETTINGS = {"delivery_lease_seconds": 2, "delivery_backoff_seconds": 0.05, "delivery_backoff_max_seconds": 0.5,
            "delivery_poll_seconds": 0.1}


def wait_until(what: str, condition: Callable[[], Any], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not reached within {timeout:.0f} s (last: {value!r})")
        time.sleep(0.05)


@pytest.fixture
def listener() -> Iterator[Listener]:
    running = Listener().start()
    yield running
    running.stop()


class Burst:
    """``CLIENTS`` threads creating services as fast as the server answers, each remembering
    what was answered 201, until the server is gone."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        self.url = url
        self.headers = headers
        self.acknowledged: list[str] = []
        self.refused: Counter[int] = Counter()
        self.stopped = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._create, args=(n,), daemon=True) for n in range(CLIENTS)]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def count(self) -> int:
        with self.lock:
            return len(self.acknowledged)

    def join(self) -> None:
        self.stopped.set()
        for thread in self.threads:
            thread.join(timeout=STOP_TIMEOUT)
        assert not any(thread.is_alive() for thread in self.threads), "a client still runs"

    def _create(self, client_number: int) -> None:
        with httpx.Client(base_url=self.url, timeout=30, headers=self.headers) as client:
            for i in range(1_000_000):
                if self.stopped.is_set():
                    return
                body = {"name": f"client-{client_number}-{i}", "state": "inactive",
                        "serviceSpecification": {"id": "spec"}}
                try:
                    response = client.post(SERVICE, json=body)
                except httpx.HTTPError:
                    # The server died under this request: it was never acknowledged.
                    return
                with self.lock:
                    if response.status_code == 201:
                        self.acknowledged.append(response.json()["id"])
                    else:
                        self.refused[response.status_code] += 1


def created_ids(listener: Listener) -> set[str]:
    return {event["event"]["service"]["id"] for event in listener.events()
            if event["eventType"] == "ServiceCreateEvent"}


def test_acknowledged_creates_and_their_events_survive_a_kill_of_the_process_group(
        sqm: StartSqm, listener: Listener, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = sqm(data_dir, own_group=True, **SETTINGS)
    with httpx.Client(base_url=first.url, timeout=30, headers=first.operator_headers()) as client:
        hub = client.post(f"{INVENTORY}/hub", json={"callback": listener.url,
                                                    "query": "eventType=ServiceCreateEvent"})
        assert hub.status_code == 201, hub.text
        hub_id = hub.json()["id"]

    burst = Burst(first.url, first.operator_headers())
    burst.start()
    wait_until("creates answered before the kill", lambda: burst.count() >= ACKNOWLEDGED_BEFORE_KILL,
               BURST_TIMEOUT)
    os.killpg(first.process.pid, signal.SIGKILL)
    assert first.process.wait(timeout=STOP_TIMEOUT) == -signal.SIGKILL
    wait_until("the killed process group gone", lambda: not group_members(first.process.pid), STOP_TIMEOUT)
    burst.join()
    acknowledged = list(burst.acknowledged)
    assert burst.refused == Counter(), "creates refused during the burst"
    assert len(acknowledged) == len(set(acknowledged)) >= ACKNOWLEDGED_BEFORE_KILL

    second = sqm(data_dir, **SETTINGS)
    with httpx.Client(base_url=second.url, timeout=30, headers=second.operator_headers()) as client:
        # The subscription was acknowledged too (outside any create's transaction).
        assert client.get(f"{INVENTORY}/hub/{hub_id}").status_code == 200
        missing = [service_id for service_id in acknowledged
                   if client.get(f"{SERVICE}/{service_id}").status_code != 200]
        assert missing == [], f"{len(missing)} of {len(acknowledged)} acknowledged creates were lost"

    def all_announced() -> bool:
        return set(acknowledged) <= created_ids(listener)

    # What the listener got before the kill counts too: delivery is at least once.
    wait_until("a ServiceCreateEvent for every acknowledged create", all_announced, DELIVERY_TIMEOUT)
