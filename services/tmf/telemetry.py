"""Tracing with OpenTelemetry, configured by the standard ``OTEL_*`` environment variables.

Tracing is off unless the environment asks for an exporter (``OTEL_TRACES_EXPORTER`` other than
``none``, or an ``OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT``) and ``OTEL_SDK_DISABLED`` is not true.
Off means: no tracer provider, no instrumentation installed, no middleware; the hooks elsewhere
cost one check of a module flag. On means: a server span per request (our own lean ASGI middleware), a client span per
outgoing call (httpx, ``traceparent`` injected), a span per MongoDB command (PyMongo), the
``traceparent`` of the change stored with its outbox records, and a delivery span that continues
that trace when the dispatcher sends the event, so one trace runs from the gateway through the
API, the database and the outbox into the listener and whatever the listener does next.

Everything else the SDK reads itself: ``OTEL_EXPORTER_OTLP_*`` (endpoint, headers, timeout),
``OTEL_TRACES_SAMPLER[_ARG]``, ``OTEL_BSP_*``, ``OTEL_RESOURCE_ATTRIBUTES``.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Coroutine, Iterator, Mapping, MutableMapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Protocol, TypeVar

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import SERVICE_NAME, OTELResourceDetector, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from . import metrics
from .settings import SettingsError

TRACEPARENT = "traceparent"
_PROPAGATOR = TraceContextTextMapPropagator()


@dataclass
class _Tracing:
    provider: TracerProvider
    tracer: trace.Tracer


# The one switch every hook checks: None while tracing is off.
_tracing: _Tracing | None = None
# The process's tracer provider, once made (OpenTelemetry allows setting it only once).
_provider: TracerProvider | None = None


def tracing_requested(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the ``OTEL_*`` environment asks for traces to be exported."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporters:
        return exporters != "none"
    return bool(environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"))


def _exporters(environ: Mapping[str, str]) -> list[SpanExporter]:
    names = [n.strip().lower() for n in environ.get("OTEL_TRACES_EXPORTER", "otlp").split(",") if n.strip()]
    found: list[SpanExporter] = []
    for name in names:
        if name in {"otlp", "otlp_proto_http"}:
            protocol = (environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                        or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf")
            if protocol != "http/protobuf":
                raise SettingsError(f"OTEL_EXPORTER_OTLP_PROTOCOL {protocol!r} is not supported; "
                                    "tmf-sqm exports traces over OTLP http/protobuf")
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            found.append(OTLPSpanExporter())
            continue
        # Any other exporter the SDK knows by name (``console``, or one an installed package adds).
        candidates = entry_points(group="opentelemetry_traces_exporter", name=name)
        if not candidates:
            raise SettingsError(f"OTEL_TRACES_EXPORTER names an unknown exporter {name!r}; use otlp, console or none")
        exporter: SpanExporter = next(iter(candidates)).load()()
        found.append(exporter)
    return found


def _service_name(default: str) -> str:
    given = os.environ.get("OTEL_SERVICE_NAME", "").strip()
    detected = OTELResourceDetector().detect().attributes.get(SERVICE_NAME)
    return given or (str(detected) if detected else default)


def _install(service: str, processors: list[Any]) -> _Tracing:
    global _tracing, _provider
    if _provider is None:
        _provider = TracerProvider(resource=Resource.create({SERVICE_NAME: _service_name(service)}))
        trace.set_tracer_provider(_provider)
    if _tracing is None:
        _tracing = _Tracing(_provider, _provider.get_tracer("tmf-sqm"))
    for processor in processors:
        _tracing.provider.add_span_processor(processor)
    # PyMongo's command listeners apply to clients made afterwards: the suite makes its client in
    # the app's lifespan, after this. httpx is patched at the transport, so clients made earlier
    # are traced too.
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.instrumentation.pymongo import PymongoInstrumentor

    if not HTTPXClientInstrumentor().is_instrumented_by_opentelemetry:
        HTTPXClientInstrumentor().instrument(tracer_provider=_tracing.provider)
    if not PymongoInstrumentor().is_instrumented_by_opentelemetry:
        PymongoInstrumentor().instrument(tracer_provider=_tracing.provider)
    return _tracing


def setup(service: str) -> bool:
    """Turn tracing on for this process if the environment asks for it (once; later calls keep
    the first configuration). ``service`` names the process (``tmf-sqm-<api>`` or
    ``tmf-sqm-gateway``) unless ``OTEL_SERVICE_NAME`` does. Returns whether tracing is on."""
    if _tracing is not None:
        return True
    if not tracing_requested():
        return False
    _install(service, [BatchSpanProcessor(exporter) for exporter in _exporters(os.environ)])
    return True


def use_exporter(exporter: SpanExporter, service: str = "tmf-sqm-test") -> TracerProvider:
    """Tracing on, every span handed to ``exporter`` as it ends (tests and benchmarks)."""
    return _install(service, [SimpleSpanProcessor(exporter)]).provider


def use_processor(processor: Any, service: str = "tmf-sqm-bench") -> TracerProvider:
    """Tracing on with a span processor of the caller's choosing (benchmarks)."""
    return _install(service, [processor]).provider


