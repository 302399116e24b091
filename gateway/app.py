"""The gateway as an ASGI app: CORS, rate limits per client, an audit line per call, the
catalogue and docs, the token endpoints, and routing of every TMF base path to the process
that serves it (or, under the all-in-one ``sqm serve``, to the suite's app in this process)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from pymongo import AsyncMongoClient
from starlette.applications import Starlette
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from console.app import PREFIX as CONSOLE_PREFIX
from console.app import Console
from services.tmf import metrics, telemetry
from services.tmf.auth.identity import SERVICE
from services.tmf.auth.issuer import TokenIssuer
from services.tmf.auth.validator import TokenValidator
from services.tmf.errors import TmfError

from . import telemetry as gateway_telemetry
from .portal import ApiEntry, catalogue, docs_page
from .proxy import Pool, Upstream, route_table, tmf_error
from .ratelimit import MongoCounters, RateLimits
from .settings import GatewaySettings

log = structlog.get_logger("gateway")
audit = structlog.get_logger("gateway.audit")


@dataclass(frozen=True)
class Identity:
    """Who a valid bearer token says is calling; the gateway uses it only to key rate limits and
    to write the audit line. The services validate the token again themselves."""

    client_id: str
    party_id: str | None
    role: str


Identify = Callable[[str | None], Awaitable[Identity | None]]


def identify_with(validator: TokenValidator) -> Identify:
    """Who a bearer token names, checked with ``validator``; None for a missing or bad token
    (the service behind answers that call with its own 401)."""

    async def identify(authorization: str | None) -> Identity | None:
        if not authorization:
            return None
        try:
            caller = await validator.authenticate(authorization)
        except TmfError:
            return None
        return Identity(caller.client_id, caller.party_id, caller.role)

    return identify
# Probes and the token endpoint's metadata are never limited; the token endpoint itself is, by address.
UNLIMITED = ("/health", "/.well-known/", "/oauth2/jwks")


async def _nobody(authorization: str | None) -> Identity | None:
    return None


class Gateway:
    """The routing core: ``/tmf-api/...`` to an upstream, the rest to the gateway's own routes."""

    def __init__(self, settings: GatewaySettings, apis: Sequence[ApiEntry], own: ASGIApp,
                 rate_limit_store: tuple[str, str] | None, identify: Identify, local_app: ASGIApp | None,
                 issuer: tuple[TokenIssuer, str, str] | None = None, console: Console | None = None) -> None:
        self.settings = settings
        self.console = console
        self.own = own
        self.rate_limit_store = rate_limit_store
        self.issuer = issuer
        self._issuer_mongo: AsyncMongoClient[dict[str, Any]] | None = None
        self.limits: RateLimits | None = None
        self._mongo: AsyncMongoClient[dict[str, Any]] | None = None
        self.identify = identify
        self.local_app = local_app
        self.client = Pool(settings.connect_timeout_seconds, settings.read_timeout_seconds, settings.max_connections)
        base_paths = {a.name: a.base_path for a in apis}
        self.routes = route_table(base_paths, {
            name: Upstream(name, url, settings.public_url, self.client) for name, url in settings.upstreams.items()})

    def upstream_for(self, path: str) -> Upstream | None:
        for base_path, upstream in self.routes:
            if path == base_path or path.startswith(base_path + "/"):
                found: Upstream = upstream
                return found
        return None

    async def startup(self) -> None:
        if self.rate_limit_store is not None:
            uri, database = self.rate_limit_store
            self._mongo = AsyncMongoClient(uri, serverSelectionTimeoutMS=5000)
            self.limits = RateLimits(MongoCounters(self._mongo[database]))
            self.limits.start()
        if self.issuer is not None:
            issuer, uri, database = self.issuer
            self._issuer_mongo = AsyncMongoClient(uri, serverSelectionTimeoutMS=5000, tz_aware=True)
            issuer.connect(self._issuer_mongo[database])
            await issuer.start()
        if self.console is not None:
            await self.console.startup()

    async def shutdown(self) -> None:
        if self.console is not None:
            await self.console.shutdown()
        if self.limits is not None:
            await self.limits.stop()
        await self.client.aclose()
        for client in (self._mongo, self._issuer_mongo):
            if client is not None:
                await client.close()

    async def lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The gateway's own start and stop around the suite's (all-in-one) or alone."""
        await self.startup()

        async def send_through(message: Any) -> None:
            if message["type"].startswith("lifespan.shutdown."):
                await self.shutdown()
            await send(message)

        if self.local_app is not None:
            await self.local_app(scope, receive, send_through)
            return
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send_through({"type": "lifespan.shutdown.complete"})
                return

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.lifespan(scope, receive, send)
            return
        if scope["type"] != "http":
            await (self.local_app or self.own)(scope, receive, send)
            return
        path: str = scope["path"]
        method: str = scope["method"]
        authorization: str | None = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value.decode("latin-1")
                break
        identity = await self.identify(authorization)
        # The suite's own services (calling each other, or delivering events to each other's
        # listeners through the gateway) are not limited: their pace is the partners' traffic.
        limited = identity is None or identity.role != SERVICE
        if self.limits is not None and limited and not path.startswith(UNLIMITED):
            if identity is not None:
                verdict = await self.limits.hit(self.settings.rate_limit, f"client:{identity.client_id}")
            else:
                client = scope.get("client")
                address = client[0] if client else "unknown"
                verdict = await self.limits.hit(self.settings.anonymous_rate_limit, f"address:{address}")
            if not verdict.allowed:
                response = tmf_error(429, "Too many requests",
                                     f"rate limit {verdict.limit} exceeded; retry after {verdict.retry_after} s",
                                     {"Retry-After": str(verdict.retry_after)})
                await response(scope, receive, send)
                self._audit(identity, method, path, 429)
                return
        status = 500
        # A proxied call goes straight from the scope to the upstream, without Starlette's
        # request and response objects; with tracing on, through ``forward`` and its client span.
        upstream = self.upstream_for(path) if path.startswith("/tmf-api/") else None
        if upstream is not None and not telemetry.enabled():
            try:
                status = await upstream.relay(scope, receive, send)
            finally:
                self._audit(identity, method, path, status)
            return
        request = Request(scope, receive)

        async def send_noting_status(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self._dispatch(request, scope, receive, send_noting_status)
        finally:
            self._audit(identity, method, path, status)

    async def _dispatch(self, request: Request, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        if path.startswith("/tmf-api/"):
            upstream = self.upstream_for(path)
            if upstream is not None:
                response = await upstream.forward(request)
                await response(scope, receive, send)
                return
            if self.local_app is not None:
                await self.local_app(scope, receive, send)
                return
            await tmf_error(404, "Not found", f"no API is served at {path}; GET / lists the APIs")(scope, receive, send)
            return
        if self.console is not None and (path == CONSOLE_PREFIX or path.startswith(CONSOLE_PREFIX + "/")):
            await self.console.app(scope, receive, send)
            return
        await self.own(scope, receive, send)

    def _audit(self, identity: Identity | None, method: str, path: str, status: int) -> None:
        if identity is None or identity.role == SERVICE:
            return
        audit.info("call", client=identity.client_id, party=identity.party_id, role=identity.role,
                   operation=f"{method} {path}", status=status)


def create_gateway(settings: GatewaySettings, apis: Sequence[ApiEntry], *,
                   rate_limit_store: tuple[str, str] | None = None, identify: Identify | None = None,
                   local_app: ASGIApp | None = None, extra_routes: Sequence[BaseRoute] = (),
                   issuer: tuple[TokenIssuer, str, str] | None = None, console: Console | None = None) -> ASGIApp:
    """The public entry point. With ``local_app`` (the all-in-one ``sqm serve``) TMF paths go to
    that app in this process; otherwise to ``settings.upstreams`` over HTTP. ``rate_limit_store``
    is the (MongoDB URI, database) where replicas share their rate-limit counters; without it
    nothing is limited. ``issuer`` is a built-in token issuer the gateway hosts, with the
    (MongoDB URI, database) of its clients and keys: its endpoints are served at the root.
    ``console`` is the people's console, served under ``/console``."""
    gateway: Gateway
    telemetry.setup("tmf-sqm-gateway")  # telemetry: tracing on if OTEL_* asks

    async def index(request: Request) -> Response:
        return catalogue(apis, settings.public_url)

    async def docs(request: Request) -> Response:
        return docs_page(request, apis, settings.public_url)

    async def live(request: Request) -> Response:
        return JSONResponse({"status": "up"})

    async def ready(request: Request) -> Response:
        if gateway.limits is not None and not await gateway.limits.counters.check():
            return JSONResponse({"status": "down", "rateLimitStorage": "down"}, status_code=503)
        return JSONResponse({"status": "up", "upstreams": dict(settings.upstreams)})

    own_routes: list[BaseRoute] = [Route("/", index), Route("/docs", docs), *extra_routes,
                                   *(issuer[0].routes() if issuer is not None else ())]
    if local_app is None:
        own_routes += [Route("/health/live", live), Route("/health/ready", ready), Route("/health", ready)]
        own_routes.append(Route("/metrics", metrics.endpoint()))  # telemetry (all-in-one: the suite's /metrics)
    own = Starlette(routes=own_routes)
    own.add_exception_handler(404, _not_found)
    own.add_exception_handler(405, _not_allowed)
    fallback: ASGIApp = own
    if local_app is not None:
        # Paths the gateway does not own (health, listeners, ...) belong to the suite's app.
        fallback = _Fallthrough(own_routes, own, local_app)
    gateway = Gateway(settings, apis, fallback, rate_limit_store, identify or _nobody, local_app, issuer, console)
    own_paths = {route.path for route in own_routes if isinstance(route, Route)}
    if not settings.cors_origins:
        return gateway_telemetry.instrument(gateway, gateway, own_paths)  # telemetry
    return gateway_telemetry.instrument(_LifespanFirst(CORSMiddleware(  # telemetry
        gateway, allow_origins=list(settings.cors_origins), allow_methods=["GET", "POST", "PATCH", "DELETE", "OPTIONS"],
        allow_headers=["Authorization", "Content-Type", "If-Match", "X-Request-ID"],
        expose_headers=["ETag", "Location", "X-Total-Count", "X-Result-Count", "Retry-After"]), gateway),
        gateway, own_paths)


class _Fallthrough:
    """Under the all-in-one server: the gateway's own routes first, everything else to the suite."""

    def __init__(self, routes: Sequence[BaseRoute], own: ASGIApp, local_app: ASGIApp) -> None:
        self.paths = {route.path for route in routes if isinstance(route, Route)}
        self.own = own
        self.local_app = local_app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] in self.paths:
            await self.own(scope, receive, send)
        else:
            await self.local_app(scope, receive, send)


class _LifespanFirst:
    """Lifespan events go straight to the gateway, requests through the CORS policy first."""

    def __init__(self, app: ASGIApp, own: ASGIApp) -> None:
        self.app = app
        self.own = own

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await (self.own if scope["type"] == "lifespan" else self.app)(scope, receive, send)


async def _not_found(request: Request, exc: Exception) -> Response:
    return tmf_error(404, "Not found", f"nothing at {request.url.path}; GET / lists the APIs")


async def _not_allowed(request: Request, exc: Exception) -> Response:
    return tmf_error(405, "Method not allowed", f"{request.method} is not allowed on {request.url.path}")
