"""Walking the dependency graph: a few queries per level, never one per node.

Edges live in each service's bookkeeping (``_meta.dependsOn``, ``_meta.resources``), indexed, so
"what does this rest on" reads the frontier by id and "what rests on this" asks which services
name the frontier as a dependency.
"""

from __future__ import annotations

from typing import Any

from services.tmf.call import Call
from services.tmf.errors import BadRequest, NotFound
from services.tmf.repository import META
from services.tmf.resource import ResourceApi

NODE_FIELDS = {"id": 1, "name": 1, "category": 1, "state": 1, "relatedParty": 1,
               "supportingResource": 1, f"{META}.dependsOn": 1, f"{META}.resources": 1,
               f"{META}.external": 1}
_CUSTOMER_FACING = {"cfs", "customerfacing", "customerfacingservice"}


def is_customer_facing(category: Any) -> bool:
    if not isinstance(category, str):
        return False
    return "".join(c for c in category.lower() if c.isalnum()) in _CUSTOMER_FACING


class Walk:
    def __init__(self, api: ResourceApi, call: Call, max_depth: int) -> None:
        self.api = api
        self.call = call
        self.max_depth = max_depth
        self.max_nodes = api.settings.graph_max_nodes
        self.nodes: list[dict[str, Any]] = []
        self.seen: set[tuple[str, str]] = set()

    def _add(self, node: dict[str, Any]) -> None:
        self.nodes.append(node)
        if len(self.nodes) > self.max_nodes:
            raise BadRequest(
                f"the graph has more than {self.max_nodes} nodes within this depth; ask for a smaller depth")

    def service_node(self, doc: dict[str, Any], depth: int, path: list[str]) -> dict[str, Any]:
        node = {"id": doc["id"], "href": self.api.href(doc["id"]), "@referredType": "Service",
                "depth": depth, "path": path, "external": False}
        for name in ("name", "category", "state", "relatedParty"):
            if name in doc:
                node[name] = doc[name]
        return node

    async def load(self, ids: list[str]) -> list[dict[str, Any]]:
        if not ids:
            return []
        docs = await self.api.store.find_in("_id", ids, self.call, NODE_FIELDS)
        order = {i: n for n, i in enumerate(ids)}
        return sorted(docs, key=lambda d: order[d["id"]])

    async def root(self, service_id: str) -> dict[str, Any]:
        docs = await self.load([service_id])
        if not docs:
            raise NotFound(f"no Service with id '{service_id}'")
        return docs[0]

    async def down(self, root: dict[str, Any]) -> None:
        """Everything ``root`` rests on, breadth first; each node once, on its shortest path."""
        paths = {root["id"]: [root["id"]]}
        self.seen.add(("Service", root["id"]))
        frontier = [root]
        depth = 0
        while frontier and depth < self.max_depth:
            depth += 1
            next_ids: list[str] = []
            for doc in frontier:
                path = paths[doc["id"]]
                meta = doc.get(META, {})
                for dep in meta.get("dependsOn", []):
                    if ("Service", dep) not in self.seen:
                        self.seen.add(("Service", dep))
                        paths[dep] = [*path, dep]
                        next_ids.append(dep)
                for resource in doc.get("supportingResource", []):
                    if ("Resource", resource["id"]) not in self.seen:
                        self.seen.add(("Resource", resource["id"]))
                        node = {k: resource[k] for k in ("id", "href", "name") if k in resource}
                        self._add({**node, "@referredType": "Resource", "depth": depth,
                                   "path": [*path, resource["id"]], "external": False})
                for ref in meta.get("external", []):
                    key = ref.get("href") or ref.get("id", "")
                    if ("External", key) not in self.seen:
                        self.seen.add(("External", key))
                        self._add({**ref, "id": ref.get("id") or key, "@referredType": "Service",
                                   "depth": depth, "path": [*path, ref.get("id") or key], "external": True})
            frontier = await self.load(next_ids)
            for doc in frontier:
                self._add(self.service_node(doc, depth, paths[doc["id"]]))

    async def up(self, start_ids: list[str], paths: dict[str, list[str]], start_depth: int) -> set[str]:
        """Everything resting on ``start_ids``; returns the ids found to have something above them."""
        has_parent: set[str] = set()
        frontier = list(start_ids)
        depth = start_depth
        while frontier and depth < self.max_depth:
            depth += 1
            frontier_set = set(frontier)
            parents = await self.api.store.find_in(f"{META}.dependsOn", frontier, self.call, NODE_FIELDS)
            next_ids = []
            for doc in sorted(parents, key=lambda d: d["id"]):
                below = [d for d in doc.get(META, {}).get("dependsOn", []) if d in frontier_set]
                has_parent.update(below)
                if ("Service", doc["id"]) in self.seen:
                    continue
                self.seen.add(("Service", doc["id"]))
                paths[doc["id"]] = [*paths[below[0]], doc["id"]]
                next_ids.append(doc["id"])
                self._add(self.service_node(doc, depth, paths[doc["id"]]))
            frontier = next_ids
        return has_parent

    def customer_facing(self, has_parent: set[str], complete: bool) -> list[dict[str, Any]]:
        return [n for n in self.nodes if n["@referredType"] == "Service" and (
            is_customer_facing(n.get("category")) or (complete and n["id"] not in has_parent))]


