"""Which SLAs cover which services, as the intake needs it for every batch: kept in memory by
each process instead of asked of the database per batch (that lookup cost more than storing
the batch).

Writes to SLAs made through this process empty the map at once. A write made through another
process of the suite is seen here at most ``COVERAGE_SECONDS`` later: until then a batch may
be counted as unmatched, or an early (provisional) violation wait for a later batch. Closing a
period reads the SLA itself and is never affected."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from services.tmf.call import SYSTEM
from services.tmf.repository import META, public

if TYPE_CHECKING:
    from services.tmf.api import ApiContext

COVERAGE_SECONDS = 2.0
# Beyond this many services the map starts again empty: its memory stays bounded.
MAX_SERVICES = 100_000
COMPONENT = "sla.coverage"


class Coverage:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.by_service: dict[str, list[dict[str, Any]]] = {}
        self.since = clock()

    def forget(self) -> None:
        """An SLA changed: read every service's SLAs again."""
        self.by_service = {}
        self.since = self.clock()

    async def slas(self, context: ApiContext, services: Iterable[str]) -> list[dict[str, Any]]:
        """The SLAs covering any of ``services``, each with its ``_meta`` (covered services)."""
        wanted = list(dict.fromkeys(services))
        if self.clock() - self.since > COVERAGE_SECONDS or len(self.by_service) + len(wanted) > MAX_SERVICES:
            self.forget()
        missing = [s for s in wanted if s not in self.by_service]
        if missing:
            found = await context.resource_apis["sla"].store.find_in(f"{META}.services", missing, SYSTEM, {})
            asked = set(missing)
            fresh: dict[str, list[dict[str, Any]]] = {s: [] for s in missing}
            for document in found:
                sla = public(document) | {META: document.get(META, {})}
                for service in sla[META].get("services", []):
                    if service in asked:
                        fresh[service].append(sla)
            self.by_service.update(fresh)
        unique: dict[str, dict[str, Any]] = {}
        for service in wanted:
            for sla in self.by_service[service]:
                unique[sla["id"]] = sla
        return list(unique.values())


def coverage(context: ApiContext) -> Coverage:
    """This process's map for the SLA API of ``context``."""
    found = context.components.get(COMPONENT)
    if not isinstance(found, Coverage):
        found = context.components[COMPONENT] = Coverage()
    return found
