"""How a Service refers to what it rests on: local services (this inventory), services of other
providers' inventories (kept as external references), and resources."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from services.tmf.errors import BadRequest


@dataclass
class References:
    services: dict[str, str] = field(default_factory=dict)  # local id -> where it is referred from
    external: list[dict[str, Any]] = field(default_factory=list)
    resources: list[str] = field(default_factory=list)

    def meta(self) -> dict[str, Any]:
        """The graph edges stored beside the service (indexed, so traversals never parse
        documents)."""
        return {"dependsOn": sorted(self.services), "resources": sorted(set(self.resources)),
                "external": self.external}


def local_service_id(ref: dict[str, Any], where: str, public_base: str) -> str | None:
    """The id of the service of this inventory that ``ref`` names, or None when it names a
    service in another provider's inventory."""
    href = ref.get("href")
    ref_id = ref.get("id")
    if href:
        collection = f"{public_base}/service/"
        parts = urlsplit(href)
        local_path = urlsplit(collection).path
        if href.startswith(collection) or (not parts.scheme and parts.path.startswith(local_path)):
            href_id = parts.path[len(local_path):]
            if not href_id or "/" in href_id:
                raise BadRequest(f"{where}.href '{href[:128]}' does not name one service")
            if ref_id and ref_id != href_id:
                raise BadRequest(f"{where}: id '{ref_id}' and href '{href[:128]}' name different services")
            return str(href_id)
        if not parts.scheme or not parts.netloc:
            raise BadRequest(f"{where}.href must be an absolute URL for a service of another inventory")
        return None
    if ref_id:
        return str(ref_id)
    raise BadRequest(
        f"{where} needs an id (a service of this inventory) or an href (a service held by "
        "another provider's inventory)"
    )


def collect(service: dict[str, Any], public_base: str) -> References:
    found = References()

    def add(ref: Any, where: str) -> None:
        if not isinstance(ref, dict):
            raise BadRequest(f"{where} must be a service reference object")
        local = local_service_id(ref, where, public_base)
        if local is None:
            found.external.append({k: ref[k] for k in ("id", "href", "name", "@referredType") if k in ref})
        else:
            found.services.setdefault(local, where)

    for i, ref in enumerate(service.get("supportingService") or []):
        add(ref, f"supportingService[{i}]")
    for i, relationship in enumerate(service.get("serviceRelationship") or []):
        add(relationship.get("service"), f"serviceRelationship[{i}].service")
    for i, resource in enumerate(service.get("supportingResource") or []):
        if not resource.get("id"):
            raise BadRequest(f"supportingResource[{i}] needs the resource id")
        found.resources.append(str(resource["id"]))
    return found
