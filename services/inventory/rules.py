"""The rules TMF638 leaves to the implementation: references must resolve, the dependency graph
stays acyclic, and a service others rest on cannot be deleted."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from services.tmf.call import SYSTEM, Call
from services.tmf.errors import BadRequest, Conflict
from services.tmf.query import normalize_date_time
from services.tmf.repository import META
from services.tmf.resource import ResourceApi, ResourceRules

from .graph import find_cycle
from .references import References, collect


class ServiceRules(ResourceRules):
    async def _checked_references(self, api: ResourceApi, service: dict[str, Any],
                                  call: Call) -> References:
        refs = collect(service, api.context.public_base)
        missing = set(refs.services) - await api.store.exists(refs.services, call)
        if missing:
            where = sorted(f"{refs.services[m]} ('{m}')" for m in missing)
            raise BadRequest(
                f"{', '.join(where[:5])} refers to no service of this inventory; create the supporting "
                "service first, or give the href of a service held by another provider's inventory"
            )
        return refs

    async def on_create(self, api: ResourceApi, document: dict[str, Any],
                        call: Call) -> dict[str, Any]:
        document["serviceDate"] = normalize_date_time(datetime.now(UTC).isoformat())
        return (await self._checked_references(api, document, call)).meta()

    async def on_update(self, api: ResourceApi, before: dict[str, Any], after: dict[str, Any],
                        call: Call, system: bool = False) -> dict[str, Any]:
        refs = await self._checked_references(api, after, call)
        if refs.services:
            cycle = await find_cycle(api, after["id"], sorted(refs.services), SYSTEM)
            if cycle is not None:
                raise Conflict(
                    "this change would make the service depend on itself: " + " -> ".join(cycle)
                )
        return refs.meta()

    async def on_delete(self, api: ResourceApi, stored: dict[str, Any], call: Call) -> None:
        dependents = await api.store.find_internal(
            {f"{META}.dependsOn": stored["id"]}, SYSTEM, {"id": 1})
        if dependents:
            # Name only the dependents the caller may see; the others are counted, not shown.
            visible = {d["id"] for d in await api.store.find_in("_id", [d["id"] for d in dependents], call,
                                                                {"id": 1})}
            hidden = len(dependents) - len(visible)
            named = ", ".join(sorted(visible)[:5])
            raise Conflict(
                f"{'services ' + named if named else 'other services'}"
                f"{f' and {hidden} service(s) of other parties' if named and hidden else ''} rest on this service; "
                "remove it from their supportingService or serviceRelationship first"
            )
