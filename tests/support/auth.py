"""Access tokens for tests and benchmarks: signed with the built-in issuer's key, read from the
suite's database once the suite has started (its lifespan creates the first key)."""

from __future__ import annotations

import secrets
import time
from typing import Any

import jwt
from pymongo import DESCENDING, MongoClient

from services.tmf.auth.identity import DEFAULT_SCOPES, OPERATOR
from services.tmf.auth.settings import DEFAULT_AUDIENCE
from services.tmf.repository.oauth import KEY_COLLECTION
from services.tmf.settings import Settings

# Long enough for a benchmark run; the validator only requires exp, iss and aud.
LIFETIME_SECONDS = 4 * 3600


def mint(mongodb_uri: str, database: str, issuer: str, *, party_id: str, role: str = OPERATOR,
         scopes: tuple[str, ...] | None = None) -> str:
    """A token the suite serving ``issuer`` on ``database`` accepts."""
    with MongoClient(mongodb_uri, serverSelectionTimeoutMS=5000) as client:
        key = client[database][KEY_COLLECTION].find_one(
            {"retired": None}, sort=[("created", DESCENDING), ("_id", DESCENDING)])
    if key is None:
        raise RuntimeError(f"no signing key in {database}: start the suite first")
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": issuer, "aud": DEFAULT_AUDIENCE, "sub": f"test-{role}", "client_id": f"test-{role}",
        "party_id": party_id, "role": role, "scope": " ".join(scopes or DEFAULT_SCOPES[role]),
        "iat": now, "nbf": now, "exp": now + LIFETIME_SECONDS, "jti": secrets.token_hex(8),
    }
    return jwt.encode(claims, key["private_pem"], algorithm=key["alg"], headers={"kid": key["_id"]})


def bearer(settings: Settings, *, party_id: str | None = None, role: str = OPERATOR) -> dict[str, str]:
    """The Authorization header of a caller of the suite configured by ``settings``
    (the operator unless told otherwise)."""
    token = mint(settings.mongodb_uri, settings.database, settings.public_url,
                 party_id=party_id or settings.operator_party_id, role=role)
    return {"Authorization": f"Bearer {token}"}