def graph(direction: str, root: dict[str, Any], walk: Walk, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"@type": "ServiceGraph", "direction": direction, "root": root, "node": walk.nodes, **(extra or {})}


async def dependency_graph(api: ResourceApi, service_id: str, call: Call, max_depth: int) -> dict[str, Any]:
    walk = Walk(api, call, max_depth)
    root = await walk.root(service_id)
    await walk.down(root)
    return graph("dependency", walk.service_node(root, 0, [root["id"]]), walk)


async def service_impact_graph(api: ResourceApi, service_id: str, call: Call,
                               max_depth: int) -> dict[str, Any]:
    walk = Walk(api, call, max_depth)
    root = await walk.root(service_id)
    walk.seen.add(("Service", root["id"]))
    root_node = walk.service_node(root, 0, [root["id"]])
    has_parent = await walk.up([root["id"]], {root["id"]: [root["id"]]}, 0)
    complete = not _cut(walk, max_depth)
    facing = walk.customer_facing(has_parent, complete)
    if is_customer_facing(root.get("category")) or (complete and root["id"] not in has_parent):
        facing.insert(0, root_node)
    return graph("impact", root_node, walk, {"customerFacingService": facing})


async def resource_impact_graph(api: ResourceApi, resource_id: str, call: Call,
                                max_depth: int) -> dict[str, Any]:
    walk = Walk(api, call, max_depth)
    users = await api.store.find_internal({f"{META}.resources": resource_id}, call, NODE_FIELDS)
    if not users:
        raise NotFound(f"no service of this inventory rests on resource '{resource_id}'")
    paths: dict[str, list[str]] = {}
    name = None
    for doc in sorted(users, key=lambda d: d["id"]):
        walk.seen.add(("Service", doc["id"]))
        paths[doc["id"]] = [resource_id, doc["id"]]
        walk._add(walk.service_node(doc, 1, paths[doc["id"]]))
        name = name or next((r.get("name") for r in doc.get("supportingResource", [])
                             if r.get("id") == resource_id and r.get("name")), None)
    has_parent = await walk.up(sorted(paths), paths, 1)
    complete = not _cut(walk, max_depth)
    root = {"id": resource_id, "@referredType": "Resource", "depth": 0, "path": [resource_id], "external": False}
    if name:
        root["name"] = name
    return graph("impact", root, walk, {"customerFacingService": walk.customer_facing(has_parent, complete)})


def _cut(walk: Walk, max_depth: int) -> bool:
    """Whether the walk stopped at the depth limit rather than at the top of the graph."""
    return any(n["depth"] >= max_depth for n in walk.nodes)


async def find_cycle(api: ResourceApi, service_id: str, depends_on: list[str], call: Call) -> list[str] | None:
    """The dependency path that would lead from ``service_id`` back to itself, if any."""
    if service_id in depends_on:
        return [service_id, service_id]
    paths = {dep: [service_id, dep] for dep in depends_on}
    seen = set(depends_on)
    frontier = list(depends_on)
    while frontier:
        docs = await api.store.find_in("_id", frontier, call, {"id": 1, f"{META}.dependsOn": 1})
        next_ids = []
        for doc in docs:
            for dep in doc.get(META, {}).get("dependsOn", []):
                if dep == service_id:
                    return [*paths[doc["id"]], service_id]
                if dep not in seen:
                    seen.add(dep)
                    paths[dep] = [*paths[doc["id"]], dep]
                    next_ids.append(dep)
        frontier = next_ids
    return None
