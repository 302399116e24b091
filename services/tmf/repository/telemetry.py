"""The reads behind the gauges ``/metrics`` samples from the database."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from .events import DELIVERIES, HUB, UNDELIVERED

SAMPLE_TIME_LIMIT_MS = 5000


async def undelivered_by_subscription(database: AsyncDatabase[dict[str, Any]], apis: Sequence[str]) -> dict[str, int]:
    """Deliveries pending or retrying per subscription of the hubs of ``apis`` (0 for a
    subscription with nothing waiting). One grouped count: subscriptions are few."""
    depths = {str(s["_id"]): 0 async for s in database[HUB].find(
        {"api": {"$in": list(apis)}}, {"_id": 1}, max_time_ms=SAMPLE_TIME_LIMIT_MS)}
    async for row in await database[DELIVERIES].aggregate([
        {"$match": {"state": {"$in": UNDELIVERED}, "api": {"$in": list(apis)}}},
        {"$group": {"_id": "$subscriptionId", "n": {"$sum": 1}}},
    ], maxTimeMS=SAMPLE_TIME_LIMIT_MS):
        depths[str(row["_id"])] = int(row["n"])
    return depths
