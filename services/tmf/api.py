"""Assembling TMF APIs into one ASGI application: each API is a document, a declaration of its
resources, and its rules; this module wires them to connexion, MongoDB and the shared
middleware."""

from __future__ import annotations

import asyncio
import gc
import logging
import re
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import structlog
from connexion import AsyncApp
from connexion.exceptions import ProblemException
from connexion.middleware import ConnexionMiddleware, MiddlewarePosition
from connexion.middleware.security import SecurityMiddleware
from connexion.options import SwaggerUIOptions
from connexion.resolver import Resolver
from pymongo import AsyncMongoClient, IndexModel
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from . import errors, metrics, telemetry
from .auth.issuer import TokenIssuer
from .auth.service import ClientCredentials, ServiceAuth, ServiceCredentials
from .auth.settings import AuthSettings
from .auth.validator import TokenValidator
from .authentication import AuthenticationMiddleware
from .delivery import Dispatcher
from .hub import HUB_COLLECTION, HUB_INDEXES, HubApi
from .listener import Consumption, ListenerApi
from .middleware import BodyLimitMiddleware, RequestContextMiddleware, TrailingSlashMiddleware
from .operations import TmfApp
from .outbox import Outbox
from .parameters import CompiledParameterValidator
from .repository import OWNER_ONLY, ResourceStore
from .repository.events import EventStore
from .resource import Handler, ResourceApi, ResourceType
from .settings import Settings
from .spec import load_document, served_document
from .validation import VALIDATORS

log = structlog.get_logger("tmf.api")
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


@dataclass(frozen=True)
class ApiDeclaration:
    """What a service folder provides: its API document, base path, resources, and handlers
    for the operations that are not generic (``extra_handlers`` receives the context)."""

    name: str
    document: str
    base_path: str
    resources: tuple[ResourceType, ...]
    extra_handlers: Callable[[ApiContext], dict[str, Handler]] | None = None
    has_hub: bool = True
    consumes: tuple[Consumption, ...] = ()
    # payload key -> resource name of a read-only record of every event about it.
    event_records: tuple[tuple[str, str], ...] = ()
    # Collections it keeps beside its resources, not served as TMF resources, with the indexes
    # made for them at start-up (e.g. measurement buckets).
    collections: tuple[tuple[str, tuple[IndexModel, ...]], ...] = ()
    # Background work for as long as the app runs (e.g. closing SLA periods).
    tasks: tuple[Callable[[ApiContext], Coroutine[Any, Any, None]], ...] = ()
    # The sections of ``Settings`` it reads beyond the shared settings (``settings.SECTIONS``):
    # a process reads and checks only those of the APIs it serves.
    settings: tuple[str, ...] = ("delivery",)


@dataclass
class ApiContext:
    """One API at run time: settings, its merged document, and the database once connected."""

    name: str
    base_path: str
    settings: Settings
    document: dict[str, Any]
    database: AsyncDatabase[dict[str, Any]] | None = None
    resource_apis: dict[str, ResourceApi] = field(default_factory=dict)
    # The time, injectable so that tests can run a month in seconds.
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    listeners: list[ListenerApi] = field(default_factory=list)
    # The bearer tokens this API sends when it calls the suite's other services.
    credentials: ServiceCredentials | None = None
    # Long-lived helpers a service keeps for as long as the app runs (caches, locks).
    components: dict[str, Any] = field(default_factory=dict)
    _stores: dict[str, ResourceStore] = field(default_factory=dict)
    _events: EventStore | None = None
    _outbox: Outbox | None = None

    def service_auth(self) -> ServiceAuth | None:
        """Credentials for this API's calls to the suite's other services."""
        return ServiceAuth(self.credentials) if self.credentials is not None else None

    @property
    def public_base(self) -> str:
        return f"{self.settings.public_url}{self.base_path}"

    @property
    def db(self) -> AsyncDatabase[dict[str, Any]]:
        if self.database is None:
            raise RuntimeError("the database is not connected yet")
        return self.database

    @property
    def events(self) -> EventStore:
        if self._events is None:
            raise RuntimeError("the database is not connected yet")
        return self._events

    @property
    def outbox(self) -> Outbox:
        if self._outbox is None:
            raise RuntimeError("the database is not connected yet")
        return self._outbox

    def connect(self, database: AsyncDatabase[dict[str, Any]], events: EventStore, dispatcher: Dispatcher,
                records: dict[str, str]) -> None:
        self.database = database
        self._events = events
        self._outbox = Outbox(self.name, events, self.settings.regex_max_length, on_commit=dispatcher.wake,
                              records=records)

    def store(self, name: str) -> ResourceStore:
        if name not in self._stores:
            api = self.resource_apis.get(name)
            visibility = api.resource.visibility if api is not None else OWNER_ONLY
            self._stores[name] = ResourceStore(self.db, name, timeout_ms=self.settings.query_timeout_ms,
                                               visibility=visibility)
        return self._stores[name]


