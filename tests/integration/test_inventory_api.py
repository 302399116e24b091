"""The TMF638 inventory over HTTP, on a real wire-protocol database: queries, patching,
concurrency, errors."""

from __future__ import annotations

import json
import threading

import pytest

from tests.conftest import INVENTORY

SERVICE = f"{INVENTORY}/service"


def create(client, **attributes):
    body = {"state": "active", "serviceSpecification": {"id": "spec-vpn"}, **attributes}
    response = client.post(SERVICE, json=body)
    assert response.status_code == 201, response.text
    return response.json()


def assert_tmf_error(response, status):
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) >= {"code", "reason", "message", "status"}
    assert body["status"] == str(status)
    assert body["message"]
    return body


def test_create_returns_resource_location_and_etag(client):
    response = client.post(SERVICE, json={"name": "vpn", "state": "designed",
                                          "serviceSpecification": {"id": "spec-vpn"}})
    assert response.status_code == 201
    body = response.json()
    assert body["href"] == f"http://testserver{SERVICE}/{body['id']}"
    assert response.headers["location"] == body["href"]
    assert response.headers["etag"] == '"1"'
    assert body["@type"] == "Service"
    assert body["serviceDate"].endswith("Z")
    fetched = client.get(f"{SERVICE}/{body['id']}")
    assert fetched.json() == body
    assert fetched.headers["etag"] == '"1"'


def test_list_filters_operators_and_or(client):
    a = create(client, name="a", startDate="2026-01-01T00:00:00Z",
               relatedParty=[{"id": "p1", "role": "supplier", "@referredType": "Organization"}],
               serviceCharacteristic=[{"name": "bandwidth", "value": 100}])
    b = create(client, name="b", state="inactive", startDate="2026-03-01T02:00:00+02:00",
               relatedParty=[{"id": "p2", "role": "customer", "@referredType": "Organization"}])
    c = create(client, name="c", state="designed", startDate="2026-06-01T00:00:00Z", isBundle=True)

    def names(query):
        response = client.get(f"{SERVICE}?{query}")
        assert response.status_code == 200, response.text
        return sorted(s["name"] for s in response.json())

    assert names("state=active") == ["a"]
    assert names("state=active,inactive") == ["a", "b"]
    assert names("state=active;state=designed") == ["a", "c"]
    assert names("state=active&state=designed") == ["a", "c"]
    assert names("relatedParty.role=supplier") == ["a"]
    assert names("startDate.gt=2026-02-01") == ["b", "c"]
    assert names("startDate>2026-02-01") == ["b", "c"]
    assert names("startDate%3E%3D2026-03-01T00:00:00Z") == ["b", "c"]
    assert names("startDate<=2026-03-01T00:00:00.000Z") == ["a", "b"]
    assert names("startDate.lt=2026-03-01T00:00:00Z") == ["a"]
    assert names("state.ne=active") == ["b", "c"]
    assert names("isBundle=true") == ["c"]
    assert names("name.regex=^[ab]$") == ["a", "b"]
    assert names("serviceCharacteristic.value=100") == ["a"]
    assert names("state=active&name=b") == []
    assert {a["id"], b["id"], c["id"]} == {s["id"] for s in client.get(SERVICE).json()}


def test_fields_pagination_sort_and_counts(client):
    for i in range(5):
        create(client, name=f"s{i}", description=f"d{i}")
    page = client.get(f"{SERVICE}?fields=name&sort=-name&offset=1&limit=2")
    assert page.status_code == 206
    assert page.headers["x-total-count"] == "5"
    assert page.headers["x-result-count"] == "2"
    assert [s["name"] for s in page.json()] == ["s3", "s2"]
    assert all(set(s) == {"id", "href", "@type", "name"} for s in page.json())
    whole = client.get(f"{SERVICE}/?fields=none")
    assert whole.status_code == 200
    assert whole.headers["x-total-count"] == "5"
    assert all(set(s) == {"id", "href", "@type"} for s in whole.json())
    one = whole.json()[0]
    selected = client.get(f"{SERVICE}/{one['id']}?fields=description")
    assert set(selected.json()) == {"id", "href", "@type", "description"}


