"""Per-client rate limits, shared by every gateway replica through MongoDB, counted in batches.

Fixed windows, as the ``limits`` library parses them (``50/second``, ``1000/minute``). Each
window of each key is one counter document whose id carries the window number, so adding to it
is a single atomic upsert and an expired window is simply a new document (a TTL index removes
the old ones).

A replica does not write every call: it counts calls in memory and adds them to the shared
counter in batches, when a key has a batch's worth of calls waiting and, for the rest, every
``FLUSH_SECONDS`` in the background. Each write answers the shared total, which the replica
then decides with, adding its own calls not yet written. So a replica never refuses below the
limit, and admits past it at most its own unwritten batch: a tenth of the limit (at most
``MAX_BATCH`` calls), and for a limit under 20 a batch of one, which is exact.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from limits import RateLimitItem
from pymongo import ASCENDING, IndexModel, ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

COLLECTION = "gateway_rate_limit"
# How far a replica may run ahead of the shared counter: this fraction of the limit...
BATCH_FRACTION = 0.1
# ... but never more than this many calls per key and window.
MAX_BATCH = 100
# Calls counted in memory reach the shared counters at least this often.
FLUSH_SECONDS = 0.2

log = structlog.get_logger("gateway.ratelimit")


def batch_size(item: RateLimitItem) -> int:
    """How many calls of one key a replica counts in memory before it writes them."""
    return max(1, min(MAX_BATCH, int(item.amount * BATCH_FRACTION)))


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    retry_after: int = 0
    limit: RateLimitItem | None = None


@dataclass
class _Window:
    """One key's counter in one window, as this replica knows it."""

    document_id: str
    key: str
    ends: float  # epoch seconds
    limit: int
    batch: int
    shared: int = 0  # the shared total at the last write of this replica
    writing: int = 0  # calls being written right now
    pending: int = 0  # calls counted here, not written yet

    @property
    def known(self) -> int:
        return self.shared + self.writing + self.pending


class MongoCounters:
    """The shared counters: one document per key and window."""

    def __init__(self, database: AsyncDatabase[dict[str, Any]]) -> None:
        self.counters = database[COLLECTION]
        self._indexed = False

    async def add(self, document_id: str, key: str, ends: float, amount: int) -> int:
        """Add ``amount`` to a window's counter; the total after it."""
        if not self._indexed:
            await self.counters.create_indexes([
                IndexModel([("key", ASCENDING), ("expireAt", ASCENDING)]),
                IndexModel([("expireAt", ASCENDING)], expireAfterSeconds=0),
            ])
            self._indexed = True
        counter = await self.counters.find_one_and_update(
            {"_id": document_id},
            {"$inc": {"count": amount}, "$setOnInsert": {"key": key, "expireAt": datetime.fromtimestamp(ends, UTC)}},
            upsert=True, return_document=ReturnDocument.AFTER, projection={"count": 1},
        )
        assert counter is not None  # an upsert returning the document after always finds one
        return int(counter["count"])

    async def check(self) -> bool:
        try:
            await self.counters.database.command("ping")
        except PyMongoError:
            return False
        return True


class RateLimits:
    """Every limit in ``items`` applies to a key (``client:<id>`` or ``address:<ip>``)."""

    def __init__(self, counters: MongoCounters, clock: Callable[[], float] = time.time) -> None:
        self.counters = counters
        self.clock = clock
        self._windows: dict[str, _Window] = {}
        self._flusher: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Write counted calls every ``FLUSH_SECONDS`` until ``stop``."""
        self._flusher = asyncio.create_task(self._flush_regularly())

    async def stop(self) -> None:
        """Stop the background writes, after writing what is counted."""
        if self._flusher is not None:
            self._flusher.cancel()
            await asyncio.gather(self._flusher, return_exceptions=True)
            self._flusher = None
        await self.flush()

    async def hit(self, items: tuple[RateLimitItem, ...], key: str) -> Verdict:
        now = self.clock()
        for item in items:
            window = self._window(item, key, now)
            if window.known >= window.limit:
                return self._refused(window, item, now)
            window.pending += 1
            if window.pending >= window.batch and await self._write(window) > window.limit:
                return self._refused(window, item, now)
        return Verdict(True)

    async def flush(self) -> None:
        """Write every call counted here, and forget windows that ended."""
        now = self.clock()
        for document_id, window in list(self._windows.items()):
            if window.ends <= now:
                del self._windows[document_id]
            elif window.pending:
                await self._write(window)

    def _window(self, item: RateLimitItem, key: str, now: float) -> _Window:
        length = item.get_expiry()
        number = int(now) // length
        document_id = f"{item.key_for(key)}@{number}"
        window = self._windows.get(document_id)
        if window is None:
            window = _Window(document_id, item.key_for(key), float((number + 1) * length), item.amount,
                             batch_size(item))
            self._windows[document_id] = window
        return window

    @staticmethod
    def _refused(window: _Window, item: RateLimitItem, now: float) -> Verdict:
        return Verdict(False, max(1, math.ceil(window.ends - now)), item)

    async def _write(self, window: _Window) -> int:
        """Add the calls counted here to the shared counter; the shared total (including calls
        counted meanwhile). Should the database fail, the calls stay counted here and are written
        with the next batch."""
        amount, window.pending = window.pending, 0
        window.writing += amount
        try:
            total = await self.counters.add(window.document_id, window.key, window.ends, amount)
        except PyMongoError as exc:
            log.warning("rate limit counter not written; counting in memory", error=type(exc).__name__)
            window.pending += amount
            return window.known
        finally:
            window.writing -= amount
        window.shared = max(window.shared, total)
        return window.known

    async def _flush_regularly(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            try:
                await self.flush()
            except Exception:  # the next round tries again; meanwhile the limits keep counting here
                log.exception("rate limit flush failed")
