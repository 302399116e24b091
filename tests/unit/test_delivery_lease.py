"""How long the dispatcher (services/tmf/delivery.py) holds what it sends: never shorter than an
attempt, so that no other process takes a delivery still on its way."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from pymongo import AsyncMongoClient

from services.tmf.delivery import LEASE_MARGIN, Dispatcher
from services.tmf.repository.events import EventStore
from services.tmf.settings import Settings


def leases(settings: Settings) -> tuple[timedelta, timedelta]:
    async def build() -> tuple[timedelta, timedelta]:
        # Never connects: the dispatcher only keeps the store.
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient("mongodb://127.0.0.1:1", connect=False)
        dispatcher = Dispatcher(EventStore(client["unused"]), settings)
        await dispatcher.client.aclose()
        await client.close()
        return dispatcher.lease, dispatcher.fast_lease

    return asyncio.run(build())


def test_a_lease_shorter_than_an_attempt_is_raised_to_the_attempt_and_the_margin() -> None:
    lease, fast_lease = leases(Settings().with_values(delivery_lease_seconds=2, delivery_timeout_seconds=10))
    assert lease == timedelta(seconds=10 + LEASE_MARGIN)
    assert fast_lease > lease


def test_a_longer_lease_is_kept() -> None:
    lease, fast_lease = leases(Settings().with_values(delivery_lease_seconds=60, delivery_timeout_seconds=10))
    assert lease == timedelta(seconds=60)
    # The fast path's own lease stays short: after a crash, its deliveries are soon taken over.
    assert fast_lease == timedelta(seconds=10 + 2 * LEASE_MARGIN)
