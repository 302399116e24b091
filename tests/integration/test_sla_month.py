"""A month of one-minute availability probes, evaluated and closed as a contract would be:
violations, rebates in money, settlement statements, and the events that carry them."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from starlette.testclient import TestClient

from services.app import create_app
from tests.conftest import make_settings
from tests.support.listener import Listener

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
        assert client.get(f"{SLA_API}/rebate").headers["x-total-count"] == "1"

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
