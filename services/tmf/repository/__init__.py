"""The only module that talks to MongoDB.

Every read and write takes the :class:`~services.tmf.call.Call`; :meth:`Visibility.restrict`
is the one place where party scoping is enforced, on every read, list, count, patch and delete.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pymongo import ASCENDING, IndexModel, ReturnDocument
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError, ExecutionTimeout, OperationFailure

from ..call import OPERATOR_ROLE as _OPERATOR_ROLE
from ..call import Call
from ..errors import Conflict, TmfError
from ..query import values_at

META = "_meta"
DUPLICATE_KEY = 11000
OPERATOR_ROLE = _OPERATOR_ROLE


@dataclass(frozen=True)
class Visibility:
    """Who may see a resource of one type, besides the operator and the suite itself: the
    parties named at ``party_paths`` in the resource, the party that created it, and parties a
    service names when it writes (the SLA's parties on a rebate, the parties of the services a
    problem affects). They are kept in ``_meta.parties`` at every write, indexed, so a
    visibility check is one indexed equality."""

    party_paths: tuple[str, ...] = ("relatedParty.id",)

    def parties(self, document: Mapping[str, Any], owner: str | None, extra: Iterable[str] = ()) -> list[str]:
        found = {p for p in extra if isinstance(p, str)}
        if owner:
            found.add(owner)
        for path in self.party_paths:
            found.update(v for v in values_at(document, path.split(".")) if isinstance(v, str))
        return sorted(found)

    @staticmethod
    def restrict(query: Mapping[str, Any], call: Call) -> dict[str, Any]:
        if call.unrestricted:
            return dict(query)
        if call.party_id is None:
            # A caller without a party sees nothing: null would match every document that
            # lacks the field.
            return {"_id": {"$in": []}}
        visible = {f"{META}.parties": call.party_id}
        if not query:
            return visible
        if f"{META}.parties" not in query:
            # Beside the filter's own conditions rather than in an $and around them, so that
            # every planner sees one conjunction and can pick a compound index over both.
            return {**query, **visible}
        return {"$and": [dict(query), visible]}


# Subscriptions, task records, alarms: only the party that created them (and the operator).
OWNER_ONLY = Visibility(())
EXTRA_PARTIES = "extraParties"


class QueryTooExpensive(TmfError):
    status = 400
    reason = "Query too expensive"


def public(document: Mapping[str, Any]) -> dict[str, Any]:
    """The resource as clients see it: without the storage key and our bookkeeping."""
    return {k: v for k, v in document.items() if k not in {"_id", META}}


def _public_projection(fields: Mapping[str, int] | None) -> dict[str, int]:
    if fields is None:
        return {"_id": 0, META: 0}
    return {**fields, "_id": 0}


# List totals are cached this long (and at most this many per collection) in each process; a
# write through the process clears them, so only writes of other processes can make a cached
# total lag, and by this much at most.
COUNT_CACHE_SECONDS = 10.0
COUNT_CACHE_ENTRIES = 256


@dataclass
class _CachedCount:
    total: asyncio.Future[int]
    made: float
    generation: int


class ResourceStore:
    """One collection of one resource type."""

    def __init__(self, database: AsyncDatabase[dict[str, Any]], name: str, *, timeout_ms: int,
                 visibility: Visibility = OWNER_ONLY) -> None:
        self.collection = database[name]
        self.name = name
        self.timeout_ms = timeout_ms
        self.visibility = visibility
        self._counts: OrderedDict[str, _CachedCount] = OrderedDict()
        self._generation = 0

    def restrict(self, query: Mapping[str, Any], call: Call) -> dict[str, Any]:
        return self.visibility.restrict(query, call)

    def parties(self, document: Mapping[str, Any], meta: Mapping[str, Any]) -> list[str]:
        """Every party that may see ``document`` (stored with ``meta``)."""
        return self.visibility.parties(document, meta.get("owner"), meta.get(EXTRA_PARTIES, ()))

    async def ensure_indexes(self, indexes: Iterable[IndexModel]) -> None:
        models = [IndexModel([(f"{META}.parties", ASCENDING)]), *indexes]
        await self.collection.create_indexes(models)

    def _new(self, document: dict[str, Any], call: Call, meta: Mapping[str, Any]) -> dict[str, Any]:
        """A new resource as it is stored, bookkeeping included."""
        meta = {"version": 1, "owner": call.party_id, **meta}
        return {**document, "_id": document["id"], META: {**meta, "parties": self.parties(document, meta)}}

    async def insert(self, document: dict[str, Any], call: Call, *,
                     session: AsyncClientSession | None = None, **meta: Any) -> dict[str, Any]:
        """Store a new resource; returns it as stored, bookkeeping included."""
        stored = self._new(document, call, meta)
        self._changed()
        try:
            await self.collection.insert_one(stored, session=session)
        except DuplicateKeyError:
            raise Conflict(f"{self.name} {document['id']} already exists") from None
        finally:
            self._changed()
        return stored

    async def insert_many(self, new: Sequence[tuple[dict[str, Any], Call, Mapping[str, Any]]], *,
                          session: AsyncClientSession) -> list[dict[str, Any]]:
        """Store new resources (each with the call that creates it and its bookkeeping) with one
        command, in the transaction of ``session``; returns them as stored. An id that exists
        already (or twice among them) is a :class:`Conflict`, and the transaction must abort."""
        stored = [self._new(document, call, meta) for document, call, meta in new]
        self._changed()
        try:
            await self.collection.insert_many(stored, session=session)
        except BulkWriteError as exc:
            if any(error.get("code") == DUPLICATE_KEY for error in exc.details.get("writeErrors", [])):
                raise Conflict(f"one of {len(stored)} new {self.name} already exists") from None
            raise
        finally:
            self._changed()
        return stored

    async def get(self, resource_id: str, call: Call) -> dict[str, Any] | None:
        """The stored document with its bookkeeping (``_meta``), or None."""
        return await self.collection.find_one(self.restrict({"_id": resource_id}, call),
                                              max_time_ms=self.timeout_ms)

    async def find(self, query: Mapping[str, Any], call: Call, *,
                   fields: Mapping[str, int] | None = None, sort: list[tuple[str, int]] | None = None,
                   skip: int = 0, limit: int = 0) -> list[dict[str, Any]]:
        """The documents ``query`` selects that the caller may see, from ``skip``, at most ``limit``
        (0: all). With ``sort``, ``_id`` breaks ties, so pages of a sorted list never overlap.
        Without it the order is the database's (index or storage order), which is stable while
        the data does not change and costs no sort: on the embedded server a forced sort reads
        and orders every match in Python for each page."""
        cursor = self.collection.find(
            self.restrict(query, call), _public_projection(fields), skip=skip, limit=limit,
            sort=[*sort, ("_id", ASCENDING)] if sort else None, max_time_ms=self.timeout_ms,
        )
        try:
            return await cursor.to_list()
        except ExecutionTimeout:
            raise QueryTooExpensive("the query took too long; narrow the filter or page with limit") from None

    async def find_scanned(self, query: Mapping[str, Any], call: Call,
                           keep: Callable[[Mapping[str, Any]], bool], *, scan_limit: int,
                           fields: Mapping[str, int] | None = None, sort: list[tuple[str, int]] | None = None,
                           skip: int, limit: int) -> tuple[list[dict[str, Any]], int]:
        """The page (``skip``, at most ``limit``) of the documents that ``query`` selects and ``keep``
        accepts, in ``sort`` order, and how many there are in all. The candidates are streamed
        and tested here; more than ``scan_limit`` of them, or more time than the query timeout,
        is :class:`QueryTooExpensive`, so a broad query is refused instead of stalling."""
        deadline = time.monotonic() + self.timeout_ms / 1000
        cursor = self.collection.find(
            self.restrict(query, call), _public_projection(fields),
            sort=[*(sort or []), ("_id", ASCENDING)], max_time_ms=self.timeout_ms,
        )
        page: list[dict[str, Any]] = []
        total = scanned = 0
        try:
            async for document in cursor:
                scanned += 1
                if scanned > scan_limit or time.monotonic() > deadline:
                    too_many = f"more than {scan_limit} {self.name}" if scanned > scan_limit else "too many"
                    raise QueryTooExpensive(
                        f"the regex would be matched against {too_many} candidates; narrow the filter with "
                        "other conditions (e.g. state=active), or use a pattern without repetition or "
                        "alternation, which the database runs itself"
                    )
                if not keep(document):
                    continue
                if skip <= total < skip + limit:
                    page.append(document)
                total += 1
        except ExecutionTimeout:
            raise QueryTooExpensive("the query took too long; narrow the filter or page with limit") from None
        finally:
            await cursor.close()
        return page, total

    async def find_internal(self, query: Mapping[str, Any], call: Call,
                            fields: Mapping[str, int]) -> list[dict[str, Any]]:
        """Documents with the listed attributes, bookkeeping included (for derived data
        such as graph edges)."""
        cursor = self.collection.find(self.restrict(query, call), dict(fields), max_time_ms=self.timeout_ms)
        return await cursor.to_list()

    async def find_in(self, field: str, values: Iterable[Any], call: Call, fields: Mapping[str, int],
                      extra: Mapping[str, Any] | None = None, chunk: int = 100) -> list[dict[str, Any]]:
        """Documents whose ``field`` holds any of ``values``, asked in chunks: a long ``$in``
        costs some servers (the embedded one among them) time that grows with its square."""
        wanted = list(dict.fromkeys(values))
        found: list[dict[str, Any]] = []
        for start in range(0, len(wanted), chunk):
            query = {field: {"$in": wanted[start:start + chunk]}, **(extra or {})}
            found.extend(await self.find_internal(query, call, fields))
        if len(wanted) > chunk and field != "_id":
            # A document can match values from several chunks.
            unique = {d["_id"]: d for d in found}
            found = list(unique.values())
        return found

    async def count(self, query: Mapping[str, Any], call: Call, *, cached: bool = False) -> int:
        """How many documents ``query`` selects that the caller may see. With ``cached``, a count
        this process made less than :data:`COUNT_CACHE_SECONDS` ago for the same query, with no
        write through this store since, is answered again; concurrent askers share one count."""
        restricted = self.restrict(query, call)
        if not cached:
            return await self._count(restricted)
        key = repr(restricted)
        now = time.monotonic()
        entry = self._counts.get(key)
        if entry is not None and entry.generation == self._generation and now - entry.made < COUNT_CACHE_SECONDS:
            self._counts.move_to_end(key)
            return await asyncio.shield(entry.total)
        entry = _CachedCount(asyncio.ensure_future(self._count(restricted)), now, self._generation)
        self._counts[key] = entry
        self._counts.move_to_end(key)
        while len(self._counts) > COUNT_CACHE_ENTRIES:
            self._counts.popitem(last=False)
        try:
            return await asyncio.shield(entry.total)
        except BaseException:
            if self._counts.get(key) is entry:
                del self._counts[key]
            raise

    async def _count(self, restricted: Mapping[str, Any]) -> int:
        try:
            return await self.collection.count_documents(restricted, maxTimeMS=self.timeout_ms)
        except ExecutionTimeout:
            raise QueryTooExpensive("the query took too long; narrow the filter") from None
        except OperationFailure as exc:
            raise QueryTooExpensive(f"the query cannot run: {exc.details and exc.details.get('errmsg')}") from None

    def _changed(self) -> None:
        # Every count cached before a write of this process is stale.
        self._generation += 1

    async def replace(self, document: dict[str, Any], call: Call, *, meta: Mapping[str, Any],
                      session: AsyncClientSession | None = None) -> dict[str, Any] | None:
        """Replace the document if its version is still ``meta["version"]``; return the stored
        result, or None when somebody else changed it first."""
        version = meta["version"]
        stored = {**document, "_id": document["id"],
                  META: {**meta, "version": version + 1, "parties": self.parties(document, meta)}}
        self._changed()
        try:
            return await self.collection.find_one_and_replace(
                self.restrict({"_id": document["id"], f"{META}.version": version}, call), stored,
                return_document=ReturnDocument.AFTER, session=session,
            )
        finally:
            self._changed()

    async def update(self, query: Mapping[str, Any], update: Mapping[str, Any], call: Call, *,
                     hide: Iterable[str] = (), session: AsyncClientSession | None = None) -> dict[str, Any] | None:
        """Apply ``update`` (built by the server) to the one document ``query`` selects that the
        caller may see; returns it as stored afterwards, without the attributes in ``hide``, or
        None when nothing matched."""
        self._changed()
        try:
            return await self.collection.find_one_and_update(
                self.restrict(query, call), dict(update), projection={name: 0 for name in hide} or None,
                return_document=ReturnDocument.AFTER, session=session)
        finally:
            self._changed()

    async def set_meta(self, resource_id: str, values: Mapping[str, Any]) -> None:
        """Bookkeeping beside a resource that is not part of it (no new version, no event)."""
        await self.collection.update_one({"_id": resource_id}, {"$set": {f"{META}.{k}": v for k, v in values.items()}})

    async def delete(self, resource_id: str, call: Call, *,
                     session: AsyncClientSession | None = None) -> dict[str, Any] | None:
        self._changed()
        try:
            return await self.collection.find_one_and_delete(self.restrict({"_id": resource_id}, call),
                                                             session=session)
        finally:
            self._changed()

    async def exists(self, ids: Iterable[str], call: Call) -> set[str]:
        wanted = list(set(ids))
        if not wanted:
            return set()
        found = await self.collection.find(self.restrict({"_id": {"$in": wanted}}, call), {"_id": 1}).to_list()
        return {d["_id"] for d in found}

    async def find_one(self, query: Mapping[str, Any], call: Call,
                       fields: Mapping[str, int] | None = None) -> dict[str, Any] | None:
        return await self.collection.find_one(self.restrict(query, call), fields, max_time_ms=self.timeout_ms)
