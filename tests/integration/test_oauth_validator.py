"""Bearer token validation against the built-in issuer served on loopback: discovery of the key
set, every way a token can be wrong, key rotation, and the mapping of claims to a caller."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from pymongo import AsyncMongoClient

from services.tmf.auth import AuthSettings, Caller, IssuerUnavailable, TokenIssuer, TokenValidator
from services.tmf.auth.issuer import issuer_app
from services.tmf.embedded import free_port
from services.tmf.errors import Unauthorized
from tests.support.server import serve

T = TypeVar("T")


@dataclass(frozen=True)
class Served:
    url: str
    settings: AuthSettings
    mongo_uri: str
    database: str

    def with_issuer(self, action: Callable[[TokenIssuer], Awaitable[T]]) -> T:
        """Run ``action`` on an issuer sharing the served one's database (clients, keys)."""

        async def run() -> T:
            client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(self.mongo_uri)
            try:
                issuer = TokenIssuer(self.settings)
                issuer.connect(client[self.database])
                return await action(issuer)
            finally:
                await client.close()

        return asyncio.run(run())

    def signing_key(self) -> tuple[str, Any]:
        async def load(issuer: TokenIssuer) -> dict[str, Any]:
            document = await issuer.keys.signing_key()
            assert document is not None
            return document

        document = self.with_issuer(load)
        return document["_id"], serialization.load_pem_private_key(document["private_pem"].encode(), password=None)


