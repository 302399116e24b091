"""Storage of events and their deliveries: the event log (the transactional outbox), one
delivery per event and matching subscription, and the queries the dispatcher and the hub's
visibility operations need. Batches everywhere: no round trip per delivery."""

from __future__ import annotations

import secrets
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from pymongo import ASCENDING, IndexModel, ReturnDocument, UpdateMany, UpdateOne
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.read_concern import ReadConcern

from .. import telemetry

T = TypeVar("T")

EVENTS = "event"
DELIVERIES = "delivery"
HUB = "hub"
# One document per API counting the changes of its hub subscriptions (registered, removed,
# suspended, reactivated), each bumped in the transaction of the change: a write reads it to
# know whether the subscriptions it last read are still the ones in force.
HUB_VERSIONS = "hub_version"
RECEIVED = "received_event"
CONSUMERS = "consumer"
UNDELIVERED = ["pending", "retrying"]
# "No lease" is a lease that ended long ago: a plain ``leaseUntil < now`` then finds free
# deliveries, where an ``$or`` with null makes some servers read the whole collection.
NO_LEASE = datetime(1970, 1, 1, tzinfo=UTC)
STATES = ("pending", "retrying", "delivered", "dead", "suspended")
# The due-work query reads deliveries window by window of nextAttemptAt, from the earliest one
# that may still be waiting: its cost follows the deliveries in the windows it reads, not every
# undelivered one. A delivery is stamped before its transaction commits, so the windows never
# start later than COMMIT_MARGIN before now; and every SWEEP_SECONDS one query over everything
# due finds what the windows passed by (a lease that ran out, a commit later than the margin).
DUE_WINDOW = timedelta(seconds=1)
COMMIT_MARGIN = timedelta(seconds=2)
SWEEP_SECONDS = 5.0
# Further back than this many windows (a delivery long blocked behind a retrying one of its
# lane), one query over everything due is cheaper than the walk.
MAX_WINDOWS = 30


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class Staged:
    """Deliveries written in a transaction, leased to this process's dispatcher from the start,
    with the events they carry: what the dispatcher sends at once once the transaction commits."""

    store: EventStore
    deliveries: list[dict[str, Any]]
    events: dict[str, dict[str, Any]] = field(default_factory=dict)


# The deliveries written by the current attempt of the current transaction (None outside
# ``in_transaction``), and whether the last transaction of this context handed all of its
# deliveries to the dispatcher (so that nothing is left for a database poll to find).
_STAGED: ContextVar[list[Staged] | None] = ContextVar("staged_deliveries", default=None)
_HANDED_OFF: ContextVar[bool] = ContextVar("deliveries_handed_off", default=False)


@dataclass
class _Attempt:
    """One attempt of a transaction run by ``in_transaction``: the hub versions it has read (a
    snapshot reads the same value every time, so once is enough) and the outbox documents it
    holds back until just before the commit, so that a transaction writing many resources
    inserts its events, deliveries and event records with one command per collection."""

    session: AsyncClientSession
    hub_versions: dict[str, tuple[str, int] | None] = field(default_factory=dict)
    inserts: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    # Whether it recorded events, and whether it wrote deliveries that no dispatcher of this
    # process took in hand (a poll must find those).
    recorded: bool = False
    left_for_poll: bool = False

    async def write(self, database: AsyncDatabase[dict[str, Any]]) -> None:
        held, self.inserts = self.inserts, {}
        for collection, documents in held.items():
            await database[collection].insert_many(documents, session=self.session)


_ATTEMPT: ContextVar[_Attempt | None] = ContextVar("transaction_attempt", default=None)


def _attempt_of(session: AsyncClientSession | None) -> _Attempt | None:
    """The running attempt of ``in_transaction`` that ``session`` belongs to, if any (a session
    of a caller's own transaction writes at once, as before)."""
    attempt = _ATTEMPT.get()
    return attempt if attempt is not None and session is not None and attempt.session is session else None


