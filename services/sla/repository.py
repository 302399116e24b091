"""Storage of measurements, in buckets: one document per service, metric and hour holding that
hour's samples. Ingestion is one bulk write per batch, or per group of batches that arrived
together, in one transaction: a database that makes every write durable on commit (the
embedded one syncs each) then syncs once per group, not once per bucket. Evaluating a month
reads about 744 documents per service and metric instead of tens of thousands.

Once a day has ended, its hour buckets of the services SLAs cover are merged into one day
bucket (:meth:`MeasurementStore.compact`, run by the period scheduler): a closing month is then
some 31 day buckets and the last day's hours, and the embedded server's cost of a read is per
document. A sample that arrives late for a compacted day lands in an hour bucket as any other,
is read with the day bucket, and is merged into it by the next compaction."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any, NamedTuple

from pymongo import ASCENDING, IndexModel, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase

from services.tmf.batching import Coalescer
from services.tmf.repository.events import in_transaction

BUCKETS = "measurement_bucket"
# Made at start-up with the API's other collections (``ApiDeclaration.collections``).
BUCKET_INDEXES = (IndexModel([("service", ASCENDING), ("metric", ASCENDING), ("hour", ASCENDING)]),)
BUCKET_SECONDS = 3600
DAY_SECONDS = 86_400
# A sample covers at most a day, so a period's samples can start this long before it.
MAX_INTERVAL_SECONDS = 86_400
# Buckets per reply when reading a period: a month of one service and metric in one batch.
READ_BATCH = 2000


class StoredSample(NamedTuple):
    """One sample as stored (a tuple: a batch makes thousands)."""

    service: str
    metric: str
    at_ms: int
    value: float
    interval: float


Buckets = dict[tuple[str, str, int], list[list[float]]]


class BucketsMoved(Exception):
    """The compaction's removal did not find the hour buckets it had read."""


class BucketWrites:
    """The bucket writes of one process, coalesced: the batches that arrive while one is being
    written are written next, together, in one transaction, each bucket they share with one
    upsert. Batches of one collector land in the same hours, so that concurrent batches cost
    about one batch's writes and one commit instead of one each; and they cannot abort each
    other's transactions on the buckets they share. A batch is answered once its group is
    committed; should a group fail, each of its batches is written again alone, so that one bad
    batch fails no other."""

    def __init__(self) -> None:
        self._coalescer: Coalescer[tuple[MeasurementStore, Buckets], BaseException | None] = Coalescer(self._flush)

    async def write(self, store: MeasurementStore, buckets: Buckets) -> None:
        failure = await self._coalescer.submit((store, buckets))
        if failure is not None:
            raise failure

    @staticmethod
    async def _flush(items: list[tuple[MeasurementStore, Buckets]]) -> list[BaseException | None]:
        if len(items) == 1 or len({id(store.database) for store, _ in items}) > 1:
            return [await BucketWrites._alone(store, buckets) for store, buckets in items]
        merged: Buckets = defaultdict(list)
        for _, buckets in items:
            for key, rows in buckets.items():
                merged[key].extend(rows)
        try:
            await items[0][0].write_now(merged)
        except Exception:
            return [await BucketWrites._alone(store, buckets) for store, buckets in items]
        return [None] * len(items)

    @staticmethod
    async def _alone(store: MeasurementStore, buckets: Buckets) -> BaseException | None:
        try:
            await store.write_now(buckets)
        except Exception as exc:
            return exc
        return None