def _handlers(declaration: ApiDeclaration, context: ApiContext) -> dict[str, Handler]:
    handlers: dict[str, Handler] = {}
    for resource in declaration.resources:
        api = ResourceApi(context, resource)
        context.resource_apis[resource.name] = api
        handlers.update(api.handlers())
    if declaration.has_hub:
        handlers.update(HubApi(context).handlers())
    for consumption in declaration.consumes:
        listener = ListenerApi(context, consumption)
        context.listeners.append(listener)
        handlers.update(listener.handlers())
    if declaration.extra_handlers is not None:
        handlers.update(declaration.extra_handlers(context))
    return handlers


def _resolver(handlers: dict[str, Handler], api_name: str) -> Resolver:
    def resolve(operation_id: str) -> Handler:
        try:
            return handlers[operation_id]
        except KeyError:
            raise LookupError(f"{api_name}: no handler for operationId {operation_id}") from None

    return Resolver(function_resolver=resolve)


def _allowed_methods(
    built: list[tuple[ApiDeclaration, ApiContext, dict[str, Handler]]],
) -> Callable[[str], list[str]]:
    routes = []
    for declaration, context, _ in built:
        for template, operations in context.document.get("paths", {}).items():
            pattern = re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(declaration.base_path + template))
            methods = sorted(m.upper() for m in operations if m in HTTP_METHODS)
            routes.append((re.compile(f"^{pattern}$"), methods))

    def allowed(path: str) -> list[str]:
        return next((methods for pattern, methods in routes if pattern.match(path)), [])

    return allowed


def _document_endpoint(context: ApiContext) -> Callable[[Request], Coroutine[Any, Any, Response]]:
    async def document(request: Request) -> Response:
        # Behind a proxy that mounts the suite under a prefix, the API lives under that prefix.
        root = str(request.scope.get("root_path", "")).rstrip("/")
        return Response(served_document(context.document, root + context.base_path),
                        media_type="application/json")

    return document
class _Readiness:
    """Whether the app can do its whole job: the database answers, the dispatcher runs, and every
    consumption is subscribed on its producer's hub with its catch-up queued."""

    def __init__(self, contexts: list[ApiContext], database: Callable[[], Awaitable[dict[str, Any]]],
                 dispatcher: Callable[[], Dispatcher | None]) -> None:
        self.contexts = contexts
        self.database = database
        self.dispatcher = dispatcher

    async def report(self, database: dict[str, Any] | None = None) -> dict[str, Any]:
        database = database or await self.database()
        dispatcher = self.dispatcher()
        dispatching = dispatcher is not None and dispatcher.running
        listeners = [listener for c in self.contexts for listener in c.listeners]
        missing = [] if database["status"] == "up" else ["the database does not answer"]
        if not dispatching:
            missing.append("the event dispatcher is not running")
        missing += [f"{listener.context.name} is not yet subscribed to {', '.join(listener.consumption.event_types)}"
                    f" at {listener.hub}" + (f" ({listener.problem})" if listener.problem else "")
                    for listener in listeners if not listener.ready]
        return {"status": "down" if missing else "up", **({"missing": missing} if missing else {}),
                "database": database, "dispatcher": {"status": "up" if dispatching else "down"},
                "subscriptions": [listener.report() for listener in listeners]}

    async def ready(self) -> bool:
        report = await self.report()
        return bool(report["status"] == "up")


_READINESS: weakref.WeakKeyDictionary[AsyncApp, _Readiness] = weakref.WeakKeyDictionary()


async def is_ready(app: AsyncApp) -> bool:
    """What ``GET /health/ready`` answers, asked in process (``sqm serve`` announces readiness
    with it): the database answers, the dispatcher runs, every subscription is in place."""
    return await _READINESS[app].ready()


