"""Authentication of the whole suite as a client meets it: every API operation needs a bearer
token of the suite's issuer with the operation's scope, customers only read, the documents,
health probes and token endpoints are open, and listeners take only events signed with the
secret of the suite's own subscription."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from starlette.testclient import TestClient

from services.app import create_app
from services.tmf.auth.settings import DEFAULT_AUDIENCE
from services.tmf.delivery import SIGNATURE_HEADER, sign
from services.tmf.embedded import free_port
from services.tmf.settings import Settings
from tests.conftest import INVENTORY, PUBLIC_URL, make_settings
from tests.integration.test_listeners import CONSUMER, consumer_key, consumer_suite
from tests.support.auth import bearer, consumer_secret, signed, token
from tests.support.server import serve

SERVICE = f"{INVENTORY}/service"
NEW_SERVICE = {"name": "vpn", "state": "active", "serviceSpecification": {"id": "ip-vpn"}}


@pytest.fixture
def anonymous(settings: Settings) -> Iterator[TestClient]:
    """The whole suite, started, under a client that sends no token unless told to."""
    with TestClient(create_app(settings), base_url=PUBLIC_URL) as client:
        yield client


def assert_tmf_error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert {"code", "reason", "message", "status"} <= set(body)
    assert body["status"] == body["code"] == str(status)
    assert body["message"]
    return body


def claims(settings: Settings, **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"iss": settings.public_url, "aud": DEFAULT_AUDIENCE, "sub": "intruder", "client_id": "intruder",
            "party_id": "operator", "role": "operator", "scope": "serviceInventory.read",
            "iat": now, "nbf": now, "exp": now + 600, "jti": secrets.token_hex(8), **overrides}


def signed_elsewhere(payload: dict[str, Any], kid: str = "elsewhere") -> str:
    """A well-formed token signed with a key the suite never made."""
    return jwt.encode(payload, ec.generate_private_key(ec.SECP256R1()), algorithm="ES256", headers={"kid": kid})


def test_no_token_is_a_401_tmf_error_with_a_bearer_challenge(anonymous: TestClient) -> None:
    for method, path, body in [("GET", SERVICE, None), ("POST", SERVICE, NEW_SERVICE),
                               ("GET", "/tmf-api/slaManagement/v4/sla", None),
                               ("GET", "/tmf-api/alarmManagement/v4/alarm", None),
                               ("GET", "/tmf-api/serviceProblemManagement/v4/serviceProblem", None)]:
        answer = anonymous.request(method, path, json=body)
        assert_tmf_error(answer, 401)
        assert answer.headers["www-authenticate"].startswith("Bearer "), (method, path)


def test_a_refused_post_stores_nothing(anonymous: TestClient, settings: Settings) -> None:
    assert_tmf_error(anonymous.post(SERVICE, json=NEW_SERVICE), 401)
    assert_tmf_error(anonymous.post(SERVICE, json=NEW_SERVICE, headers={"Authorization": "Bearer x.y.z"}), 401)
    listed = anonymous.get(SERVICE, headers=bearer(settings))
    assert listed.status_code == 200 and listed.json() == []


@pytest.mark.parametrize("authorization", ["Bearer garbage", "Bearer a.b.c", "Bearer ", "Basic dXNlcjpwYXNz",
                                           "Bearer " + "x" * 20_000])
def test_a_garbage_token_is_an_invalid_token_401(anonymous: TestClient, authorization: str) -> None:
    answer = anonymous.get(SERVICE, headers={"Authorization": authorization})
    assert_tmf_error(answer, 401)
    challenge = answer.headers["www-authenticate"]
    assert challenge.startswith("Bearer ")
    if authorization.startswith("Bearer ") and authorization.strip() != "Bearer":
        assert 'error="invalid_token"' in challenge


def test_an_expired_token_is_refused(anonymous: TestClient, settings: Settings) -> None:
    answer = anonymous.get(SERVICE, headers=bearer(settings, lifetime=-3600))
    assert_tmf_error(answer, 401)
    assert 'error="invalid_token"' in answer.headers["www-authenticate"]


def test_a_token_without_the_write_scope_reads_but_does_not_write(anonymous: TestClient, settings: Settings) -> None:
    reader = bearer(settings, scopes=("serviceInventory.read",))
    assert anonymous.get(SERVICE, headers=reader).status_code == 200
    refused = anonymous.post(SERVICE, json=NEW_SERVICE, headers=reader)
    assert_tmf_error(refused, 403)
    assert 'error="insufficient_scope"' in refused.headers["www-authenticate"]
    assert 'scope="serviceInventory.write"' in refused.headers["www-authenticate"]
    # The scope of one API grants nothing on another.
    assert_tmf_error(anonymous.get("/tmf-api/slaManagement/v4/sla", headers=reader), 403)
    assert anonymous.get(SERVICE, headers=bearer(settings)).json() == []


def test_a_customer_only_reads_even_with_write_scopes(anonymous: TestClient, settings: Settings) -> None:
    operator = bearer(settings)
    created = anonymous.post(SERVICE, json={**NEW_SERVICE, "relatedParty": [
        {"id": "customer-a", "role": "customer", "@referredType": "Organization"}]}, headers=operator)
    assert created.status_code == 201, created.text
    url = f"{SERVICE}/{created.json()['id']}"
    customer = bearer(settings, role="customer", party="customer-a",
                      scopes=("serviceInventory.read", "serviceInventory.write"))
    assert anonymous.get(url, headers=customer).status_code == 200
    assert_tmf_error(anonymous.post(SERVICE, json=NEW_SERVICE, headers=customer), 403)
    assert_tmf_error(anonymous.patch(url, json={"description": "mine now"}, headers=customer), 403)
    assert_tmf_error(anonymous.delete(url, headers=customer), 403)
    kept = anonymous.get(url, headers=operator).json()
    assert "description" not in kept
    assert len(anonymous.get(SERVICE, headers=operator).json()) == 1


def test_a_token_of_another_issuer_or_key_is_refused(anonymous: TestClient, settings: Settings) -> None:
    genuine = jwt.get_unverified_header(token(settings))["kid"]
    for forged in [signed_elsewhere(claims(settings, iss="https://issuer.elsewhere.example")),
                   signed_elsewhere(claims(settings)),
                   # Naming the suite's own key does not help a token it did not sign.
                   signed_elsewhere(claims(settings), kid=genuine)]:
        answer = anonymous.get(SERVICE, headers={"Authorization": f"Bearer {forged}"})
        assert_tmf_error(answer, 401)
        assert 'error="invalid_token"' in answer.headers["www-authenticate"]


def test_a_token_of_the_suites_key_but_another_issuer_is_refused(anonymous: TestClient, settings: Settings) -> None:
    elsewhere = Settings(**{**settings.__dict__, "public_url": "https://issuer.elsewhere.example"})
    answer = anonymous.get(SERVICE, headers=bearer(elsewhere))
    assert_tmf_error(answer, 401)
    assert "another issuer" in answer.json()["message"]


def test_documents_health_and_token_endpoints_are_open(anonymous: TestClient) -> None:
    assert anonymous.get("/health/live").status_code == 200
    document = anonymous.get(f"{INVENTORY}/openapi.json")
    assert document.status_code == 200 and document.json()["openapi"].startswith("3.")
    keys = anonymous.get("/oauth2/jwks")
    assert keys.status_code == 200 and keys.json()["keys"]
    refused = anonymous.post("/oauth2/token", data={"grant_type": "client_credentials"},
                             auth=("nobody", "wrong"))
    assert refused.status_code == 401 and refused.json()["error"] == "invalid_client"


# --- listeners --------------------------------------------------------------------------------------


EVENT = {"eventId": "forged-1", "eventType": "ServiceCreateEvent", "eventTime": "2026-11-25T10:00:00Z",
         "event": {"service": {"id": "s1", "name": "forged"}}}


def test_a_listener_takes_only_events_signed_with_its_subscriptions_secret(mongo_uri: str) -> None:
    port = free_port()
    settings = make_settings(mongo_uri, public_url=f"http://127.0.0.1:{port}")
    taken: list[dict[str, Any]] = []
    url = f"{CONSUMER}/listener/serviceCreateEvent"
    with serve(consumer_suite(settings, taken), port) as base, httpx.Client(base_url=base, timeout=30) as client:
        unsigned = client.post(url, json=EVENT)
        assert_tmf_error(unsigned, 401)
        # Even the operator's token does not replace the signature.
        assert_tmf_error(client.post(url, json=EVENT, headers=bearer(settings)), 401)
        body, headers = signed("not-the-subscriptions-secret", EVENT)
        assert_tmf_error(client.post(url, content=body, headers=headers), 401)
        # A genuine signature over another body does not carry over.
        secret = consumer_secret(settings, consumer_key(settings))
        _, genuine = signed(secret, {**EVENT, "eventId": "other"})
        assert_tmf_error(client.post(url, content=body, headers=genuine), 401)
        # An old signature cannot be replayed.
        stale_time = int(time.time()) - 3600
        stale = {"Content-Type": "application/json", SIGNATURE_HEADER: sign(secret, stale_time, body)}
        assert_tmf_error(client.post(url, content=body, headers=stale), 401)
        assert taken == []
        # The same event, signed with the secret, is taken: the refusals were about the signature.
        body, headers = signed(secret, EVENT)
        assert client.post(url, content=body, headers=headers).status_code == 204
        assert [event["eventId"] for event in taken] == ["forged-1"]
