"""The transactional outbox: a change and its events commit together, each event with one
delivery per hub subscription whose query it matches at that moment."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pymongo.asynchronous.client_session import AsyncClientSession

from .errors import TmfError
from .events import EventFilter
from .repository import META
from .repository.events import EventStore
from .spec import SchemaIndex


def hears(subscription: dict[str, Any], parties: list[str] | set[str]) -> bool:
    """Whether a subscription may hear about a resource these parties may see: the operator's
    and the suite's own subscriptions hear everything, a party's only what that party may see."""
    if subscription.get("hearsAll"):
        return True
    owner = subscription.get(META, {}).get("owner")
    return owner is not None and owner in parties


class Outbox:
    def __init__(self, api: str, store: EventStore, regex_max_length: int,
                 on_commit: Callable[[], None] | None = None, records: dict[str, str] | None = None) -> None:
        self.api = api
        self.store = store
        self.regex_max_length = regex_max_length
        self.on_commit = on_commit
        # payload key -> collection keeping a readable record of each event about it (TMF656's
        # serviceProblemEventRecord).
        self.records = records or {}
        self._filters: dict[tuple[str, str, str], EventFilter | None] = {}
        # The subscriptions last read, with the hub version they were read at.
        self._subscriptions: tuple[tuple[str, int] | None, list[dict[str, Any]]] | None = None

    def event_filter(self, query: str | None, payload_key: str, index: SchemaIndex) -> EventFilter | None:
        """The compiled query, or None when it cannot apply to events of this resource type."""
        key = (query or "", payload_key, index.schema_name)
        if key not in self._filters:
            if len(self._filters) > 10_000:
                self._filters.clear()
            try:
                self._filters[key] = EventFilter(query, payload_key, index, self.regex_max_length)
            except TmfError:
                self._filters[key] = None
        return self._filters[key]

    async def subscriptions(self, session: AsyncClientSession) -> list[dict[str, Any]]:
        """The API's subscriptions in force as the transaction of ``session`` sees them: one read
        of the hub version by its id (once per transaction of ``in_transaction``, however many
        resources it writes), and the subscriptions read again only when that moved.
        Every change of a subscription moves the version in its own transaction, so that a
        change committed after it (in any process) reads the new version and the new set."""
        version = await self.store.hub_version(self.api, session)
        cached = self._subscriptions
        if cached is not None and cached[0] == version:
            return cached[1]
        subscriptions = await self.store.subscriptions(self.api, session)
        self._subscriptions = (version, subscriptions)
        return subscriptions

    async def record(self, session: AsyncClientSession, *, payload_key: str, index: SchemaIndex,
                     resource_id: str, version: int, events: list[dict[str, Any]], parties: list[str],
                     trace: Mapping[str, str] | None = None) -> int:
        """Store the events and their deliveries; returns how many deliveries there are.
        ``parties`` may see the resource: only their subscriptions (and the operator's and the
        suite's own) hear about it. ``trace``: see :meth:`EventStore.record`."""
        subscriptions = await self.subscriptions(session)
        recipients = []
        for event in events:
            matching = []
            for subscription in subscriptions:
                if not hears(subscription, parties):
                    continue
                event_filter = self.event_filter(subscription.get("query"), payload_key, index)
                if event_filter is not None and event_filter.matches(event):
                    matching.append(subscription["_id"])
            recipients.append(matching)
        await self.store.record(self.api, resource_id, version, events, recipients, session, parties, trace)
        if payload_key in self.records:
            await self.store.keep_records(self.records[payload_key], payload_key, events, session, parties)
        return sum(len(r) for r in recipients)

    def committed(self) -> None:
        if self.on_commit is not None:
            self.on_commit()
