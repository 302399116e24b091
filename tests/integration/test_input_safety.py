"""Bad input over HTTP: unstorable numbers, huge offsets, odd ids; and what an unexpected
failure leaves in the log."""

from __future__ import annotations

import io
import json
import logging
import sys

import pytest
import structlog

from services.tmf.logging import configure_logging
from services.tmf.repository import ResourceStore
from services.tmf.spec import SchemaIndex, load_document
from tests.conftest import INVENTORY

SERVICE = f"{INVENTORY}/service"
SLA = "/tmf-api/slaManagement/v4/sla"
PROBLEM = "/tmf-api/serviceProblemManagement/v4/serviceProblem"
ALARM = "/tmf-api/alarmManagement/v4/alarm"


def assert_tmf_error(response, status):
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) >= {"code", "reason", "message", "status"}
    assert body["status"] == str(status)
    assert body["message"]
    return body


@pytest.fixture
def json_logs(monkeypatch):
    """The suite's logging configuration for one test, writing to a buffer it yields; undone
    afterwards."""
    buffer = io.StringIO()
    monkeypatch.setattr(sys, "stderr", buffer)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    configure_logging("INFO")
    yield buffer
    structlog.reset_defaults()
    root.handlers, root.level = handlers, level
    logging.getLogger("uvicorn.access").disabled = False


def test_unexpected_error_is_a_tmf_500_and_its_log_line_has_the_traceback(client, json_logs, monkeypatch):
    async def broken(self, resource_id, scope):
        raise RuntimeError("the disk caught fire")

    monkeypatch.setattr(ResourceStore, "get", broken)
    response = client.get(f"{SERVICE}/some-id")
    body = assert_tmf_error(response, 500)
    assert "fire" not in body["message"]
    lines = [json.loads(line) for line in json_logs.getvalue().splitlines() if line.startswith("{")]
    failures = [line for line in lines if line.get("event") == "unhandled error"]
    assert len(failures) == 1, lines
    failure = failures[0]
    assert failure["level"] == "error"
    assert failure["path"] == f"{SERVICE}/some-id"
    assert failure["request_id"] == response.headers["x-request-id"]
    assert "Traceback (most recent call last)" in failure["exception"]
    assert "RuntimeError: the disk caught fire" in failure["exception"]
    assert "in broken" in failure["exception"]


# ------------------------------------------------------------------ numbers JSON cannot carry

UNSTORABLE = ["NaN", "Infinity", "-Infinity", "1e400", "-1e400", "9223372036854775808", "-9223372036854775809",
              "1" + "0" * 5000]
SERVICE_BODY = ('{"name": "vpn", "state": "active", "serviceSpecification": {"id": "spec-vpn"}, '
                '"serviceCharacteristic": [{"name": "bandwidth", "value": %s}]}')


def post_raw(client, path, text, content_type="application/json"):
    return client.post(path, content=text.encode(), headers={"content-type": content_type})


def test_create_with_an_unstorable_number_is_refused_and_stores_nothing(client):
    for number in UNSTORABLE:
        body = assert_tmf_error(post_raw(client, SERVICE, SERVICE_BODY % number), 400)
        assert "byte" in body["message"], number
    listed = client.get(SERVICE)
    assert listed.json() == []
    assert listed.headers["x-total-count"] == "0"


def test_largest_storable_numbers_are_kept_exactly(client):
    created = post_raw(client, SERVICE, SERVICE_BODY % "[9223372036854775807, -9223372036854775808, 1.5e308]")
    assert created.status_code == 201, created.text
    stored = client.get(f"{SERVICE}/{created.json()['id']}").json()
    assert stored["serviceCharacteristic"][0]["value"] == [2**63 - 1, -(2**63), 1.5e308]


@pytest.mark.parametrize(("content_type", "template"), [
    ("application/merge-patch+json", '{"serviceCharacteristic": [{"name": "bandwidth", "value": %s}]}'),
    ("application/json", '{"serviceCharacteristic": [{"name": "bandwidth", "value": %s}]}'),
    ("application/json-patch+json",
     '[{"op": "add", "path": "/serviceCharacteristic/0/value", "value": %s}]'),
])
def test_patch_with_an_unstorable_number_is_refused_and_changes_nothing(client, content_type, template):
    created = post_raw(client, SERVICE, SERVICE_BODY % "100")
    assert created.status_code == 201, created.text
    url = f"{SERVICE}/{created.json()['id']}"
    for number in UNSTORABLE:
        response = client.patch(url, content=(template % number).encode(), headers={"content-type": content_type})
        assert_tmf_error(response, 400)
    after = client.get(url)
    assert after.headers["etag"] == '"1"'
    assert after.json() == created.json()


def test_every_api_refuses_unstorable_numbers(client):
    refused = {
        SLA: '{"name": "s", "rule": [{"id": "a", "metric": "availability", "operator": ".ge", '
             '"referenceValue": NaN}]}',
        PROBLEM: '{"category": "c", "description": "d", "priority": 9223372036854775808, "reason": "r", '
                 '"originatorParty": {"id": "acme", "@referredType": "Organization"}}',
        ALARM: '{"alarmType": "communicationsAlarm", "perceivedSeverity": "minor", "probableCause": "lossOfSignal", '
               '"alarmedObject": {"id": "link-1"}, "sourceSystemId": "nms", "state": "raised", '
               '"alarmRaisedTime": "2026-10-10T10:00:00Z", "proposedRepairedActions": Infinity}',
    }
    for path, text in refused.items():
        assert "byte" in assert_tmf_error(post_raw(client, path, text), 400)["message"]
        assert client.get(path).json() == []


