"""TMF hub: event subscriptions (``POST /hub``, ``GET /hub/{id}``, ``DELETE /hub/{id}``),
stored per API in one collection."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from connexion import request
from pymongo import ASCENDING, IndexModel
from starlette.responses import Response

from .errors import BadRequest, NotFound
from .query import parse_filter_assertions, split_assertions
from .resource import Handler, json_response, new_id
from .scope import scope_of

if TYPE_CHECKING:
    from .api import ApiContext

HUB_COLLECTION = "hub"
HUB_INDEXES = (IndexModel([("api", ASCENDING)]),)


def check_callback(callback: str) -> str:
    parts = urlsplit(callback)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise BadRequest(f"callback must be an absolute http(s) URL, got '{callback[:128]}'")
    if parts.username or parts.password:
        raise BadRequest("callback must not carry credentials; use the subscription secret instead")
    return callback


def check_event_query(query: str | None) -> None:
    """Event filters use the TMF630 grammar; refuse what would never parse at delivery time."""
    if query:
        parse_filter_assertions(split_assertions(query))


class HubApi:
    def __init__(self, context: ApiContext) -> None:
        self.context = context

    def present(self, stored: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": stored["id"],
            "href": f"{self.context.public_base}/hub/{stored['id']}",
            "callback": stored["callback"],
            "query": stored.get("query"),
            "@type": "EventSubscription",
        }

    async def create(self, body: Any = None, **_: Any) -> Response:
        if not isinstance(body, dict):
            raise BadRequest("the body must be an EventSubscriptionInput JSON object")
        callback = check_callback(str(body.get("callback", "")))
        query = body.get("query") or None
        check_event_query(query)
        scope = scope_of(request, self.context.settings)
        stored = {"id": new_id(), "api": self.context.name, "callback": callback, "query": query,
                  "secret": body.get("secret")}
        await self.context.store(HUB_COLLECTION).insert(stored, scope)
        presented = self.present(stored)
        return json_response(presented, 201, {"Location": presented["href"]})

    async def _find(self, hub_id: str) -> dict[str, Any]:
        scope = scope_of(request, self.context.settings)
        query = {"_id": hub_id, "api": self.context.name}
        stored = await self.context.store(HUB_COLLECTION).find_one(query, scope)
        if stored is None:
            raise NotFound(f"no hub subscription with id '{hub_id}'")
        return stored

    async def retrieve(self, id: str, **_: Any) -> Response:
        return json_response(self.present(await self._find(id)))

    async def delete(self, id: str, **_: Any) -> Response:
        stored = await self._find(id)
        await self.context.store(HUB_COLLECTION).delete(stored["id"], scope_of(request, self.context.settings))
        return Response(status_code=204)

    def handlers(self) -> dict[str, Handler]:
        return {"createHub": self.create, "retrieveHub": self.retrieve, "deleteHub": self.delete}