@pytest.fixture(scope="module")
def served(mongo_uri: str) -> Iterator[Served]:
    port = free_port()
    settings = AuthSettings(issuer=f"http://127.0.0.1:{port}", audience="tmf-sqm")
    database = f"t_{uuid.uuid4().hex[:12]}"
    with serve(issuer_app(TokenIssuer(settings), mongo_uri, database), port) as url:
        yield Served(url, settings, mongo_uri, database)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def claims(served: Served, **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    values = {"iss": served.url, "aud": "tmf-sqm", "sub": "c1", "client_id": "c1", "party_id": "partner-a",
              "role": "partner", "scope": "serviceInventory.read", "iat": now, "nbf": now, "exp": now + 300}
    values.update(overrides)
    return {k: v for k, v in values.items() if v is not None}


def sign(served: Served, payload: dict[str, Any], kid: str | None = None) -> str:
    signing_kid, key = served.signing_key()
    return jwt.encode(payload, key, algorithm="ES256", headers={"kid": kid or signing_kid})


def authenticate(validator: TokenValidator, token: str) -> Caller:
    return asyncio.run(validator.authenticate(f"Bearer {token}"))


def rejected(validator: TokenValidator, header: str | None) -> Unauthorized:
    with pytest.raises(Unauthorized) as caught:
        asyncio.run(validator.authenticate(header))
    error = caught.value
    assert error.status == 401
    assert error.body()["status"] == "401" and error.body()["@type"] == "Error"
    assert error.headers is not None
    return error


def invalid(validator: TokenValidator, token: str, fragment: str) -> None:
    error = rejected(validator, f"Bearer {token}")
    challenge = error.headers["WWW-Authenticate"] if error.headers else ""
    assert challenge.startswith('Bearer realm="tmf-sqm", error="invalid_token", error_description="')
    assert fragment in challenge and fragment in error.message


def test_a_token_from_the_token_endpoint_is_accepted_through_discovery(served: Served) -> None:
    client = served.with_issuer(lambda issuer: issuer.register("bss", "acme", "customer"))
    response = httpx.post(f"{served.url}/oauth2/token", data={"grant_type": "client_credentials"},
                          auth=(client.client_id, client.client_secret))
    assert response.status_code == 200, response.text
    validator = TokenValidator(served.settings)
    token = response.json()["access_token"]
    caller = authenticate(validator, token)
    assert caller == Caller(party_id="acme", role="customer", client_id=client.client_id, scopes=frozenset(
        {"serviceInventory.read", "slaManagement.read", "alarmManagement.read", "serviceProblemManagement.read"}))
    # The key set is fetched once and then kept: no network per request.
    for _ in range(5):
        authenticate(validator, token)
    assert validator.fetches == 1


def test_a_configured_jwks_url_skips_discovery(served: Served) -> None:
    # The issuer named here publishes no discovery document; only the explicit URL can work.
    settings = replace(served.settings, issuer="https://idp.invalid/realms/x", jwks_url=f"{served.url}/oauth2/jwks")
    caller = authenticate(TokenValidator(settings), sign(served, claims(served, iss=settings.issuer)))
    assert caller.party_id == "partner-a"


def test_expiry_and_not_before_honour_the_clock_skew(served: Served) -> None:
    validator = TokenValidator(served.settings)  # 30 s skew
    now = int(time.time())
    assert authenticate(validator, sign(served, claims(served, exp=now - 10))).role == "partner"
    invalid(validator, sign(served, claims(served, exp=now - 60)), "expired")
    assert authenticate(validator, sign(served, claims(served, nbf=now + 10))).role == "partner"
    invalid(validator, sign(served, claims(served, nbf=now + 60)), "not valid yet")
    invalid(validator, sign(served, claims(served, exp=None)), "lacks the exp claim")


def test_wrong_issuer_and_wrong_audience_are_refused(served: Served) -> None:
    validator = TokenValidator(served.settings)
    invalid(validator, sign(served, claims(served, iss="http://evil.example")), "another issuer")
    invalid(validator, sign(served, claims(served, aud="another-api")), "audience")
    invalid(validator, sign(served, claims(served, aud=None)), "lacks the aud claim")


def _segments(document: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(document).encode()).rstrip(b"=").decode()


def test_unsigned_and_symmetric_tokens_are_refused(served: Served) -> None:
    validator = TokenValidator(served.settings)
    kid, key = served.signing_key()
    unsigned = f"{_segments({'alg': 'none', 'kid': kid})}.{_segments(claims(served, role='operator'))}."
    invalid(validator, unsigned, "algorithm 'none' is not accepted")
    # The classic confusion: HS256 keyed with the issuer's public key, which anyone can fetch.
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    signing_input = f"{_segments({'alg': 'HS256', 'kid': kid})}.{_segments(claims(served, role='operator'))}"
    mac = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    forged = f"{signing_input}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"
    invalid(validator, forged, "algorithm 'HS256' is not accepted")
    # ES256 is the right family, but RS256 names a key type this key is not.
    header = _segments({"alg": "RS256", "kid": kid})
    invalid(validator, f"{header}.{_segments(claims(served))}.c2ln", "does not belong to algorithm RS256")


def test_a_tampered_payload_is_refused(served: Served) -> None:
    validator = TokenValidator(served.settings)
    header, _, signature = sign(served, claims(served)).split(".")
    tampered = f"{header}.{_segments(claims(served, role='operator', party_id=None))}.{signature}"
    invalid(validator, tampered, "signature does not verify")


@pytest.mark.parametrize(("header", "challenge"), [
    (None, 'Bearer realm="tmf-sqm"'),
    ("", 'Bearer realm="tmf-sqm"'),
    ("Basic dXNlcjpwdw==", 'Bearer realm="tmf-sqm"'),
    ("Bearer ", 'error="invalid_token"'),
    ("Bearer not.a.jwt", 'error="invalid_token"'),
    ("Bearer " + "a" * 20_000, 'error="invalid_token"'),
])
def test_missing_and_malformed_headers_get_a_bearer_challenge(served: Served, header: str | None,
                                                              challenge: str) -> None:
    error = rejected(TokenValidator(served.settings), header)
    assert error.headers is not None and challenge in error.headers["WWW-Authenticate"]


def test_an_unknown_key_id_refetches_once_and_accepts_a_rotated_key(served: Served) -> None:
    clock = Clock()
    validator = TokenValidator(served.settings, clock=clock)  # refetch at most every 30 s
    old_kid, old_key = served.signing_key()
    authenticate(validator, sign(served, claims(served)))
    assert validator.fetches == 1
    new_kid = served.with_issuer(lambda issuer: issuer.rotate())
    assert new_kid != old_kid
    clock.now += 40
    assert authenticate(validator, sign(served, claims(served))).role == "partner"
    assert validator.fetches == 2
    # A flood of made-up key ids costs the issuer nothing more within the refetch interval.
    for index in range(20):
        invalid(validator, sign(served, claims(served), kid=f"bogus-{index}"), "does not publish")
    assert validator.fetches == 2
    clock.now += 31
    invalid(validator, sign(served, claims(served), kid="bogus-late"), "does not publish")
    assert validator.fetches == 3
    # Tokens signed with the retired key stay valid while they live.
    old_token = jwt.encode(claims(served), old_key, algorithm="ES256", headers={"kid": old_kid})
    assert authenticate(validator, old_token).role == "partner"


def test_keycloak_style_claims_map_to_the_caller(served: Served) -> None:
    settings = replace(served.settings, role_claim="realm_access.roles", party_claim="tenant.id", scope_claim="scp")
    validator = TokenValidator(settings)
    token = sign(served, claims(served, role=None, party_id=None, client_id=None, scope=None, azp="bss-gateway",
                                realm_access={"roles": ["offline_access", "uma_authorization", "partner"]},
                                tenant={"id": "partner-b"}, scp=["serviceInventory.read", "profile"]))
    assert authenticate(validator, token) == Caller(
        party_id="partner-b", role="partner", client_id="bss-gateway",
        scopes=frozenset({"serviceInventory.read", "profile"}))
    no_known_role = sign(served, claims(served, realm_access={"roles": ["offline_access"]}))
    invalid(validator, no_known_role, "realm_access.roles claim names none of the roles")


def test_party_and_role_claims_are_checked(served: Served) -> None:
    validator = TokenValidator(served.settings)
    invalid(validator, sign(served, claims(served, role="admin")), "names none of the roles")
    invalid(validator, sign(served, claims(served, party_id=None)), "must name its party")
    invalid(validator, sign(served, claims(served, party_id="$where")), "not a valid party id")
    operator = authenticate(validator, sign(served, claims(served, role="operator", party_id=None, client_id=None)))
    assert operator.party_id is None and operator.client_id == "c1"  # sub when there is no client_id
    assert operator.role == "operator"
    assert operator.scopes == frozenset({"serviceInventory.read"})


def test_an_unreachable_issuer_is_a_503_not_a_401(served: Served) -> None:
    settings = replace(served.settings, issuer=f"http://127.0.0.1:{free_port()}")
    validator = TokenValidator(settings)
    token = sign(served, claims(served, iss=settings.issuer))
    with pytest.raises(IssuerUnavailable) as caught:
        asyncio.run(validator.authenticate(f"Bearer {token}"))
    assert caught.value.status == 503


def test_an_issuer_without_discovery_document_is_reported(served: Served) -> None:
    settings = replace(served.settings, issuer=f"{served.url}/elsewhere")
    with pytest.raises(IssuerUnavailable, match="no discovery document"):
        asyncio.run(TokenValidator(settings).authenticate(f"Bearer {sign(served, claims(served))}"))


def test_the_issuer_itself_can_be_the_key_source(served: Served) -> None:
    token = sign(served, claims(served))

    async def scenario() -> Caller:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(served.mongo_uri)
        try:
            issuer = TokenIssuer(served.settings)
            issuer.connect(client[served.database])
            validator = TokenValidator(served.settings, key_source=issuer.jwks)
            return await validator.authenticate(f"Bearer {token}")
        finally:
            await client.close()

    assert asyncio.run(scenario()).party_id == "partner-a"
