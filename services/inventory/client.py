"""What the other services ask the inventory, through its public API with their own token: who
supplies a service or a resource. A partner may report measurements and raise alarms only
about what it supplies."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import quote

import httpx

from services.tmf import outgoing
from services.tmf.call import Call
from services.tmf.errors import BadRequest, Forbidden

if TYPE_CHECKING:
    from services.tmf.api import ApiContext

SUPPLIER = "supplier"
CHUNK = 50


def _suppliers(node: dict[str, object]) -> set[str]:
    parties = node.get("relatedParty")
    return {str(p["id"]) for p in parties if isinstance(p, dict) and p.get("id")
            and str(p.get("role", "")).lower() == SUPPLIER} if isinstance(parties, list) else set()


class Suppliers:
    def __init__(self, context: ApiContext) -> None:
        self.context = context

    @property
    def inventory(self) -> str:
        url = self.context.settings.inventory.url
        if not url:
            raise Forbidden("this service has no inventory configured to check what a partner supplies; "
                            "only the operator may do this here")
        return url

    async def _get(self, client: httpx.AsyncClient, path: str, **params: str) -> httpx.Response:
        try:
            return await client.get(f"{self.inventory}{path}", params=params)
        except httpx.HTTPError:
            raise BadRequest("the service inventory cannot be reached to check what you supply; try again") from None

    async def check_services(self, call: Call, service_ids: set[str]) -> None:
        """Refuse (403) unless the calling partner is a supplier of every one of these services."""
        if call.unrestricted:
            return
        supplied: set[str] = set()
        wanted = sorted(service_ids)
        async with outgoing.client(10, auth=self.context.service_auth()) as client:
            for start in range(0, len(wanted), CHUNK):
                ids = ",".join(i.replace("\\", "\\\\").replace(",", "\\,") for i in wanted[start:start + CHUNK])
                answer = await self._get(client, "/service", id=ids, fields="relatedParty", limit="1000")
                if answer.status_code == 200:
                    supplied |= {str(s["id"]) for s in answer.json() if call.party_id in _suppliers(s)}
        others = [s for s in wanted if s not in supplied]
        if others:
            raise Forbidden(f"you ({call.party_id}) are not the supplier of service {', '.join(others[:5])}; "
                            "a partner reports only about the services it supplies")

    async def check_resource(self, call: Call, resource_id: str) -> None:
        """Refuse (403) unless the calling partner supplies a service resting directly on the resource."""
        if call.unrestricted:
            return
        async with outgoing.client(10, auth=self.context.service_auth()) as client:
            answer = await self._get(client, f"/resourceImpact/{quote(resource_id, safe='')}", depth="1")
        nodes = answer.json().get("node", []) if answer.status_code == 200 else []
        if not any(call.party_id in _suppliers(n) for n in nodes if n.get("depth") == 1):
            raise Forbidden(f"you ({call.party_id}) supply no service resting on resource {resource_id[:64]}; "
                            "a partner raises alarms only about what it supplies")