def take_handed_off() -> bool:
    """Whether the last transaction committed in this context handed every delivery it wrote
    to the dispatcher; asking clears it."""
    handed = _HANDED_OFF.get()
    if handed:
        _HANDED_OFF.set(False)
    return handed


async def in_transaction(database: AsyncDatabase[dict[str, Any]],
                         body: Callable[[AsyncClientSession], Awaitable[T]]) -> T:
    """Run ``body`` in one MongoDB transaction (retried by the driver on transient errors).

    The transaction reads one snapshot and commits with the client's write concern (majority,
    journaled, unless the unsafe mode is configured), so that a commit answered is a commit kept.
    Deliveries written in it go, once it has committed, straight to the dispatcher of this
    process (see ``EventStore.hand_off_to``). The events, deliveries and event records written
    through ``session`` are inserted together when ``body`` returns, just before the commit, so
    ``body`` cannot read them back; the hub version is read once per attempt and API."""
    staged: list[Staged] = []
    attempts: list[_Attempt] = []

    async def attempt(session: AsyncClientSession) -> T:
        staged.clear()  # what an aborted attempt wrote was never committed
        # Each attempt reads the hub version afresh and holds back only its own outbox writes.
        current = _Attempt(session)
        attempts.append(current)
        token = _ATTEMPT.set(current)
        try:
            result = await body(session)
            await current.write(database)
        finally:
            _ATTEMPT.reset(token)
        return result

    token = _STAGED.set(staged)
    try:
        async with database.client.start_session() as session:
            result: T = await session.with_transaction(
                attempt, read_concern=ReadConcern("snapshot"), write_concern=database.write_concern)
    finally:
        _STAGED.reset(token)
    # A transaction that recorded events and handed every delivery it wrote (maybe none: no
    # subscriber heard them) to the dispatcher leaves nothing for a poll to find.
    handed = all([s.store.committed(s) for s in staged])
    last = attempts[-1] if attempts else None
    _HANDED_OFF.set(handed and last is not None and last.recorded and not last.left_for_poll)
    return result