def enabled() -> bool:
    return _tracing is not None


def traced_transport(transport: Any) -> Any:
    """``transport`` (an httpx async transport) wrapped so that each call gets a client span and
    sends ``traceparent``, for transports of our own that the httpx instrumentation (which patches
    httpx's built-in transport) does not reach. The provider is the process's one, made once, so
    the wrapper may be kept; it traces only while tracing is on."""
    from opentelemetry.instrumentation.httpx import AsyncOpenTelemetryTransport

    return AsyncOpenTelemetryTransport(transport, tracer_provider=_provider)


def disable() -> None:
    """Tracing off again (tests): outgoing calls and database commands stop being traced, and
    apps built afterwards get no server span. The provider stays, for a later ``use_exporter``."""
    global _tracing
    if _tracing is None:
        return
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.instrumentation.pymongo import PymongoInstrumentor

    HTTPXClientInstrumentor().uninstrument()
    PymongoInstrumentor().uninstrument()
    _tracing = None


# -- the ASGI server span ---------------------------------------------------------------------

# The request methods a span may be named after; any other is "_OTHER", so that names and
# attribute values stay a bounded set whatever a client sends.
_KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"})


class ServerSpanMiddleware:
    """One SERVER span per HTTP request, continuing the caller's trace (``traceparent``), current
    while the request is handled and ended once the response is sent. It carries the request
    method, path and scheme, the server's address and the response status (an error from 500
    on); the route template is set when routing has found it (:func:`name_server_span`).

    The general-purpose ASGI instrumentation did the same with much more per request (user agent
    and client details, query and target parsing, header capture hooks, its own duration
    metrics): about an eighth of the CPU of a traced read by id, for attributes nothing here
    reads, and span attributes every exported span then carries."""

    def __init__(self, app: Any, tracer: trace.Tracer) -> None:
        self.app = app
        self.tracer = tracer

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        fields = propagate.get_global_textmap().fields
        carrier = {name.decode("latin-1"): value.decode("latin-1")
                   for name, value in scope["headers"] if name.decode("latin-1") in fields}
        parent = propagate.extract(carrier) if carrier else None
        method = str(scope.get("method") or "")
        method = method if method in _KNOWN_METHODS else "_OTHER"
        attributes: dict[str, str | int] = {"http.request.method": method, "url.path": str(scope.get("path", "")),
                                            "url.scheme": str(scope.get("scheme", "http"))}
        server = scope.get("server")
        if server and len(server) == 2 and server[1] is not None:
            attributes["server.address"], attributes["server.port"] = str(server[0]), int(server[1])
        with self.tracer.start_as_current_span(method, context=parent, kind=SpanKind.SERVER,
                                               attributes=attributes) as span:

            async def send_noting_status(message: MutableMapping[str, Any]) -> None:
                if message["type"] == "http.response.start":
                    status = int(message["status"])
                    span.set_attribute("http.response.status_code", status)
                    if status >= 500:
                        span.set_status(Status(StatusCode.ERROR))
                await send(message)

            await self.app(scope, receive, send_noting_status)


def server_middleware() -> tuple[type, dict[str, Any]] | None:
    """The server span middleware class and options, or None while tracing is off."""
    if _tracing is None:
        return None
    return ServerSpanMiddleware, {"tracer": _tracing.tracer}


def wrap_asgi(app: Any) -> Any:
    """``app`` inside a server span per request when tracing is on; ``app`` itself otherwise."""
    middleware = server_middleware()
    if middleware is None:
        return app
    cls, options = middleware
    return cls(app, **options)


def name_server_span(method: str, route: str) -> None:
    """Name the current server span after the route template (``GET /.../service/{id}``)."""
    if _tracing is None:
        return
    span = trace.get_current_span()
    if span.is_recording():
        span.update_name(f"{method} {route}")
        span.set_attribute("http.route", route)


# -- the outbox and the delivery ---------------------------------------------------------------

