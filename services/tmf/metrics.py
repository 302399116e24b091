"""Prometheus metrics: one registry per process, exposed as text at ``/metrics``.

Names follow the OpenTelemetry semantic conventions where one exists, in their Prometheus form
(``http.server.request.duration`` becomes ``http_server_request_duration_seconds`` with labels
``http_request_method``, ``http_route``, ``http_response_status_code``); the suite's own are
``sqm_*``. Every label has a bounded set of values: routes are templates, never raw paths, and
subscriptions are few. Gauges that describe stored state (queue depth, open problems) are read
from the database when ``/metrics`` is scraped, so every process reports the same truth.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import structlog
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import telemetry

if TYPE_CHECKING:
    from .api import ApiContext

log = structlog.get_logger("tmf.metrics")
REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)

# The bucket boundaries the semantic conventions recommend for HTTP durations.
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
HTTP_SERVER_DURATION = Histogram(
    "http_server_request_duration_seconds", "Duration of HTTP server requests (count: requests served).",
    ["api", "http_request_method", "http_route", "http_response_status_code"], buckets=HTTP_BUCKETS,
    registry=REGISTRY)
DELIVERY_ATTEMPTS = Counter(
    "sqm_event_delivery_attempts", "Event delivery attempts to hub subscribers, by outcome "
    "(delivered, retrying, dead, suspended).", ["subscription", "outcome"], registry=REGISTRY)
DEAD_LETTERS = Counter("sqm_event_dead_letters", "Deliveries given up on (dead-lettered).", ["subscription"],
                       registry=REGISTRY)
DELIVERY_LATENCY = Histogram(
    "sqm_event_delivery_latency_seconds", "Time from an event's eventTime to its successful delivery.",
    ["subscription"], buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0),
    registry=REGISTRY)
QUEUE_DEPTH = Gauge("sqm_event_delivery_queue_depth", "Deliveries pending or waiting for a retry, per subscription "
                    "of this process's hubs (read from the database at scrape time).", ["subscription"],
                    registry=REGISTRY)
SAMPLING_FAILURES = Counter("sqm_metrics_sampling_failures", "Scrapes whose database-read gauges could not be "
                            "refreshed (the previous values are served).", registry=REGISTRY)

SCRAPE_TIMEOUT_SECONDS = 5.0
FIXED_ROUTES = frozenset({"/", "/health", "/health/live", "/health/ready", "/metrics"})
UNMATCHED = "other"


def seconds_since(event_time: Any) -> float | None:
    """Seconds from a TMF date-time text to now; None when it is not one."""
    if not isinstance(event_time, str):
        return None
    try:
        at = datetime.fromisoformat(event_time)
    except ValueError:
        return None
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return max(0.0, (datetime.now(UTC) - at).total_seconds())


def delivery_attempted(subscription: str, outcome: str, event_time: Any) -> None:
    """Count one delivery attempt; a delivered one also gives the event's end-to-end latency."""
    DELIVERY_ATTEMPTS.labels(subscription, outcome).inc()
    if outcome == "dead":
        DEAD_LETTERS.labels(subscription).inc()
    elif outcome == "delivered":
        latency = seconds_since(event_time)
        if latency is not None:
            DELIVERY_LATENCY.labels(subscription).observe(latency)


# -- HTTP requests ------------------------------------------------------------------------------

Classify = Callable[[Scope], "tuple[str, str] | None"]


class HttpMetricsMiddleware:
    """Times every request and counts it by API, method, route template and status.
    ``classify(scope)``, called once the response is sent, gives (api, route), or None for a
    request another layer of this process records."""

    def __init__(self, app: ASGIApp, classify: Classify) -> None:
        self.app = app
        self.classify = classify

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # Inner layers copy the scope, but copies share this dict: connexion's routing writes
        # the matched operation into it, where classify finds it afterwards.
        scope.setdefault("extensions", {})
        started = time.perf_counter()
        status = 500
        found: tuple[str, str] | None = None
        classified = False

        async def send_noting_status(message: Message) -> None:
            nonlocal status, found, classified
            if message["type"] == "http.response.start":
                status = message["status"]
                # Routing is done by now, and the server span still open (it ends with the body).
                found, classified = self.classify(scope), True
                if found is not None:
                    telemetry.name_server_span(scope["method"], found[1])
            await send(message)

        try:
            await self.app(scope, receive, send_noting_status)
        finally:
            if not classified:
                found = self.classify(scope)
            if found is not None:
                HTTP_SERVER_DURATION.labels(found[0], scope["method"], found[1], str(status)).observe(
                    time.perf_counter() - started)


