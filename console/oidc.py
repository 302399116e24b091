"""Logging in with an OpenID Connect provider: the authorization-code flow with PKCE (S256),
``state`` bound to the browser and ``nonce`` bound to the ID token, which is validated with the
suite's token validator (signature from the provider's keys, issuer, audience, expiry)."""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import httpx
from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase

from services.tmf.auth.identity import CLIENT_ROLES
from services.tmf.auth.settings import AuthSettings
from services.tmf.auth.validator import TokenValidator
from services.tmf.errors import TmfError

from .settings import OidcSettings

PENDING = "console_login"
# How long a person has at the provider between leaving and coming back.
PENDING_SECONDS = 600
CALLBACK_PATH = "/console/oidc/callback"


class LoginRefused(Exception):
    """The provider's answer cannot log anyone in; the message says why, for the login page."""


@dataclass(frozen=True)
class Identity:
    subject: str
    party_id: str
    role: str
    access_token: str


def _challenge(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


def _key(state: str) -> str:
    return hashlib.sha256(state.encode()).hexdigest()


class OidcLogin:
    def __init__(self, settings: OidcSettings, public_url: str, database: AsyncDatabase[dict[str, Any]]) -> None:
        self.settings = settings
        self.redirect_uri = f"{public_url}{CALLBACK_PATH}"
        self.pending = database[PENDING]
        self._metadata: dict[str, Any] | None = None
        self._validator: TokenValidator | None = None
        self.http = httpx.AsyncClient(timeout=10.0)

    async def close(self) -> None:
        await self.http.aclose()

    async def ensure_indexes(self) -> None:
        await self.pending.create_index([("expires", ASCENDING)], expireAfterSeconds=0)

    async def metadata(self) -> dict[str, Any]:
        if self._metadata is None:
            answer = await self.http.get(f"{self.settings.issuer}/.well-known/openid-configuration")
            answer.raise_for_status()
            found = answer.json()
            if found.get("issuer", "").rstrip("/") != self.settings.issuer:
                raise LoginRefused("the provider's metadata names another issuer")
            self._metadata = found
            self._validator = TokenValidator(AuthSettings(
                issuer=found["issuer"], builtin_issuer=False, audience=self.settings.client_id,
                jwks_url=found["jwks_uri"], party_claim=self.settings.party_claim,
                role_claim=self.settings.role_claim))
        return self._metadata

    async def start(self, browser: str) -> str:
        """Where to send the browser; ``browser`` is the random value of its login cookie."""
        metadata = await self.metadata()
        state, nonce, verifier = secrets.token_urlsafe(24), secrets.token_urlsafe(24), secrets.token_urlsafe(48)
        await self.pending.insert_one({"_id": _key(state), "browser": browser, "nonce": nonce, "verifier": verifier,
                                       "expires": datetime.now(UTC) + timedelta(seconds=PENDING_SECONDS)})
        query = urlencode({"response_type": "code", "client_id": self.settings.client_id,
                           "redirect_uri": self.redirect_uri, "scope": self.settings.scope, "state": state,
                           "nonce": nonce, "code_challenge": _challenge(verifier), "code_challenge_method": "S256"})
        return f"{metadata['authorization_endpoint']}?{query}"

    async def finish(self, browser: str | None, state: str, code: str) -> Identity:
        if not state or not code or len(state) > 256 or len(code) > 4096:
            raise LoginRefused("the provider sent back no usable state or code")
        pending = await self.pending.find_one_and_delete({"_id": _key(state)})
        if (pending is None or pending["expires"] <= datetime.now(UTC) or not browser
                or not secrets.compare_digest(pending["browser"], browser)):
            raise LoginRefused("this login was not started in this browser, or took too long; start again")
        metadata = await self.metadata()
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": self.redirect_uri,
                "client_id": self.settings.client_id, "code_verifier": pending["verifier"]}
        if self.settings.client_secret:
            answer = await self.http.post(metadata["token_endpoint"], data=form,
                                          auth=(self.settings.client_id, self.settings.client_secret))
        else:
            answer = await self.http.post(metadata["token_endpoint"], data=form)
        if answer.status_code != 200:
            raise LoginRefused(f"the provider refused the code ({answer.status_code})")
        tokens = answer.json()
        id_token, access_token = tokens.get("id_token"), tokens.get("access_token")
        if not isinstance(id_token, str) or not isinstance(access_token, str):
            raise LoginRefused("the provider sent no ID token or access token")
        assert self._validator is not None
        try:
            claims, caller = await self._validator.verify(id_token)
        except TmfError as exc:
            raise LoginRefused(f"the ID token is not valid: {exc.message}") from None
        if not isinstance(claims.get("nonce"), str) or not secrets.compare_digest(claims["nonce"], pending["nonce"]):
            raise LoginRefused("the ID token's nonce is not the one this login sent")
        if caller.role not in CLIENT_ROLES or caller.party_id is None:
            raise LoginRefused("the ID token names no party, or no operator, partner or customer role")
        return Identity(str(claims.get("sub") or caller.client_id), caller.party_id, caller.role, access_token)
