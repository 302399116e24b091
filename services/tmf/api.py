"""Assembling TMF APIs into one ASGI application: each API is a document, a declaration of its
resources, and its rules; this module wires them to connexion, MongoDB and the shared
middleware."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog
from connexion import AsyncApp
from connexion.exceptions import ProblemException
from connexion.middleware import MiddlewarePosition
from connexion.resolver import Resolver
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

from . import errors, metrics, telemetry
from .delivery import Dispatcher
from .hub import HUB_COLLECTION, HUB_INDEXES, HubApi
from .listener import Consumption, ListenerApi
from .middleware import BodyLimitMiddleware, RequestContextMiddleware, TrailingSlashMiddleware
from .outbox import Outbox
from .repository import ResourceStore
from .repository.events import EventStore
from .resource import Handler, ResourceApi, ResourceType
from .settings import Settings
from .spec import load_document
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
    # Background work for as long as the app runs (e.g. closing SLA periods).
    tasks: tuple[Callable[[ApiContext], Coroutine[Any, Any, None]], ...] = ()


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
    # Long-lived helpers a service keeps for as long as the app runs (caches, locks).
    components: dict[str, Any] = field(default_factory=dict)
    _stores: dict[str, ResourceStore] = field(default_factory=dict)
    _events: EventStore | None = None
    _outbox: Outbox | None = None

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
            self._stores[name] = ResourceStore(self.db, name, timeout_ms=self.settings.query_timeout_ms)
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


def build_app(declarations: list[ApiDeclaration], settings: Settings,
              clock: Callable[[], datetime] | None = None) -> AsyncApp:
    """One ASGI app serving every declared API on the configured MongoDB."""
    telemetry.setup_for_apis([d.name for d in declarations])  # telemetry: tracing on if OTEL_* asks
    contexts: list[ApiContext] = []
    built: list[tuple[ApiDeclaration, ApiContext, dict[str, Handler]]] = []
    for declaration in declarations:
        context = ApiContext(declaration.name, declaration.base_path, settings,
                             load_document(declaration.document, with_hub=declaration.has_hub))
        if clock is not None:
            context.clock = clock
        contexts.append(context)
        built.append((declaration, context, _handlers(declaration, context)))
    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            settings.mongodb_uri, serverSelectionTimeoutMS=5000, uuidRepresentation="standard")
        database = client[settings.database]
        state["database"] = database
        events = EventStore(database)
        dispatcher = Dispatcher(events, settings)
        subscribing: list[asyncio.Task[Any]] = []
        try:
            await events.ensure_indexes()
            for declaration, context, _ in built:
                context.connect(database, events, dispatcher, dict(declaration.event_records))
                for resource in declaration.resources:
                    await context.store(resource.name).ensure_indexes(resource.indexes)
                if declaration.has_hub:
                    await context.store(HUB_COLLECTION).ensure_indexes(HUB_INDEXES)
            log.info("connected", database=settings.database, apis=[c.name for c in contexts])
            dispatcher.start()
            subscribing += [asyncio.create_task(listener.subscribe()) for c in contexts for listener in c.listeners]
            subscribing += [asyncio.create_task(task(context)) for declaration, context, _ in built
                            for task in declaration.tasks]
            yield
        finally:
            for task in subscribing:
                task.cancel()
            await dispatcher.stop()
            await client.close()

    # TMF PATCH takes several media types; connexion warns about that on every such request.
    logging.getLogger("connexion.operations.openapi3").setLevel(logging.ERROR)
    app = AsyncApp(__name__, lifespan=lifespan)
    metrics.add_connexion_middleware(app, [(d.name, d.base_path, c.document) for d, c, _ in built])  # telemetry
    for declaration, context, handlers in built:
        app.add_api(context.document, base_path=declaration.base_path,
                    resolver=_resolver(handlers, declaration.name), name=declaration.name,
                    validator_map=VALIDATORS)

    async def health(request: Request) -> JSONResponse:
        database = state.get("database")
        started = time.perf_counter()
        try:
            if database is None:
                raise RuntimeError("not connected")
            await database.command("ping")
        except (PyMongoError, RuntimeError) as exc:
            return JSONResponse({"status": "down", "database": {"status": "down", "error": type(exc).__name__}},
                                status_code=503)
        latency = round((time.perf_counter() - started) * 1000, 2)
        return JSONResponse({"status": "up", "database": {"status": "up", "latencyMs": latency},
                             "apis": [{"name": c.name, "basePath": c.base_path} for c in contexts],
                             "subscriptions": [
                                 {"api": c.name, "events": list(listener.consumption.event_types),
                                  "subscription": listener.subscription}
                                 for c in contexts for listener in c.listeners]})

    async def index(request: Request) -> JSONResponse:
        return JSONResponse({"name": "tmf-sqm", "apis": [
            {"name": c.name, "basePath": c.base_path, "document": f"{c.base_path}/openapi.json"}
            for c in contexts]})

    app.add_url_rule("/health", "health", health, methods=["GET"])
    app.add_url_rule("/", "index", index, methods=["GET"])
    app.add_url_rule("/metrics", "metrics", metrics.suite_endpoint(state, contexts), methods=["GET"])  # telemetry
    app.add_error_handler(errors.TmfError, errors.handle_tmf_error)
    app.add_error_handler(ProblemException, errors.handle_problem)
    app.add_error_handler(HTTPException, errors.http_exception_handler(_allowed_methods(built)))
    app.add_error_handler(Exception, errors.handle_unexpected)
    app.add_middleware(TrailingSlashMiddleware, position=MiddlewarePosition.BEFORE_ROUTING)
    app.add_middleware(BodyLimitMiddleware, position=MiddlewarePosition.BEFORE_EXCEPTION,
                       max_bytes=settings.max_body_bytes, max_depth=settings.max_json_depth)
    app.add_middleware(RequestContextMiddleware, position=MiddlewarePosition.BEFORE_EXCEPTION)
    return app
