"""The consuming side of TMF events: listener endpoints that take another API's events
(idempotently, on ``eventId``), the subscription a consuming API registers at startup on the
producer's public hub, as any partner would, and the catch-up that asks the producer's hub to
replay what the consumer missed while it was not subscribed."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import httpx
import structlog
from connexion import request
from pymongo.errors import PyMongoError
from starlette.responses import Response

from . import outgoing
from .auth.service import CredentialsUnavailable
from .batching import Coalescer
from .delivery import SIGNATURE_HEADER, verify
from .errors import BadRequest, Unauthorized
from .events import now_text
from .middleware import raw_body
from .query import normalize_date_time
from .repository.events import in_transaction
from .resource import Handler

if TYPE_CHECKING:
    from .api import ApiContext
    from .settings import Settings

log = structlog.get_logger("tmf.listener")
EventHandler = Callable[["ApiContext", dict[str, Any]], Awaitable[None]]

# Catch-up starts this long before the last event taken and ends this long after now: clocks of
# the producer and the consumer may differ, and an event's time is set before its transaction
# commits. Events replayed twice are dropped by the eventId check.
CATCH_UP_MARGIN = timedelta(seconds=60)
# Nothing taken yet: catch up on the producer's whole event log.
BEGINNING = "1970-01-01T00:00:00.000Z"
# Pauses between attempts while the producer is unreachable or refuses (doubling up to the last).
RETRY_FIRST_SECONDS = 0.05
RETRY_MAX_SECONDS = 5.0
# A replay reads every event of its range; a large first catch-up may take a while.
REQUEST_TIMEOUT_SECONDS = 60.0
# The hub refuses a replay range holding more events than it queues at once, and says to replay a
# shorter range; the range is then halved until each part fits.
REPLAY_TOO_LARGE = "shorter range"
SHORTEST_WINDOW = timedelta(milliseconds=2)
# How old a signed delivery may be: a captured one cannot be replayed later than this.
SIGNATURE_TOLERANCE_SECONDS = 300


class CatchUpError(Exception):
    """The producer's hub refused the subscription or the replay; the message says why."""


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


@dataclass(frozen=True)
class Taken:
    """An event handled, to be recorded as received (``event_time``: normalised, or None)."""

    event_id: str
    event_type: str
    event_time: str | None


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _text(moment: datetime) -> str:
    return normalize_date_time(moment.isoformat())


def _answer(response: httpx.Response) -> str:
    try:
        message = response.json().get("message")
    except ValueError:
        message = None
    return f"the hub answered {response.status_code}: {message or response.text[:300]}"


