"""Coalescing calls into batches, per key, with and without a gate on concurrent batches."""

from __future__ import annotations

import asyncio

from services.tmf.batching import KeyedCoalescer


def run_keys(writers: int | None) -> tuple[list[tuple[str, list[int]]], int]:
    """Key "a" gets one item, then, while its batch is being written, "b" gets three items
    one after the other. Returns the batches written, in order, and the most written at once."""
    written: list[tuple[str, list[int]]] = []
    running = 0
    most = 0

    async def flush(key: str, items: list[int]) -> list[int]:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.05)
        written.append((key, items))
        running -= 1
        return [item * 10 for item in items]

    async def scenario() -> list[int]:
        batches: KeyedCoalescer[str, int, int] = KeyedCoalescer(flush, writers=writers)
        first = asyncio.create_task(batches.submit("a", 1))
        await asyncio.sleep(0.01)
        later = []
        for item in (2, 3, 4):
            later.append(asyncio.create_task(batches.submit("b", item)))
            await asyncio.sleep(0)
        return await asyncio.gather(first, *later)

    results = asyncio.run(scenario())
    assert results == [10, 20, 30, 40]
    return written, most


def test_without_a_gate_keys_are_written_concurrently_and_each_key_batches_what_waits() -> None:
    written, most = run_keys(None)
    assert most == 2
    # "b"'s first item started a batch of its own at once; the two after it waited for it.
    assert sorted(written) == [("a", [1]), ("b", [2]), ("b", [3, 4])]


def test_a_gate_of_one_writes_one_batch_at_a_time_and_what_waits_for_it_goes_in_one_batch() -> None:
    written, most = run_keys(1)
    assert most == 1
    # "b" waited for the gate while "a" was written: its three items went into one batch.
    assert written == [("a", [1]), ("b", [2, 3, 4])]


def test_a_failed_batch_fails_its_callers_and_releases_the_gate() -> None:
    async def flush(key: str, items: list[int]) -> list[int]:
        if key == "bad":
            raise ValueError("refused")
        return items

    async def scenario() -> tuple[BaseException | int, int]:
        batches: KeyedCoalescer[str, int, int] = KeyedCoalescer(flush, writers=1)
        failed = await asyncio.gather(batches.submit("bad", 1), return_exceptions=True)
        # A gate left taken would block this forever; the timeout only tells a stall apart.
        good = await asyncio.wait_for(batches.submit("good", 2), timeout=10)
        return failed[0], good

    failed, good = asyncio.run(scenario())
    assert isinstance(failed, ValueError)
    assert good == 2


def test_many_keys_with_work_get_one_writer_per_keys_per_writer() -> None:
    running = 0
    most = 0

    async def flush(key: str, items: list[int]) -> list[int]:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.05)
        running -= 1
        return items

    async def scenario() -> list[int]:
        batches: KeyedCoalescer[str, int, int] = KeyedCoalescer(flush, writers=1, keys_per_writer=3)
        return await asyncio.gather(*(batches.submit(f"key-{n}", n) for n in range(9)))

    assert asyncio.run(scenario()) == list(range(9))
    # Nine keys with work, one writer per three of them: three at once, never more.
    assert most == 3
