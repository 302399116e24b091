"""Access tokens for tests: minted with the signing key the suite's built-in issuer keeps in its
database, so call ``bearer`` once the app has started (its issuer made the key)."""

from __future__ import annotations

import asyncio
from typing import Any

from pymongo import AsyncMongoClient

from services.tmf.auth import SCOPES, AuthSettings, TokenIssuer
from services.tmf.settings import Settings


def bearer(settings: Settings, party_id: str = "operator", role: str = "operator") -> dict[str, str]:
    """An Authorization header for a client of ``role`` acting for ``party_id``."""

    async def mint() -> str:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(settings.mongodb_uri)
        try:
            issuer = TokenIssuer(AuthSettings.from_env(issuer=settings.public_url, builtin_issuer=True))
            issuer.connect(client[settings.database])
            token, _ = await issuer.issue({"_id": f"test-{role}", "party_id": party_id, "role": role}, SCOPES)
            return token
        finally:
            await client.close()

    return {"Authorization": f"Bearer {asyncio.run(mint())}"}