class ListenerApi:
    def __init__(self, context: ApiContext, consumption: Consumption) -> None:
        self.context = context
        self.consumption = consumption
        self.subscription: str | None = None
        self.caught_up = False
        # Why this consumption is not ready yet, for the readiness report.
        self.problem: str | None = None
        # eventId -> (lock, holders): a live and a replayed copy of one event may arrive at once.
        self._taking: dict[str, tuple[asyncio.Lock, int]] = {}
        self._secret: str | None = None
        # The dedup record costs a read before and a write after each event: under load, the
        # events being taken at the same time share one read and one write.
        self._seen: Coalescer[str, bool] = Coalescer(self._received_among)
        self._marks: Coalescer[Taken, None] = Coalescer(self._mark_taken)

    @property
    def hub(self) -> str | None:
        hub = self.consumption.hub(self.context.settings)
        return hub.rstrip("/") if hub else None

    @property
    def consumer(self) -> str:
        """The key under which this consumption's progress is kept: another hub or query is
        another consumption, which catches up from the beginning."""
        return f"{self.context.name} {self.hub} {self.consumption.query()}"

    @property
    def ready(self) -> bool:
        """Subscribed, and what was missed before is queued; nothing to wait for without a hub."""
        return self.hub is None or self.caught_up

    def report(self) -> dict[str, Any]:
        hub = self.hub
        status = ("notConfigured" if hub is None else "ready" if self.caught_up
                  else "catchingUp" if self.subscription else "subscribing")
        return {"api": self.context.name, "events": list(self.consumption.event_types), "hub": hub,
                "subscription": self.subscription, "status": status,
                **({"problem": self.problem} if self.problem and not self.ready else {})}

    async def _check_signature(self) -> None:
        """Only the producer's hub, signing with this consumption's secret, may deliver here:
        anyone else could post forged events to a public listener path."""
        if self._secret is None:
            self._secret = await self.context.events.consumer_secret(self.consumer)
        secret = self._secret
        header = request.headers.get(SIGNATURE_HEADER)
        # The body was parsed before this handler ran, and a request's stream is read only once.
        body = raw_body(request.scope)
        if body is None:
            body = await request.body()
        if not header or not verify(secret, header, body, SIGNATURE_TOLERANCE_SECONDS):
            raise Unauthorized(f"listeners take only events signed by the producer's hub ({SIGNATURE_HEADER}, "
                               f"within {SIGNATURE_TOLERANCE_SECONDS} s)", challenge='Signature realm="tmf-sqm"')

    def intake(self, event_type: str) -> Handler:
        async def receive(body: Any = None) -> Response:
            await self._check_signature()
            if (not isinstance(body, dict) or not isinstance(body.get("eventId"), str) or not body["eventId"]
                    or not isinstance(body.get("event"), dict)):
                raise BadRequest("the body must be a TMF event with an eventId and an event object")
            if body.get("eventType") != event_type:
                raise BadRequest(f"this listener takes {event_type}, not {str(body.get('eventType'))[:64]}")
            async with self._one_at_a_time(body["eventId"]):
                await self._take(event_type, body)
            return Response(status_code=204)

        return receive

    @contextlib.asynccontextmanager
    async def _one_at_a_time(self, event_id: str) -> AsyncIterator[None]:
        lock, holders = self._taking.get(event_id) or (asyncio.Lock(), 0)
        self._taking[event_id] = (lock, holders + 1)
        try:
            async with lock:
                yield
        finally:
            lock, holders = self._taking[event_id]
            if holders == 1:
                del self._taking[event_id]
            else:
                self._taking[event_id] = (lock, holders - 1)

    async def _take(self, event_type: str, body: dict[str, Any]) -> None:
        if await self._seen.submit(body["eventId"]):
            return
        await self.consumption.handle(self.context, body)
        event_time = body.get("eventTime")
        taken_at: str | None = None
        if isinstance(event_time, str):
            try:
                taken_at = normalize_date_time(event_time)
            except BadRequest:
                # Taken all the same; an event without a usable time cannot move the catch-up point.
                log.warning("event time not understood", api=self.context.name, eventId=body["eventId"])
        await self._marks.submit(Taken(body["eventId"], event_type, taken_at))

    async def _received_among(self, event_ids: list[str]) -> list[bool]:
        received = await self.context.events.received_among(event_ids)
        return [event_id in received for event_id in event_ids]

    async def _mark_taken(self, taken: list[Taken]) -> list[None]:
        events = self.context.events
        times = [t.event_time for t in taken if t.event_time is not None]

        # In a transaction, not as two retryable writes: the embedded database keeps the answer of
        # every retryable write for 30 minutes and scans them all (past 10,000, sorts them) at
        # each new one, which took a third of its time in an alarm storm.
        async def mark(session: Any) -> None:
            await events.mark_received_many([(t.event_id, t.event_type) for t in taken], self.context.name,
                                            now_text(), session)
            if times:
                await events.took(self.consumer, max(times), session)

        await in_transaction(self.context.db, mark)
        return [None] * len(taken)

    def handlers(self) -> dict[str, Handler]:
        return {f"listenTo{t}": self.intake(t) for t in self.consumption.event_types}

    async def subscribe(self) -> None:
        """Register this API's listener on the producer's hub, then have the hub replay what this
        consumption missed (from a margin before the last event it took, or the whole log when
        it never took one). The hub answers with the existing subscription when this callback
        and query are already registered, so restarts never add duplicates. Retried in the
        background, with growing pauses, while the producer (perhaps this very process, not
        serving yet) is unreachable or refuses; ``ready`` tells when it is done."""
        hub = self.hub
        if hub is None:
            return
        pause = RETRY_FIRST_SECONDS
        async with outgoing.client(REQUEST_TIMEOUT_SECONDS, auth=self.context.service_auth()) as client:
            while True:
                try:
                    if self.subscription is None:
                        self.subscription = await self._register(client, hub)
                    await self._catch_up(client, hub, self.subscription)
                    self.caught_up, self.problem = True, None
                    return
                except (httpx.HTTPError, PyMongoError, CatchUpError, CredentialsUnavailable) as exc:
                    problem = (str(exc) if isinstance(exc, CatchUpError | CredentialsUnavailable)
                               else f"{type(exc).__name__}: {exc}"[:300])
                    if problem != self.problem:
                        log.warning("not subscribed yet; trying again", api=self.context.name, hub=hub,
                                    problem=problem)
                    self.problem = problem
                await asyncio.sleep(pause)
                pause = min(pause * 2, RETRY_MAX_SECONDS)

    async def _register(self, client: httpx.AsyncClient, hub: str) -> str:
        secret = await self.context.events.consumer_secret(self.consumer)
        body = {"callback": self.context.public_base, "query": self.consumption.query(), "secret": secret}
        response = await client.post(f"{hub}/hub", json=body)
        if response.status_code not in (200, 201):
            raise CatchUpError(f"subscription refused: {_answer(response)}")
        subscription = str(response.json()["id"])
        log.info("subscribed", api=self.context.name, hub=hub, subscription=subscription)
        return subscription

    async def _catch_up(self, client: httpx.AsyncClient, hub: str, subscription: str) -> None:
        last = await self.context.events.last_taken(self.consumer)
        start = _time(BEGINNING) if last is None else _time(last) - CATCH_UP_MARGIN
        end = _time(now_text()) + CATCH_UP_MARGIN
        queued = await self._replay(client, f"{hub}/hub/{subscription}/replay", start, end)
        log.info("caught up", api=self.context.name, hub=hub, subscription=subscription,
                 since=_text(start), queued=queued)

    async def _replay(self, client: httpx.AsyncClient, url: str, start: datetime, end: datetime) -> int:
        queued = 0
        windows = [(start, end)]  # a stack, latest window at the bottom: queued in time order
        while windows:
            start, end = windows.pop()
            response = await client.post(url, json={"startDateTime": _text(start), "endDateTime": _text(end)})
            if response.status_code == 201:
                queued += int(response.json()["queued"])
                continue
            if response.status_code == 404:
                # The subscription was removed on the producer's side: register again.
                self.subscription = None
            elif (response.status_code == 400 and REPLAY_TOO_LARGE in response.text
                    and end - start >= SHORTEST_WINDOW):
                middle = start + (end - start) / 2
                middle = middle.replace(microsecond=middle.microsecond // 1000 * 1000)
                windows += [(middle, end), (start, middle)]
                continue
            raise CatchUpError(f"catch-up refused: {_answer(response)}")
        return queued
