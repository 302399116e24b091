"""A month of one-minute availability probes, evaluated and closed as a contract would be:
violations, rebates in money, settlement statements, and the events that carry them."""

from __future__ import annotations

import random
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx
import pytest
from starlette.testclient import TestClient

from services.app import create_app
from services.tmf.embedded import free_port
from services.tmf.spec import SchemaIndex, load_document
from tests.conftest import make_settings
from tests.support.auth import bearer
from tests.support.listener import Listener
from tests.support.server import serve

SLA_API = "/tmf-api/slaManagement/v4"
OCTOBER = datetime(2026, 10, 1, tzinfo=UTC)
OCTOBER_MINUTES = 31 * 24 * 60  # 44,640
DOWN_FROM = datetime(2026, 10, 10, 10, 0, tzinfo=UTC)
DOWN_MINUTES = 100
TIERS = [{"threshold": 99.9, "rebatePercent": 10}, {"threshold": 99.5, "rebatePercent": 25},
         {"threshold": 99.0, "rebatePercent": 50}]


@dataclass
class Clock:
    now: datetime

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime(2026, 10, 31, 23, 59, tzinfo=UTC))


@pytest.fixture
def sla_client(mongo_uri, clock) -> Iterator[TestClient]:
    settings = make_settings(mongo_uri, delivery_poll_seconds=0.05, sla_close_interval_seconds=0.1)
    with TestClient(create_app(settings, clock=clock), base_url="http://testserver") as client:
        client.headers.update(bearer(settings))
        yield client


