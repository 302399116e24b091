"""The console's only way to the data: the suite's own APIs, over HTTP through the gateway, with
a bearer token standing for the logged-in person's party and role. Whatever a page shows, the
APIs chose to show that party; the console never reads the APIs' collections itself."""

from __future__ import annotations

import time
from typing import Any

import httpx

from services.tmf.auth.identity import DEFAULT_SCOPES
from services.tmf.auth.issuer import TokenIssuer

from .store import Session

INVENTORY = "/tmf-api/serviceInventory/v4"
SLA = "/tmf-api/slaManagement/v4"
ALARM = "/tmf-api/alarmManagement/v4"
PROBLEM = "/tmf-api/serviceProblemManagement/v4"
# A minted token is used until this long before it expires.
RENEW_MARGIN_SECONDS = 30.0


class SuiteError(Exception):
    """An API answered with an error; ``message`` is its TMF Error message, for the page."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Suite:
    """Calls to the APIs on behalf of sessions, on one pooled HTTP client."""

    def __init__(self, api_url: str, issuer: TokenIssuer | None) -> None:
        self.issuer = issuer
        self.http = httpx.AsyncClient(base_url=api_url, timeout=httpx.Timeout(30.0, connect=5.0),
                                      limits=httpx.Limits(max_connections=50))
        # (user, party, role) -> (token, monotonic time to renew it)
        self._tokens: dict[tuple[str, str, str], tuple[str, float]] = {}

    async def close(self) -> None:
        await self.http.aclose()

    async def _token(self, session: Session) -> str:
        if self.issuer is None:
            if session.access_token is None:
                raise SuiteError(401, "this session has no access token; log in again")
            return session.access_token
        key = (session.user, session.party_id, session.role)
        cached = self._tokens.get(key)
        if cached is not None and time.monotonic() < cached[1]:
            return cached[0]
        # The token names the person as its client, so the audit line says who acted.
        client = {"_id": f"console:{session.user}", "party_id": session.party_id, "role": session.role}
        token, lifetime = await self.issuer.issue(client, DEFAULT_SCOPES[session.role])
        if len(self._tokens) > 10_000:
            self._tokens.clear()
        self._tokens[key] = (token, time.monotonic() + lifetime - RENEW_MARGIN_SECONDS)
        return token

    async def _send(self, session: Session, method: str, path: str, *, params: dict[str, Any] | None = None,
                    json: Any = None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {await self._token(session)}"}
        return await self.http.request(method, path, params=params, json=json, headers=headers)

    @staticmethod
    def _error(response: httpx.Response) -> SuiteError:
        try:
            message = str(response.json().get("message") or response.reason_phrase)
        except ValueError:
            message = response.reason_phrase
        return SuiteError(response.status_code, message)

    async def request(self, session: Session, method: str, path: str, *, params: dict[str, Any] | None = None,
                      json: Any = None, missing_ok: bool = False) -> Any:
        response = await self._send(session, method, path, params=params, json=json)
        if response.status_code == 404 and missing_ok:
            return None
        if response.status_code >= 400:
            raise self._error(response)
        return response.json() if response.content else None

    async def get(self, session: Session, path: str, **params: Any) -> Any:
        return await self.request(session, "GET", path, params=params or None)

    async def find(self, session: Session, path: str, **params: Any) -> Any:
        """A GET that answers None for a 404 (a resource this party may not see is a 404 too)."""
        return await self.request(session, "GET", path, params=params or None, missing_ok=True)

    async def post(self, session: Session, path: str, body: Any) -> Any:
        return await self.request(session, "POST", path, json=body)

    async def document(self, session: Session, path: str, **params: Any) -> httpx.Response:
        """A GET answered with a file (a report's CSV or PDF), opened as a stream: the caller
        passes its bytes on as they come and closes it (``aclose``) when done."""
        request = self.http.build_request("GET", path, params=params or None,
                                          headers={"Authorization": f"Bearer {await self._token(session)}"})
        response = await self.http.send(request, stream=True)
        if response.status_code >= 400:
            try:
                await response.aread()
            finally:
                await response.aclose()
            raise self._error(response)
        return response
