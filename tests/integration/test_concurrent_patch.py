"""Concurrent PATCHes of one resource over real HTTP: without If-Match every one is applied to
the version it meets and none is lost; with a stale If-Match the change is refused (412)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest

from services.app import create_app
from services.tmf.embedded import free_port
from services.tmf.repository import ResourceStore
from services.tmf.resource import PATCH_ATTEMPTS, KeyedLocks
from tests.conftest import INVENTORY, make_settings
from tests.support.auth import bearer
from tests.support.server import serve

SLA_API = "/tmf-api/slaManagement/v4"
ALARMS = "/tmf-api/alarmManagement/v4"
PROBLEMS = "/tmf-api/serviceProblemManagement/v4"
WRITERS = 20
JSON_PATCH = {"content-type": "application/json-patch+json"}
MERGE_PATCH = {"content-type": "application/merge-patch+json"}
# The operator's Authorization header, once the served suite has made its signing key.
AUTH: dict[str, str] = {}


@pytest.fixture(scope="module")
def base(mongo_uri) -> Iterator[str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # The SLA rules check covered services against this very inventory, over HTTP: the slow
    # path the concurrent writers must get through.
    settings = make_settings(mongo_uri, public_url=url, inventory_url=f"{url}{INVENTORY}")
    with serve(create_app(settings), port):
        AUTH.update(bearer(settings))
        yield url


def _post(url: str, **options) -> httpx.Response:
    return httpx.post(url, **{**options, "headers": {**AUTH, **options.get("headers", {})}})


def _get(url: str, **options) -> httpx.Response:
    return httpx.get(url, **{**options, "headers": {**AUTH, **options.get("headers", {})}})


def _patch(url: str, **options) -> httpx.Response:
    return httpx.patch(url, **{**options, "headers": {**AUTH, **options.get("headers", {})}})


def create(base: str, path: str, body: dict) -> dict:
    response = _post(f"{base}{path}", json=body, timeout=30)
    assert response.status_code == 201, response.text
    created: dict = response.json()
    return created


def service(base: str) -> dict:
    return create(base, f"{INVENTORY}/service", {"name": "vpn", "state": "active",
                                                  "serviceSpecification": {"id": "spec-vpn"}, "note": []})


# Each case: the collection, how to make one resource, the list every writer appends to, one
# appended item per writer, and two attributes other writers set with merge-patch.
CASES = {
    "service": (f"{INVENTORY}/service", service, "note", lambda i: {"text": f"note {i}"},
                {"description": "changed", "category": "CFS"}),
    "sla": (f"{SLA_API}/sla", lambda base: create(base, f"{SLA_API}/sla", {
        "name": "gold", "maintenanceWindow": [],
        "relatedEntity": [{"id": service(base)["id"], "role": "coveredService", "@referredType": "Service"}],
    }), "maintenanceWindow", lambda i: {"validFor": {"startDateTime": f"2026-10-{i + 1:02d}T01:00:00.000Z",
                                                     "endDateTime": f"2026-10-{i + 1:02d}T02:00:00.000Z"}},
        {"description": "changed", "version": "2"}),
    "alarm": (f"{ALARMS}/alarm", lambda base: create(base, f"{ALARMS}/alarm", {
        "alarmType": "communicationsAlarm", "perceivedSeverity": "minor", "probableCause": "lossOfSignal",
        "alarmedObject": {"id": "link-1", "@referredType": "Resource"}, "sourceSystemId": "nms",
        "state": "raised", "alarmRaisedTime": "2026-10-10T10:00:00Z", "comment": []}),
        "comment", lambda i: {"comment": f"comment {i}"},
        {"alarmDetails": "changed", "proposedRepairedActions": "replace the card"}),
    "problem": (f"{PROBLEMS}/serviceProblem", lambda base: create(base, f"{PROBLEMS}/serviceProblem", {
        "category": "c", "description": "d", "priority": 3, "reason": "r", "note": [],
        "originatorParty": {"id": "acme", "@referredType": "Organization"}}),
        "note", lambda i: {"text": f"note {i}"}, {"description": "changed", "reason": "changed"}),
}


async def patch_concurrently(url: str, attribute: str, item, merged: dict) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=60, headers=AUTH) as client:
        appends = [client.patch(url, json=[{"op": "add", "path": f"/{attribute}/-", "value": item(i)}],
                                headers=JSON_PATCH) for i in range(WRITERS - len(merged))]
        merges = [client.patch(url, json={name: value}, headers=MERGE_PATCH) for name, value in merged.items()]
        return list(await asyncio.gather(*appends, *merges))


@pytest.mark.parametrize("kind", sorted(CASES))
def test_concurrent_patches_without_if_match_all_succeed_and_none_is_lost(base, kind):
    path, make, attribute, item, merged = CASES[kind]
    resource = make(base)
    url = f"{base}{path}/{resource['id']}"
    responses = asyncio.run(patch_concurrently(url, attribute, item, merged))
    assert [r.status_code for r in responses] == [200] * WRITERS, [r.text for r in responses if r.status_code != 200]
    final = _get(url, timeout=30)
    body = final.json()
    appended = WRITERS - len(merged)
    # The server may give appended items attributes of its own (e.g. an id): compare what was sent.
    kept = sorted(str({k: v for k, v in entry.items() if k in item(0)}) for entry in body[attribute])
    assert kept == sorted(str(item(i)) for i in range(appended))
    for name, value in merged.items():
        assert body[name] == value
    assert final.headers["etag"] == f'"{1 + WRITERS}"'


def test_a_stale_if_match_is_still_refused(base):
    resource = service(base)
    url = f"{base}{INVENTORY}/service/{resource['id']}"
    first = _patch(url, json={"description": "one"}, headers={**MERGE_PATCH, "if-match": '"1"'}, timeout=30)
    assert first.status_code == 200, first.text
    stale = _patch(url, json={"description": "two"}, headers={**MERGE_PATCH, "if-match": '"1"'}, timeout=30)
    assert stale.status_code == 412, stale.text
    assert stale.json()["status"] == "412"
    assert _get(url, timeout=30).json()["description"] == "one"


def test_a_change_that_keeps_losing_to_another_process_is_a_409_with_retry_after(client, monkeypatch):
    created = client.post(f"{INVENTORY}/service", json={"name": "vpn", "state": "active",
                                                        "serviceSpecification": {"id": "spec-vpn"}}).json()
    real_replace = ResourceStore.replace
    attempts = 0

    async def another_process_writes_first(self, document, scope, *, meta, session=None):
        # A writer elsewhere commits a new version between every read and write of ours.
        nonlocal attempts
        attempts += 1
        await self.collection.update_one({"_id": document["id"]}, {"$inc": {"_meta.version": 1}})
        return await real_replace(self, document, scope, meta=meta, session=session)

    monkeypatch.setattr(ResourceStore, "replace", another_process_writes_first)
    url = f"{INVENTORY}/service/{created['id']}"
    response = client.patch(url, json={"description": "mine"}, headers=MERGE_PATCH)
    assert response.status_code == 409, response.text
    assert response.headers["retry-after"] == "1"
    body = response.json()
    assert body["status"] == "409" and "send it again" in body["message"]
    assert attempts == PATCH_ATTEMPTS
    monkeypatch.undo()
    assert "description" not in client.get(url).json()


def test_resource_locks_are_forgotten_when_nobody_holds_them():
    locks = KeyedLocks()
    order = []

    async def writer(key, name):
        async with locks.hold(key):
            order.append(f"{name} in")
            await asyncio.sleep(0)
            order.append(f"{name} out")

    async def main():
        await asyncio.gather(writer("a", "1"), writer("a", "2"), writer("b", "3"))
        return len(locks)

    assert asyncio.run(main()) == 0
    # Holders of one key never overlap.
    a = [step for step in order if step[0] in "12"]
    assert a == ["1 in", "1 out", "2 in", "2 out"]
