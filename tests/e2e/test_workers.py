"""``sqm serve --workers N``: several processes on one port over one embedded database, the
suite's own subscriptions made once, every worker stopped with the server."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
from pymongo import MongoClient

from tests.support.listener import eventually
from tests.support.sqm_process import INVENTORY, StartSqm, _pids, _stat, accepts_connections, is_running

WORKER = "multiprocessing.spawn"  # on a worker's command line


def workers_of(parent: int) -> list[int]:
    return [pid for pid in _pids() if (stat := _stat(pid)) is not None and stat[1] == parent
            and is_running(pid, WORKER)]


def test_two_workers_serve_one_port_over_one_database(sqm: StartSqm, tmp_path: Path) -> None:
    server = sqm(tmp_path / "data", args=("--workers", "2"))  # the fixture checks: one embedded database
    assert server.ready_line == f"tmf-sqm ready on http://127.0.0.1:{server.port} (2 workers)"
    # Ready once the first worker serves; the second is started then, and shows as a worker
    # only once its process has replaced the forked copy of this one.
    eventually(lambda: len(workers_of(server.process.pid)) == 2)
    workers = workers_of(server.process.pid)
    assert len(workers) == 2, f"expected two worker processes, found {workers}"

    with httpx.Client(base_url=server.url, timeout=30, headers=server.operator_headers()) as client:
        # Several connections, so that both workers take some; whichever answers, the data is one.
        created = []
        for i in range(6):
            with httpx.Client(base_url=server.url, timeout=30, headers=server.operator_headers()) as fresh:
                answer = fresh.post(f"{INVENTORY}/service", json={
                    "name": f"vpn-{i}", "state": "active", "serviceSpecification": {"id": "ip-vpn"}})
                assert answer.status_code == 201, answer.text
                created.append(answer.json()["id"])
        for resource_id in created:
            assert client.get(f"{INVENTORY}/service/{resource_id}").status_code == 200
        assert client.get("/health/ready").status_code == 200

    # The first worker subscribed the problem service to the alarm and SLA hubs; the second
    # found those subscriptions instead of adding its own.
    with MongoClient(server.database_uri()) as mongo:
        subscriptions = list(mongo[server.database]["hub"].find({}, {"api": 1, "callback": 1}))
    callbacks = [(s["api"], s["callback"]) for s in subscriptions]
    assert len(callbacks) == len(set(callbacks)) >= 2, callbacks

    assert server.stop(signal.SIGTERM) == 0, server.stderr()
    assert not any(is_running(pid, WORKER) for pid in workers), "a worker outlived sqm serve"
    assert not accepts_connections(server.port)
    assert not is_running(server.database_pid), "the embedded database outlived sqm serve"
