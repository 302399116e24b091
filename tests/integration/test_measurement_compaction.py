"""Hour buckets merged into day buckets once a day has ended: what a period's read returns is
the same before and after, late samples still land and are read, on the real wire protocol
server."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from pymongo import AsyncMongoClient, MongoClient
from pymongo.asynchronous.database import AsyncDatabase
from starlette.testclient import TestClient

from services.app import create_app
from services.sla.repository import BUCKETS, DAY_SECONDS, MeasurementStore, StoredSample
from tests.conftest import make_settings
from tests.integration.test_sla_month import (
    OCTOBER_MINUTES,
    SLA_API,
    Clock,
    availability_rule,
    send,
    sla,
)
from tests.integration.test_sla_month import (
    probes as minute_probes,
)
from tests.support.auth import bearer
from tests.support.listener import Listener

T = TypeVar("T")
DAY = DAY_SECONDS
# 2026-10-01T00:00Z
OCTOBER = 1_790_812_800


def probes(service: str, first_s: int, count: int, every_s: int, value: float = 1.0) -> list[StoredSample]:
    return [StoredSample(service, "availability", (first_s + i * every_s) * 1000, value, float(every_s))
            for i in range(count)]


def on_database(mongo_uri: str, body: Callable[[AsyncDatabase[dict[str, Any]]], Awaitable[T]]) -> T:
    async def run() -> T:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_uri)
        try:
            return await body(client[f"t_{uuid.uuid4().hex[:12]}"])
        finally:
            await client.close()

    return asyncio.run(run())


def test_a_compacted_month_reads_as_its_hours_did(mongo_uri: str) -> None:
    async def body(database: AsyncDatabase[dict[str, Any]]) -> tuple[Any, ...]:
        store = MeasurementStore(database)
        await store.ensure_indexes()
        # Three days of a probe every 20 minutes, from the day before the period, for two
        # services; the second written in two passes, so that its hours hold samples out of order.
        await store.add(probes("svc-a", OCTOBER - DAY, 3 * 72, 1200))
        await store.add(probes("svc-b", OCTOBER - DAY + 600, 3 * 72, 1200, 0.0))
        await store.add(probes("svc-b", OCTOBER - DAY, 3 * 72, 1200))
        before = await store.samples(["svc-a", "svc-b"], ["availability"], OCTOBER, OCTOBER + 2 * DAY)
        hours = await database[BUCKETS].count_documents({})
        # The last day has not ended before the cut: it stays in hours.
        removed = await store.compact([("svc-a", "availability"), ("svc-b", "availability")],
                                      OCTOBER - DAY, OCTOBER + DAY)
        after = await store.samples(["svc-a", "svc-b"], ["availability"], OCTOBER, OCTOBER + 2 * DAY)
        stored = await database[BUCKETS].find({}, {"samples": 0}).sort("_id").to_list()
        return before, after, hours, removed, stored

    before, after, hours, removed, stored = on_database(mongo_uri, body)
    assert hours == 2 * 72
    assert removed == 2 * 48
    assert after == before
    assert len(before[("svc-b", "availability")]) == 2 * 3 * 72
    days = [b for b in stored if b.get("span") == DAY]
    assert sorted(b["_id"] for b in days) == [f"{s}|availability|{d}|day" for s in ("svc-a", "svc-b")
                                              for d in (OCTOBER - DAY, OCTOBER)]
    assert all(b["n"] == (24 * 3 if b["service"] == "svc-a" else 24 * 6) for b in days)
    assert sum(1 for b in stored if "span" not in b) == 2 * 24


def test_late_samples_land_are_read_last_and_are_compacted_next_time(mongo_uri: str) -> None:
    async def body(database: AsyncDatabase[dict[str, Any]]) -> tuple[Any, ...]:
        store = MeasurementStore(database)
        await store.ensure_indexes()
        series = [("svc", "availability")]
        await store.add(probes("svc", OCTOBER, 24, 3600))
        await store.compact(series, OCTOBER, OCTOBER + DAY)
        # Late: the 05:00 probe sent again as down (the last sent counts), and a new 05:30 one.
        await store.add([StoredSample("svc", "availability", (OCTOBER + 5 * 3600) * 1000, 0.0, 3600.0),
                         StoredSample("svc", "availability", (OCTOBER + 5 * 3600 + 1800) * 1000, 1.0, 60.0)])
        late = await store.samples(["svc"], ["availability"], OCTOBER, OCTOBER + DAY)
        again = await store.compact(series, OCTOBER, OCTOBER + DAY)
        merged = await store.samples(["svc"], ["availability"], OCTOBER, OCTOBER + DAY)
        stored = await database[BUCKETS].find({}).to_list()
        return late, again, merged, stored

    late, again, merged, stored = on_database(mongo_uri, body)
    rows = late[("svc", "availability")]
    assert len(rows) == 26
    assert rows[-2:] == [((OCTOBER + 5 * 3600) * 1000, 0.0, 3600.0), ((OCTOBER + 5 * 3600 + 1800) * 1000, 1.0, 60.0)]
    assert again == 1
    assert merged == late
    assert len(stored) == 1 and stored[0]["n"] == len(stored[0]["samples"]) == 26


def test_nothing_is_compacted_before_a_whole_day_has_ended(mongo_uri: str) -> None:
    async def body(database: AsyncDatabase[dict[str, Any]]) -> tuple[int, int]:
        store = MeasurementStore(database)
        await store.add(probes("svc", OCTOBER, 30, 3600))
        # From mid-day to mid-day of the next one: no whole day in between.
        removed = await store.compact([("svc", "availability")], OCTOBER + 3600, OCTOBER + DAY + 3600)
        return removed, await database[BUCKETS].count_documents({"span": {"$exists": False}})

    assert on_database(mongo_uri, body) == (0, 30)


class SamplesArriveDuringCompaction:
    """The bucket collection, with a sample written (outside the compaction's transaction) just
    before the compaction's first removal: between its read and its write."""

    def __init__(self, buckets: Any, arrive: Callable[[], Awaitable[None]]) -> None:
        self._buckets = buckets
        self._arrive: Callable[[], Awaitable[None]] | None = arrive

    def __getattr__(self, name: str) -> Any:
        return getattr(self._buckets, name)

    async def delete_many(self, *args: Any, **kwargs: Any) -> Any:
        if self._arrive is not None:
            arrive, self._arrive = self._arrive, None
            await arrive()
        return await self._buckets.delete_many(*args, **kwargs)


def test_a_sample_written_while_its_day_is_compacted_is_kept(mongo_uri: str) -> None:
    async def body(database: AsyncDatabase[dict[str, Any]]) -> tuple[Any, ...]:
        store = MeasurementStore(database)
        await store.ensure_indexes()
        await store.add(probes("svc", OCTOBER, 24, 3600))
        # Into an hour bucket the compaction has read (pushed), and into one it has not (new).
        late = [StoredSample("svc", "availability", (OCTOBER + 3 * 3600 + 60) * 1000, 0.0, 60.0),
                StoredSample("svc", "other", (OCTOBER + 3 * 3600) * 1000, 1.0, 60.0)]
        store.buckets = SamplesArriveDuringCompaction(store.buckets, lambda: MeasurementStore(database).add(late))
        await store.compact([("svc", "availability"), ("svc", "other")], OCTOBER, OCTOBER + DAY)
        found = await MeasurementStore(database).samples(["svc"], ["availability", "other"], OCTOBER, OCTOBER + DAY)
        return found, await database[BUCKETS].count_documents({"span": {"$exists": False}})

    found, hours_left = on_database(mongo_uri, body)
    assert len(found[("svc", "availability")]) == 25
    assert ((OCTOBER + 3 * 3600 + 60) * 1000, 0.0, 60.0) in found[("svc", "availability")]
    assert found[("svc", "other")] == [((OCTOBER + 3 * 3600) * 1000, 1.0, 60.0)]
    assert hours_left == 0


def test_the_scheduler_compacts_ended_days_and_closes_the_month_the_same(mongo_uri: str) -> None:
    clock = Clock(datetime(2026, 10, 1, tzinfo=UTC))
    settings = make_settings(mongo_uri, delivery_poll_seconds=0.05, sla_close_interval_seconds=0.1)
    with TestClient(create_app(settings, clock=clock), base_url="http://testserver") as client:
        client.headers.update(bearer(settings))
        customer = sla(client, "Compacted", "vpn-c", "operator", "acme", 500, availability_rule(99.9))
        clock.now = datetime(2026, 10, 31, 23, 59, tzinfo=UTC)
        # 600 minutes down on 30 October, a day the scheduler compacts before it closes the month.
        send(client, minute_probes("vpn-c", datetime(2026, 10, 1, tzinfo=UTC), OCTOBER_MINUTES,
                            datetime(2026, 10, 30, 6, 0, tzinfo=UTC), 600))
        clock.now = datetime(2026, 11, 1, 1, 30, tzinfo=UTC)
        evaluations: list[dict[str, Any]] = []
        for _ in range(600):  # a safety limit for a stalled scheduler, not a timing
            evaluations = client.get(f"{SLA_API}/slaEvaluation?sla.id={customer['id']}&state=closed").json()
            if evaluations:
                break
            Listener().wait_for(1, timeout=0.05)
        [evaluation] = evaluations
        # (44,640 - 600) / 44,640 = 98.655...% -> below 99.0: the 50 % tier of 500.00
        assert evaluation["rebate"]["amount"] == {"unit": "EUR", "value": 250.0}
        with MongoClient(settings.mongodb_uri) as mongo:
            days = mongo[settings.database][BUCKETS].find({"service": "vpn-c", "span": DAY}, {"samples": 0}).to_list()
            hours = mongo[settings.database][BUCKETS].count_documents(
                {"service": "vpn-c", "hour": {"$gte": OCTOBER + 28 * DAY}, "span": {"$exists": False}})
    # The scheduler looks back three days from the last that ended an hour ago: 29-31 October
    # once the clock is past 01:00 on 1 November; 28 October too if a round at 23:59 on the 31st
    # came after the samples of that day, which the test does not wait for.
    assert {OCTOBER + d * DAY for d in (28, 29, 30)} <= {d["hour"] for d in days} <= {
        OCTOBER + d * DAY for d in (27, 28, 29, 30)}
    assert all(d["n"] == 1440 for d in days if d["hour"] >= OCTOBER + 28 * DAY)
    assert hours == 0
