"""Coalescing concurrent calls into batches."""

from __future__ import annotations

import asyncio

from services.tmf.batching import Coalescer


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
