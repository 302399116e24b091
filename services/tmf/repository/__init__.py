"""The only module that talks to MongoDB.

Every read and write takes an :class:`AccessScope`; :meth:`AccessScope.restrict` is the one
place where party scoping is enforced.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pymongo import ASCENDING, IndexModel, ReturnDocument
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError, ExecutionTimeout, OperationFailure

from ..errors import Conflict, TmfError

META = "_meta"
OPERATOR_ROLE = "operator"


@dataclass(frozen=True)
class AccessScope:
    """Who is asking. The operator sees everything; any other party sees the resources where
    it is a related party or that it created."""

    party_id: str | None = None
    role: str = OPERATOR_ROLE

    @property
    def unrestricted(self) -> bool:
        return self.role == OPERATOR_ROLE

    def restrict(self, query: Mapping[str, Any]) -> dict[str, Any]:
        if self.unrestricted:
            return dict(query)
        if self.party_id is None:
            # A caller without a party sees nothing: null would match every document that
            # lacks the field.
            return {"_id": {"$in": []}}
        visible = {"$or": [{"relatedParty.id": self.party_id}, {f"{META}.owner": self.party_id}]}
        return {"$and": [dict(query), visible]} if query else visible


OPERATOR = AccessScope()


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


class ResourceStore:
    """One collection of one resource type."""

    def __init__(self, database: AsyncDatabase[dict[str, Any]], name: str, *, timeout_ms: int) -> None:
        self.collection = database[name]
        self.name = name
        self.timeout_ms = timeout_ms

    async def ensure_indexes(self, indexes: Iterable[IndexModel]) -> None:
        models = [IndexModel([(f"{META}.owner", ASCENDING)]), *indexes]
        await self.collection.create_indexes(models)

    async def insert(self, document: dict[str, Any], scope: AccessScope, *,
                     session: AsyncClientSession | None = None, **meta: Any) -> None:
        stored = {**document, "_id": document["id"], META: {"version": 1, "owner": scope.party_id, **meta}}
        try:
            await self.collection.insert_one(stored, session=session)
        except DuplicateKeyError:
            raise Conflict(f"{self.name} {document['id']} already exists") from None

    async def get(self, resource_id: str, scope: AccessScope) -> dict[str, Any] | None:
        """The stored document with its bookkeeping (``_meta``), or None."""
        return await self.collection.find_one(scope.restrict({"_id": resource_id}),
                                              max_time_ms=self.timeout_ms)

    async def find(self, query: Mapping[str, Any], scope: AccessScope, *,
                   fields: Mapping[str, int] | None = None, sort: list[tuple[str, int]] | None = None,
                   skip: int = 0, limit: int = 0) -> list[dict[str, Any]]:
        cursor = self.collection.find(
            scope.restrict(query), _public_projection(fields), skip=skip, limit=limit,
            sort=[*(sort or []), ("_id", ASCENDING)], max_time_ms=self.timeout_ms,
        )
        try:
            return await cursor.to_list()
        except ExecutionTimeout:
            raise QueryTooExpensive("the query took too long; narrow the filter or page with limit") from None

    async def find_scanned(self, query: Mapping[str, Any], scope: AccessScope,
                           keep: Callable[[Mapping[str, Any]], bool], *, scan_limit: int,
                           fields: Mapping[str, int] | None = None, sort: list[tuple[str, int]] | None = None,
                           skip: int, limit: int) -> tuple[list[dict[str, Any]], int]:
        """The page (``skip``, at most ``limit``) of the documents that ``query`` selects and ``keep``
        accepts, in ``sort`` order, and how many there are in all. The candidates are streamed
        and tested here; more than ``scan_limit`` of them, or more time than the query timeout,
        is :class:`QueryTooExpensive`, so a broad query is refused instead of stalling."""
        deadline = time.monotonic() + self.timeout_ms / 1000
        cursor = self.collection.find(
            scope.restrict(query), _public_projection(fields),
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

    async def find_internal(self, query: Mapping[str, Any], scope: AccessScope,
                            fields: Mapping[str, int]) -> list[dict[str, Any]]:
        """Documents with the listed attributes, bookkeeping included (for derived data
        such as graph edges)."""
        cursor = self.collection.find(scope.restrict(query), dict(fields), max_time_ms=self.timeout_ms)
        return await cursor.to_list()

    async def find_in(self, field: str, values: Iterable[Any], scope: AccessScope, fields: Mapping[str, int],
                      extra: Mapping[str, Any] | None = None, chunk: int = 100) -> list[dict[str, Any]]:
        """Documents whose ``field`` holds any of ``values``, asked in chunks: a long ``$in``
        costs some servers (the embedded one among them) time that grows with its square."""
        wanted = list(dict.fromkeys(values))
        found: list[dict[str, Any]] = []
        for start in range(0, len(wanted), chunk):
            query = {field: {"$in": wanted[start:start + chunk]}, **(extra or {})}
            found.extend(await self.find_internal(query, scope, fields))
        if len(wanted) > chunk and field != "_id":
            # A document can match values from several chunks.
            unique = {d["_id"]: d for d in found}
            found = list(unique.values())
        return found

    async def count(self, query: Mapping[str, Any], scope: AccessScope) -> int:
        try:
            return await self.collection.count_documents(scope.restrict(query), maxTimeMS=self.timeout_ms)
        except ExecutionTimeout:
            raise QueryTooExpensive("the query took too long; narrow the filter") from None
        except OperationFailure as exc:
            raise QueryTooExpensive(f"the query cannot run: {exc.details and exc.details.get('errmsg')}") from None

    async def replace(self, document: dict[str, Any], scope: AccessScope, *, meta: Mapping[str, Any],
                      session: AsyncClientSession | None = None) -> dict[str, Any] | None:
        """Replace the document if its version is still ``meta["version"]``; return the stored
        result, or None when somebody else changed it first."""
        version = meta["version"]
        stored = {**document, "_id": document["id"], META: {**meta, "version": version + 1}}
        return await self.collection.find_one_and_replace(
            scope.restrict({"_id": document["id"], f"{META}.version": version}), stored,
            return_document=ReturnDocument.AFTER, session=session,
        )

    async def set_meta(self, resource_id: str, values: Mapping[str, Any]) -> None:
        """Bookkeeping beside a resource that is not part of it (no new version, no event)."""
        await self.collection.update_one({"_id": resource_id}, {"$set": {f"{META}.{k}": v for k, v in values.items()}})

    async def delete(self, resource_id: str, scope: AccessScope, *,
                     session: AsyncClientSession | None = None) -> dict[str, Any] | None:
        return await self.collection.find_one_and_delete(scope.restrict({"_id": resource_id}), session=session)

    async def exists(self, ids: Iterable[str], scope: AccessScope) -> set[str]:
        wanted = list(set(ids))
        if not wanted:
            return set()
        found = await self.collection.find(scope.restrict({"_id": {"$in": wanted}}), {"_id": 1}).to_list()
        return {d["_id"] for d in found}

    async def find_one(self, query: Mapping[str, Any], scope: AccessScope,
                       fields: Mapping[str, int] | None = None) -> dict[str, Any] | None:
        return await self.collection.find_one(scope.restrict(query), fields, max_time_ms=self.timeout_ms)
