"""The suite's own services are clients like any other: when one calls another (the SLA service
checking covered services in the inventory, the problem service asking for impact graphs and
subscribing to hubs) it sends a bearer token of its own.

Under the all-in-one server the built-in issuer is in the same process and mints the token
directly; a service deployed on its own gets one with the client-credentials grant from
``SQM_TOKEN_URL`` using ``SQM_CLIENT_ID`` / ``SQM_CLIENT_SECRET``. Tokens are kept until shortly
before they expire.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass

import httpx
import structlog

from .. import outgoing
from .identity import SCOPES, SERVICE
from .issuer import TokenIssuer

log = structlog.get_logger("tmf.auth.service")
# A token is renewed when less than this is left of it.
RENEW_MARGIN_SECONDS = 30.0


class CredentialsUnavailable(RuntimeError):
    """The service has no way to get a token (nothing configured, or the issuer refused)."""


@dataclass(frozen=True)
class ClientCredentials:
    client_id: str
    client_secret: str
    token_url: str

    @classmethod
    def from_env(cls) -> ClientCredentials | None:
        client_id = os.environ.get("SQM_CLIENT_ID", "")
        secret = os.environ.get("SQM_CLIENT_SECRET", "")
        token_url = os.environ.get("SQM_TOKEN_URL", "")
        if not (client_id and secret and token_url):
            return None
        return cls(client_id, secret, token_url)


class ServiceCredentials:
    """Authorization headers for calls between the suite's services."""

    def __init__(self, name: str, operator_party: str, *, issuer: TokenIssuer | None = None,
                 credentials: ClientCredentials | None = None) -> None:
        self.name = name
        self.operator_party = operator_party
        self.issuer = issuer
        self.credentials = credentials
        self._token: str | None = None
        self._expires_at = 0.0
        self._lock = asyncio.Lock()

    @property
    def configured(self) -> bool:
        return self.issuer is not None or self.credentials is not None

    async def headers(self) -> dict[str, str]:
        """``{"Authorization": "Bearer ..."}``; raises :class:`CredentialsUnavailable`."""
        if self._token is None or time.monotonic() > self._expires_at - RENEW_MARGIN_SECONDS:
            async with self._lock:
                if self._token is None or time.monotonic() > self._expires_at - RENEW_MARGIN_SECONDS:
                    self._token, lifetime = await self._fetch()
                    self._expires_at = time.monotonic() + lifetime
        return {"Authorization": f"Bearer {self._token}"}

    async def _fetch(self) -> tuple[str, float]:
        if self.issuer is not None:
            client = {"_id": f"tmf-sqm-{self.name}", "party_id": self.operator_party, "role": SERVICE}
            token, lifetime = await self.issuer.issue(client, SCOPES)
            return token, float(lifetime)
        if self.credentials is None:
            raise CredentialsUnavailable(
                f"{self.name} has no credentials to call the other services: set SQM_CLIENT_ID, "
                "SQM_CLIENT_SECRET and SQM_TOKEN_URL")
        try:
            async with outgoing.client(10) as http:
                answer = await http.post(self.credentials.token_url, data={"grant_type": "client_credentials"},
                                         auth=(self.credentials.client_id, self.credentials.client_secret))
        except httpx.HTTPError as exc:
            raise CredentialsUnavailable(f"the token endpoint cannot be reached: {type(exc).__name__}") from None
        if answer.status_code != 200:
            raise CredentialsUnavailable(f"the token endpoint refused the service's credentials ({answer.status_code})")
        body = answer.json()
        return str(body["access_token"]), float(body.get("expires_in", 60))


class ServiceAuth(httpx.Auth):
    """httpx authentication with the service's own bearer token, fetched (and renewed) as needed."""

    def __init__(self, credentials: ServiceCredentials) -> None:
        self.credentials = credentials

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        request.headers.update(await self.credentials.headers())
        yield request