def probes(service: str, start: datetime, minutes: int, down_from: datetime, down_minutes: int):
    """One sample a minute; the minutes from ``down_from`` on are down."""
    first_down = int((down_from - start).total_seconds() // 60)
    for i in range(minutes):
        at = start + timedelta(minutes=i)
        yield {"metric": "availability", "value": 0 if first_down <= i < first_down + down_minutes else 1,
               "observedAt": at.strftime("%Y-%m-%dT%H:%M:%SZ"), "service": {"id": service}, "interval": 60}


def send(client, samples, batch=5000):
    samples = list(samples)
    raised = 0
    for i in range(0, len(samples), batch):
        response = client.post(f"{SLA_API}/measurement", json=samples[i:i + batch])
        assert response.status_code == 201, response.text
        raised += response.json()["violationsRaised"]
    return raised


def sla(client, name, service, provider, consumer, charge, rule, **extra):
    body = {
        "name": name,
        "relatedParty": [{"id": provider, "name": provider, "role": "SLAProvider", "@referredType": "Organization"},
                         {"id": consumer, "name": consumer, "role": "SLAConsumer", "@referredType": "Organization"}],
        "relatedEntity": [{"id": service, "role": "coveredService", "@referredType": "Service"}],
        "evaluationPeriod": {"kind": "month", "timeZone": extra.pop("timeZone", "UTC")},
        "charge": {"unit": "EUR", "value": charge},
        "rule": [rule],
        **extra,
    }
    response = client.post(f"{SLA_API}/sla", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def availability_rule(reference, tiers=TIERS):
    return {"id": "availability", "metric": "availability", "operator": ".ge", "referenceValue": reference,
            "unit": "%", "rebateTier": tiers}


def close(client, sla_id, start=OCTOBER, end=datetime(2026, 11, 1, tzinfo=UTC)):
    response = client.post(f"{SLA_API}/slaEvaluation", json={
        "sla": {"id": sla_id}, "close": True,
        "period": {"startDateTime": start.isoformat(), "endDateTime": end.isoformat()}})
    assert response.status_code == 201, response.text
    return response.json()


def test_october_with_downtime_maintenance_and_a_partner(sla_client, clock):
    client = sla_client
    listener = Listener().start()
    try:
        hub = client.post(f"{SLA_API}/hub", json={
            "callback": listener.url,
            "query": "eventType=SLAViolationCreateEvent,RebateCreateEvent,SettlementStatementCreateEvent"})
        assert hub.status_code == 201, hub.text
        customer = sla(client, "ACME VPN", "vpn-1", "operator", "acme", 1000, availability_rule(99.9))
        maintained = sla(client, "ACME VPN with maintenance", "vpn-2", "operator", "acme", 1000,
                         availability_rule(99.9), maintenanceWindow=[{
                             "validFor": {"startDateTime": "2026-10-10T10:00:00Z",
                                          "endDateTime": "2026-10-10T11:00:00Z"},
                             "reason": "planned PE upgrade"}])
        partner = sla(client, "Partner access", "access-1", "partner-a", "operator", 200,
                      availability_rule(99.95, [{"threshold": 99.95, "rebatePercent": 20}]))

        raised = 0
        for service in ("vpn-1", "vpn-2", "access-1"):
            raised += send(client, probes(service, OCTOBER, OCTOBER_MINUTES, DOWN_FROM, DOWN_MINUTES))
        # 99.9 % of 44,640 minutes allows 44.64 minutes down: vpn-1 and access-1 (99.95 %, 22.32
        # minutes) are lost during the month; vpn-2 only loses the 40 minutes outside maintenance
        # out of 44,580, under its 44.58-minute budget.
        assert raised == 2
        provisional = client.get(f"{SLA_API}/slaViolation?status=provisional").json()
        assert sorted(v["sla"]["id"] for v in provisional) == sorted([customer["id"], partner["id"]])

        clock.now = datetime(2026, 11, 1, 0, 5, tzinfo=UTC)
        evaluation = close(client, customer["id"])
        [result] = evaluation["ruleResult"]
        # (44,640 - 100) / 44,640 = 99.77598...% -> 99.776
        assert result["actualValue"] == pytest.approx(99.776, abs=0.0005)
        assert result["met"] is False
        assert result["sampleCount"] == OCTOBER_MINUTES
        assert result["evaluatedSeconds"] == OCTOBER_MINUTES * 60
        rebate = client.get(evaluation["rebate"]["href"].replace("http://testserver", "")).json()
        assert rebate["amount"] == {"unit": "EUR", "value": 100.0}
        assert [(line["percent"], line["amount"]["value"]) for line in rebate["line"]] == [(10.0, 100.0)]
        assert rebate["payer"]["id"] == "operator"
        assert rebate["payee"]["id"] == "acme"
        [violation] = client.get(f"{SLA_API}/slaViolation?sla.id={customer['id']}").json()
        assert violation["status"] == "final"
        assert violation["violation"]["actualValue"] == pytest.approx(99.776, abs=0.0005)

        again = close(client, customer["id"])
        assert again["id"] == evaluation["id"]
        assert again["ruleResult"] == evaluation["ruleResult"]
        # The scheduler may close the other SLAs meanwhile (the clock is past October): count
        # only this one's rebates.
        assert client.get(f"{SLA_API}/rebate?sla.id={customer['id']}").headers["x-total-count"] == "1"

        kept = close(client, maintained["id"])
        # 40 minutes down over 44,580 counted minutes = 99.9103...% >= 99.9
        assert kept["ruleResult"][0]["met"] is True
        assert kept["ruleResult"][0]["excludedSeconds"] == 3600
        assert kept["ruleResult"][0]["exclusion"][0]["reason"] == "planned PE upgrade"
        assert kept["violation"] == []
        assert "rebate" not in kept or kept["rebate"] is None

        credit = close(client, partner["id"])
        assert credit["rebate"]["amount"] == {"unit": "EUR", "value": 40.0}
        statements = {s["party"]["id"]: s for s in client.get(f"{SLA_API}/settlementStatement").json()}
        assert statements["operator"]["owed"] == {"unit": "EUR", "value": 100.0}
        assert statements["operator"]["owedTo"] == {"unit": "EUR", "value": 40.0}
        assert statements["operator"]["net"] == {"unit": "EUR", "value": -60.0}
        assert {line["direction"] for line in statements["operator"]["line"]} == {"payable", "receivable"}
        assert statements["acme"]["owedTo"]["value"] == 100.0
        assert statements["partner-a"]["owed"]["value"] == 40.0

        events = listener.wait_for(7)
        kinds = sorted(e["eventType"] for e in events)
        assert kinds.count("SLAViolationCreateEvent") == 2
        assert kinds.count("RebateCreateEvent") == 2
        assert kinds.count("SettlementStatementCreateEvent") == 3
    finally:
        listener.stop()


def test_scheduler_closes_the_month_when_it_ends(sla_client, clock):
    client = sla_client
    clock.now = datetime(2026, 10, 1, 0, 0, tzinfo=UTC)
    customer = sla(client, "Scheduled", "vpn-9", "operator", "acme", 500, availability_rule(99.9))
    clock.now = datetime(2026, 10, 31, 23, 59, tzinfo=UTC)
    send(client, probes("vpn-9", OCTOBER, OCTOBER_MINUTES, DOWN_FROM, 600))
    clock.now = datetime(2026, 11, 1, 0, 1, tzinfo=UTC)
    listener = Listener()
    evaluations = []
    for _ in range(300):
        evaluations = client.get(f"{SLA_API}/slaEvaluation?sla.id={customer['id']}&state=closed").json()
        if evaluations:
            break
        listener.wait_for(1, timeout=0.05)
    [evaluation] = evaluations
    # 600 minutes down: (44,640 - 600) / 44,640 = 98.655...% -> below 99.0: the 50 % tier of 500.00
    assert evaluation["rebate"]["amount"] == {"unit": "EUR", "value": 250.0}


def test_stockholm_october_has_44700_minutes(sla_client, clock):
    client = sla_client
    local = sla(client, "Stockholm VPN", "vpn-se", "operator", "acme", 1000, availability_rule(99.9),
                timeZone="Europe/Stockholm")
    start = datetime(2026, 9, 30, 22, 0, tzinfo=UTC)  # 1 October 00:00 CEST
    send(client, probes("vpn-se", start, 44_700, DOWN_FROM, 0))
    clock.now = datetime(2026, 11, 1, 0, 5, tzinfo=UTC)
    evaluation = close(client, local["id"], start, datetime(2026, 10, 31, 23, 0, tzinfo=UTC))
    assert evaluation["ruleResult"][0]["evaluatedSeconds"] == 44_700 * 60
    assert evaluation["ruleResult"][0]["actualValue"] == 100.0


@pytest.mark.parametrize(("samples", "fragment"), [
    ([{"metric": "nonsense", "value": 1, "observedAt": "2026-10-01T00:00:00Z", "service": {"id": "s"}}], "[0]"),
    ([{"metric": "availability", "value": 1, "observedAt": "2026-10-01T00:00:00Z", "service": {"id": "s"}},
      {"metric": "availability", "value": 1, "observedAt": "yesterday", "service": {"id": "s"}}], "[1].observedAt"),
    ([{"metric": "availability", "value": 1, "observedAt": "2030-01-01T00:00:00Z", "service": {"id": "s"}}], "future"),
    ([{"metric": "availability", "value": 0.5, "observedAt": "2026-10-01T00:00:00Z", "service": {"id": "s"}}], "[0]"),
])
def test_bad_samples_are_reported_by_index_and_nothing_is_stored(sla_client, samples, fragment):
    response = sla_client.post(f"{SLA_API}/measurement", json=samples)
    assert response.status_code == 400, response.text
    assert fragment in response.json()["message"]


@pytest.mark.parametrize("change", [
    {"rule": [{"id": "r", "metric": "jitter", "operator": ".ge", "referenceValue": 1}]},
    {"rule": [{"id": "r", "metric": "availability", "operator": ".between", "referenceValue": 1}]},
    {"rule": [{"id": "r", "metric": "availability", "operator": ".ge", "referenceValue": "high"}]},
    {"validFor": {"startDateTime": "2026-12-01T00:00:00Z", "endDateTime": "2026-01-01T00:00:00Z"}},
    {"maintenanceWindow": [
        {"validFor": {"startDateTime": "2026-10-01T00:00:00Z", "endDateTime": "2026-10-01T02:00:00Z"}},
        {"validFor": {"startDateTime": "2026-10-01T01:00:00Z", "endDateTime": "2026-10-01T03:00:00Z"}}]},
    {"rule": [availability_rule(99.9, [{"threshold": 99.9, "rebatePercent": 25},
                                        {"threshold": 99.5, "rebatePercent": 10}])]},
    {"evaluationPeriod": {"kind": "month", "timeZone": "Mars/Olympus"}},
])
def test_bad_slas_are_refused(sla_client, change):
    body = {"name": "bad", "rule": [availability_rule(99.9)], **change}
    response = sla_client.post(f"{SLA_API}/sla", json=body)
    assert response.status_code == 400, response.text
    assert sla_client.get(f"{SLA_API}/sla").headers["x-total-count"] == "0"


def test_currency_cannot_change_once_rebates_exist(sla_client, clock):
    client = sla_client
    customer = sla(client, "EUR SLA", "vpn-c", "operator", "acme", 1000, availability_rule(99.9))
    send(client, probes("vpn-c", OCTOBER, 1440, OCTOBER, 60))
    clock.now = datetime(2026, 11, 1, 0, 5, tzinfo=UTC)
    assert close(client, customer["id"])["rebate"]
    response = client.patch(f"{SLA_API}/sla/{customer['id']}", json={"charge": {"unit": "SEK", "value": 10000}})
    assert response.status_code == 409, response.text


# --- backfills, withdrawals, exotic input, concurrent closes ----------------------------------

NOVEMBER = datetime(2026, 11, 1, tzinfo=UTC)
BURST_FROM = datetime(2026, 10, 2, 10, 0, tzinfo=UTC)  # minute 2,040: inside the first batch of 5,000
BURST_MINUTES = 40


def document_errors(schema: str, body: dict) -> list[str]:
    return SchemaIndex(load_document("slaManagement.yaml"), schema).errors(body)


def backfill_order(samples: list[dict], order: str) -> list[dict]:
    if order == "reverse":
        return samples[::-1]
    if order == "random":
        shuffled = samples[:]
        random.Random(623).shuffle(shuffled)
        return shuffled
    return samples


def test_a_met_month_backfilled_in_any_order_raises_nothing_and_closes_the_same(sla_client, clock):
    client = sla_client
    clock.now = datetime(2026, 11, 20, tzinfo=UTC)  # October is over: every sample is a backfill
    listener = Listener().start()
    try:
        assert client.post(f"{SLA_API}/hub", json={"callback": listener.url,
                                                   "query": "eventType=SLAViolationCreateEvent"}).status_code == 201
        final_states = {}
        for order in ("time", "reverse", "random"):
            service = f"vpn-backfill-{order}"
            customer = sla(client, f"Backfilled {order}", service, "operator", "acme", 1000, availability_rule(99.9))
            samples = backfill_order(list(probes(service, OCTOBER, OCTOBER_MINUTES, BURST_FROM, BURST_MINUTES)), order)
            first, rest = samples[:5000], samples[5000:]
            assert send(client, first) == 0
            if order == "time":
                # What the first batch shows, judged as if October were complete: the 40-minute
                # burst in 5,000 minutes is 99.2 %, a miss. Yet 40 minutes is within October's
                # 44.64-minute budget, so nothing may be raised.
                preview = client.post(f"{SLA_API}/slaEvaluation", json={
                    "sla": {"id": customer["id"]},
                    "period": {"startDateTime": OCTOBER.isoformat(), "endDateTime": NOVEMBER.isoformat()}})
                assert preview.status_code == 201, preview.text
                assert preview.json()["ruleResult"][0]["met"] is False
            assert send(client, rest) == 0
            assert client.get(f"{SLA_API}/slaViolation?sla.id={customer['id']}").json() == []
            evaluation = close(client, customer["id"])
            violations = client.get(f"{SLA_API}/slaViolation?sla.id={customer['id']}").json()
            final_states[order] = (evaluation["ruleResult"], evaluation["violation"],
                                   evaluation.get("withdrawnViolation"), evaluation.get("rebate"),
                                   [(v["status"], v.get("statusChangeReason")) for v in violations])
        # (44,640 - 40) / 44,640 = 99.91039...% -> 99.9104, met: nothing raised, nothing owed.
        [result] = final_states["time"][0]
        assert result["actualValue"] == pytest.approx(99.9104, abs=0.00005)
        assert result["met"] is True
        assert final_states["time"][1:] == ([], None, None, [])
        assert final_states["reverse"] == final_states["time"]
        assert final_states["random"] == final_states["time"]
        assert client.get(f"{SLA_API}/rebate").json() == []
        assert client.get(f"{SLA_API}/settlementStatement").json() == []
        # Nothing was announced either (a violation event would have arrived before the closes).
        assert listener.events() == []
    finally:
        listener.stop()


def test_a_provisional_violation_of_a_period_met_at_close_is_withdrawn(sla_client, clock):
    client = sla_client
    clock.now = datetime(2026, 11, 20, tzinfo=UTC)
    listener = Listener().start()
    try:
        assert client.post(f"{SLA_API}/hub", json={
            "callback": listener.url, "query": "eventType=SLAViolationStateChangeEvent"}).status_code == 201
        customer = sla(client, "Withdrawn", "vpn-w", "operator", "acme", 1000, availability_rule(99.9))
        # An outage report: down for 60 minutes from 10:00 on 2 October, more than October's
        # 44.64-minute budget on its own.
        report = {"metric": "availability", "value": 0, "observedAt": "2026-10-02T10:00:00Z",
                  "service": {"id": "vpn-w"}, "interval": 3600}
        assert send(client, [report]) == 1
        [provisional] = client.get(f"{SLA_API}/slaViolation?sla.id={customer['id']}").json()
        assert provisional["status"] == "provisional"
        # The minute probes arrive: down at 10:00 only, so the report's outage ends at 10:01.
        assert send(client, probes("vpn-w", OCTOBER, OCTOBER_MINUTES, BURST_FROM, 1)) == 0

        evaluation = close(client, customer["id"])
        assert evaluation["ruleResult"][0]["met"] is True
        assert evaluation["violation"] == []
        assert [v["id"] for v in evaluation["withdrawnViolation"]] == [provisional["id"]]
        assert "rebate" not in evaluation
        withdrawn = client.get(f"{SLA_API}/slaViolation/{provisional['id']}").json()
        assert withdrawn["status"] == "withdrawn"
        assert "met the rule" in withdrawn["statusChangeReason"]
        # (44,640 - 1) / 44,640 = 99.99776...%
        assert withdrawn["violation"]["actualValue"] == pytest.approx(99.9978, abs=0.00005)
        assert document_errors("SLAViolation", withdrawn) == []
        [event] = listener.wait_for(1)
        assert event["eventType"] == "SLAViolationStateChangeEvent"
        assert event["event"]["slaViolation"]["status"] == "withdrawn"
        assert event["event"]["slaViolation"]["id"] == provisional["id"]
        assert client.get(f"{SLA_API}/rebate").json() == []
        # Closing again changes nothing and announces nothing more.
        assert close(client, customer["id"])["id"] == evaluation["id"]
        assert client.get(f"{SLA_API}/slaViolation/{provisional['id']}").json() == withdrawn
    finally:
        listener.stop()


def test_a_maintenance_window_without_reason_evaluates_and_closes(sla_client, clock):
    client = sla_client
    clock.now = datetime(2026, 11, 20, tzinfo=UTC)
    customer = sla(client, "No reason given", "vpn-nr", "operator", "acme", 1000, availability_rule(99.9),
                   maintenanceWindow=[{"validFor": {"startDateTime": "2026-10-10T10:00:00Z",
                                                    "endDateTime": "2026-10-10T11:00:00Z"}}],
                   rebateCap={"percent": 20})
    send(client, probes("vpn-nr", OCTOBER, OCTOBER_MINUTES, DOWN_FROM, 600))
    evaluation = close(client, customer["id"])
    [result] = evaluation["ruleResult"]
    assert result["excludedSeconds"] == 3600
    assert result["exclusion"] == [{"start": "2026-10-10T10:00:00.000Z", "end": "2026-10-10T11:00:00.000Z",
                                    "seconds": 3600.0}]
    # 540 minutes down outside the window over 44,580 counted: 98.79 %, below 99.0: 50 %, capped at 20 %.
    assert evaluation["rebate"]["amount"] == {"unit": "EUR", "value": 200.0}
    assert document_errors("SLAEvaluation", evaluation) == []
    [violation] = client.get(f"{SLA_API}/slaViolation?sla.id={customer['id']}").json()
    assert violation["status"] == "final"


def test_a_huge_charge_still_closes_to_exact_cents(sla_client, clock):
    client = sla_client
    clock.now = datetime(2026, 11, 20, tzinfo=UTC)
    customer = sla(client, "Huge", "vpn-huge", "operator", "acme", 1e30, availability_rule(99.9))
    send(client, probes("vpn-huge", OCTOBER, 1440, OCTOBER, 60))
    evaluation = close(client, customer["id"])
    # 60 of 1,440 minutes down: 95.83 %, the 50 % tier of 10^30.
    assert evaluation["rebate"]["amount"] == {"unit": "EUR", "value": 5e29}


@pytest.mark.parametrize(("start", "end"), [
    ("2026-10-02T00:00:00Z", "2026-10-01T00:00:00Z"),
    ("2026-10-01T00:00:00Z", "2026-10-01T00:00:00Z"),
    ("2026-10-01T02:00:00+02:00", "2026-10-01T00:00:00Z"),
])
def test_an_inverted_evaluation_period_is_a_400_that_says_what_to_fix(sla_client, start, end):
    customer = sla(sla_client, "Inverted", "vpn-inv", "operator", "acme", 10, availability_rule(99.9))
    response = sla_client.post(f"{SLA_API}/slaEvaluation", json={
        "sla": {"id": customer["id"]}, "period": {"startDateTime": start, "endDateTime": end}})
    assert response.status_code == 400, response.text
    error = response.json()
    assert (error["status"], error["code"]) == ("400", "400")
    assert "period.endDateTime" in error["message"] and "after" in error["message"]


def test_an_evaluation_period_outside_the_calendar_range_is_a_400(sla_client):
    customer = sla(sla_client, "Ancient", "vpn-old", "operator", "acme", 10, availability_rule(99.9))
    response = sla_client.post(f"{SLA_API}/slaEvaluation", json={
        "sla": {"id": customer["id"]},
        "period": {"startDateTime": "0001-01-01T00:00:00Z", "endDateTime": "0001-01-02T00:00:00Z"}})
    assert response.status_code == 400, response.text
    assert "1970-01-01" in response.json()["message"]


@pytest.fixture
def served_sla(mongo_uri, clock) -> Iterator[tuple[str, dict[str, str]]]:
    port = free_port()
    settings = make_settings(mongo_uri, public_url=f"http://127.0.0.1:{port}", sla_close_interval_seconds=3600)
    with serve(create_app(settings, clock=clock), port) as base:
        yield base, bearer(settings)


def test_concurrent_closes_for_one_party_never_lose_a_statement_line(served_sla, clock):
    clock.now = datetime(2026, 12, 1, tzinfo=UTC)
    parties, days = 8, 50
    base, headers = served_sla
    with httpx.Client(base_url=base, headers=headers, timeout=60) as client:
        slas = []
        for i in range(parties):
            body = {"name": f"Small {i}", "evaluationPeriod": {"kind": "day", "timeZone": "UTC"},
                    "relatedParty": [{"id": "operator", "name": "operator", "role": "SLAProvider",
                                      "@referredType": "Organization"},
                                     {"id": f"customer-{i}", "name": f"customer {i}", "role": "SLAConsumer",
                                      "@referredType": "Organization"}],
                    "relatedEntity": [{"id": f"race-{i}", "role": "coveredService", "@referredType": "Service"}],
                    "charge": {"unit": "EUR", "value": 100 + i + 0.01}, "rule": [availability_rule(99.9)]}
            created = client.post(f"{SLA_API}/sla", json=body)
            assert created.status_code == 201, created.text
            slas.append(created.json())
        # One down minute a day per service: under the day's 1.44-minute budget, so nothing is
        # raised early, but 0 % of the evaluated minute at close: the 50 % tier.
        samples = [{"metric": "availability", "value": 0, "service": {"id": f"race-{i}"}, "interval": 60,
                    "observedAt": (OCTOBER + timedelta(days=d)).strftime("%Y-%m-%dT%H:%M:%SZ")}
                   for i in range(parties) for d in range(days)]
        assert client.post(f"{SLA_API}/measurement", json=samples).json()["violationsRaised"] == 0

        def close_day(sla_id: str, day: datetime) -> int:
            response = client.post(f"{SLA_API}/slaEvaluation", json={
                "sla": {"id": sla_id}, "close": True,
                "period": {"startDateTime": day.isoformat(), "endDateTime": (day + timedelta(days=1)).isoformat()}})
            return response.status_code

        with ThreadPoolExecutor(parties) as pool:
            for d in range(days):
                day = OCTOBER + timedelta(days=d)
                assert list(pool.map(close_day, [s["id"] for s in slas], [day] * parties)) == [201] * parties
                start = day.strftime("%Y-%m-%dT%H:%M:%S.000Z")
                statements = client.get(f"{SLA_API}/settlementStatement?party.id=operator"
                                        f"&period.startDateTime={start}").json()
                [statement] = statements
                rebates = client.get(f"{SLA_API}/rebate?period.startDateTime={start}&limit=100").json()
                assert len(rebates) == parties
                assert sorted(line["rebate"]["id"] for line in statement["line"]) == sorted(r["id"] for r in rebates)
                owed = sum(Decimal(repr(r["amount"]["value"])) for r in rebates)
                assert Decimal(repr(statement["owed"]["value"])) == owed
                assert Decimal(repr(statement["net"]["value"])) == -owed
                assert statement["owedTo"]["value"] == 0
                assert document_errors("SettlementStatement", statement) == []
            # Closing a day again finds its lines there and adds nothing.
            assert list(pool.map(close_day, [s["id"] for s in slas], [day] * parties)) == [201] * parties
            [again] = client.get(f"{SLA_API}/settlementStatement?party.id=operator"
                                 f"&period.startDateTime={start}").json()
            assert again["line"] == statement["line"]
            assert again["owed"] == statement["owed"]
