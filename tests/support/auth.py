"""Access tokens for tests: signed by the suite's own issuer with the key it keeps in its
database, so a test calls the API as a real client would, without a token round trip."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from pymongo import AsyncMongoClient

from services.tmf.auth.identity import DEFAULT_SCOPES, OPERATOR
from services.tmf.auth.issuer import TokenIssuer
from services.tmf.auth.settings import AuthSettings
from services.tmf.settings import Settings


async def mint(uri: str, database: str, issuer: str, party: str, role: str, lifetime_seconds: int = 3600) -> str:
    """A token for ``party`` in ``role`` (that role's default scopes), valid ``lifetime_seconds``.
    The suite must have started once on ``database`` (it makes its signing key then)."""
    auth = replace(AuthSettings(), issuer=issuer, token_lifetime_seconds=lifetime_seconds)
    tokens = TokenIssuer(auth)
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(uri)
    try:
        tokens.connect(client[database])  # type: ignore[arg-type]
        token, _ = await tokens.issue({"_id": f"test-{role}-{party}", "party_id": party, "role": role},
                                      DEFAULT_SCOPES[role])
    finally:
        await client.close()
    return token


def bearer(settings: Settings, party: str | None = None, role: str = OPERATOR) -> dict[str, str]:
    """The Authorization header of a ``role`` client of ``party`` (the operator by default)."""
    token = asyncio.run(mint(settings.mongodb_uri, settings.database, settings.public_url,
                             party or settings.operator_party_id, role))
    return {"Authorization": f"Bearer {token}"}