def connexion_classifier(apis: Sequence[tuple[str, str, dict[str, Any]]]) -> Classify:
    """(api, route template) of a request to a connexion app serving ``apis`` as (name, base
    path, merged document): the operation connexion matched, looked up in its document."""
    routes: dict[tuple[str, str], tuple[str, str]] = {}
    for name, base_path, document in apis:
        for template, operations in (document.get("paths") or {}).items():
            for operation in operations.values():
                if isinstance(operation, dict) and operation.get("operationId"):
                    routes[(base_path, operation["operationId"])] = (name, base_path + template)
    prefixes = sorted(((base_path, name) for name, base_path, _ in apis), key=lambda p: -len(p[0]))

    def classify(scope: Scope) -> tuple[str, str]:
        routing = scope["extensions"].get("connexion_routing") or {}
        found = routes.get((routing.get("api_base_path", ""), routing.get("operation_id") or ""))
        if found is not None:
            return found
        path: str = scope.get("path", "")
        if path in FIXED_ROUTES:
            return "", path
        api = next((name for base_path, name in prefixes if path.startswith(base_path)), "")
        return api, UNMATCHED

    return classify


def add_connexion_middleware(app: Any, apis: Sequence[tuple[str, str, dict[str, Any]]]) -> None:
    """Instrument a connexion app: the OpenTelemetry server span (only while tracing is on)
    outermost, then the request metrics; both before the app's other middleware."""
    from connexion.middleware import MiddlewarePosition

    tracing = telemetry.server_middleware()
    if tracing is not None:
        app.add_middleware(tracing[0], position=MiddlewarePosition.BEFORE_EXCEPTION, **tracing[1])
    app.add_middleware(HttpMetricsMiddleware, position=MiddlewarePosition.BEFORE_EXCEPTION,
                       classify=connexion_classifier(apis))


# -- the /metrics endpoint ----------------------------------------------------------------------

Sampler = Callable[[], Awaitable[None]]
ApiSampler = Callable[["ApiContext"], Awaitable[None]]
_API_SAMPLERS: dict[str, list[ApiSampler]] = {}


def sampled_for(api_name: str) -> Callable[[ApiSampler], ApiSampler]:
    """Register a coroutine that refreshes gauges of the API ``api_name`` from its database at
    each scrape of a process serving that API."""
    def register(sampler: ApiSampler) -> ApiSampler:
        _API_SAMPLERS.setdefault(api_name, []).append(sampler)
        return sampler
    return register


def endpoint(sample: Sampler | None = None) -> Callable[[Request], Awaitable[Response]]:
    """The ``/metrics`` handler: refresh what ``sample`` reads, then the registry as Prometheus text."""
    async def metrics(request: Request) -> Response:
        if sample is not None:
            try:
                await asyncio.wait_for(sample(), SCRAPE_TIMEOUT_SECONDS)
            except Exception:  # the database may be away; the counters are still worth serving
                SAMPLING_FAILURES.inc()
                log.warning("metrics sampling failed", exc_info=True)
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
    return metrics


def suite_endpoint(state: dict[str, Any], contexts: Sequence[ApiContext]) -> Callable[[Request], Awaitable[Response]]:
    """``/metrics`` of a process serving ``contexts``: the delivery queues of their hubs and
    every gauge the APIs registered with ``sampled_for``, read once the database is connected."""
    from .repository.telemetry import undelivered_by_subscription

    async def sample() -> None:
        database = state.get("database")
        if database is None:
            return
        depths = await undelivered_by_subscription(database, [c.name for c in contexts])
        QUEUE_DEPTH.clear()
        for subscription, depth in depths.items():
            QUEUE_DEPTH.labels(subscription).set(depth)
        for context in contexts:
            for sampler in _API_SAMPLERS.get(context.name, []):
                await sampler(context)

    return endpoint(sample)