def build_app(declarations: list[ApiDeclaration], settings: Settings,
              clock: Callable[[], datetime] | None = None, auth: AuthSettings | None = None) -> AsyncApp:
    """One ASGI app serving every declared API on the configured MongoDB. Without an external
    issuer (``SQM_OAUTH_ISSUER``), the app issues tokens itself at its public URL."""
    telemetry.setup_for_apis([d.name for d in declarations])  # telemetry: tracing on if OTEL_* asks
    auth = auth or AuthSettings.from_env()
    if auth.builtin_issuer:
        auth = replace(auth, issuer=settings.public_url)
    issuer = TokenIssuer(auth) if auth.builtin_issuer else None
    validator = TokenValidator(auth, key_source=issuer.jwks if issuer is not None else None)
    contexts: list[ApiContext] = []
    built: list[tuple[ApiDeclaration, ApiContext, dict[str, Handler]]] = []
    for declaration in declarations:
        context = ApiContext(declaration.name, declaration.base_path, settings,
                             load_document(declaration.document, with_hub=declaration.has_hub))
        context.credentials = ServiceCredentials(declaration.name, settings.operator_party_id, issuer=issuer,
                                                 credentials=ClientCredentials.from_env())
        if clock is not None:
            context.clock = clock
        contexts.append(context)
        built.append((declaration, context, _handlers(declaration, context)))
    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        # A change is answered only once a majority of the replica set has it in its journal on
        # disk, so that neither a crash nor a failover loses it. These options override any
        # write concern in the URI. The opt-in unsafe mode acknowledges what the primary holds in memory.
        durability: dict[str, Any] = ({"w": 1, "journal": False} if settings.unsafe_skip_fsync
                                      else {"w": "majority", "journal": True})
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            settings.mongodb_uri, serverSelectionTimeoutMS=5000, uuidRepresentation="standard", **durability)
        database = client[settings.database]
        state["database"] = database
        events = EventStore(database)
        # Each process delivers the events of the APIs it serves, and only those.
        dispatcher = Dispatcher(events, settings, apis=[c.name for c in contexts],
                                credentials=contexts[0].credentials if contexts else None)
        state["dispatcher"] = dispatcher
        subscribing: list[asyncio.Task[Any]] = []
        try:
            await events.ensure_indexes()
            if issuer is not None:
                issuer.connect(database)
                await issuer.start()
            for declaration, context, _ in built:
                context.connect(database, events, dispatcher, dict(declaration.event_records))
                for resource in declaration.resources:
                    await context.store(resource.name).ensure_indexes(resource.indexes)
                if declaration.has_hub:
                    await context.store(HUB_COLLECTION).ensure_indexes(HUB_INDEXES)
                for collection, indexes in declaration.collections:
                    await database[collection].create_indexes(list(indexes))
            log.info("connected", database=settings.database, apis=[c.name for c in contexts])
            dispatcher.start()
            # Subscriptions are made over HTTP, possibly to this very process, which serves only
            # once the lifespan has started: they run in the background and readiness waits for them.
            subscribing += [asyncio.create_task(listener.subscribe()) for c in contexts for listener in c.listeners]
            subscribing += [asyncio.create_task(task(context)) for declaration, context, _ in built
                            for task in declaration.tasks]
            # What start-up made (documents, compiled validators, routes, modules) lives as long
            # as the process: out of the collector's sight, a full collection no longer walks
            # it, which otherwise stalls every request in flight for about 100 ms.
            gc.collect()
            gc.freeze()
            yield
        finally:
            for task in subscribing:
                task.cancel()
            await dispatcher.stop()
            await client.close()

    # TMF PATCH takes several media types; connexion warns about that on every such request.
    logging.getLogger("connexion.operations.openapi3").setLevel(logging.ERROR)
    # Security is enforced once, by our authentication middleware (tokens validated against the
    # issuer's keys); connexion's own handler would want a token-info function per scheme.
    middlewares = [m for m in ConnexionMiddleware.default_middlewares if m is not SecurityMiddleware]
    app = TmfApp(__name__, lifespan=lifespan, middlewares=middlewares)
    metrics.add_connexion_middleware(app, [(d.name, d.base_path, c.document) for d, c, _ in built])  # telemetry
    for declaration, context, handlers in built:
        # Connexion would serve its own copy of the document with every $ref inlined, which
        # turns each response into an anonymous type in generated clients; it keeps the
        # explorer, and the document is served below as written.
        app.add_api(context.document, base_path=declaration.base_path,
                    resolver=_resolver(handlers, declaration.name), name=declaration.name,
                    validator_map={**VALIDATORS, "parameter": CompiledParameterValidator},
                    swagger_ui_options=SwaggerUIOptions(serve_spec=False))
        app.add_url_rule(f"{declaration.base_path}/openapi.json", f"{declaration.name}-document",
                         _document_endpoint(context), methods=["GET"])

    async def database_report() -> dict[str, Any]:
        database = state.get("database")
        started = time.perf_counter()
        try:
            if database is None:
                raise RuntimeError("not connected")
            await database.command("ping")
        except (PyMongoError, RuntimeError) as exc:
            return {"status": "down", "error": type(exc).__name__}
        return {"status": "up", "latencyMs": round((time.perf_counter() - started) * 1000, 2)}

    readiness = _Readiness(contexts, database_report, lambda: state.get("dispatcher"))
    _READINESS[app] = readiness

    async def health(request: Request) -> JSONResponse:
        database = await database_report()
        if database["status"] != "up":
            return JSONResponse({"status": "down", "database": database}, status_code=503)
        ready = await readiness.report(database)
        return JSONResponse({"status": "up", "ready": ready["status"] == "up", "database": database,
                             "apis": [{"name": c.name, "basePath": c.base_path} for c in contexts],
                             "dispatcher": ready["dispatcher"], "subscriptions": ready["subscriptions"]})

    async def live(request: Request) -> JSONResponse:
        return JSONResponse({"status": "up"})

    async def ready(request: Request) -> JSONResponse:
        report = await readiness.report()
        return JSONResponse(report, status_code=200 if report["status"] == "up" else 503)

    async def index(request: Request) -> JSONResponse:
        return JSONResponse({"name": "tmf-sqm", "apis": [
            {"name": c.name, "basePath": c.base_path, "document": f"{c.base_path}/openapi.json"}
            for c in contexts]})

    app.add_url_rule("/health", "health", health, methods=["GET"])
    app.add_url_rule("/health/live", "health_live", live, methods=["GET"])
    app.add_url_rule("/health/ready", "health_ready", ready, methods=["GET"])
    app.add_url_rule("/", "index", index, methods=["GET"])
    app.add_url_rule("/metrics", "metrics", metrics.suite_endpoint(state, contexts), methods=["GET"])  # telemetry
    app.add_error_handler(errors.TmfError, errors.handle_tmf_error)
    app.add_error_handler(ProblemException, errors.handle_problem)
    app.add_error_handler(HTTPException, errors.http_exception_handler(_allowed_methods(built)))
    app.add_error_handler(Exception, errors.handle_unexpected)
    app.add_middleware(TrailingSlashMiddleware, position=MiddlewarePosition.BEFORE_ROUTING)
    app.add_middleware(BodyLimitMiddleware, position=MiddlewarePosition.BEFORE_EXCEPTION,
                       max_bytes=settings.max_body_bytes, max_depth=settings.max_json_depth)
    # Added later is outer: the request id first, then who is calling, then the body limits.
    app.add_middleware(AuthenticationMiddleware, position=MiddlewarePosition.BEFORE_EXCEPTION,
                       apis=[(c.base_path, c.name) for c in contexts], validator=lambda: validator,
                       **({"clock": clock} if clock is not None else {}))
    app.add_middleware(RequestContextMiddleware, position=MiddlewarePosition.BEFORE_EXCEPTION)
    if issuer is not None:
        for route in issuer.routes():
            app.add_url_rule(route.path, route.name, route.endpoint, methods=sorted(route.methods or ()))
    _ISSUERS[app] = issuer
    return app


_ISSUERS: weakref.WeakKeyDictionary[AsyncApp, TokenIssuer | None] = weakref.WeakKeyDictionary()


def issuer_of(app: AsyncApp) -> TokenIssuer | None:
    """The built-in token issuer an app serves (None when tokens come from an external issuer)."""
    return _ISSUERS.get(app)
