"""Coalescing concurrent calls into one: what arrives while a batch is being written waits for
the next batch and goes in it together with everything else that arrived meanwhile. Under a
trickle every call is its own batch (no added delay); under load, the number of writes stays
bounded by how long one takes, not by how many calls there are."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")
K = TypeVar("K", bound=Hashable)


class Gate:
    """An async context manager letting at most ``limit()`` holders in at once; the limit is
    asked again whenever someone arrives or leaves, so it may follow the load."""

    def __init__(self, limit: Callable[[], int]) -> None:
        self._limit = limit
        self._held = 0
        self._changed = asyncio.Condition()

    async def __aenter__(self) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self._held < max(1, self._limit()))
            self._held += 1

    async def __aexit__(self, *_: object) -> None:
        async with self._changed:
            self._held -= 1
            self._changed.notify_all()


class Coalescer(Generic[T, R]):
    """``await submit(item)`` returns ``item``'s result from ``flush(items)`` (one result per
    item, in order). At most one flush runs at a time; when it fails, every caller of that
    batch gets the exception. With ``gate``, a batch is taken only once the gate lets it
    through, so what arrives while it waits there goes into it too."""

    def __init__(self, flush: Callable[[list[T]], Awaitable[Sequence[R]]],
                 on_idle: Callable[[], None] | None = None, gate: Gate | None = None) -> None:
        self._flush = flush
        self._on_idle = on_idle
        self._gate = gate
        self._waiting: list[tuple[T, asyncio.Future[R]]] = []
        self._draining: asyncio.Task[None] | None = None

    @property
    def idle(self) -> bool:
        """Nothing waiting and no batch being written."""
        return not self._waiting and (self._draining is None or self._draining.done())

    async def submit(self, item: T) -> R:
        """Add ``item`` to the next batch and wait for its result."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if self._draining is None or self._draining.done():
            self._draining = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            await self._write_batches()
        finally:
            if not self._waiting and self._on_idle is not None:
                self._on_idle()

    async def _write_batches(self) -> None:
        while self._waiting:
            async with self._gate or contextlib.nullcontext():
                batch, self._waiting = self._waiting, []
                try:
                    results = await self._flush([item for item, _ in batch])
                except BaseException as exc:
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    if not isinstance(exc, Exception):
                        for _, future in self._waiting:
                            future.cancel()
                        raise
                    continue
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)


class KeyedCoalescer(Generic[K, T, R]):
    """A :class:`Coalescer` per key: batches of one key are written one after the other, batches
    of different keys concurrently. With ``writers``, at most ``writers`` keys' batches, or one
    per ``keys_per_writer`` keys with work, are written at once, whichever is more: the keys
    waiting meanwhile gather larger batches, and many keys at once still get many writers (their
    batches could not grow by waiting as much as they would be held up). Keys with nothing to
    do take no memory."""

    def __init__(self, flush: Callable[[K, list[T]], Awaitable[Sequence[R]]],
                 writers: int | None = None, keys_per_writer: int = 4) -> None:
        self._flush = flush
        self._gate = None if writers is None else Gate(lambda: max(writers, len(self._by_key) // keys_per_writer))
        self._by_key: dict[K, Coalescer[T, R]] = {}

    def __len__(self) -> int:
        return len(self._by_key)

    async def submit(self, key: K, item: T) -> R:
        """Add ``item`` to the next batch of ``key`` and wait for its result."""
        coalescer = self._by_key.get(key)
        if coalescer is None:
            coalescer = self._by_key[key] = Coalescer(lambda items: self._flush(key, items),
                                                      on_idle=lambda: self._forget(key), gate=self._gate)
        return await coalescer.submit(item)

    def _forget(self, key: K) -> None:
        self._by_key.pop(key, None)
