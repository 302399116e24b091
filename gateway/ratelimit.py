"""Per-client rate limits, shared by every gateway replica through MongoDB.

The strategy is the ``limits`` library's fixed window. Its own MongoDB storage runs on Motor,
which reached end of life; this storage implements the same interface on PyMongo's async API.
Each window is one counter document whose id carries the window number, so an increment is a
single atomic upsert and an expired window is simply a new document (a TTL index removes the
old ones).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from limits import RateLimitItem
from limits.aio.storage import Storage
from limits.aio.strategies import FixedWindowRateLimiter
from pymongo import ASCENDING, IndexModel, ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

COLLECTION = "gateway_rate_limit"


class MongoWindowStorage(Storage):
    STORAGE_SCHEME = None

    def __init__(self, database: AsyncDatabase[dict[str, Any]]) -> None:
        super().__init__()
        self.counters = database[COLLECTION]
        self._indexed = False

    @property
    def base_exceptions(self) -> type[Exception]:
        return PyMongoError

    async def _ensure_indexes(self) -> None:
        if not self._indexed:
            await self.counters.create_indexes([
                IndexModel([("key", ASCENDING), ("expireAt", ASCENDING)]),
                IndexModel([("expireAt", ASCENDING)], expireAfterSeconds=0),
            ])
            self._indexed = True

    async def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        await self._ensure_indexes()
        window = int(time.time()) // expiry
        ends = datetime.fromtimestamp((window + 1) * expiry, UTC)
        counter = await self.counters.find_one_and_update(
            {"_id": f"{key}@{window}"},
            {"$inc": {"count": amount}, "$setOnInsert": {"key": key, "expireAt": ends}},
            upsert=True, return_document=ReturnDocument.AFTER, projection={"count": 1},
        )
        assert counter is not None  # an upsert returning the document after always finds one
        return int(counter["count"])

    async def _current(self, key: str) -> dict[str, Any] | None:
        return await self.counters.find_one({"key": key, "expireAt": {"$gt": datetime.now(UTC)}},
                                            sort=[("expireAt", -1)])

    async def get(self, key: str) -> int:
        current = await self._current(key)
        return int(current["count"]) if current else 0

    async def get_expiry(self, key: str) -> float:
        current = await self._current(key)
        if current is None:
            return time.time()
        ends: datetime = current["expireAt"]
        return (ends if ends.tzinfo else ends.replace(tzinfo=UTC)).timestamp()

    async def check(self) -> bool:
        try:
            await self.counters.database.command("ping")
        except PyMongoError:
            return False
        return True

    async def reset(self) -> int | None:
        result = await self.counters.delete_many({})
        return result.deleted_count

    async def clear(self, key: str) -> None:
        await self.counters.delete_many({"key": key})


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    retry_after: int = 0
    limit: RateLimitItem | None = None


class RateLimits:
    """Every limit in ``items`` applies to a key (``client:<id>`` or ``address:<ip>``)."""

    def __init__(self, storage: Storage) -> None:
        self.limiter = FixedWindowRateLimiter(storage)

    async def hit(self, items: tuple[RateLimitItem, ...], key: str) -> Verdict:
        for item in items:
            if not await self.limiter.hit(item, key):
                reset, _ = await self.limiter.get_window_stats(item, key)
                return Verdict(False, max(1, int(reset - time.time() + 0.999)), item)
        return Verdict(True)