class MeasurementStore:
    def __init__(self, database: AsyncDatabase[dict[str, Any]], writes: BucketWrites | None = None) -> None:
        """``writes``, when given, is shared by the stores of one process: their batches are then
        written together (see :class:`BucketWrites`) instead of each in its own transaction."""
        self.database = database
        self.writes = writes
        self.buckets = database[BUCKETS]

    async def ensure_indexes(self) -> None:
        await self.buckets.create_indexes(list(BUCKET_INDEXES))

    async def add(self, samples: Iterable[StoredSample]) -> None:
        grouped: Buckets = defaultdict(list)
        for s in samples:
            hour = s.at_ms // 1000 // BUCKET_SECONDS * BUCKET_SECONDS
            grouped[(s.service, s.metric, hour)].append([s.at_ms, s.value, s.interval])
        if not grouped:
            return
        if self.writes is None:
            await self.write_now(grouped)
        else:
            await self.writes.write(self, grouped)

    async def write_now(self, grouped: Buckets) -> None:
        """Append the rows to their buckets (made when missing), all in one transaction: a
        database that makes every commit durable (the embedded one syncs each) then syncs once,
        not once per bucket."""
        operations = [
            UpdateOne({"_id": f"{service}|{metric}|{hour}"},
                      {"$setOnInsert": {"service": service, "metric": metric, "hour": hour},
                       "$push": {"samples": {"$each": rows}}, "$inc": {"n": len(rows)}},
                      upsert=True)
            for (service, metric, hour), rows in grouped.items()
        ]
        await in_transaction(self.database, lambda session: self.buckets.bulk_write(
            operations, ordered=False, session=session))

    async def samples(self, services: list[str], metrics: list[str], start_s: int,
                      end_s: int) -> dict[tuple[str, str], list[tuple[int, float, float]]]:
        """Samples observed in the hours ``[start_s - a day, end_s)`` by (service, metric), as
        (epoch milliseconds, value, interval seconds), in the order they were stored."""
        first_hour = (start_s - MAX_INTERVAL_SECONDS) // BUCKET_SECONDS * BUCKET_SECONDS
        # A day bucket is keyed by its day's first hour, which may be before the first hour read.
        first_day = first_hour // DAY_SECONDS * DAY_SECONDS
        found: dict[tuple[str, str], list[tuple[int, float, float]]] = defaultdict(list)
        late: dict[tuple[str, str], list[tuple[int, float, float]]] = defaultdict(list)
        # A month is some 770 buckets per service and metric, or about 31 day buckets once
        # compacted. They are read whole: on the embedded server a projection costs more than
        # the few fields it leaves out (a quarter of the read); equality where there is one
        # value to match, and one batch instead of a first batch of 101 and further round trips.
        cursor = self.buckets.find(
            {"service": _one_of(services), "metric": _one_of(metrics), "hour": {"$gte": first_day, "$lt": end_s}},
            batch_size=READ_BATCH,
        )
        first_ms, end_ms = first_hour * 1000, end_s * 1000
        async for bucket in cursor:
            key = (bucket["service"], bucket["metric"])
            if bucket.get("span") == DAY_SECONDS:
                # Whole hours, as the hour buckets would have given them.
                found[key].extend(
                    (int(at), float(value), float(interval)) for at, value, interval in bucket["samples"]
                    if first_ms <= int(at) // 3_600_000 * 3_600_000 < end_ms)
            elif bucket["hour"] >= first_hour:
                # An hour bucket beside a day bucket holds what came after the day was compacted:
                # read after every day bucket, so that an instant sent again counts as last sent.
                late[key].extend((int(at), float(value), float(interval)) for at, value, interval in bucket["samples"])
        for key, rows in late.items():
            found[key].extend(rows)
        return found

    async def compact(self, series: Iterable[tuple[str, str]], since_s: int, before_s: int) -> int:
        """Merge the hour buckets of the whole UTC days in ``[since_s, before_s)`` of each
        (service, metric) in ``series`` into one bucket per day; returns how many hour buckets
        went. Each series is one transaction: the day buckets are written (or extended, for hours
        that came late) and the hour buckets removed together, and only those read (the series is
        tried again otherwise, or left for the next compaction). Samples keep their order: a
        day's hours in order, late ones after."""
        first_day = -(-since_s // DAY_SECONDS) * DAY_SECONDS
        end_day = before_s // DAY_SECONDS * DAY_SECONDS
        removed = 0
        if end_day <= first_day:
            return removed
        for service, metric in series:
            for _ in range(3):
                try:
                    removed += await self._compact_series(service, metric, first_day, end_day)
                    break
                except BucketsMoved:
                    continue
        return removed

    async def _compact_series(self, service: str, metric: str, first_day: int, end_day: int) -> int:
        hours_of = {"service": service, "metric": metric, "hour": {"$gte": first_day, "$lt": end_day},
                    "span": {"$exists": False}}

        async def write(session: Any) -> int:
            # Read and removed in one snapshot: an hour bucket that takes samples meanwhile makes
            # the removal a write conflict (the transaction is tried again); one made meanwhile
            # is not in the snapshot, so it is neither read nor removed, and stays for next time.
            hours = await self.buckets.find(hours_of, batch_size=READ_BATCH, session=session).to_list(None)
            if not hours:
                return 0
            days: dict[int, list[dict[str, Any]]] = defaultdict(list)
            for bucket in sorted(hours, key=lambda b: b["hour"]):
                days[bucket["hour"] // DAY_SECONDS * DAY_SECONDS].append(bucket)
            # One range removal: on the embedded server a removal by _id costs several times more.
            removed = await self.buckets.delete_many(hours_of, session=session)
            if removed.deleted_count != len(hours):
                raise BucketsMoved(service, metric)
            await self.buckets.bulk_write([
                UpdateOne({"_id": f"{service}|{metric}|{day}|day"},
                          {"$setOnInsert": {"service": service, "metric": metric, "hour": day, "span": DAY_SECONDS},
                           "$push": {"samples": {"$each": [row for b in buckets for row in b["samples"]]}},
                           "$inc": {"n": sum(len(b["samples"]) for b in buckets)}},
                          upsert=True)
                for day, buckets in days.items()
            ], ordered=False, session=session)
            return removed.deleted_count

        return await in_transaction(self.database, write)

def _one_of(values: list[str]) -> str | dict[str, list[str]]:
    return values[0] if len(values) == 1 else {"$in": values}
