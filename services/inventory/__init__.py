"""TMF638 Service Inventory: services and the dependency graph between them."""

from __future__ import annotations

from connexion import request
from pymongo import ASCENDING, IndexModel
from starlette.responses import Response

from services.tmf.api import ApiContext, ApiDeclaration
from services.tmf.authentication import call_of
from services.tmf.resource import Handler, ResourceType, json_response

from .graph import dependency_graph, resource_impact_graph, service_impact_graph
from .rules import ServiceRules

MAX_DEPTH = 32

SERVICE = ResourceType(
    name="service",
    type_name="Service",
    indexes=(
        IndexModel([("_meta.dependsOn", ASCENDING)]),
        IndexModel([("_meta.resources", ASCENDING)]),
        # The filters lists run most, each followed by the party a non-operator's list is
        # scoped to (the prefix alone serves the operator). relatedParty is an array like
        # _meta.parties, and one index cannot hold two arrays of a document: its attributes
        # are indexed alone.
        IndexModel([("state", ASCENDING), ("_meta.parties", ASCENDING)]),
        IndexModel([("category", ASCENDING), ("_meta.parties", ASCENDING)]),
        IndexModel([("serviceSpecification.id", ASCENDING), ("_meta.parties", ASCENDING)]),
        IndexModel([("startDate", ASCENDING), ("_meta.parties", ASCENDING)]),
        IndexModel([("relatedParty.id", ASCENDING)]),
        IndexModel([("relatedParty.role", ASCENDING)]),
    ),
    rules=ServiceRules(),
    serialize_writes=True,
)


def graph_handlers(context: ApiContext) -> dict[str, Handler]:
    services = context.resource_apis["service"]

    async def dependencies(id: str, depth: int = MAX_DEPTH) -> Response:
        call = call_of(request)
        return json_response(await dependency_graph(services, id, call, depth))

    async def service_impact(id: str, depth: int = MAX_DEPTH) -> Response:
        call = call_of(request)
        return json_response(await service_impact_graph(services, id, call, depth))

    async def resource_impact(id: str, depth: int = MAX_DEPTH) -> Response:
        call = call_of(request)
        return json_response(await resource_impact_graph(services, id, call, depth))

    return {"retrieveServiceDependency": dependencies, "retrieveServiceImpact": service_impact,
            "retrieveResourceImpact": resource_impact}


API = ApiDeclaration(
    name="serviceInventory",
    document="serviceInventory.yaml",
    base_path="/tmf-api/serviceInventory/v4",
    resources=(SERVICE,),
    extra_handlers=graph_handlers,
)
