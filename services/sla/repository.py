"""Storage of measurements, in buckets: one document per service, metric and hour holding that
hour's samples. Ingestion is one bulk write per batch, in one transaction: a database that
makes every write durable on commit (the embedded one syncs each) then syncs once per batch,
not once per bucket. Evaluating a month reads about 744 documents per service and metric
instead of tens of thousands."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pymongo import ASCENDING, IndexModel, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase

from services.tmf.repository.events import in_transaction

BUCKETS = "measurement_bucket"
BUCKET_SECONDS = 3600
# A sample covers at most a day, so a period's samples can start this long before it.
MAX_INTERVAL_SECONDS = 86_400
# Buckets per reply when reading a period: a month of one service and metric in one batch.
READ_BATCH = 2000


@dataclass(frozen=True)
class StoredSample:
    service: str
    metric: str
    at_ms: int
    value: float
    interval: float


class MeasurementStore:
    def __init__(self, database: AsyncDatabase[dict[str, Any]], writes: asyncio.Lock | None = None) -> None:
        """``writes``, when given, is shared by the stores of one process: their batches then
        write one after the other instead of aborting each other's transactions on the buckets
        they share (consecutive batches of a collector land in the same hours)."""
        self.database = database
        self.writes = writes
        self.buckets = database[BUCKETS]

    async def ensure_indexes(self) -> None:
        await self.buckets.create_indexes([
            IndexModel([("service", ASCENDING), ("metric", ASCENDING), ("hour", ASCENDING)]),
        ])

    async def add(self, samples: Iterable[StoredSample]) -> None:
        grouped: dict[tuple[str, str, int], list[list[float]]] = defaultdict(list)
        for s in samples:
            hour = s.at_ms // 1000 // BUCKET_SECONDS * BUCKET_SECONDS
            grouped[(s.service, s.metric, hour)].append([s.at_ms, s.value, s.interval])
        operations = [
            UpdateOne({"_id": f"{service}|{metric}|{hour}"},
                      {"$setOnInsert": {"service": service, "metric": metric, "hour": hour},
                       "$push": {"samples": {"$each": rows}}, "$inc": {"n": len(rows)}},
                      upsert=True)
            for (service, metric, hour), rows in grouped.items()
        ]
        if not operations:
            return
        # Batches that meet in a bucket conflict; the driver retries the loser's transaction.
        if self.writes is None:
            await self._write(operations)
            return
        async with self.writes:
            await self._write(operations)

    async def _write(self, operations: list[UpdateOne]) -> None:
        await in_transaction(self.database, lambda session: self.buckets.bulk_write(
            operations, ordered=False, session=session))

    async def samples(self, services: list[str], metrics: list[str], start_s: int,
                      end_s: int) -> dict[tuple[str, str], list[tuple[int, float, float]]]:
        """Samples observed in ``[start_s - a day, end_s)`` by (service, metric), as
        (epoch milliseconds, value, interval seconds)."""
        first_hour = (start_s - MAX_INTERVAL_SECONDS) // BUCKET_SECONDS * BUCKET_SECONDS
        found: dict[tuple[str, str], list[tuple[int, float, float]]] = defaultdict(list)
        # A month is some 770 buckets per service and metric. They are read whole: on the
        # embedded server a projection costs more than the few fields it leaves out (a quarter
        # of the read); equality where there is one value to match, and one batch instead of
        # a first batch of 101 and further round trips.
        cursor = self.buckets.find(
            {"service": _one_of(services), "metric": _one_of(metrics), "hour": {"$gte": first_hour, "$lt": end_s}},
            batch_size=READ_BATCH,
        )
        async for bucket in cursor:
            rows = found[(bucket["service"], bucket["metric"])]
            rows.extend((int(at), float(value), float(interval)) for at, value, interval in bucket["samples"])
        return found


def _one_of(values: list[str]) -> str | dict[str, list[str]]:
    return values[0] if len(values) == 1 else {"$in": values}
