"""Resolving the call, once per request: the bearer token is validated (the services are OAuth2
resource servers and trust no identity asserted by a header or by the gateway), the operation's
scope is checked, and the :class:`~services.tmf.call.Call` is put where handlers find it.

Open without a token: the API documents and explorers, and the listener endpoints, which take
only events signed with the secret of the suite's own subscription (checked by the listener).
Health probes, metrics and the token endpoints are outside the API base paths.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from .auth.identity import CUSTOMER, scope_for
from .auth.validator import TokenValidator
from .call import Call, utc_now
from .errors import JSON, Forbidden, TmfError, Unauthorized, error_bytes

CALL = "call"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_OPEN_SUFFIXES = ("/openapi.json", "/openapi.yaml")
_OPEN_PREFIXES = ("/ui", "/listener/")


def call_of(request: Request) -> Call:
    """The call the authentication middleware resolved for this request."""
    call = request.scope.get("state", {}).get(CALL)
    if not isinstance(call, Call):
        # Only an operation the middleware leaves open could get here, and those never ask.
        raise Unauthorized("this operation needs an access token: send Authorization: Bearer <token>",
                           challenge='Bearer realm="tmf-sqm"')
    return call


class AuthenticationMiddleware:
    """``apis`` are (base path, API name) pairs; a request under a base path needs a valid token
    with the API's read scope (safe methods) or write scope (the rest). Customers only read."""

    def __init__(self, app: ASGIApp, apis: Sequence[tuple[str, str]], validator: Callable[[], TokenValidator],
                 clock: Callable[[], datetime] = utc_now) -> None:
        self.app = app
        self.apis = sorted(apis, key=lambda pair: len(pair[0]), reverse=True)
        self.validator = validator
        self.clock = clock

    def _api(self, path: str) -> tuple[str, str] | None:
        for base_path, name in self.apis:
            if path.startswith(base_path) and (len(path) == len(base_path) or path[len(base_path)] == "/"):
                rest = path[len(base_path):]
                if rest.endswith(_OPEN_SUFFIXES) or rest.startswith(_OPEN_PREFIXES):
                    return None
                return base_path, name
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        api = self._api(scope["path"])
        if api is None:
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        try:
            caller = await self.validator().authenticate(request.headers.get("authorization"))
            method = scope["method"].upper()
            # A hub subscription is a way of reading: managing one's own needs the read scope,
            # and customers may have theirs too.
            reading = method in _SAFE_METHODS or _is_hub(scope["path"][len(api[0]):])
            caller.require_scope(scope_for(api[1], "GET" if reading else method))
            if caller.role == CUSTOMER and not reading:
                raise Forbidden("customers have read-only access to the APIs")
        except TmfError as exc:
            await _refuse(exc, scope, receive, send)
            return
        state: dict[str, Any] = scope.setdefault("state", {})
        state[CALL] = Call(caller.party_id, caller.role, caller.client_id, caller.scopes,
                           request_id=state.get("request_id"), traceparent=request.headers.get("traceparent"),
                           clock=self.clock)
        await self.app(scope, receive, send)


def _is_hub(rest: str) -> bool:
    return rest == "/hub" or rest.startswith("/hub/")


async def _refuse(exc: TmfError, scope: Scope, receive: Receive, send: Send) -> None:
    body = error_bytes(exc.status, exc.reason, exc.message)
    headers = [(b"content-type", JSON.encode()), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (exc.headers or {}).items()]
    await send({"type": "http.response.start", "status": exc.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
