"""Telemetry over real HTTP: one trace follows an alarm from the gateway through the alarm API,
MongoDB and the outbox, into the problem service's listener, its impact query to the inventory
and the problem it stores; and ``/metrics`` counts a scripted scenario exactly."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client.parser import text_string_to_metric_families

from gateway import GatewaySettings, create_gateway
from gateway.portal import suite_apis
from services.app import APIS, create_app
from services.tmf import telemetry
from services.tmf.embedded import free_port
from tests.conftest import INVENTORY, make_settings
from tests.support.auth import bearer
from tests.support.listener import Listener, eventually
from tests.support.server import serve

ALARMS = "/tmf-api/alarmManagement/v4"
PROBLEMS = "/tmf-api/serviceProblemManagement/v4"
SLA_API = "/tmf-api/slaManagement/v4"




@contextmanager
def running_suite(mongo_uri: str, **overrides: Any) -> Iterator[httpx.Client]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    settings = make_settings(mongo_uri, public_url=base, inventory_url=f"{base}{INVENTORY}",
                             alarm_hub_url=f"{base}{ALARMS}", sla_hub_url=f"{base}{SLA_API}",
                             delivery_poll_seconds=0.05, **overrides)
    with serve(create_app(settings), port), httpx.Client(base_url=base, timeout=30) as client:
        client.headers.update(bearer(settings))
        assert eventually(lambda: all(s["subscription"] for s in client.get("/health").json()["subscriptions"]))
        yield client


@contextmanager
def gateway_in_front_of(suite_url: str, headers: Any) -> Iterator[httpx.Client]:
    port = free_port()
    settings = GatewaySettings(public_url=f"http://127.0.0.1:{port}",
                               upstreams={api.name: suite_url for api in APIS})
    with serve(create_gateway(settings, suite_apis()), port) as url, \
            httpx.Client(base_url=url, timeout=30, headers=headers) as client:
        yield client


def inventory_with_link(client: httpx.Client) -> None:
    partner = {"id": "partner-a", "role": "supplier", "@referredType": "Organization"}
    access = client.post(f"{INVENTORY}/service", json={
        "name": "access-1", "category": "RFS", "state": "active", "serviceSpecification": {"id": "access"},
        "relatedParty": [partner], "supportingResource": [{"id": "link-1", "name": "access link 1"}]})
    assert access.status_code == 201, access.text
    vpn = client.post(f"{INVENTORY}/service", json={
        "name": "acme-vpn", "category": "CFS", "state": "active", "serviceSpecification": {"id": "ip-vpn"},
        "supportingService": [{"id": access.json()["id"]}]})
    assert vpn.status_code == 201, vpn.text


ALARM = {"alarmType": "communicationsAlarm", "perceivedSeverity": "critical", "probableCause": "lossOfSignal",
         "alarmedObject": {"id": "link-1", "@referredType": "Resource"}, "sourceSystemId": "nms",
         "state": "raised", "alarmRaisedTime": "2026-11-25T10:00:00Z"}


# -- traces ----------------------------------------------------------------------------------------

@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    telemetry.use_exporter(exporter)
    try:
        yield exporter
    finally:
        telemetry.disable()
        exporter.shutdown()


def _one(spans: list[ReadableSpan], description: str, test: Callable[[ReadableSpan], bool]) -> ReadableSpan:
    found = [s for s in spans if test(s)]
    assert found, f"no span for {description} in the trace: {sorted(s.name for s in spans)}"
    return found[0]


def _ancestors(span: ReadableSpan, by_id: dict[int, ReadableSpan]) -> list[ReadableSpan]:
    chain = []
    while span.parent is not None and span.parent.span_id in by_id:
        span = by_id[span.parent.span_id]
        chain.append(span)
    return chain


def test_one_trace_follows_an_alarm_from_the_gateway_to_the_problem(mongo_uri: str,
                                                                      spans: InMemorySpanExporter) -> None:
    with running_suite(mongo_uri) as suite, gateway_in_front_of(str(suite.base_url), suite.headers) as gateway:
        inventory_with_link(suite)
        spans.clear()
        posted = gateway.post(f"{ALARMS}/alarm", json=ALARM)
        assert posted.status_code == 201, posted.text
        alarm_id = posted.json()["id"]
        [problem] = eventually(lambda: suite.get(f"{PROBLEMS}/serviceProblem",
                                                 params={"underlyingAlarm.id": alarm_id}).json())
        assert problem["rootCauseResource"][0]["id"] == "link-1"

    finished = spans.get_finished_spans()
    entry = _one(list(finished), "the gateway's server span", lambda s: s.kind == SpanKind.SERVER
                 and s.name == f"POST {ALARMS}/{{path}}")
    trace = [s for s in finished if s.context.trace_id == entry.context.trace_id]
    by_id = {s.context.span_id: s for s in trace}
    route = lambda s: (s.attributes or {}).get("http.route")  # noqa: E731
    alarm_api = _one(trace, "the alarm API's server span",
                     lambda s: s.kind == SpanKind.SERVER and route(s) == f"{ALARMS}/alarm")
    alarm_insert = _one(trace, "the alarm's MongoDB insert", lambda s: s.kind == SpanKind.CLIENT
                        and s.name.endswith(".insert") and (s.attributes or {}).get("db.mongodb.collection") == "alarm")
    delivery = _one(trace, "the delivery of AlarmCreateEvent", lambda s: s.kind == SpanKind.PRODUCER
                    and s.name == "deliver AlarmCreateEvent")
    listener = _one(trace, "the problem listener's server span", lambda s: s.kind == SpanKind.SERVER
                    and route(s) == f"{PROBLEMS}/listener/alarmCreateEvent")
    impact = _one(trace, "the inventory's impact query", lambda s: s.kind == SpanKind.SERVER
                  and route(s) == f"{INVENTORY}/resourceImpact/{{id}}")
    problem_insert = _one(trace, "the problem's MongoDB insert", lambda s: s.kind == SpanKind.CLIENT
                          and s.name.endswith(".insert")
                          and (s.attributes or {}).get("db.mongodb.collection") == "serviceProblem")

    # Each hop descends from the one before it, across processes' worth of HTTP and the outbox.
    assert entry in _ancestors(alarm_api, by_id)
    assert alarm_api in _ancestors(alarm_insert, by_id)
    assert alarm_api in _ancestors(delivery, by_id)
    assert delivery in _ancestors(listener, by_id)
    assert listener in _ancestors(impact, by_id)
    assert any(s.kind == SpanKind.CLIENT for s in _ancestors(impact, by_id)[:1]), "impact query has a client span"
    assert listener in _ancestors(problem_insert, by_id)
    # Above the gateway there is only this test's own call (its httpx client is traced too).
    assert [s.kind for s in _ancestors(entry, by_id)] == [SpanKind.CLIENT]
    assert (delivery.attributes or {})["sqm.delivery.outcome"] == "delivered"
    # The dispatcher's polling of the delivery queue starts no traces of its own.
    queue = [s for s in finished if (s.attributes or {}).get("db.mongodb.collection") == "delivery"]
    assert queue and all(s.parent is not None for s in queue)


def test_the_listener_continues_a_trace_it_is_sent(mongo_uri: str, spans: InMemorySpanExporter) -> None:
    # What a partner's system sees: the delivery carries a traceparent of the producing trace.
    listener = Listener().start()
    try:
        with running_suite(mongo_uri) as suite:
            subscribed = suite.post(f"{INVENTORY}/hub", json={"callback": listener.url})
            assert subscribed.status_code == 201, subscribed.text
            spans.clear()
            created = suite.post(f"{INVENTORY}/service", json={
                "name": "vpn", "state": "active", "serviceSpecification": {"id": "ip-vpn"}})
            assert created.status_code == 201
            [received] = [r for r in eventually(lambda: listener.received) if r.event["eventType"]
                          == "ServiceCreateEvent"]
        create_span = _one(list(spans.get_finished_spans()), "the create", lambda s: s.kind == SpanKind.SERVER
                           and (s.attributes or {}).get("http.route") == f"{INVENTORY}/service")
        version, trace_id, _span_id, _flags = received.headers["traceparent"].split("-")
        assert version == "00" and int(trace_id, 16) == create_span.context.trace_id
        assert "traceparent" not in received.event, "the TMF event body stays as the documents define it"
    finally:
        listener.stop()


def test_log_lines_carry_trace_and_span_ids(spans: InMemorySpanExporter) -> None:
    provider_tracer = telemetry._tracing.tracer if telemetry._tracing else None
    assert provider_tracer is not None
    with provider_tracer.start_as_current_span("work") as span:
        line = telemetry.add_trace_ids(None, "info", {"event": "x"})
    assert line["trace_id"] == format(span.get_span_context().trace_id, "032x")
    assert line["span_id"] == format(span.get_span_context().span_id, "016x")
    assert "trace_id" not in telemetry.add_trace_ids(None, "info", {"event": "outside any span"})


# -- metrics -------------------------------------------------------------------------------------

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(client: httpx.Client) -> Samples:
    answer = client.get("/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(answer.text) for sample in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def http_count(samples: Samples, api: str, method: str, route: str, status: int) -> float:
    return value(samples, "http_server_request_duration_seconds_count", api=api, http_request_method=method,
                 http_route=route, http_response_status_code=str(status))


def test_metrics_count_a_scripted_scenario_exactly(mongo_uri: str) -> None:
    good, failing = Listener().start(), Listener(answer=503).start()
    try:
        with running_suite(mongo_uri, delivery_max_attempts=1) as suite:
            good_id = suite.post(f"{INVENTORY}/hub", json={"callback": good.url}).json()["id"]
            failing_id = suite.post(f"{INVENTORY}/hub", json={"callback": failing.url}).json()["id"]
            before = scrape(suite)

            ids = []
            for name in ("a", "b", "c"):
                created = suite.post(f"{INVENTORY}/service", json={
                    "name": name, "state": "active", "serviceSpecification": {"id": "spec"},
                    "supportingResource": [{"id": f"link-{name}"}]})
                assert created.status_code == 201
                ids.append(created.json()["id"])
            assert suite.get(f"{INVENTORY}/service/{ids[0]}").status_code == 200
            assert suite.get(f"{INVENTORY}/service/{ids[1]}").status_code == 200
            assert suite.get(f"{INVENTORY}/service/nope").status_code == 404
            samples = [{"metric": "availability", "value": 1, "observedAt": f"2026-10-01T00:0{i}:00Z",
                        "service": {"id": ids[0]}} for i in range(7)]
            assert suite.post(f"{SLA_API}/measurement", json=samples).status_code == 201
            alarm = suite.post(f"{ALARMS}/alarm", json={**ALARM, "alarmedObject": {"id": "link-a"}})
            assert alarm.status_code == 201
            assert eventually(lambda: suite.get(f"{PROBLEMS}/serviceProblem").json())
            assert eventually(lambda: len(good.received) >= 3 and failing.refused >= 3)

            def settled() -> Samples | None:
                after = scrape(suite)
                done = (value(after, "sqm_event_delivery_attempts_total", subscription=failing_id, outcome="dead")
                        - value(before, "sqm_event_delivery_attempts_total", subscription=failing_id,
                                outcome="dead") >= 3
                        and value(after, "sqm_event_delivery_queue_depth", subscription=good_id) == 0
                        and value(after, "sqm_correlation_lag_seconds_count")
                        > value(before, "sqm_correlation_lag_seconds_count"))
                return after if done else None

            after = eventually(settled)
            assert after is not None
    finally:
        good.stop()
        failing.stop()

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    service = f"{INVENTORY}/service"
    assert http_count(after, "serviceInventory", "POST", service, 201) \
        - http_count(before, "serviceInventory", "POST", service, 201) == 3
    assert http_count(after, "serviceInventory", "GET", service + "/{id}", 200) \
        - http_count(before, "serviceInventory", "GET", service + "/{id}", 200) == 2
    assert http_count(after, "serviceInventory", "GET", service + "/{id}", 404) \
        - http_count(before, "serviceInventory", "GET", service + "/{id}", 404) == 1
    assert http_count(after, "slaManagement", "POST", f"{SLA_API}/measurement", 201) \
        - http_count(before, "slaManagement", "POST", f"{SLA_API}/measurement", 201) == 1
    assert moved("sqm_measurements_ingested_total") == 7
    assert moved("sqm_event_delivery_attempts_total", subscription=good_id, outcome="delivered") == 3
    assert moved("sqm_event_delivery_latency_seconds_count", subscription=good_id) == 3
    assert moved("sqm_event_delivery_attempts_total", subscription=failing_id, outcome="dead") == 3
    assert moved("sqm_event_dead_letters_total", subscription=failing_id) == 3
    assert moved("sqm_event_dead_letters_total", subscription=good_id) == 0
    assert value(after, "sqm_event_delivery_queue_depth", subscription=failing_id) == 0
    assert value(after, "sqm_problems_open") == 1
    assert moved("sqm_correlation_lag_seconds_count") == 1
    # Raw paths never become label values.
    assert not any(ids[0] in dict(labels).get("http_route", "") for _, labels in after)


def test_sla_evaluations_are_counted_and_timed(mongo_uri: str) -> None:
    with running_suite(mongo_uri) as suite:
        sla = suite.post(f"{SLA_API}/sla", json={
            "name": "gold", "validFor": {"startDateTime": "2026-01-01T00:00:00Z"},
            "rule": [{"id": "r1", "metric": "availability", "referenceValue": 99.9, "operator": ".ge",
                      "unit": "%"}]})
        assert sla.status_code == 201, sla.text
        before = scrape(suite)
        period = {"startDateTime": "2026-10-01T00:00:00Z", "endDateTime": "2026-11-01T00:00:00Z"}
        for _ in range(2):
            answer = suite.post(f"{SLA_API}/slaEvaluation", json={"sla": {"id": sla.json()["id"]}, "period": period})
            assert answer.status_code == 201, answer.text
        after = scrape(suite)
    assert value(after, "sqm_sla_evaluations_total", close="false") \
        - value(before, "sqm_sla_evaluations_total", close="false") == 2
    assert value(after, "sqm_sla_evaluation_duration_seconds_count", close="false") \
        - value(before, "sqm_sla_evaluation_duration_seconds_count", close="false") == 2


def test_the_gateway_has_its_own_metrics(mongo_uri: str) -> None:
    with running_suite(mongo_uri) as suite, gateway_in_front_of(str(suite.base_url), suite.headers) as gateway:
        before = scrape(gateway)
        for _ in range(2):
            assert gateway.get(f"{INVENTORY}/service").status_code == 200
        assert gateway.get("/docs").status_code == 200
        after = scrape(gateway)
    assert http_count(after, "serviceInventory", "GET", f"{INVENTORY}/{{path}}", 200) \
        - http_count(before, "serviceInventory", "GET", f"{INVENTORY}/{{path}}", 200) == 2
    assert http_count(after, "gateway", "GET", "/docs", 200) - http_count(before, "gateway", "GET", "/docs", 200) == 1