def trace_fields() -> dict[str, str]:
    """``{"traceparent": ...}`` of the current span, to store with an outbox record; empty while
    tracing is off or no span is current."""
    if _tracing is None:
        return {}
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return {TRACEPARENT: carrier[TRACEPARENT]} if TRACEPARENT in carrier else {}


@contextmanager
def continued(fields: Mapping[str, Any]) -> Iterator[None]:
    """Within it, spans continue the trace whose ``trace_fields`` were stored with some work
    done later (a fresh trace when none were): for work taken up after its request answered."""
    if _tracing is None:
        yield
        return
    stored = fields.get(TRACEPARENT)
    fresh = otel_context.Context()
    parent = _PROPAGATOR.extract({TRACEPARENT: stored}, context=fresh) if isinstance(stored, str) else fresh
    token = otel_context.attach(parent)
    try:
        yield
    finally:
        otel_context.detach(token)


class _Dispatching(Protocol):
    _outcomes: list[Any]


D = TypeVar("D", bound=_Dispatching)
Deliver = Callable[[D, dict[str, Any], dict[str, Any]], Coroutine[Any, Any, None]]


def _outcome_of(dispatcher: _Dispatching, delivery_id: str) -> str:
    # ``_deliver`` appends its outcome and returns without awaiting anything in between, so the
    # outcome is still in the unsettled list when the wrapper resumes. A 410 suspends the
    # subscription and leaves no outcome.
    for outcome in reversed(dispatcher._outcomes):
        if outcome.delivery_id == delivery_id:
            return str(outcome.state)
    return "suspended"


@contextmanager
def _delivery_span(delivery: dict[str, Any], event: dict[str, Any]) -> Iterator[trace.Span]:
    assert _tracing is not None
    attributes: dict[str, str | int] = {"messaging.system": "tmf-hub", "messaging.operation.type": "send",
                  "messaging.destination.name": str(delivery.get("subscriptionId")),
                  "messaging.message.id": str(event.get("eventId")), "sqm.event.type": str(event.get("eventType")),
                  "sqm.delivery.attempt": int(delivery.get("attempts", 0)) + 1}
    # The change's trace, not the dispatcher loop's context (where instrumentation is
    # suppressed): the delivery's HTTP call must be traced and carry the traceparent.
    with continued(delivery), _tracing.tracer.start_as_current_span(
            f"deliver {event.get('eventType')}", kind=SpanKind.PRODUCER, attributes=attributes) as span:
        yield span


def untraced() -> AbstractContextManager[object]:
    """Within it, instrumentations make no spans (and tasks created inside inherit that): for
    background loops whose polling would otherwise start a trace every few hundred milliseconds."""
    if _tracing is None:
        return nullcontext()
    from opentelemetry.instrumentation.utils import suppress_instrumentation

    return suppress_instrumentation()


def observed_delivery(deliver: Deliver[D]) -> Deliver[D]:
    """Wraps ``Dispatcher._deliver``: a delivery span continuing the trace stored with the event
    (its HTTP call, and so the ``traceparent`` the listener gets, are children of it) when
    tracing is on, and the delivery metrics always."""

    @functools.wraps(deliver)
    async def wrapper(dispatcher: D, delivery: dict[str, Any], event: dict[str, Any]) -> None:
        if _tracing is None:
            await deliver(dispatcher, delivery, event)
            outcome = _outcome_of(dispatcher, delivery["_id"])
        else:
            with _delivery_span(delivery, event) as span:
                await deliver(dispatcher, delivery, event)
                outcome = _outcome_of(dispatcher, delivery["_id"])
                span.set_attribute("sqm.delivery.outcome", outcome)
                if outcome != "delivered":
                    span.set_status(Status(StatusCode.ERROR, outcome))
        metrics.delivery_attempted(str(delivery.get("subscriptionId")), outcome, event.get("eventTime"))

    return wrapper


# -- logs ----------------------------------------------------------------------------------------

def add_trace_ids(logger: Any, method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: the current span's ``trace_id`` and ``span_id`` on every line."""
    if _tracing is None:
        return event_dict
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event_dict["trace_id"] = format(context.trace_id, "032x")
        event_dict["span_id"] = format(context.span_id, "016x")
    return event_dict


def setup_for_apis(api_names: list[str]) -> bool:
    """``setup`` for a process serving these APIs: ``tmf-sqm-<api>`` for one, ``tmf-sqm`` for all."""
    return setup(f"tmf-sqm-{api_names[0]}" if len(api_names) == 1 else "tmf-sqm")
