"""Generic TMF resource operations: list, create, retrieve, patch, delete.

A service declares its resources as :class:`ResourceType` values and puts the rules its standard
leaves open (references, state machines) in a :class:`ResourceRules` subclass; everything else
about the HTTP behaviour lives here, once.
"""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from connexion import request
from pymongo import IndexModel
from starlette.responses import Response

from . import telemetry
from .authentication import call_of
from .batching import Coalescer
from .call import Call
from .errors import JSON, BadRequest, ConcurrentChanges, Forbidden, NotFound, PreconditionFailed
from .events import ATTRIBUTE_CHANGE, CREATE, DELETE, STATE_CHANGE, envelope
from .patch import apply_patch, check_keys, fill_defaults, normalize_dates, patch_style
from .query import ALWAYS_RETURNED, filter_plan, parse_fields, parse_query, projection
from .repository import EXTRA_PARTIES, META, QueryTooExpensive, ResourceStore, Visibility, public
from .repository.events import in_transaction
from .spec import SchemaIndex

if TYPE_CHECKING:
    from .api import ApiContext

Handler = Callable[..., Any]
MAX_ID_LENGTH = 1024
# Writes of one resource queue in this process; these bound the retries left for writers in
# other processes (and system changes inside their own transactions), with jittered backoff.
PATCH_ATTEMPTS = 8
PATCH_BACKOFF_SECONDS = 0.01
PATCH_BACKOFF_MAX_SECONDS = 0.25
# Creates of one resource type that arrive while the previous ones commit are committed
# together, at most this many per transaction.
GROUP_MAX = 100


