"""Access tokens for tests, signed with the suite's own current key as its token endpoint would
sign them (read from the suite's database once the app has started): every API call in the
tests is authenticated like a real client's."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from pymongo import AsyncMongoClient, MongoClient

from services.tmf.auth.identity import DEFAULT_SCOPES
from services.tmf.auth.issuer import NewClient, TokenIssuer
from services.tmf.auth.settings import DEFAULT_AUDIENCE, AuthSettings
from services.tmf.delivery import SIGNATURE_HEADER, sign
from services.tmf.repository.events import EventStore
from services.tmf.settings import Settings


def token(settings: Settings, *, role: str = "operator", party: str | None = "operator",
          scopes: tuple[str, ...] | None = None, client_id: str = "test-client", lifetime: int = 3600) -> str:
    """A token of the suite whose ``settings`` are given, for a client of this role and party."""
    return token_of(settings.mongodb_uri, settings.database, settings.public_url, role=role, party=party,
                    scopes=scopes, client_id=client_id, lifetime=lifetime)


def token_of(mongodb_uri: str, database: str, issuer: str, *, role: str = "operator",
             party: str | None = "operator", scopes: tuple[str, ...] | None = None,
             client_id: str = "test-client", lifetime: int = 3600) -> str:
    """A token signed with the current key kept in ``database`` by the suite whose public URL
    (its issuer) is ``issuer``: for suites running in another process."""
    deadline = time.monotonic() + 30  # the key is made when the app starts; a safety bound only
    key = None
    with MongoClient(mongodb_uri) as client:
        while key is None and time.monotonic() < deadline:
            key = client[database]["oauth_key"].find_one({"retired": None}, sort=[("created", -1), ("_id", -1)])
            if key is None:
                time.sleep(0.05)
    assert key is not None, "the suite made no signing key; is the app started?"
    private = serialization.load_pem_private_key(key["private_pem"].encode(), password=None)
    now = int(time.time())
    claims = {"iss": issuer, "aud": DEFAULT_AUDIENCE, "sub": client_id, "client_id": client_id,
              "party_id": party, "role": role, "scope": " ".join(scopes or DEFAULT_SCOPES[role]),
              "iat": now, "nbf": now, "exp": now + lifetime, "jti": secrets.token_hex(8)}
    return jwt.encode(claims, private, algorithm="ES256", headers={"kid": key["_id"]})  # type: ignore[arg-type]


def bearer(settings: Settings, **claims: Any) -> dict[str, str]:
    """The Authorization header of :func:`token`."""
    return {"Authorization": f"Bearer {token(settings, **claims)}"}


def consumer_secret(settings: Settings, consumer: str) -> str:
    """The secret the suite's consumer ``consumer`` (its progress key) verifies deliveries by."""
    async def read() -> str:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(settings.mongodb_uri)
        try:
            return await EventStore(client[settings.database]).consumer_secret(consumer)
        finally:
            await client.close()

    return asyncio.run(read())


def signed(secret: str, event: Any) -> tuple[bytes, dict[str, str]]:
    """The body and headers of a delivery of ``event`` signed with ``secret``, as a hub sends it."""
    body = json.dumps(event).encode()
    return body, {"Content-Type": "application/json", SIGNATURE_HEADER: sign(secret, int(time.time()), body)}


def register_client(settings: Settings, name: str, *, role: str = "operator", party: str = "operator",
                    scopes: tuple[str, ...] | None = None) -> NewClient:
    """A client registered with the built-in issuer of the suite whose ``settings`` are given,
    as ``sqm client add`` registers it: it gets its tokens from that suite's token endpoint."""
    async def register() -> NewClient:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(settings.mongodb_uri)
        try:
            issuer = TokenIssuer(AuthSettings(issuer=settings.public_url))
            issuer.connect(client[settings.database])
            await issuer.clients.ensure_indexes()
            return await issuer.register(name, party, role, scopes)
        finally:
            await client.close()

    return asyncio.run(register())


def mint(mongodb_uri: str, database: str, issuer: str, *, party_id: str, role: str = "operator") -> str:
    """A token for a suite reached by its database and issuer URL (benchmarks use it)."""
    return token_of(mongodb_uri, database, issuer, role=role, party=party_id)
