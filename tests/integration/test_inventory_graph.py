"""The dependency graph: references, cycles, and the graph queries."""

from __future__ import annotations

from tests.conftest import INVENTORY

SERVICE = f"{INVENTORY}/service"
PARTNER = {"id": "partner-a", "role": "supplier", "@referredType": "Organization"}


def create(client, name, **attributes):
    body = {"name": name, "state": "active", "serviceSpecification": {"id": f"spec-{name}"}, **attributes}
    response = client.post(SERVICE, json=body)
    assert response.status_code == 201, response.text
    return response.json()


def value_chain(client):
    """VPN (CFS) -> access-1 (partner) -> link-1; VPN -> access-2 -> link-2; VPN -> core -> pe-1."""
    access1 = create(client, "access-1", category="RFS", relatedParty=[PARTNER],
                     supportingResource=[{"id": "link-1", "name": "access link 1"}])
    access2 = create(client, "access-2", category="RFS", supportingResource=[{"id": "link-2"}])
    core = create(client, "core", category="RFS", supportingResource=[{"id": "pe-1"}])
    vpn = create(client, "vpn", category="CFS",
                 relatedParty=[{"id": "acme", "role": "customer", "@referredType": "Organization"}],
                 supportingService=[{"id": access1["id"]}, {"href": access2["href"]}],
                 serviceRelationship=[{"relationshipType": "reliesOn", "service": {"id": core["id"]}}])
    return vpn, access1, access2, core


def test_dependency_graph_with_depth_and_paths(client):
    vpn, access1, access2, core = value_chain(client)
    graph = client.get(f"{SERVICE}/{vpn['id']}/dependency").json()
    assert graph["root"]["id"] == vpn["id"]
    by_id = {n["id"]: n for n in graph["node"]}
    assert set(by_id) == {access1["id"], access2["id"], core["id"], "link-1", "link-2", "pe-1"}
    assert by_id[access1["id"]]["depth"] == 1
    assert by_id[access1["id"]]["relatedParty"] == [PARTNER]
    assert by_id["link-1"]["depth"] == 2
    assert by_id["link-1"]["path"] == [vpn["id"], access1["id"], "link-1"]
    assert by_id["link-1"]["@referredType"] == "Resource"
    shallow = client.get(f"{SERVICE}/{vpn['id']}/dependency?depth=1").json()
    assert {n["id"] for n in shallow["node"]} == {access1["id"], access2["id"], core["id"]}


def test_resource_impact_reaches_customer_facing_service(client):
    vpn, access1, _, _ = value_chain(client)
    graph = client.get(f"{INVENTORY}/resourceImpact/link-1").json()
    assert graph["root"] == {"id": "link-1", "name": "access link 1", "@referredType": "Resource",
                             "depth": 0, "path": ["link-1"], "external": False}
    by_id = {n["id"]: n for n in graph["node"]}
    assert set(by_id) == {access1["id"], vpn["id"]}
    assert by_id[vpn["id"]]["path"] == ["link-1", access1["id"], vpn["id"]]
    assert [s["id"] for s in graph["customerFacingService"]] == [vpn["id"]]
    assert client.get(f"{INVENTORY}/resourceImpact/unused").status_code == 404


def test_service_impact(client):
    vpn, _, _, core = value_chain(client)
    upper = create(client, "sd-wan", category="CFS", supportingService=[{"id": core["id"]}])
    graph = client.get(f"{SERVICE}/{core['id']}/impact").json()
    assert {n["id"] for n in graph["node"]} == {vpn["id"], upper["id"]}
    assert {s["id"] for s in graph["customerFacingService"]} == {vpn["id"], upper["id"]}
    top = client.get(f"{SERVICE}/{vpn['id']}/impact").json()
    assert top["node"] == []
    assert [s["id"] for s in top["customerFacingService"]] == [vpn["id"]]


def test_external_references_are_kept_not_followed(client):
    partner_href = "https://partner.example.net/tmf-api/serviceInventory/v4/service/p-77"
    service = create(client, "access-x", supportingService=[{"href": partner_href, "name": "partner access"}])
    graph = client.get(f"{SERVICE}/{service['id']}/dependency").json()
    assert graph["node"] == [{"href": partner_href, "name": "partner access", "id": partner_href,
                              "@referredType": "Service", "depth": 1,
                              "path": [service["id"], partner_href], "external": True}]


def test_reference_to_missing_service_is_refused(client):
    response = client.post(SERVICE, json={"state": "active", "serviceSpecification": {"id": "x"},
                                          "supportingService": [{"id": "ghost"}]})
    assert response.status_code == 400
    assert "ghost" in response.json()["message"]
    local_href = f"http://testserver{SERVICE}/ghost"
    response = client.post(SERVICE, json={"state": "active", "serviceSpecification": {"id": "x"},
                                          "serviceRelationship": [{"relationshipType": "reliesOn",
                                                                   "service": {"href": local_href}}]})
    assert response.status_code == 400


def test_cycles_are_refused_and_named(client):
    a = create(client, "a")
    b = create(client, "b", supportingService=[{"id": a["id"]}])
    c = create(client, "c", supportingService=[{"id": b["id"]}])
    response = client.patch(f"{SERVICE}/{a['id']}", json={"supportingService": [{"id": c["id"]}]})
    assert response.status_code == 409
    assert " -> ".join([a["id"], c["id"], b["id"], a["id"]]) in response.json()["message"]
    itself = client.patch(f"{SERVICE}/{a['id']}", json={"supportingService": [{"id": a["id"]}]})
    assert itself.status_code == 409
    assert client.get(f"{SERVICE}/{a['id']}").json().get("supportingService") is None


def test_delete_refused_while_others_rest_on_it(client):
    vpn, access1, _, _ = value_chain(client)
    response = client.delete(f"{SERVICE}/{access1['id']}")
    assert response.status_code == 409
    assert vpn["id"] in response.json()["message"]
    assert client.delete(f"{SERVICE}/{vpn['id']}").status_code == 204
    assert client.delete(f"{SERVICE}/{access1['id']}").status_code == 204


def test_patch_moves_edges(client):
    vpn, access1, access2, core = value_chain(client)
    client.patch(f"{SERVICE}/{vpn['id']}", json={"supportingService": [{"id": access2["id"]}],
                                                 "serviceRelationship": None}).raise_for_status()
    graph = client.get(f"{INVENTORY}/resourceImpact/link-1").json()
    assert {n["id"] for n in graph["node"]} == {access1["id"]}
    assert client.delete(f"{SERVICE}/{core['id']}").status_code == 204
