"""Bucket writes of concurrent measurement batches, coalesced into shared transactions, on the
real wire protocol server."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from bson.errors import InvalidDocument
from pymongo import AsyncMongoClient

from services.sla.repository import BUCKETS, BucketWrites, MeasurementStore, StoredSample

HOUR_MS = 3_600_000


def batch(service: str, first_minute: int, minutes: int) -> list[StoredSample]:
    return [StoredSample(service, "availability", (first_minute + m) * 60_000, 1.0, 60.0) for m in range(minutes)]


async def run_concurrent(mongo_uri: str, batches: list[list[StoredSample]]) -> tuple[list[Any], list[dict[str, Any]]]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_uri)
    try:
        database = client[f"t_{uuid.uuid4().hex[:12]}"]
        writes = BucketWrites()  # one per process, as the SLA service keeps it
        outcomes = await asyncio.gather(*(MeasurementStore(database, writes).add(b) for b in batches),
                                        return_exceptions=True)
        buckets = await database[BUCKETS].find({}).sort("_id").to_list()
        return outcomes, buckets
    finally:
        await client.close()


def test_concurrent_batches_land_in_their_buckets_whole(mongo_uri: str) -> None:
    # Eight batches over the same two hours of two services: they meet in every bucket.
    batches = [batch(f"svc-{i % 2}", 30 + 10 * (i // 2), 10) for i in range(8)]
    outcomes, buckets = asyncio.run(run_concurrent(mongo_uri, batches))
    assert outcomes == [None] * 8
    by_id = {b["_id"]: b for b in buckets}
    assert sorted(by_id) == ["svc-0|availability|0", "svc-0|availability|3600",
                             "svc-1|availability|0", "svc-1|availability|3600"]
    for service in ("svc-0", "svc-1"):
        first, second = by_id[f"{service}|availability|0"], by_id[f"{service}|availability|3600"]
        assert first["n"] == len(first["samples"]) == 30 and second["n"] == len(second["samples"]) == 10
        minutes = sorted(int(at) // 60_000 for at, _, _ in first["samples"] + second["samples"])
        assert minutes == list(range(30, 70))
        assert all(int(at) < HOUR_MS for at, _, _ in first["samples"])


def test_a_batch_that_cannot_be_written_fails_alone(mongo_uri: str) -> None:
    good = [batch("svc-a", 0, 5), batch("svc-b", 0, 5), batch("svc-c", 0, 5)]
    unstorable = [StoredSample(object(), "availability", 0, 1.0, 60.0)]  # type: ignore[arg-type]
    outcomes, buckets = asyncio.run(run_concurrent(mongo_uri, [good[0], unstorable, good[1], good[2]]))
    assert outcomes[0] is None and outcomes[2] is None and outcomes[3] is None
    assert isinstance(outcomes[1], InvalidDocument)
    assert [b["_id"] for b in buckets] == ["svc-a|availability|0", "svc-b|availability|0", "svc-c|availability|0"]
    assert all(b["n"] == 5 for b in buckets)


@pytest.mark.parametrize("count", [1, 3])
def test_without_shared_writes_each_batch_is_its_own_transaction(mongo_uri: str, count: int) -> None:
    async def run() -> list[dict[str, Any]]:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_uri)
        try:
            database = client[f"t_{uuid.uuid4().hex[:12]}"]
            for i in range(count):
                await MeasurementStore(database).add(batch("svc", 10 * i, 10))
            return await database[BUCKETS].find({}).to_list()
        finally:
            await client.close()

    buckets = asyncio.run(run())
    assert [b["n"] for b in buckets] == [10 * count]