@pytest.mark.parametrize("query", ["limit=-1", "limit=1000000000", "offset=-3", "state.foo=x",
                                   "startDate.gt=yesterday", "nosuch=1", "sort=nosuch",
                                   "fields=nosuch", "name.regex=(a)%5C1", "$where=1",
                                   "relatedParty.$ne=x", "isBundle=maybe"])
def test_bad_queries_are_400_with_tmf_error(client, query):
    body = assert_tmf_error(client.get(f"{SERVICE}?{query}"), 400)
    assert body["@type"] == "Error"


def test_merge_patch_and_json_patch(client):
    service = create(client, name="old", note=[{"text": "first"}])
    url = f"{SERVICE}/{service['id']}"
    merged = client.patch(url, content=json.dumps({"name": "new", "description": "d"}),
                          headers={"content-type": "application/merge-patch+json"})
    assert merged.status_code == 200, merged.text
    assert merged.json()["name"] == "new"
    assert merged.headers["etag"] == '"2"'
    removed = client.patch(url, json={"description": None})
    assert "description" not in removed.json()
    patched = client.patch(url, content=json.dumps([
        {"op": "test", "path": "/name", "value": "new"},
        {"op": "add", "path": "/note/-", "value": {"text": "second"}},
        {"op": "replace", "path": "/state", "value": "inactive"},
    ]), headers={"content-type": "application/json-patch+json"})
    assert patched.status_code == 200, patched.text
    assert [n["text"] for n in patched.json()["note"]] == ["first", "second"]
    assert patched.json()["state"] == "inactive"


def test_failed_patches_change_nothing(client):
    service = create(client, name="keep")
    url = f"{SERVICE}/{service['id']}"
    failing = [
        (json.dumps([{"op": "test", "path": "/name", "value": "other"},
                     {"op": "replace", "path": "/name", "value": "x"}]), "application/json-patch+json", 409),
        (json.dumps([{"op": "replace", "path": "/id", "value": "x"}]), "application/json-patch+json", 400),
        (json.dumps({"href": "http://elsewhere/x"}), "application/merge-patch+json", 400),
        (json.dumps({"state": "broken"}), "application/merge-patch+json", 400),
        (json.dumps({"state": None}), "application/merge-patch+json", 400),
        (json.dumps({"name": 5}), "application/merge-patch+json", 400),
        (json.dumps({"serviceCharacteristic": [{"name": "x", "value": {"$gt": 1}}]}),
         "application/merge-patch+json", 400),
        (json.dumps({"name": "x"}), "text/plain", 415),
        ("{not json", "application/merge-patch+json", 400),
    ]
    for body, content_type, status in failing:
        response = client.patch(url, content=body, headers={"content-type": content_type})
        assert_tmf_error(response, status)
    after = client.get(url)
    assert after.json() == service
    assert after.headers["etag"] == '"1"'


def test_if_match(client):
    service = create(client, name="v1")
    url = f"{SERVICE}/{service['id']}"
    stale = client.patch(url, json={"name": "v2"}, headers={"If-Match": '"7"'})
    assert_tmf_error(stale, 412)
    fresh = client.patch(url, json={"name": "v2"}, headers={"If-Match": '"1"'})
    assert fresh.status_code == 200
    assert client.get(url).json()["name"] == "v2"