class KeyedLocks:
    """One lock per key, kept only while somebody holds or awaits it: the map never grows
    beyond the writes in flight."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, list[int]]] = {}

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.setdefault(key, (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if not users[0]:
                del self._locks[key]

    def __len__(self) -> int:
        return len(self._locks)


class ResourceRules:
    """Domain rules of one resource type. Each hook may change the document in place and
    returns derived bookkeeping to store beside it (e.g. graph edges)."""

    async def on_create(self, api: ResourceApi, document: dict[str, Any],
                        call: Call) -> dict[str, Any]:
        return {}

    async def on_update(self, api: ResourceApi, before: dict[str, Any], after: dict[str, Any],
                        call: Call, system: bool = False) -> dict[str, Any]:
        return {}

    async def on_delete(self, api: ResourceApi, stored: dict[str, Any], call: Call) -> None:
        return None


@dataclass(frozen=True)
class ResourceType:
    """A TMF resource served by an API: ``name`` is its path segment, collection and event
    payload key; ``type_name`` is its schema and default ``@type``."""

    name: str
    type_name: str
    indexes: tuple[IndexModel, ...] = ()
    rules: ResourceRules = field(default_factory=ResourceRules)
    # Rules that read other documents to judge a write (e.g. cycle checks) need writes of
    # this resource type to happen one at a time.
    serialize_writes: bool = False
    # Events are named after this (``SLACreateEvent`` for ``ServiceLevelAgreement``).
    event_prefix: str | None = None
    # The attribute whose change is a StateChangeEvent.
    state_attribute: str = "state"
    # Task records (e.g. a problemGroup) are kept but announce nothing: the resources they
    # change do.
    emits_events: bool = True
    # Which parties may see a resource of this type (the operator sees all).
    visibility: Visibility = field(default_factory=Visibility)
    # Whether parties other than the operator may create and change resources of this type
    # (always only those they may see, and only so that they still see them afterwards).
    party_writes: bool = True

    @property
    def event_name(self) -> str:
        return self.event_prefix or self.type_name


@dataclass
class _Create:
    """A create ready to be written: everything judged, only the transaction left."""

    document: dict[str, Any]
    call: Call
    meta: dict[str, Any]
    events: list[dict[str, Any]]
    trace: dict[str, str]  # telemetry: the request's trace context, kept with its events


def json_response(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(json.dumps(body, separators=(",", ":")), status_code=status,
                    media_type=JSON, headers=dict(headers or {}))


def etag(version: int) -> str:
    return f'"{version}"'


def matches_if_match(header: str | None, version: int) -> bool:
    if header is None:
        return True
    tags = [t.strip() for t in header.split(",")]
    return "*" in tags or any(t.removeprefix("W/") == etag(version) for t in tags)


def new_id() -> str:
    return str(uuid.uuid4())


class ResourceApi:
    """The HTTP operations of one resource type within one API."""

    def __init__(self, context: ApiContext, resource: ResourceType) -> None:
        self.context = context
        self.resource = resource
        self.index = SchemaIndex(context.document, resource.type_name)
        # What a create requires (mandatory attributes) must stay true after any patch.
        create_schema = f"{resource.type_name}_Create"
        # Resources only the system creates (violations, rebates) have no create schema.
        self.create_index = (SchemaIndex(context.document, create_schema)
                             if create_schema in context.document.get("components", {}).get("schemas", {}) else None)
        self._write_lock = asyncio.Lock()
        self._resource_locks = KeyedLocks()
        # Concurrent creates share a transaction (see ``_commit_creates``).
        self._creates: Coalescer[_Create, bool] = Coalescer(self._commit_creates)

    @property
    def store(self) -> ResourceStore:
        return self.context.store(self.resource.name)

    @property
    def settings(self) -> Any:
        return self.context.settings

    def href(self, resource_id: str) -> str:
        return f"{self.context.public_base}/{self.resource.name}/{resource_id}"

    def present(self, document: Mapping[str, Any], fields: list[str] | None = None) -> dict[str, Any]:
        body = public(document)
        body["href"] = self.href(body["id"])
        body.setdefault("@type", self.resource.type_name)
        if fields is not None:
            keep = {*ALWAYS_RETURNED, *fields}
            body = {k: v for k, v in body.items() if k in keep}
        return body

    def check_valid(self, body: Mapping[str, Any]) -> None:
        problems = self.index.errors(body)
        if not problems and self.create_index is not None:
            problems = self.create_index.errors(
                {k: v for k, v in body.items() if k not in self.index.read_only and k not in {"id", "href"}})
        if problems:
            raise BadRequest(f"the {self.resource.type_name} would not be valid: " + "; ".join(problems))

    def event(self, kind: str, resource: dict[str, Any], field_path: list[str] | None = None) -> dict[str, Any]:
        return envelope(api=self.context.name, payload_key=self.resource.name, type_name=self.resource.event_name,
                        kind=kind, resource=resource, field_path=field_path)

    async def _commit(self, body: Callable[[Any], Any], resource_id: str | None, session: Any = None) -> Any:
        """Run ``body(session)`` in a transaction (the caller's, when given); it returns the
        stored document (or None) and a list of events to record with it. Without
        ``resource_id``, the events are about the stored document's id."""
        outbox = self.context.outbox
        deliveries = 0

        async def transaction(session: Any) -> Any:
            nonlocal deliveries
            stored, version, events = await body(session)
            if stored is not None and events and self.resource.emits_events:
                parties = self.store.parties(stored, stored.get(META) or {})
                deliveries = await outbox.record(session, payload_key=self.resource.name, index=self.index,
                                                 resource_id=resource_id or stored["id"], version=version,
                                                 events=events,
                                                 parties=parties)
            return stored

        if session is not None:
            return await transaction(session)
        result = await in_transaction(self.context.db, transaction)
        if deliveries:
            outbox.committed()
        return result

    async def _commit_creates(self, creates: list[_Create]) -> list[bool]:
        """Commit creates that arrived together: one insert of the resources, one read of the hub
        version, one insert each of their events and deliveries, one commit. Returns, for each,
        whether it is committed; when a write of the group failed (an id that exists, say), none
        is, and each is tried again alone, so that one bad create fails no other. A create alone
        is left to its own transaction."""
        if len(creates) == 1:
            return [False]
        committed: list[bool] = []
        for start in range(0, len(creates), GROUP_MAX):
            committed += await self._commit_group(creates[start:start + GROUP_MAX])
        return committed

    async def _commit_group(self, creates: list[_Create]) -> list[bool]:
        outbox = self.context.outbox
        deliveries = 0
        failed_writing = False

        async def transaction(session: Any) -> None:
            nonlocal deliveries, failed_writing
            deliveries, failed_writing = 0, False
            try:
                stored = await self.store.insert_many([(c.document, c.call, c.meta) for c in creates],
                                                      session=session)
                if not self.resource.emits_events:
                    return
                for create, document in zip(creates, stored, strict=True):
                    deliveries += await outbox.record(
                        session, payload_key=self.resource.name, index=self.index, resource_id=document["id"],
                        version=1, events=create.events, parties=self.store.parties(document, document[META]),
                        trace=create.trace)
            except Exception:
                failed_writing = True
                raise

        try:
            await in_transaction(self.context.db, transaction)
        except Exception:
            # Only a group refused while writing is tried create by create; one that failed
            # later (its commit) may be stored, and its creates fail as a create alone would.
            if failed_writing:
                return [False] * len(creates)
            raise
        if deliveries:
            outbox.committed()
        return [True] * len(creates)

    async def _guarded(self, action: Callable[[], Any]) -> Any:
        if not self.resource.serialize_writes:
            return await action()
        async with self._write_lock:
            return await action()

    # -- operations -------------------------------------------------------------------------

    async def list_resources(self, fields: str | None = None, offset: int | None = None, limit: int | None = None,
                   sort: str | None = None) -> Response:
        # Connexion has checked the declared parameters; the whole query string is parsed here
        # because filters are parameters no document can list.
        query = parse_query(request.url.query, self.index,
                            default_limit=self.settings.page_default_limit,
                            max_limit=self.settings.page_max_limit)
        plan = filter_plan(query.conditions, self.index, self.settings.regex_max_length)
        call = call_of(request)
        selected = projection(query.fields)
        items: list[dict[str, Any]] = []
        total: int | None
        if plan.text_matches:
            # Regexes the database must not run are matched here; present() drops the
            # attributes read for them that the client did not ask for.
            if selected is not None:
                selected = {**selected, **{path.split(".")[0]: 1 for path in plan.paths}}
            items, total = await self.store.find_scanned(
                plan.query, call, plan.matches, scan_limit=self.settings.regex_scan_limit,
                fields=selected, sort=query.sort, skip=query.offset, limit=query.limit)
        else:
            more = False
            if query.limit > 0:
                # One more than the page says whether anything follows it, at no extra pass.
                items = await self.store.find(plan.query, call, fields=selected,
                                              sort=query.sort, skip=query.offset, limit=query.limit + 1)
                more = len(items) > query.limit
                del items[query.limit:]
            if query.limit > 0 and not more and (items or query.offset == 0):
                # The page reaches the end of the result: its end is the total, no count needed.
                total = query.offset + len(items)
            else:
                # Counting decodes every match again; the total of a longer result may be one
                # this process counted a few seconds ago (README: X-Total-Count), never less
                # than what this page shows to exist.
                shown = query.offset + len(items) + (1 if more else 0) if items else 0
                try:
                    total = max(await self.store.count(plan.query, call, cached=True), shown)
                except QueryTooExpensive:
                    if query.limit == 0:
                        raise  # the total is all that was asked
                    # The page is served; only its total is too costly to give (TMF630 makes
                    # X-Total-Count optional).
                    total = None
        body = [self.present(item, query.fields) for item in items]
        complete = query.offset == 0 and len(body) == total
        headers = {"X-Result-Count": str(len(body))}
        if total is not None:
            headers["X-Total-Count"] = str(total)
        return json_response(body, 200 if complete else 206, headers)

    async def create(self, body: Any = None) -> Response:
        if not isinstance(body, dict):
            raise BadRequest(f"the body must be a {self.resource.type_name} JSON object")
        check_keys(body)
        given_read_only = sorted(k for k in body if k in self.index.read_only or k in {"id", "href"})
        if given_read_only:
            raise BadRequest(f"{', '.join(given_read_only)} are set by the server; leave them out")
        call = call_of(request)
        self.check_write(call)
        stored = await self.insert(body, call)
        location = self.href(stored["id"])
        return json_response(self.present(stored), 201, {"Location": location, "ETag": etag(1)})

    async def insert(self, body: dict[str, Any], call: Call, *, resource_id: str | None = None,
                     session: Any = None, also: Sequence[tuple[str, list[str] | None]] = (),
                     parties: Iterable[str] = ()) -> dict[str, Any]:
        """Create a resource with its domain rules, validation and create event: for clients
        (through ``create``) and for resources the system itself makes. With ``session``, the
        write joins the caller's transaction (the caller then wakes the dispatcher). ``also``
        names further events (kind, fieldPath) to announce with the creation; ``parties`` are
        parties that may see the resource besides those it names (kept across changes)."""
        document: dict[str, Any] = fill_defaults(normalize_dates(body, self.index.date_time_paths),
                                                 self.index.required_defaults)
        document["id"] = resource_id or new_id()
        document.setdefault("@type", self.resource.type_name)

        async def write() -> dict[str, Any]:
            meta = await self.resource.rules.on_create(self, document, call)
            extra = sorted({*parties, *meta.get(EXTRA_PARTIES, ())})
            if extra:
                meta[EXTRA_PARTIES] = extra
            self.check_still_visible(call, document, {"owner": call.party_id, **meta})
            presented = self.present(document)
            self.check_valid(presented)
            created = [self.event(CREATE, presented), *(self.event(kind, presented, path) for kind, path in also)]

            async def insert(session: Any) -> tuple[dict[str, Any], int, list[dict[str, Any]]]:
                stored = await self.store.insert(document, call, session=session, **meta)
                return stored, 1, created

            # In its own transaction, a create joins those arriving with it; answered (and
            # announced) only once their common transaction has committed.
            if session is None and not self.resource.serialize_writes and await self._creates.submit(
                    _Create(document, call, meta, created, telemetry.trace_fields())):
                return document
            await self._commit(insert, document["id"], session)
            return document

        stored: dict[str, Any] = await self._guarded(write)
        return stored

    def check_write(self, call: Call) -> None:
        """Whether this caller may write resources of this type at all."""
        if call.read_only:
            raise Forbidden(f"a {call.role} may only read")
        if not call.unrestricted and not self.resource.party_writes:
            raise Forbidden(f"only the operator creates and changes {self.resource.type_name} resources")

    def check_still_visible(self, call: Call, document: Mapping[str, Any], meta: Mapping[str, Any]) -> None:
        """A party may only write a resource it remains named in: it cannot create one for
        others, nor hand its own to someone else. (Having created it is not enough where the
        resource names its parties; where it names none, the creator is its only party.)"""
        if call.unrestricted:
            return
        self.check_write(call)
        visibility = self.resource.visibility
        if not visibility.party_paths:
            return
        if call.party_id not in visibility.parties(document, None, meta.get(EXTRA_PARTIES, ())):
            raise Forbidden(f"the {self.resource.type_name} must name your party ({call.party_id}) "
                            "among its parties (e.g. relatedParty); you may only write what you are a party to")

    async def _load(self, resource_id: str, call: Call) -> dict[str, Any]:
        # Any id a client sends is only compared for equality; one longer than any id we make
        # or accept cannot exist, and is not worth a query.
        stored = await self.store.get(resource_id, call) if len(resource_id) <= MAX_ID_LENGTH else None
        if stored is None:
            raise NotFound(f"no {self.resource.type_name} with id '{resource_id[:64]}'")
        return stored

    async def retrieve(self, id: str, fields: str | None = None) -> Response:
        selected = parse_fields(fields, self.index)
        stored = await self._load(id, call_of(request))
        return json_response(self.present(stored, selected), 200, {"ETag": etag(stored[META]["version"])})

    async def patch(self, id: str, body: Any = None) -> Response:
        style = patch_style(request.headers.get("content-type"))
        result = await self.modify(id, lambda before: apply_patch(style, before, body),
                                   call_of(request), if_match=request.headers.get("if-match"))
        return json_response(self.present(result), 200, {"ETag": etag(result[META]["version"])})

    async def modify(self, resource_id: str, change: Callable[[dict[str, Any]], dict[str, Any]],
                     call: Call, *, if_match: str | None = None, session: Any = None,
                     system: bool = False) -> dict[str, Any]:
        """Apply ``change`` (the resource as clients see it -> the new resource) with optimistic
        concurrency: re-read and re-apply when someone else wrote first, never losing either
        update; validate, run the domain rules, and record the change events. Returns the stored
        document (unchanged, with no event, when ``change`` changes nothing). ``system`` changes
        may set read-only attributes (other than id and href)."""

        async def write() -> dict[str, Any]:
            for attempt in range(PATCH_ATTEMPTS):
                if attempt:
                    ceiling = min(PATCH_BACKOFF_MAX_SECONDS, PATCH_BACKOFF_SECONDS * 2 ** attempt)
                    await asyncio.sleep(random.uniform(0, ceiling))  # noqa: S311 - jitter, not security
                stored = await self._load(resource_id, call)
                meta = stored[META]
                if not matches_if_match(if_match, meta["version"]):
                    raise PreconditionFailed(
                        f"If-Match {if_match} does not match the current ETag {etag(meta['version'])}; "
                        "GET the resource again and reapply your change"
                    )
                before = self.present(stored)
                after = change(before)
                guarded = {"id", "href"} if system else {*self.index.read_only, "id", "href"}
                touched = sorted(name for name in guarded if after.get(name) != before.get(name))
                if touched:
                    raise BadRequest(f"{', '.join(touched)} cannot be changed")
                check_keys(after)
                after = fill_defaults(normalize_dates(after, self.index.date_time_paths),
                                     self.index.required_defaults)
                self.check_valid(after)
                after.pop("href", None)
                if not system:
                    self.check_still_visible(call, after, meta)
                changed = sorted(k for k in {*before, *after} if k != "href" and before.get(k) != after.get(k))
                if not changed:
                    return stored
                derived = await self.resource.rules.on_update(self, public(stored), after, call, system=system)
                replace = self._replacement(after, {**meta, **derived}, changed, call)
                result: dict[str, Any] | None = await self._commit(replace, resource_id, session)
                if result is not None:
                    return result
                if if_match is not None:
                    raise PreconditionFailed(
                        f"the resource changed after If-Match {if_match} was checked; GET it again and "
                        "reapply your change")
                if session is not None:
                    # The caller's transaction saw the old version; only the caller can start over.
                    raise ConcurrentChanges("the resource changed while the change was applied; try again")
            raise ConcurrentChanges(
                f"the {self.resource.type_name} kept changing while this change was applied "
                f"({PATCH_ATTEMPTS} attempts); send it again")

        result: dict[str, Any]
        if session is not None:
            # Inside a caller's transaction the caller orders its writes; waiting here for a
            # resource another of its writes holds could deadlock.
            result = await self._guarded(write)
            return result
        # Writers of one resource in this process take turns instead of racing: the versioned
        # replace then only meets writers in other processes.
        async with self._resource_locks.hold(resource_id):
            result = await self._guarded(write)
        return result

    async def update_in_place(self, query: Mapping[str, Any], update: Mapping[str, Any], changed: list[str],
                              call: Call, *, hide: Sequence[str] = (), shown: Mapping[str, Any] | None = None,
                              session: Any = None) -> dict[str, Any] | None:
        """Apply ``update``, a MongoDB update the server built (never operators a client chose), to
        the one resource ``query`` selects, as one new version announced by an
        AttributeValueChangeEvent (``changed`` is its fieldPath) in the same transaction, without
        loading, checking and replacing the whole document: for appends to lists that grow long.
        No domain rule or schema check runs, so the caller guarantees that what it writes is
        valid; it may change neither the state attribute nor who may see the resource.
        ``hide`` are attributes left out of the document read back, and so of the event, where
        ``shown`` gives what the event carries for them instead (e.g. only the items appended).
        Returns the stored document without the hidden attributes, or None when ``query``
        selects nothing the caller may change. With ``session``, the write joins that
        transaction, whose committer then tells the outbox (``outbox.committed()``)."""
        forbidden = {self.resource.state_attribute, "id", "href",
                     *(path.split(".")[0] for path in self.resource.visibility.party_paths)}
        touched = {path.split(".")[0] for operation in update.values() for path in operation} | set(hide)
        if touched & forbidden:
            raise ValueError(f"an update in place may not change {', '.join(sorted(touched & forbidden))}")
        versioned = {**update, "$inc": {**update.get("$inc", {}), f"{META}.version": 1}}

        async def write(session: Any) -> tuple[dict[str, Any] | None, int, list[dict[str, Any]]]:
            stored = await self.store.update(query, versioned, call, hide=hide, session=session)
            if stored is None:
                return None, 0, []
            presented = self.present({**stored, **(shown or {})})
            return stored, stored[META]["version"], [self.event(ATTRIBUTE_CHANGE, presented, changed)]

        written: dict[str, Any] | None = await self._commit(write, None, session)
        return written

    def _replacement(self, after: dict[str, Any], meta: dict[str, Any], changed: list[str],
                     call: Call) -> Callable[[Any], Any]:
        """The transactional body of one PATCH attempt: the versioned replace and its events."""

        async def replace(session: Any) -> tuple[dict[str, Any] | None, int, list[dict[str, Any]]]:
            replaced = await self.store.replace(after, call, meta=meta, session=session)
            if replaced is None:
                return None, 0, []
            presented = self.present(replaced)
            events = [self.event(ATTRIBUTE_CHANGE, presented, changed)]
            if self.resource.state_attribute in changed:
                events.append(self.event(STATE_CHANGE, presented))
            return replaced, replaced[META]["version"], events

        return replace

    async def delete(self, id: str) -> Response:
        call = call_of(request)

        self.check_write(call)

        async def remove() -> None:
            stored = await self._load(id, call)
            await self.resource.rules.on_delete(self, public(stored), call)

            async def delete(session: Any) -> tuple[dict[str, Any], int, list[dict[str, Any]]]:
                removed = await self.store.delete(id, call, session=session)
                if removed is None:
                    raise NotFound(f"no {self.resource.type_name} with id '{id[:64]}'")
                return removed, removed[META]["version"] + 1, [self.event(DELETE, self.present(removed))]

            await self._commit(delete, id)

        await self._guarded(remove)
        return Response(status_code=204)

    def handlers(self) -> dict[str, Handler]:
        t = self.resource.type_name
        return {f"list{t}": self.list_resources, f"create{t}": self.create, f"retrieve{t}": self.retrieve,
                f"patch{t}": self.patch, f"delete{t}": self.delete}