# ------------------------------------------------------------------ paging bounds


def test_huge_offset_or_limit_is_a_bad_request_and_the_largest_offset_an_empty_page(client):
    for query in ["offset=99999999999999999999", "offset=2147483648", f"offset=1{'0' * 5000}",
                  "limit=99999999999999999999"]:
        assert_tmf_error(client.get(f"{SERVICE}?{query}"), 400)
    post_raw(client, SERVICE, SERVICE_BODY % "1")
    response = client.get(f"{SERVICE}?offset=2147483647")
    assert response.status_code == 206, response.text
    assert response.json() == []
    assert response.headers["x-total-count"] == "1"


# ------------------------------------------------------------------ ids of any form

ODD_IDS = ["x", "a%20b", "%00", "y" * 300, "z" * 5000, "%2E%2E", "%24where", "%7B%22%24gt%22%3A%22%22%7D",
           "%C3%A9t%C3%A9", "a%3Bb", "-", "%25", "a%5Cb"]


@pytest.mark.parametrize("collection", [SERVICE, SLA, ALARM, PROBLEM, f"{INVENTORY}/hub"])
def test_any_unknown_id_is_a_404_tmf_error(client, collection):
    for odd in ODD_IDS:
        url = f"{collection}/{odd}"
        for method, kwargs in [("GET", {}), ("DELETE", {}),
                               ("PATCH", {"json": {"description": "x"},
                                          "headers": {"content-type": "application/merge-patch+json"}})]:
            if collection.endswith("/hub") and method == "PATCH":
                continue  # subscriptions have no PATCH
            response = client.request(method, url, **kwargs)
            body = assert_tmf_error(response, 404)
            assert body["reason"] == "Not found", (method, odd, body)


# ------------------------------------------------------------------ references without @referredType


def document_errors(document: str, schema: str, body: dict) -> list[str]:
    return SchemaIndex(load_document(document), schema).errors(body)


def test_references_without_referred_type_get_the_documented_defaults(client):
    created = client.post(SERVICE, json={
        "name": "access", "state": "active", "serviceSpecification": {"id": "spec-access"},
        "relatedParty": [{"id": "partner-a", "role": "supplier"}],
        "supportingResource": [{"id": "link-1"}, {"id": "pe-1", "@referredType": "PhysicalResource"}]})
    assert created.status_code == 201, created.text
    service = created.json()
    assert service["relatedParty"] == [{"id": "partner-a", "role": "supplier", "@referredType": "Organization"}]
    assert service["serviceSpecification"]["@referredType"] == "ServiceSpecification"
    assert [r["@referredType"] for r in service["supportingResource"]] == ["Resource", "PhysicalResource"]
    url = f"{SERVICE}/{service['id']}"
    core = client.post(SERVICE, json={"name": "core", "state": "active", "serviceSpecification": {"id": "s"}}).json()
    merged = client.patch(url, json={"supportingService": [{"id": core["id"]}]},
                          headers={"content-type": "application/merge-patch+json"})
    assert merged.status_code == 200, merged.text
    assert merged.json()["supportingService"] == [{"id": core["id"], "@referredType": "Service"}]
    patched = client.patch(url, json=[{"op": "add", "path": "/relatedParty/-", "value": {"id": "acme"}}],
                           headers={"content-type": "application/json-patch+json"})
    assert patched.status_code == 200, patched.text
    stored = client.get(url).json()
    assert stored["relatedParty"][-1] == {"id": "acme", "@referredType": "Organization"}
    assert document_errors("serviceInventory.yaml", "Service", stored) == []


def test_client_problem_without_referred_types_is_stored_complete_with_the_operator_responsible(client):
    created = client.post(PROBLEM, json={
        "category": "complaint", "description": "VPN slow", "priority": 3, "reason": "Unknown",
        "originatorParty": {"id": "acme"}, "affectedService": [{"id": "vpn-1"}],
        "relatedEntity": [{"id": "ticket-1", "role": "ticket"}]})
    assert created.status_code == 201, created.text
    problem = created.json()
    assert problem["originatorParty"] == {"id": "acme", "@referredType": "Organization"}
    assert problem["affectedService"] == [{"id": "vpn-1", "@referredType": "Service"}]
    assert problem["relatedEntity"] == [{"id": "ticket-1", "role": "ticket", "@referredType": "Entity"}]
    assert problem["responsibleParty"] == {"id": "operator", "role": "operator", "@referredType": "Organization"}
    assert document_errors("serviceProblemManagement.yaml", "ServiceProblem", problem) == []
    assert client.get(f"{PROBLEM}/{problem['id']}").json() == problem

    named = client.post(PROBLEM, json={
        "category": "complaint", "description": "d", "priority": 3, "reason": "r", "originatorParty": {"id": "acme"},
        "responsibleParty": {"id": "partner-a", "role": "supplier"}}).json()
    assert named["responsibleParty"] == {"id": "partner-a", "role": "supplier", "@referredType": "Organization"}
