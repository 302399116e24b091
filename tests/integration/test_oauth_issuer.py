"""The built-in token issuer over HTTP, on a real wire-protocol database: the client-credentials
grant with both client authentication methods, every RFC 6749 §5.2 error, scope narrowing,
the RFC 8414 metadata, the JWKS and key rotation."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import jwt
import pytest
from starlette.testclient import TestClient

from services.tmf.auth import SCOPES, AuthSettings, TokenIssuer
from services.tmf.auth.issuer import NewClient, issuer_app

ISSUER = "http://testserver"
FORM = {"content-type": "application/x-www-form-urlencoded"}


@pytest.fixture
def issuer() -> TokenIssuer:
    return TokenIssuer(AuthSettings(issuer=ISSUER, audience="tmf-sqm"))


@pytest.fixture
def http(issuer: TokenIssuer, mongo_uri: str) -> Iterator[TestClient]:
    app = issuer_app(issuer, mongo_uri, f"t_{uuid.uuid4().hex[:12]}")
    with TestClient(app, base_url=ISSUER) as client:
        yield client


def register(http: TestClient, issuer: TokenIssuer, role: str = "partner", **kwargs: Any) -> NewClient:
    # The test client runs the app in its own event loop thread; run the registration there.
    return http.portal.call(lambda: issuer.register(f"c-{uuid.uuid4().hex[:8]}", "partner-a", role, **kwargs))


def basic(client_id: str, secret: str) -> dict[str, str]:
    raw = f"{quote(client_id, safe='')}:{quote(secret, safe='')}".encode()
    return {"authorization": "Basic " + base64.b64encode(raw).decode()}


def verify(http: TestClient, token: str) -> dict[str, Any]:
    keys = jwt.PyJWKSet.from_dict(http.get("/oauth2/jwks").json())
    kid = jwt.get_unverified_header(token)["kid"]
    return jwt.decode(token, keys[kid], algorithms=["ES256"], audience="tmf-sqm", issuer=ISSUER)


def test_metadata_names_the_endpoints_at_both_well_known_paths(http: TestClient) -> None:
    for path in ("/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"):
        metadata = http.get(path).json()
        assert metadata["issuer"] == ISSUER
        assert metadata["token_endpoint"] == f"{ISSUER}/oauth2/token"
        assert metadata["jwks_uri"] == f"{ISSUER}/oauth2/jwks"
        assert metadata["grant_types_supported"] == ["client_credentials"]
        assert set(metadata["token_endpoint_auth_methods_supported"]) == {"client_secret_basic", "client_secret_post"}
        assert metadata["scopes_supported"] == list(SCOPES)


def test_jwks_publishes_only_public_keys(http: TestClient) -> None:
    keys = http.get("/oauth2/jwks").json()["keys"]
    assert len(keys) == 1
    assert keys[0]["kty"] == "EC" and keys[0]["crv"] == "P-256" and keys[0]["alg"] == "ES256"
    assert keys[0]["use"] == "sig" and keys[0]["kid"]
    assert "d" not in keys[0]


def test_basic_authentication_gets_a_signed_token_with_the_role_default_scopes(
        http: TestClient, issuer: TokenIssuer) -> None:
    client = register(http, issuer, "partner")
    response = http.post("/oauth2/token", content="grant_type=client_credentials",
                         headers={**FORM, **basic(client.client_id, client.client_secret)})
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 300
    claims = verify(http, body["access_token"])
    assert claims["sub"] == claims["client_id"] == client.client_id
    assert claims["party_id"] == "partner-a" and claims["role"] == "partner"
    assert claims["exp"] - claims["iat"] == 300 and claims["nbf"] == claims["iat"] and claims["jti"]
    granted = set(claims["scope"].split())
    assert granted == set(body["scope"].split())
    assert granted == {s for s in SCOPES if s.endswith(".read")} | {
        "alarmManagement.write", "slaManagement.write", "serviceProblemManagement.write"}


def test_basic_credentials_are_form_decoded(http: TestClient, issuer: TokenIssuer) -> None:
    # RFC 6749 §2.3.1: id and secret are form-urlencoded before base64; "%2D" is a "-".
    client = register(http, issuer)
    secret = client.client_secret.replace("-", "%2D").replace("_", "%5F")
    raw = f"{client.client_id}:{secret}".encode()
    response = http.post("/oauth2/token", content="grant_type=client_credentials",
                         headers={**FORM, "authorization": "Basic " + base64.b64encode(raw).decode()})
    assert response.status_code == 200, response.text


def test_form_authentication_and_scope_narrowing(http: TestClient, issuer: TokenIssuer) -> None:
    client = register(http, issuer, "operator")
    response = http.post("/oauth2/token", data={
        "grant_type": "client_credentials", "client_id": client.client_id, "client_secret": client.client_secret,
        "scope": "slaManagement.write serviceInventory.read"})
    assert response.status_code == 200, response.text
    assert response.json()["scope"] == "serviceInventory.read slaManagement.write"
    assert verify(http, response.json()["access_token"])["scope"] == "serviceInventory.read slaManagement.write"


def test_explicit_scopes_replace_the_role_defaults(http: TestClient, issuer: TokenIssuer) -> None:
    client = register(http, issuer, "customer", scopes=["slaManagement.read"])
    response = http.post("/oauth2/token", data={
        "grant_type": "client_credentials", "client_id": client.client_id, "client_secret": client.client_secret})
    assert response.json()["scope"] == "slaManagement.read"


def oauth_error(response: Any, status: int, error: str) -> str:
    assert response.status_code == status, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["error"] == error
    assert body["error_description"]
    return str(body["error_description"])


@pytest.mark.parametrize(("content", "headers", "fragment"), [
    ("client_id=x", FORM, "grant_type is missing"),
    ('{"grant_type": "client_credentials"}', {"content-type": "application/json"}, "x-www-form-urlencoded"),
    ("grant_type=client_credentials&grant_type=client_credentials", FORM, "more than once"),
    ("grant_type=client_credentials&" + "&".join(f"p{i}=1" for i in range(40)), FORM, "at most 32 fields"),
    ("grant_type=client_credentials&pad=" + "x" * 9000, FORM, "exceeds"),
    (b"grant_type=client_credentials&x=\xff", FORM, "UTF-8"),
])
def test_malformed_requests_are_invalid_request(http: TestClient, content: str | bytes, headers: dict[str, str],
                                                fragment: str) -> None:
    response = http.post("/oauth2/token", content=content, headers=headers)
    assert fragment in oauth_error(response, 400, "invalid_request")


def test_two_authentication_methods_at_once_are_invalid_request(http: TestClient, issuer: TokenIssuer) -> None:
    client = register(http, issuer)
    response = http.post("/oauth2/token", content=f"grant_type=client_credentials&client_secret={client.client_secret}",
                         headers={**FORM, **basic(client.client_id, client.client_secret)})
    assert "one way only" in oauth_error(response, 400, "invalid_request")
    response = http.post("/oauth2/token", content="grant_type=client_credentials&client_id=someone-else",
                         headers={**FORM, **basic(client.client_id, client.client_secret)})
    assert "differs" in oauth_error(response, 400, "invalid_request")


def test_wrong_secret_over_basic_is_invalid_client_with_a_basic_challenge(
        http: TestClient, issuer: TokenIssuer) -> None:
    client = register(http, issuer)
    response = http.post("/oauth2/token", content="grant_type=client_credentials",
                         headers={**FORM, **basic(client.client_id, client.client_secret + "x")})
    oauth_error(response, 401, "invalid_client")
    assert response.headers["www-authenticate"] == 'Basic realm="tmf-sqm"'


@pytest.mark.parametrize("credentials", [
    {"client_id": "0" * 24, "client_secret": "whatever"},  # unknown client
    {"client_id": "0" * 24},  # no secret
    {},  # no client authentication at all
])
def test_failed_form_authentication_is_invalid_client(http: TestClient, credentials: dict[str, str]) -> None:
    response = http.post("/oauth2/token", data={"grant_type": "client_credentials", **credentials})
    oauth_error(response, 401, "invalid_client")


@pytest.mark.parametrize("authorization", ["Basic !!!notbase64", "Basic " + base64.b64encode(b"no-colon").decode(),
                                           "Bearer abc"])
def test_unusable_authorization_headers_are_invalid_client(http: TestClient, authorization: str) -> None:
    response = http.post("/oauth2/token", content="grant_type=client_credentials",
                         headers={**FORM, "authorization": authorization})
    oauth_error(response, 401, "invalid_client")


def test_a_client_not_allowed_the_grant_is_unauthorized_client(http: TestClient, issuer: TokenIssuer) -> None:
    client = register(http, issuer, grant_types=())
    response = http.post("/oauth2/token", content="grant_type=client_credentials",
                         headers={**FORM, **basic(client.client_id, client.client_secret)})
    oauth_error(response, 400, "unauthorized_client")


def test_other_grants_are_unsupported_grant_type(http: TestClient, issuer: TokenIssuer) -> None:
    client = register(http, issuer)
    response = http.post("/oauth2/token", content="grant_type=password&username=a&password=b",
                         headers={**FORM, **basic(client.client_id, client.client_secret)})
    assert "client_credentials" in oauth_error(response, 400, "unsupported_grant_type")


@pytest.mark.parametrize("scope", ["serviceInventory.write", "serviceInventory.read nosuch.scope",
                                   "serviceInventory.read  slaManagement.read"])
def test_scopes_beyond_the_client_are_invalid_scope(http: TestClient, issuer: TokenIssuer, scope: str) -> None:
    client = register(http, issuer, "customer")
    response = http.post("/oauth2/token", data={"grant_type": "client_credentials", "scope": scope},
                         headers=basic(client.client_id, client.client_secret))
    assert "allowed: serviceInventory.read" in oauth_error(response, 400, "invalid_scope")


def test_a_removed_client_gets_no_token(http: TestClient, issuer: TokenIssuer) -> None:
    client = register(http, issuer)
    form = {"grant_type": "client_credentials", "client_id": client.client_id, "client_secret": client.client_secret}
    assert http.post("/oauth2/token", data=form).status_code == 200
    assert http.portal.call(issuer.clients.remove, client.client_id) is True
    oauth_error(http.post("/oauth2/token", data=form), 401, "invalid_client")


def test_rotation_signs_with_a_new_key_and_keeps_the_old_one_published(http: TestClient, issuer: TokenIssuer) -> None:
    client = register(http, issuer)
    form = {"grant_type": "client_credentials", "client_id": client.client_id, "client_secret": client.client_secret}
    old_token = http.post("/oauth2/token", data=form).json()["access_token"]
    old_kid = jwt.get_unverified_header(old_token)["kid"]
    new_kid = http.portal.call(issuer.rotate)
    assert new_kid != old_kid
    assert {k["kid"] for k in http.get("/oauth2/jwks").json()["keys"]} == {old_kid, new_kid}
    new_token = http.post("/oauth2/token", data=form).json()["access_token"]
    assert jwt.get_unverified_header(new_token)["kid"] == new_kid
    # Tokens signed before the rotation still verify.
    assert verify(http, old_token)["client_id"] == client.client_id
    assert verify(http, new_token)["client_id"] == client.client_id


def test_retired_keys_are_dropped_once_their_tokens_have_expired(mongo_uri: str) -> None:
    now = [datetime(2026, 1, 1, tzinfo=UTC)]
    issuer = TokenIssuer(AuthSettings(issuer=ISSUER, token_lifetime_seconds=300, clock_skew_seconds=30),
                         clock=lambda: now[0])
    with TestClient(issuer_app(issuer, mongo_uri, f"t_{uuid.uuid4().hex[:12]}"), base_url=ISSUER) as http:
        first = http.get("/oauth2/jwks").json()["keys"][0]["kid"]
        second = http.portal.call(issuer.rotate)
        now[0] += timedelta(seconds=329)
        assert {k["kid"] for k in http.get("/oauth2/jwks").json()["keys"]} == {first, second}
        now[0] += timedelta(seconds=2)
        assert [k["kid"] for k in http.get("/oauth2/jwks").json()["keys"]] == [second]
        third = http.portal.call(issuer.rotate)
        # The first key is gone from the database too, not only from the published set.
        remaining = http.portal.call(lambda: issuer.keys.collection.distinct("_id"))
        assert set(remaining) == {second, third}


def test_the_signing_key_survives_a_restart(mongo_uri: str) -> None:
    database = f"t_{uuid.uuid4().hex[:12]}"
    kids = []
    for _ in range(2):
        issuer = TokenIssuer(AuthSettings(issuer=ISSUER))
        with TestClient(issuer_app(issuer, mongo_uri, database), base_url=ISSUER) as http:
            kids.append([k["kid"] for k in http.get("/oauth2/jwks").json()["keys"]])
    assert kids[0] == kids[1] and len(kids[0]) == 1


def test_secrets_are_stored_as_salted_scrypt_hashes(http: TestClient, issuer: TokenIssuer) -> None:
    client = register(http, issuer)
    stored = http.portal.call(issuer.clients.get, client.client_id)
    assert client.client_secret not in str(stored)
    assert stored["secret_hash"].startswith("scrypt$")
