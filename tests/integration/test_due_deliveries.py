"""The dispatcher's due-work query on the real wire protocol server: a process serving some of
the APIs claims only their deliveries, whichever way it found them."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

from pymongo import AsyncMongoClient

from services.tmf.repository.events import NO_LEASE, EventStore, utcnow


def test_a_process_serving_some_apis_claims_only_their_deliveries(mongo_uri: str) -> None:
    async def run() -> tuple[list[str], list[str]]:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_uri)
        try:
            store = EventStore(client[f"t_{uuid.uuid4().hex[:12]}"])
            await store.ensure_indexes()
            due = utcnow() - timedelta(seconds=10)
            # Made long ago, already delivered: what the sweep must not be slowed by or return.
            deliveries = [{"_id": f"old-{i}", "api": api, "state": "delivered", "lane": f"old-{i}", "seq": i,
                           "subscriptionId": "sub", "eventId": "e-old", "nextAttemptAt": due - timedelta(hours=1),
                           "leaseUntil": NO_LEASE} for i, api in enumerate(["inventory", "sla"] * 5)]
            deliveries += [{"_id": f"{api}-{i}", "api": api, "state": state, "lane": f"{api}-{i}", "seq": 100 + i,
                            "subscriptionId": "sub", "eventId": f"e-{api}", "nextAttemptAt": due,
                            "leaseUntil": NO_LEASE}
                           for i, (api, state) in enumerate([("inventory", "pending"), ("sla", "pending"),
                                                            ("sla", "retrying"), ("problem", "pending")])]
            await store.deliveries.insert_many(deliveries)
            await store.events.insert_many([{"_id": f"e-{api}", "event": {"eventId": f"e-{api}"}}
                                            for api in ("inventory", "sla", "problem", "old")])
            # The first claim sweeps everything due; the second walks the windows after it.
            first = await store.claim("a", lambda _: 10, 10, timedelta(seconds=30), apis=["sla"])
            await store.deliveries.insert_one({**deliveries[-3], "_id": "sla-late", "lane": "sla-late",
                                               "nextAttemptAt": utcnow() - timedelta(seconds=1)})
            await store.deliveries.insert_one({**deliveries[-1], "_id": "problem-late", "lane": "problem-late",
                                               "nextAttemptAt": utcnow() - timedelta(seconds=1)})
            second = await store.claim("a", lambda _: 10, 10, timedelta(seconds=30), apis=["sla"])
            return sorted(d["_id"] for d, _ in first), sorted(d["_id"] for d, _ in second)
        finally:
            await client.close()

    first, second = asyncio.run(run())
    assert first == ["sla-1", "sla-2"]
    assert second == ["sla-late"]