def _aware(moment: datetime) -> datetime:
    """Stored times come back without a zone; they are UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _take_due(rows: list[dict[str, Any]], wanted: int,
              saturated: Collection[str]) -> tuple[list[dict[str, Any]], datetime | None]:
    """The first ``wanted`` of ``rows`` (due, in time order) not for ``saturated`` subscribers,
    and the earliest time of a row passed over."""
    taken: list[dict[str, Any]] = []
    passed_over: datetime | None = None
    for row in rows:
        if len(taken) < wanted and row["subscriptionId"] not in saturated:
            taken.append(row)
        elif passed_over is None:
            passed_over = row["nextAttemptAt"]
    return taken, passed_over


@dataclass(frozen=True)
class HandOff:
    owner: str
    lease: timedelta
    take: Callable[[Staged], bool]
    apis: frozenset[str] | None


@dataclass
class Outcome:
    """What one delivery attempt came to."""

    delivery_id: str
    state: str  # delivered, retrying, dead
    status: int | None = None
    error: str | None = None
    next_attempt_at: datetime | None = None


class EventStore:
    def __init__(self, database: AsyncDatabase[dict[str, Any]]) -> None:
        self.database = database
        self.events = database[EVENTS]
        self.deliveries = database[DELIVERIES]
        self.hub = database[HUB]
        self.hub_versions = database[HUB_VERSIONS]
        self.received = database[RECEIVED]
        self.consumers = database[CONSUMERS]
        # Where this process's next due-work window starts (None: sweep first), and when it sweeps.
        self._due_from: datetime | None = None
        self._sweep_at = 0.0
        self._hand_off: HandOff | None = None

    def hand_off_to(self, owner: str, lease: timedelta, take: Callable[[Staged], bool],
                    apis: Collection[str] | None = None) -> None:
        """Deliveries written from now on inside ``in_transaction`` (of events of ``apis``, or
        of any API) are created leased to ``owner`` for ``lease``, so that no poll takes them,
        and given to ``take`` once their transaction commits. ``take`` answers whether it will
        send them; when it will not, it must release them (``settle(..., released=...)``)."""
        self._hand_off = HandOff(owner, lease, take, None if apis is None else frozenset(apis))

    def stop_hand_off(self) -> None:
        self._hand_off = None

    def committed(self, staged: Staged) -> bool:
        hand_off = self._hand_off
        if hand_off is None:
            # The dispatcher stopped between the write and the commit: the lease runs out and
            # a poll takes them then.
            return False
        return hand_off.take(staged)

    async def ensure_indexes(self) -> None:
        await self.events.create_indexes([IndexModel([("api", ASCENDING), ("eventTime", ASCENDING)])])
        await self.deliveries.create_indexes([
            IndexModel([("state", ASCENDING), ("nextAttemptAt", ASCENDING)]),
            # A process serving some of the APIs claims only their deliveries.
            IndexModel([("api", ASCENDING), ("state", ASCENDING), ("nextAttemptAt", ASCENDING)]),
            IndexModel([("nextAttemptAt", ASCENDING)]),
            IndexModel([("lane", ASCENDING), ("seq", ASCENDING)]),
            IndexModel([("claim", ASCENDING)]),
            IndexModel([("subscriptionId", ASCENDING), ("state", ASCENDING), ("createdAt", ASCENDING)]),
        ])

    # -- writing, inside the transaction of the change --------------------------------------

    async def subscriptions(self, api: str, session: AsyncClientSession | None = None) -> list[dict[str, Any]]:
        return await self.hub.find({"api": api, "status": {"$ne": "suspended"}}, session=session).to_list()

    async def hub_version(self, api: str, session: AsyncClientSession | None = None) -> tuple[str, int] | None:
        """Which state the hub subscriptions of ``api`` are in, as the transaction of ``session``
        sees them: None before any change, else an identity that every change of them moves (it
        also differs between databases, and after the counter was removed and made again)."""
        attempt = _attempt_of(session)
        if attempt is not None and api in attempt.hub_versions:
            return attempt.hub_versions[api]
        found = await self.hub_versions.find_one({"_id": api}, session=session)
        version = None if found is None else (str(found.get("epoch")), int(found.get("version", 0)))
        if attempt is not None:
            attempt.hub_versions[api] = version
        return version

    async def hub_changed(self, api: str, session: AsyncClientSession) -> None:
        """Record, within the transaction of a change of ``api``'s hub subscriptions, that they changed."""
        await self.hub_versions.update_one(
            {"_id": api}, {"$inc": {"version": 1}, "$setOnInsert": {"epoch": uuid.uuid4().hex}},
            upsert=True, session=session)
        attempt = _attempt_of(session)
        if attempt is not None:
            attempt.hub_versions.pop(api, None)

    async def _insert(self, collection: str, documents: list[dict[str, Any]], session: AsyncClientSession) -> None:
        """Insert outbox documents in the transaction of ``session``: at its commit, together with
        the others of the same collection, when ``in_transaction`` runs it; else at once."""
        if not documents:
            return
        attempt = _attempt_of(session)
        if attempt is None:
            await self.database[collection].insert_many(documents, session=session)
        else:
            attempt.inserts.setdefault(collection, []).extend(documents)

    async def _set_subscription_status(self, subscription_id: str, change: dict[str, Any]) -> None:
        async def update(session: AsyncClientSession) -> None:
            found = await self.hub.find_one_and_update({"_id": subscription_id}, change, {"api": 1}, session=session)
            if found is not None:
                await self.hub_changed(str(found.get("api")), session)

        await in_transaction(self.database, update)

    async def record(self, api: str, resource_id: str, version: int, events: list[dict[str, Any]],
                     recipients: list[list[str]], session: AsyncClientSession, parties: list[str],
                     trace: Mapping[str, str] | None = None) -> None:
        """Store ``events`` (about one resource, in order) and a delivery per recipient. ``trace``
        is the change's trace context when it is not the current one (a change written by
        another task, together with others)."""
        now = utcnow()
        # telemetry: the change's traceparent, kept with its events and deliveries
        trace = dict(telemetry.trace_fields() if trace is None else trace)
        await self._insert(EVENTS, [
            {"_id": e["eventId"], "api": api, "eventType": e["eventType"], "resourceId": resource_id,
             "eventTime": e["eventTime"], "seq": version * 10 + i, "parties": parties, "event": e, **trace}
            for i, e in enumerate(events)
        ], session)
        deliveries = [
            self._delivery(api, subscription_id, resource_id, version * 10 + i, event, now) | trace
            for i, (event, subscribers) in enumerate(zip(events, recipients, strict=True))
            for subscription_id in subscribers
        ]
        staging, hand_off, attempt = _STAGED.get(), self._hand_off, _attempt_of(session)
        if attempt is not None:
            attempt.recorded = True
        if deliveries and staging is not None and hand_off is not None and (
                hand_off.apis is None or api in hand_off.apis):
            for delivery in deliveries:
                delivery.update(leaseOwner=hand_off.owner, leaseUntil=now + hand_off.lease)
            staging.append(Staged(self, deliveries, {e["eventId"]: e for e in events}))
        elif deliveries and attempt is not None:
            attempt.left_for_poll = True
        await self._insert(DELIVERIES, deliveries, session)

    async def keep_records(self, collection: str, payload_key: str, events: list[dict[str, Any]],
                           session: AsyncClientSession, parties: list[str]) -> None:
        """A readable record of each event, beside the resource it is about."""
        now = events[0]["eventTime"] if events else None
        await self._insert(collection, [
            {"_id": e["eventId"], "id": e["eventId"], "eventId": e["eventId"], "eventTime": e["eventTime"],
             "eventType": e["eventType"], "recordTime": now, "notification": e,
             payload_key: {**{k: v for k, v in e["event"][payload_key].items() if k in {"id", "href", "name"}},
                           "@referredType": e["event"][payload_key].get("@type")},
             "_meta": {"version": 1, "owner": None, "parties": parties}}
            for e in events
        ], session)

    @staticmethod
    def _delivery(api: str, subscription_id: str, resource_id: str, seq: int, event: Mapping[str, Any],
                  now: datetime, suffix: str = "") -> dict[str, Any]:
        return {"_id": f"{event['eventId']}/{subscription_id}{suffix}", "api": api,
                "subscriptionId": subscription_id, "eventId": event["eventId"], "eventType": event["eventType"],
                "lane": f"{subscription_id}/{resource_id}", "seq": seq, "state": "pending", "attempts": 0,
                "createdAt": now, "nextAttemptAt": now, "leaseUntil": NO_LEASE}

    # -- the dispatcher ------------------------------------------------------------------------

    async def claim(self, owner: str, capacity: Callable[[str], int], limit: int, lease: timedelta,
                    saturated: Collection[str] = (), apis: Collection[str] | None = None,
                    ) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """Lease up to ``limit`` due deliveries that head their lane (no earlier delivery of the
        same resource to the same subscriber is still undelivered) and whose subscriber has
        capacity; return them with their events and subscriptions. Deliveries to ``saturated``
        subscribers are not even looked at, so that their backlog cannot crowd out the others.
        With ``apis``, only deliveries of events of those APIs are claimed (a process serving
        some APIs delivers their events and leaves the others to the processes serving them)."""
        now = utcnow()
        due, passed_over = await self._due(now, limit * 4, saturated, apis)
        heads: dict[str, dict[str, Any]] = {}
        for d in due:
            if d["lane"] not in heads or d["seq"] < heads[d["lane"]]["seq"]:
                heads[d["lane"]] = d
        if not heads:
            return []
        blocked = {other["lane"] for other in await self.undelivered_in_lanes(heads)
                   if other["seq"] < heads[other["lane"]]["seq"]}
        taken: Counter[str] = Counter()
        chosen = []
        for d in sorted(heads.values(), key=lambda d: d["seq"]):
            subscription = d["subscriptionId"]
            if d["lane"] in blocked or taken[subscription] >= capacity(subscription):
                continue
            taken[subscription] += 1
            chosen.append(d["_id"])
            if len(chosen) >= limit:
                break
        taken_ids = set(chosen)
        waiting = [_aware(d["nextAttemptAt"]) for d in due if d["_id"] not in taken_ids]
        if passed_over is not None:
            waiting.append(_aware(passed_over))
        self._advance(now, min(waiting) if waiting else None)
        if not chosen:
            return []
        token = uuid.uuid4().hex
        await self.deliveries.update_many(
            {"_id": {"$in": chosen}, "state": {"$in": UNDELIVERED}, "leaseUntil": {"$lt": now}},
            {"$set": {"leaseOwner": owner, "leaseUntil": now + lease, "claim": token}},
        )
        claimed = await self.deliveries.find({"claim": token}).to_list()
        events = {e["_id"]: e["event"] for e in
                  await self.events.find({"_id": {"$in": [c["eventId"] for c in claimed]}}).to_list()}
        subscriptions = await self.subscriptions_by_id({c["subscriptionId"] for c in claimed})
        return [({**c, "subscription": subscriptions.get(c["subscriptionId"])}, events[c["eventId"]])
                for c in claimed if c["eventId"] in events]

    async def undelivered_in_lanes(self, lanes: Collection[str]) -> list[dict[str, Any]]:
        """``_id``, ``lane`` and ``seq`` of the undelivered deliveries in ``lanes``."""
        lanes = list(lanes)
        found: list[dict[str, Any]] = []
        for start in range(0, len(lanes), 100):
            chunk = {"lane": {"$in": lanes[start:start + 100]}, "state": {"$in": UNDELIVERED}}
            found += await self.deliveries.find(chunk, {"lane": 1, "seq": 1}).to_list()
        return found

    async def subscriptions_by_id(self, ids: Collection[str]) -> dict[str, dict[str, Any]]:
        """The hub subscriptions with these ids (deleted ones are missing)."""
        return {s["_id"]: s for s in await self.hub.find({"_id": {"$in": list(ids)}}).to_list()}

    async def _due(self, now: datetime, wanted: int, saturated: Collection[str],
                   apis: Collection[str] | None = None) -> tuple[list[dict[str, Any]], datetime | None]:
        """Up to ``wanted`` due, unleased deliveries to subscribers not ``saturated``, earliest
        first; and the earliest time from which due deliveries were passed over (those of
        saturated subscribers, those beyond ``wanted``), None when none were."""
        fields = {"lane": 1, "seq": 1, "subscriptionId": 1, "state": 1, "nextAttemptAt": 1, "api": 1}
        start = self._due_from
        if start is None or time.monotonic() >= self._sweep_at or now - start > MAX_WINDOWS * DUE_WINDOW:
            self._sweep_at = time.monotonic() + SWEEP_SECONDS
            # The APIs are checked here, not in the query: with them in it, the embedded server
            # read every delivery ever made of those APIs (477 ms of its CPU a sweep at 20,000
            # delivered, against 1 ms by state and time alone).
            swept = await self.deliveries.find(
                {"state": {"$in": UNDELIVERED}, "nextAttemptAt": {"$lte": now}, "leaseUntil": {"$lt": now}},
                fields, sort=[("nextAttemptAt", ASCENDING)]).to_list()
            return _take_due([d for d in swept if apis is None or d.get("api") in apis], wanted, saturated)
        found: list[dict[str, Any]] = []
        while len(found) < wanted and start < now:
            end = min(now, start + DUE_WINDOW)
            # Only the time range in the query: that is what the database narrows by index; the
            # state is checked here (the window also holds deliveries already made).
            window = await self.deliveries.find(
                {"nextAttemptAt": {"$gte": start, "$lt": end} if end < now else {"$gte": start, "$lte": now},
                 "leaseUntil": {"$lt": now}}, fields, sort=[("nextAttemptAt", ASCENDING)]).to_list()
            # A process serving some of the APIs claims only their deliveries.
            found += [d for d in window if d["state"] in UNDELIVERED and (apis is None or d.get("api") in apis)]
            start = end
        return _take_due(found, wanted, saturated)

    def _advance(self, now: datetime, earliest_waiting: datetime | None) -> None:
        """The next window starts at the earliest due delivery left waiting, else as late as
        the commit margin allows."""
        latest = now - COMMIT_MARGIN
        self._due_from = min(_aware(earliest_waiting), latest) if earliest_waiting is not None else latest

    async def settle(self, outcomes: Iterable[Outcome], released: Iterable[str] = (), owner: str | None = None) -> None:
        """Record delivery outcomes, and give back ``released`` deliveries (leased to ``owner``
        and not attempted) to whichever process polls first: one write for all of them."""
        now = utcnow()
        operations: list[UpdateMany] = []
        released = list(released)
        if released:
            operations.append(UpdateMany({"_id": {"$in": released}, "leaseOwner": owner, "state": {"$in": UNDELIVERED}},
                                         {"$set": {"leaseUntil": NO_LEASE, "leaseOwner": None, "nextAttemptAt": now}}))
        # Outcomes alike (most often: delivered, with the same status) are written by one statement.
        alike: dict[tuple[str, int | None, str | None, datetime | None], list[str]] = {}
        for o in outcomes:
            alike.setdefault((o.state, o.status, o.error, o.next_attempt_at), []).append(o.delivery_id)
        for (state, status, error, next_attempt_at), ids in alike.items():
            fields: dict[str, Any] = {"state": state, "leaseUntil": NO_LEASE, "leaseOwner": None,
                                      "lastAttemptAt": now, "lastStatus": status, "lastError": error}
            if state == "delivered":
                fields["deliveredAt"] = now
            if next_attempt_at is not None:
                fields["nextAttemptAt"] = next_attempt_at
            operations.append(UpdateMany({"_id": {"$in": ids}}, {"$set": fields, "$inc": {"attempts": 1}}))
        if operations:
            await self.deliveries.bulk_write(operations, ordered=False)

    async def suspend(self, subscription_id: str, reason: str) -> None:
        await self._set_subscription_status(subscription_id,
                                            {"$set": {"status": "suspended", "suspendedReason": reason}})
        await self.deliveries.update_many({"subscriptionId": subscription_id, "state": {"$in": UNDELIVERED}},
                                          {"$set": {"state": "suspended", "leaseUntil": NO_LEASE}})

    # -- visibility and repair ------------------------------------------------------------------

    async def summary(self, subscription_id: str) -> dict[str, Any]:
        counts = {state: 0 for state in STATES}
        async for row in await self.deliveries.aggregate([
            {"$match": {"subscriptionId": subscription_id}},
            {"$group": {"_id": "$state", "n": {"$sum": 1}}},
        ]):
            counts[row["_id"]] = row["n"]
        upcoming = await self.deliveries.find_one(
            {"subscriptionId": subscription_id, "state": "retrying"}, sort=[("nextAttemptAt", ASCENDING)])
        return {"counts": counts, "nextAttemptAt": upcoming["nextAttemptAt"] if upcoming else None,
                "lastError": upcoming.get("lastError") if upcoming else None}

    async def page(self, subscription_id: str, state: str | None, offset: int,
                   limit: int) -> tuple[int, list[dict[str, Any]]]:
        query: dict[str, Any] = {"subscriptionId": subscription_id}
        if state:
            query["state"] = state
        total = await self.deliveries.count_documents(query)
        rows = await self.deliveries.find(query, sort=[("createdAt", ASCENDING), ("seq", ASCENDING)],
                                          skip=offset, limit=limit).to_list()
        return total, rows

    async def redeliver(self, subscription_id: str, event_ids: list[str] | None) -> int:
        query: dict[str, Any] = {"subscriptionId": subscription_id, "state": {"$in": ["dead", "suspended"]}}
        if event_ids:
            query["eventId"] = {"$in": event_ids}
        result = await self.deliveries.update_many(query, {"$set": {
            "state": "pending", "attempts": 0, "nextAttemptAt": utcnow(), "leaseUntil": NO_LEASE, "lastError": None}})
        return result.modified_count

    async def events_between(self, api: str, start: str, end: str, limit: int) -> list[dict[str, Any]]:
        return await self.events.find({"api": api, "eventTime": {"$gte": start, "$lt": end}},
                                      sort=[("eventTime", ASCENDING), ("seq", ASCENDING)], limit=limit).to_list()

    async def replay(self, api: str, subscription_id: str, events: list[dict[str, Any]]) -> int:
        now = utcnow()
        suffix = f"/replay-{uuid.uuid4().hex[:12]}"
        deliveries = [self._delivery(api, subscription_id, e["resourceId"], e["seq"], e["event"], now, suffix)
                      for e in events]
        if deliveries:
            await self.deliveries.insert_many(deliveries)
        return len(deliveries)

    # -- the consuming side -------------------------------------------------------------------

    async def was_received(self, event_id: str) -> bool:
        return await self.received.find_one({"_id": event_id}, {"_id": 1}) is not None

    async def mark_received(self, event_id: str, event_type: str, api: str, at: str) -> None:
        await self.received.update_one(
            {"_id": event_id}, {"$setOnInsert": {"eventType": event_type, "api": api, "receivedAt": at}}, upsert=True)

    async def received_among(self, event_ids: Collection[str]) -> set[str]:
        """Which of ``event_ids`` were taken before: one read for a whole batch."""
        found = await self.received.find({"_id": {"$in": list(set(event_ids))}}, {"_id": 1}).to_list()
        return {str(d["_id"]) for d in found}

    async def mark_received_many(self, events: Iterable[tuple[str, str]], api: str, at: str,
                                 session: AsyncClientSession | None = None) -> None:
        """Record ``(eventId, eventType)`` pairs as taken, in one write; taken twice stays once."""
        operations = [UpdateOne({"_id": event_id}, {"$setOnInsert": {"eventType": event_type, "api": api,
                                                                     "receivedAt": at}}, upsert=True)
                      for event_id, event_type in events]
        if operations:
            await self.received.bulk_write(operations, ordered=False, session=session)

    async def took(self, consumer: str, event_time: str, session: AsyncClientSession | None = None) -> None:
        """Remember that ``consumer`` took an event of ``event_time`` (normalised UTC text, whose
        order is time order); only the latest time is kept, whatever order events come in."""
        await self.consumers.update_one({"_id": consumer}, {"$max": {"lastEventTime": event_time}}, upsert=True,
                                        session=session)

    async def consumer_secret(self, consumer: str) -> str:
        """The secret ``consumer`` registers its subscriptions with and verifies deliveries by;
        made once, kept across restarts (and shared by every process of the consumer)."""
        fresh = secrets.token_urlsafe(32)
        found = await self.consumers.find_one_and_update(
            {"_id": consumer}, {"$setOnInsert": {"secret": fresh}}, upsert=True,
            return_document=ReturnDocument.AFTER, projection={"secret": 1})
        if found is None or not found.get("secret"):
            # An older record without a secret: give it one.
            await self.consumers.update_one({"_id": consumer, "secret": None}, {"$set": {"secret": fresh}})
            found = await self.consumers.find_one({"_id": consumer}, {"secret": 1})
        assert found is not None
        return str(found["secret"])

    async def last_taken(self, consumer: str) -> str | None:
        """The time of the latest event ``consumer`` took, or None when it never took one."""
        found = await self.consumers.find_one({"_id": consumer}, {"lastEventTime": 1})
        return None if found is None else found.get("lastEventTime")

    async def reactivate(self, subscription_id: str) -> None:
        await self._set_subscription_status(subscription_id, {"$set": {"status": "active"},
                                                              "$unset": {"suspendedReason": ""}})