def test_concurrent_patches_never_lose_an_update(client):
    service = create(client, note=[])
    url = f"{SERVICE}/{service['id']}"
    errors = []

    def add_note(i):
        response = client.patch(url, content=json.dumps([{"op": "add", "path": "/note/-",
                                                          "value": {"text": f"n{i}"}}]),
                                headers={"content-type": "application/json-patch+json"})
        if response.status_code != 200:
            errors.append(response.text)

    threads = [threading.Thread(target=add_note, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    final = client.get(url)
    assert sorted(n["text"] for n in final.json()["note"]) == sorted(f"n{i}" for i in range(12))
    assert final.headers["etag"] == '"13"'


@pytest.mark.parametrize(("body", "status"), [
    ({"state": "active"}, 400),
    ({"serviceSpecification": {"id": "x"}}, 400),
    ({"state": "sleeping", "serviceSpecification": {"id": "x"}}, 400),
    ({"state": "active", "serviceSpecification": {"id": "x"}, "name": 7}, 400),
    ({"state": "active", "serviceSpecification": {"id": "x"}, "$set": {"a": 1}}, 400),
    ({"state": "active", "serviceSpecification": {"id": "x"}, "note": [{"text": "t", "a.b": 1}]}, 400),
    ({"state": "active", "serviceSpecification": {"id": "x"}, "id": "mine"}, 400),
    ({"state": "active", "serviceSpecification": {"id": "x"}, "startDate": "tomorrow"}, 400),
    ({"state": "active", "serviceSpecification": {"id": "x"}, "supportingService": [{"id": "missing"}]}, 400),
])
def test_bad_creates_are_refused_and_store_nothing(client, body, status):
    assert_tmf_error(client.post(SERVICE, json=body), status)
    assert client.get(SERVICE).headers["x-total-count"] == "0"


def test_invalid_json_content_type_size_and_depth(client):
    assert_tmf_error(client.post(SERVICE, content="{oops", headers={"content-type": "application/json"}), 400)
    assert_tmf_error(client.post(SERVICE, content="state=active",
                                 headers={"content-type": "application/x-www-form-urlencoded"}), 415)
    big = {"state": "active", "serviceSpecification": {"id": "x"}, "description": "x" * 2_000_000}
    assert_tmf_error(client.post(SERVICE, json=big), 413)
    deep = '{"state":"active","serviceSpecification":{"id":"x"},"note":' + "[" * 200 + "]" * 200 + "}"
    assert_tmf_error(client.post(SERVICE, content=deep, headers={"content-type": "application/json"}), 400)
    assert client.get(SERVICE).headers["x-total-count"] == "0"


def test_unknown_ids_and_paths(client):
    assert_tmf_error(client.get(f"{SERVICE}/nope"), 404)
    assert_tmf_error(client.patch(f"{SERVICE}/nope", json={"name": "x"}), 404)
    assert_tmf_error(client.delete(f"{SERVICE}/nope"), 404)
    assert_tmf_error(client.get(f"{INVENTORY}/nothing-here"), 404)


def test_delete(client):
    service = create(client)
    assert client.delete(f"{SERVICE}/{service['id']}").status_code == 204
    assert client.get(f"{SERVICE}/{service['id']}").status_code == 404


def test_hub_subscriptions(client):
    created = client.post(f"{INVENTORY}/hub", json={"callback": "http://127.0.0.1:9/listener",
                                                    "query": "eventType=ServiceStateChangeEvent",
                                                    "secret": "s" * 32})
    assert created.status_code == 201, created.text
    body = created.json()
    assert "secret" not in body
    assert created.headers["location"].endswith(f"/hub/{body['id']}")
    assert client.get(f"{INVENTORY}/hub/{body['id']}").json()["callback"] == "http://127.0.0.1:9/listener"
    for bad in [{"callback": "not a url"}, {"callback": "ftp://x/y"}, {"callback": "/relative"},
                {"callback": "http://x/", "query": "state.$ne=1"}]:
        assert_tmf_error(client.post(f"{INVENTORY}/hub", json=bad), 400)
    assert client.delete(f"{INVENTORY}/hub/{body['id']}").status_code == 204
    assert_tmf_error(client.delete(f"{INVENTORY}/hub/{body['id']}"), 404)


def test_health_and_index(client):
    health = client.get("/health")
    assert health.status_code == 200
    assert health.json()["database"]["status"] == "up"
    assert client.get("/").json()["apis"][0]["basePath"] == INVENTORY
    document = client.get(f"{INVENTORY}/openapi.json").json()
    assert "Error" in document["components"]["schemas"]
