"""Telemetry pieces on their own: when tracing is on, which exporter, route templates as labels,
and the request metrics middleware."""

from __future__ import annotations

import uuid

import pytest
from opentelemetry.sdk.trace.export import ConsoleSpanExporter
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from services.tmf import metrics, telemetry
from services.tmf.settings import SettingsError


@pytest.mark.parametrize(("environ", "on"), [
    ({}, False),
    ({"OTEL_TRACES_EXPORTER": "none"}, False),
    ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_TRACES_EXPORTER": "none"}, False),
    ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}, False),
    ({"OTEL_TRACES_EXPORTER": "console", "OTEL_SDK_DISABLED": "false"}, True),
])
def test_tracing_is_on_only_when_the_environment_names_an_exporter(environ: dict[str, str], on: bool) -> None:
    assert telemetry.tracing_requested(environ) is on


def test_exporters_by_name() -> None:
    [console] = telemetry._exporters({"OTEL_TRACES_EXPORTER": "console"})
    assert isinstance(console, ConsoleSpanExporter)
    with pytest.raises(SettingsError, match="unknown exporter 'zipkinish'"):
        telemetry._exporters({"OTEL_TRACES_EXPORTER": "zipkinish"})
    with pytest.raises(SettingsError, match="http/protobuf"):
        telemetry._exporters({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})


def test_nothing_is_stored_with_events_while_tracing_is_off() -> None:
    assert not telemetry.enabled()
    assert telemetry.trace_fields() == {}
    assert telemetry.add_trace_ids(None, "info", {"event": "x"}) == {"event": "x"}


def test_routes_are_the_operations_templates_never_raw_paths() -> None:
    document = {"paths": {"/service/{id}": {"get": {"operationId": "retrieveService"},
                                            "parameters": [{"name": "id"}]},
                          "/service": {"post": {"operationId": "createService"}}}}
    classify = metrics.connexion_classifier([("serviceInventory", "/inv/v4", document)])
    routed = {"path": "/inv/v4/service/42", "extensions": {"connexion_routing": {
        "api_base_path": "/inv/v4", "operation_id": "retrieveService"}}}
    assert classify(routed) == ("serviceInventory", "/inv/v4/service/{id}")
    assert classify({"path": "/health", "extensions": {}}) == ("", "/health")
    assert classify({"path": "/inv/v4/nowhere/42", "extensions": {}}) == ("serviceInventory", "other")
    assert classify({"path": "/elsewhere", "extensions": {}}) == ("", "other")


def test_seconds_since_reads_tmf_date_times_only() -> None:
    assert metrics.seconds_since("2020-01-01T00:00:00.000Z") > 0
    assert metrics.seconds_since("not a time") is None
    assert metrics.seconds_since(None) is None


def test_the_middleware_counts_by_what_classify_says() -> None:
    api = f"unit-{uuid.uuid4().hex[:8]}"

    async def hello(request: Request) -> JSONResponse:
        return JSONResponse({}, status_code=202)

    def classify(scope: dict[str, object]) -> tuple[str, str] | None:
        return None if scope["path"] == "/skip" else (api, "/hello/{name}")

    app = metrics.HttpMetricsMiddleware(Starlette(routes=[Route("/hello/{name}", hello), Route("/skip", hello)]),
                                        classify)
    with TestClient(app) as client:
        for name in ("a", "b"):
            assert client.get(f"/hello/{name}").status_code == 202
        client.get("/skip")
    labels = {"api": api, "http_request_method": "GET", "http_route": "/hello/{name}",
              "http_response_status_code": "202"}
    assert metrics.REGISTRY.get_sample_value("http_server_request_duration_seconds_count", labels) == 2
    assert not [s for f in metrics.REGISTRY.collect() for s in f.samples
                if s.labels.get("api") == api and s.labels.get("http_route") != "/hello/{name}"]
