"""TMF hub: event subscriptions (``POST /hub``, ``GET /hub/{id}``, ``DELETE /hub/{id}``), and
our extensions to see and repair their deliveries."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from connexion import request
from pymongo import ASCENDING, IndexModel
from starlette.responses import Response

from .authentication import call_of
from .call import SERVICE_ROLE
from .delivery import may_call
from .errors import BadRequest, NotFound, TmfError
from .events import EventFilter
from .outbox import hears
from .query import normalize_date_time
from .repository.events import in_transaction
from .resource import Handler, json_response, new_id

if TYPE_CHECKING:
    from .api import ApiContext

HUB_COLLECTION = "hub"
HUB_INDEXES = (IndexModel([("api", ASCENDING), ("callback", ASCENDING)]),)
MAX_REPLAY = 100_000


def check_callback(callback: str) -> str:
    parts = urlsplit(callback)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise BadRequest(f"callback must be an absolute http(s) URL, got '{callback[:128]}'")
    if parts.username or parts.password:
        raise BadRequest("callback must not carry credentials; use the subscription secret instead")
    if parts.query or parts.fragment:
        raise BadRequest("callback must not carry a query or fragment: events go to {callback}/listener/...")
    return callback


def _text(value: Any) -> str | None:
    if isinstance(value, datetime):
        return normalize_date_time(value.isoformat())
    return None if value is None else str(value)


class HubApi:
    def __init__(self, context: ApiContext) -> None:
        self.context = context

    def present(self, stored: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": stored["id"],
            "href": f"{self.context.public_base}/hub/{stored['id']}",
            "callback": stored["callback"],
            "query": stored.get("query"),
            "status": stored.get("status", "active"),
            "@type": "EventSubscription",
        }

    def check_query(self, query: str | None) -> None:
        """The query must make sense for the events of at least one resource of this API."""
        if not query:
            return
        problems = []
        for api in self.context.resource_apis.values():
            try:
                EventFilter(query, api.resource.name, api.index, self.context.settings.regex_max_length)
                return
            except TmfError as exc:
                problems.append(exc.message)
        raise BadRequest(f"the hub query is not valid: {problems[0] if problems else 'no events to filter'}")

    async def create(self, body: Any = None) -> Response:
        if not isinstance(body, dict):
            raise BadRequest("the body must be an EventSubscriptionInput JSON object")
        callback = check_callback(str(body.get("callback", "")))
        query = body.get("query") or None
        self.check_query(query)
        call = call_of(request)
        # Only the suite's own services may have the suite's own addresses called back.
        internal = call.role == SERVICE_ROLE
        if not await may_call(callback, self.context.settings, internal=internal):
            raise BadRequest("callback points at a loopback, private or special-use address, or a host that does "
                             "not resolve; this server calls only public addresses")
        store = self.context.store(HUB_COLLECTION)
        existing = await store.find_one({"api": self.context.name, "callback": callback, "query": query}, call)
        if existing is not None:
            return json_response(self.present(existing), 200, {"Location": self.present(existing)["href"]})
        stored = {"id": new_id(), "api": self.context.name, "callback": callback, "query": query,
                  "secret": body.get("secret"), "status": "active",
                  # The operator's and the suite's subscriptions hear about every resource.
                  "hearsAll": call.unrestricted, "internal": internal}
        async def register(session: Any) -> None:
            await store.insert(stored, call, session=session)
            await self.context.events.hub_changed(self.context.name, session)

        await in_transaction(self.context.db, register)
        presented = self.present(stored)
        return json_response(presented, 201, {"Location": presented["href"]})

    async def _find(self, hub_id: str) -> dict[str, Any]:
        call = call_of(request)
        query = {"_id": hub_id, "api": self.context.name}
        stored = await self.context.store(HUB_COLLECTION).find_one(query, call)
        if stored is None:
            raise NotFound(f"no hub subscription with id '{hub_id}'")
        return stored

    async def retrieve(self, id: str) -> Response:
        return json_response(self.present(await self._find(id)))

    async def delete(self, id: str) -> Response:
        stored = await self._find(id)
        call = call_of(request)

        async def unregister(session: Any) -> None:
            await self.context.store(HUB_COLLECTION).delete(stored["id"], call, session=session)
            await self.context.events.hub_changed(self.context.name, session)

        await in_transaction(self.context.db, unregister)
        return Response(status_code=204)

    # -- extensions: delivery visibility and repair ------------------------------------------

    async def deliveries(self, id: str, state: str | None = None, offset: int = 0,
                         limit: int | None = None) -> Response:
        await self._find(id)
        settings = self.context.settings
        limit = settings.page_default_limit if limit is None else limit
        if limit > settings.page_max_limit:
            raise BadRequest(f"limit must not exceed {settings.page_max_limit}")
        total, rows = await self.context.events.page(id, state, offset, limit)
        body = [{
            "id": r["_id"], "eventId": r["eventId"], "eventType": r["eventType"], "state": r["state"],
            "attempts": r.get("attempts", 0), "createdAt": _text(r.get("createdAt")),
            "nextAttemptAt": _text(r.get("nextAttemptAt")) if r["state"] in {"pending", "retrying"} else None,
            "lastAttemptAt": _text(r.get("lastAttemptAt")), "deliveredAt": _text(r.get("deliveredAt")),
            "lastStatus": r.get("lastStatus"), "lastError": r.get("lastError"),
        } for r in rows]
        complete = offset == 0 and len(body) == total
        return json_response(body, 200 if complete else 206,
                             {"X-Total-Count": str(total), "X-Result-Count": str(len(body))})

    async def summary(self, id: str) -> Response:
        stored = await self._find(id)
        summary = await self.context.events.summary(id)
        return json_response({"subscription": id, "status": stored.get("status", "active"), **summary["counts"],
                              "nextAttemptAt": _text(summary["nextAttemptAt"]), "lastError": summary["lastError"]})

    async def redeliver(self, id: str, body: Any = None) -> Response:
        stored = await self._find(id)
        event_ids = (body or {}).get("eventId")
        if stored.get("status") == "suspended":
            await self.context.events.reactivate(id)
        queued = await self.context.events.redeliver(id, event_ids)
        self.context.outbox.committed()
        return json_response({"subscription": id, "queued": queued}, 201)

    async def replay(self, id: str, body: Any = None) -> Response:
        stored = await self._find(id)
        body = body or {}
        start = normalize_date_time(str(body.get("startDateTime", "")), "startDateTime")
        end = normalize_date_time(str(body.get("endDateTime", "")), "endDateTime")
        if end <= start:
            raise BadRequest("endDateTime must be after startDateTime")
        events = await self.context.events.events_between(self.context.name, start, end, MAX_REPLAY + 1)
        if len(events) > MAX_REPLAY:
            raise BadRequest(f"more than {MAX_REPLAY} events in that range; replay a shorter range")
        matching = []
        for record in events:
            event = record["event"]
            payload_key = next(iter(event.get("event", {})), "")
            api = self.context.resource_apis.get(payload_key)
            event_filter = api and self.context.outbox.event_filter(stored.get("query"), payload_key, api.index)
            # A party's subscription is replayed only what that party may see.
            if event_filter and event_filter.matches(event) and hears(stored, record.get("parties") or []):
                matching.append(record)
        if stored.get("status") == "suspended":
            await self.context.events.reactivate(id)
        queued = await self.context.events.replay(self.context.name, id, matching)
        self.context.outbox.committed()
        return json_response({"subscription": id, "queued": queued}, 201)

    def handlers(self) -> dict[str, Handler]:
        return {"createHub": self.create, "retrieveHub": self.retrieve, "deleteHub": self.delete,
                "listHubDelivery": self.deliveries, "retrieveHubDeliverySummary": self.summary,
                "createHubRedelivery": self.redeliver, "createHubReplay": self.replay}
