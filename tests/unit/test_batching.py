"""Coalescing calls into batches: alone, and sharded by key."""

from __future__ import annotations

import asyncio

from services.tmf.batching import Coalescer, ShardedCoalescer


def test_what_arrives_while_a_batch_is_written_goes_into_the_next_batch_together() -> None:
    written: list[list[int]] = []

    async def flush(items: list[int]) -> list[int]:
        await asyncio.sleep(0.05)
        written.append(items)
        return [item * 10 for item in items]

    async def scenario() -> list[int]:
        batches: Coalescer[int, int] = Coalescer(flush)
        first = asyncio.create_task(batches.submit(1))
        await asyncio.sleep(0.01)
        later = [asyncio.create_task(batches.submit(item)) for item in (2, 3, 4)]
        return await asyncio.gather(first, *later)

    assert asyncio.run(scenario()) == [10, 20, 30, 40]
    assert written == [[1], [2, 3, 4]]


def test_a_failed_batch_fails_its_callers_and_the_next_batch_is_still_written() -> None:
    async def flush(items: list[int]) -> list[int]:
        if 0 in items:
            raise ValueError("refused")
        return items

    async def scenario() -> tuple[BaseException | int, int]:
        batches: Coalescer[int, int] = Coalescer(flush)
        failed = await asyncio.gather(batches.submit(0), return_exceptions=True)
        # A coalescer left stuck would block this forever; the timeout only tells a stall apart.
        good = await asyncio.wait_for(batches.submit(2), timeout=10)
        return failed[0], good

    failed, good = asyncio.run(scenario())
    assert isinstance(failed, ValueError)
    assert good == 2


def run_shards(shards: int, keys: int) -> tuple[list[list[tuple[str, int]]], int]:
    """Every key gets one item, then, while those are written, a second one. Returns the
    batches written and the most written at once."""
    written: list[list[tuple[str, int]]] = []
    running = 0
    most = 0

    async def flush(items: list[tuple[str, int]]) -> list[int]:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.05)
        written.append(items)
        running -= 1
        return [item for _, item in items]

    async def scenario() -> list[int]:
        batches: ShardedCoalescer[str, int, int] = ShardedCoalescer(flush, shards=shards)
        first = [asyncio.create_task(batches.submit(f"key-{n}", n)) for n in range(keys)]
        await asyncio.sleep(0.01)
        second = [asyncio.create_task(batches.submit(f"key-{n}", 100 + n)) for n in range(keys)]
        return await asyncio.gather(*first, *second)

    assert asyncio.run(scenario()) == [*range(keys), *(100 + n for n in range(keys))]
    return written, most


def test_one_shard_writes_the_items_of_every_key_that_waited_in_one_batch() -> None:
    written, most = run_shards(shards=1, keys=5)
    assert most == 1
    # The first items all arrived before the first batch was taken; the second items, while it
    # was written, so they all went into the next batch.
    assert written == [[(f"key-{n}", n) for n in range(5)], [(f"key-{n}", 100 + n) for n in range(5)]]


def test_shards_write_concurrently_and_a_key_stays_in_order_in_one_shard() -> None:
    written, most = run_shards(shards=3, keys=30)
    assert 1 < most <= 3
    assert sum(len(batch) for batch in written) == 60
    # A key's items are all written by one shard, the first before the second.
    for n in range(30):
        holding = [i for i, batch in enumerate(written) for key, _ in batch if key == f"key-{n}"]
        order = [item for batch in written for key, item in batch if key == f"key-{n}"]
        assert len(holding) == 2 and order == [n, 100 + n]
