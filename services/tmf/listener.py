"""The consuming side of TMF events: listener endpoints that take another API's events
(idempotently, on ``eventId``), and the subscription a consuming API registers at startup on
the producer's public hub, as any partner would."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
import structlog
from starlette.responses import Response

from . import outgoing
from .errors import BadRequest
from .events import now_text
from .resource import Handler

if TYPE_CHECKING:
    from .api import ApiContext
    from .settings import Settings

log = structlog.get_logger("tmf.listener")
EventHandler = Callable[["ApiContext", dict[str, Any]], Awaitable[None]]


@dataclass(frozen=True)
class Consumption:
    """Events an API takes from another API's hub. ``hub`` gives the producer's base URL from
    the settings (None: not configured, nothing is registered); ``handle`` must be idempotent
    per event, since delivery is at least once."""

    event_types: tuple[str, ...]
    hub: Callable[[Settings], str | None]
    handle: EventHandler

    def query(self) -> str:
        return "eventType=" + ",".join(self.event_types)


class ListenerApi:
    def __init__(self, context: ApiContext, consumption: Consumption) -> None:
        self.context = context
        self.consumption = consumption
        self.subscription: str | None = None

    def intake(self, event_type: str) -> Handler:
        async def receive(body: Any = None) -> Response:
            if (not isinstance(body, dict) or not isinstance(body.get("eventId"), str) or not body["eventId"]
                    or not isinstance(body.get("event"), dict)):
                raise BadRequest("the body must be a TMF event with an eventId and an event object")
            if body.get("eventType") != event_type:
                raise BadRequest(f"this listener takes {event_type}, not {str(body.get('eventType'))[:64]}")
            events = self.context.events
            if await events.was_received(body["eventId"]):
                return Response(status_code=204)
            await self.consumption.handle(self.context, body)
            await events.mark_received(body["eventId"], event_type, self.context.name, now_text())
            return Response(status_code=204)

        return receive

    def handlers(self) -> dict[str, Handler]:
        return {f"listenTo{t}": self.intake(t) for t in self.consumption.event_types}

    async def subscribe(self, attempts: int = 60, pause: float = 1.0) -> str | None:
        """Register this API's listener on the producer's hub; the hub answers with the existing
        subscription when this callback and query are already registered, so restarts never add
        duplicates. Retries while the producer (perhaps this very process) is not serving yet."""
        hub = self.consumption.hub(self.context.settings)
        if not hub:
            return None
        body = {"callback": self.context.public_base, "query": self.consumption.query()}
        async with outgoing.client(5) as client:
            for _ in range(attempts):
                try:
                    response = await client.post(f"{hub.rstrip('/')}/hub", json=body)
                    if response.status_code in (200, 201):
                        self.subscription = str(response.json()["id"])
                        log.info("subscribed", api=self.context.name, hub=hub, subscription=self.subscription)
                        return self.subscription
                    log.warning("subscription refused", api=self.context.name, hub=hub,
                                status=response.status_code, answer=response.text[:300])
                    return None
                except httpx.HTTPError:
                    await asyncio.sleep(pause)
        log.warning("hub not reachable; not subscribed", api=self.context.name, hub=hub)
        return None
