"""SLA reports per SLA and per party: their numbers are the API's own evaluation, rebate and
statements, in JSON, CSV and PDF alike; periods are local calendar periods across
daylight-saving changes; parties see only their own; bad parameters say what to fix."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from pypdf import PdfReader
from starlette.testclient import TestClient

from services.app import create_app
from services.sla.report_documents import parse_report_csv, render_report_html
from services.tmf.spec import SchemaIndex, load_document
from tests.conftest import make_settings
from tests.support.auth import bearer
from tests.support.parties import tmf_error

SLA_API = "/tmf-api/slaManagement/v4"
OCTOBER = datetime(2026, 10, 1, tzinfo=UTC)
NOVEMBER = datetime(2026, 11, 1, tzinfo=UTC)
STEP_MINUTES = 15
TIERS = [{"threshold": 99.9, "rebatePercent": 10}, {"threshold": 99.5, "rebatePercent": 25},
         {"threshold": 99.0, "rebatePercent": 50}]
# A name a spreadsheet would run and a page would parse if either were careless.
HOSTILE_NAME = "=HYPERLINK(\"x\") <b>ACME</b> & VPN"


@dataclass
class Clock:
    now: datetime

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture(scope="module")
def clock() -> Clock:
    # October has just ended: it can be closed, and every sample of it is in the past.
    return Clock(datetime(2026, 11, 1, 0, 5, tzinfo=UTC))


@pytest.fixture(scope="module")
def suite(mongo_uri: str, clock: Clock) -> Iterator[tuple[TestClient, Any]]:
    """One suite for the module (each test uses SLAs of its own). Periods are closed through the
    API, never by the scheduler under a test's feet."""
    settings = make_settings(mongo_uri, sla_close_interval_seconds=3600)
    with TestClient(create_app(settings, clock=clock), base_url="http://testserver") as client:
        client.headers.update(bearer(settings))
        yield client, settings


def availability(service: str, start: datetime, end: datetime, down: list[tuple[datetime, int]]) -> list[dict]:
    """A probe every quarter of an hour from ``start`` to ``end``; down for each (from, minutes)."""
    samples, at = [], start
    while at < end:
        is_down = any(first <= at < first + timedelta(minutes=minutes) for first, minutes in down)
        samples.append({"metric": "availability", "value": 0 if is_down else 1, "interval": STEP_MINUTES * 60,
                        "observedAt": at.strftime("%Y-%m-%dT%H:%M:%SZ"), "service": {"id": service}})
        at += timedelta(minutes=STEP_MINUTES)
    return samples


def latency(service: str, start: datetime, end: datetime) -> list[dict]:
    """Hourly p95 latency: 20 ms, but 45 ms one hour in eight (so the month's p95 is 45)."""
    samples, at, i = [], start, 0
    while at < end:
        samples.append({"metric": "latency.p95", "value": 45.0 if i % 8 == 3 else 20.0, "interval": 3600,
                        "observedAt": at.strftime("%Y-%m-%dT%H:%M:%SZ"), "service": {"id": service}})
        at += timedelta(hours=1)
        i += 1
    return samples


def send(client: TestClient, samples: list[dict]) -> None:
    for i in range(0, len(samples), 5000):
        response = client.post(f"{SLA_API}/measurement", json=samples[i:i + 5000])
        assert response.status_code == 201, response.text


def create_sla(client: TestClient, name: str, service: str, provider: str, consumer: str, time_zone: str = "UTC",
               **extra: Any) -> dict:
    body = {
        "name": name,
        "relatedParty": [{"id": provider, "name": provider, "role": "SLAProvider", "@referredType": "Organization"},
                         {"id": consumer, "name": consumer, "role": "SLAConsumer", "@referredType": "Organization"}],
        "relatedEntity": [{"id": service, "role": "coveredService", "@referredType": "Service"}],
        "evaluationPeriod": {"kind": "month", "timeZone": time_zone},
        "charge": {"unit": "EUR", "value": 1234.56},
        "rule": [{"id": "availability", "metric": "availability", "operator": ".ge", "referenceValue": 99.9,
                  "unit": "%", "rebateTier": TIERS},
                 {"id": "latency", "metric": "latency.p95", "operator": ".le", "referenceValue": 30, "unit": "ms",
                  "rebateTier": [{"threshold": 30, "rebatePercent": 5}]}],
        **extra,
    }
    response = client.post(f"{SLA_API}/sla", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def evaluate(client: TestClient, sla_id: str, start: datetime, end: datetime, close: bool = False) -> dict:
    response = client.post(f"{SLA_API}/slaEvaluation", json={
        "sla": {"id": sla_id}, "close": close,
        "period": {"startDateTime": start.isoformat(), "endDateTime": end.isoformat()}})
    assert response.status_code == 201, response.text
    return response.json()


def document_errors(schema: str, body: dict) -> list[str]:
    return SchemaIndex(load_document("slaManagement.yaml"), schema).errors(body)


def cents(value: float) -> Decimal:
    """The exact cents of an amount the API answered."""
    return Decimal(repr(value)).quantize(Decimal("0.01"))


def pdf_text(content: bytes) -> str:
    return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(content)).pages)


@pytest.fixture(scope="module")
def closed_october(suite: tuple[TestClient, Any]) -> dict[str, Any]:
    """An October with 5 hours down, a maintenance window and a slow p95, closed through the API."""
    client, _ = suite
    sla = create_sla(client, HOSTILE_NAME, "vpn-r1", "operator", "acme", maintenanceWindow=[{
        "validFor": {"startDateTime": "2026-10-10T10:00:00Z", "endDateTime": "2026-10-10T11:00:00Z"},
        "reason": "planned PE upgrade"}])
    partner = create_sla(client, "Partner access", "access-r1", "partner-a", "operator")
    send(client, availability("vpn-r1", OCTOBER, NOVEMBER, [(datetime(2026, 10, 12, 8, 0, tzinfo=UTC), 300),
                                                            (datetime(2026, 10, 10, 10, 0, tzinfo=UTC), 60)]))
    send(client, latency("vpn-r1", OCTOBER, NOVEMBER))
    # The partner's probes cover one day only: time without samples is not judged.
    outage_day = datetime(2026, 10, 20, tzinfo=UTC)
    send(client, availability("access-r1", outage_day, outage_day + timedelta(days=1), [(outage_day, 60)]))
    evaluation = evaluate(client, sla["id"], OCTOBER, NOVEMBER, close=True)
    partner_evaluation = evaluate(client, partner["id"], OCTOBER, NOVEMBER, close=True)
    return {"sla": sla, "partner": partner, "evaluation": evaluation, "partner_evaluation": partner_evaluation}


def test_a_closed_month_reports_the_evaluation_rebate_and_statements_exactly(suite, closed_october):
    client, _ = suite
    sla, evaluation = closed_october["sla"], closed_october["evaluation"]
    rebate = client.get(f"{SLA_API}/rebate/{evaluation['rebate']['id']}").json()
    statements = {s["party"]["id"]: s for s in client.get(f"{SLA_API}/settlementStatement").json()}
    # 300 minutes down outside the window over 44,580 counted: 99.327 %, the 25 % tier; p95 45 ms
    # over 30: 5 %. 25 % and 5 % of 1,234.56 are 308.64 and 61.728 -> 61.73.
    assert [(line["rule"], line["amount"]["value"]) for line in rebate["line"]] == [
        ("availability", 308.64), ("latency", 61.73)]
    assert rebate["amount"]["value"] == 370.37

    response = client.get(f"{SLA_API}/sla/{sla['id']}/report?period=month&start=2026-10-01")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    report = response.json()
    assert document_errors("SLAReport", report) == []
    assert report["state"] == "closed"
    assert report["evaluation"]["id"] == evaluation["id"]
    assert report["period"]["startDateTime"] == "2026-10-01T00:00:00.000Z"
    assert report["period"]["endDateTime"] == "2026-11-01T00:00:00.000Z"
    # The very numbers of the closed evaluation, rule by rule, to the second.
    assert report["ruleResult"] == evaluation["ruleResult"]
    assert report["ruleResult"][0]["evaluatedSeconds"] == (44_640 - 60) * 60
    assert report["exclusion"] == [{"reason": "planned PE upgrade", "start": "2026-10-10T10:00:00.000Z",
                                    "end": "2026-10-10T11:00:00.000Z", "seconds": 3600.0}]
    [violation_a, violation_l] = sorted(report["violation"], key=lambda v: v["rule"])
    assert (violation_a["rule"], violation_a["status"]) == ("availability", "final")
    assert violation_a["actualValue"] == evaluation["ruleResult"][0]["actualValue"]
    assert {v["id"] for v in report["violation"]} == {v["id"] for v in evaluation["violation"]}
    assert violation_l["rule"] == "latency"
    [reported_rebate] = report["rebate"]
    assert reported_rebate["amount"] == rebate["amount"]
    assert reported_rebate["line"] == rebate["line"]
    assert report["rebateTotal"] == {"unit": "EUR", "value": 370.37}
    lines = {line["party"]["id"]: line for line in report["statementLine"]}
    assert set(lines) == {"operator", "acme"}
    assert lines["operator"]["direction"] == "payable" and lines["acme"]["direction"] == "receivable"
    assert lines["operator"]["amount"] == statements["operator"]["line"][0]["amount"] == rebate["amount"]
    assert lines["acme"]["amount"]["value"] == statements["acme"]["owedTo"]["value"]

    # The chart: one bar per day, each the API's own evaluation of that day.
    availability_chart = next(c for c in report["chart"] if c["rule"] == "availability")
    assert len(availability_chart["bar"]) == 31
    for day_number in (10, 12, 13):
        start = datetime(2026, 10, day_number, tzinfo=UTC)
        [day_result, _] = evaluate(client, sla["id"], start, start + timedelta(days=1))["ruleResult"]
        bar = availability_chart["bar"][day_number - 1]
        assert bar["label"] == f"2026-10-{day_number:02d}"
        assert (bar["actualValue"], bar["met"]) == (day_result["actualValue"], day_result["met"])
    assert availability_chart["bar"][11]["met"] is False  # 12 October: 5 hours down
    assert availability_chart["bar"][9]["actualValue"] == 100.0  # 10 October: the downtime was maintenance

    # CSV: the same values in its tables.
    csv_response = client.get(f"{SLA_API}/sla/{sla['id']}/report?period=month&start=2026-10-01&format=csv")
    assert csv_response.status_code == 200, csv_response.text
    assert csv_response.headers["content-type"].startswith("text/csv")
    tables = parse_report_csv(csv_response.text)
    [sla_row] = tables["sla"]
    assert sla_row["name"].startswith("'=")  # not a formula
    assert Decimal(sla_row["rebateTotal"]) == cents(rebate["amount"]["value"]) == Decimal("370.37")
    for row, result in zip(tables["ruleResult"], evaluation["ruleResult"], strict=True):
        assert float(row["actualValue"]) == result["actualValue"]
        assert row["met"] == str(result["met"]).lower()
        for key in ("evaluatedSeconds", "excludedSeconds", "missingSeconds"):
            assert float(row[key]) == result[key]
        assert int(row["sampleCount"]) == result["sampleCount"]
    assert [(r["rule"], Decimal(r["amount"])) for r in tables["rebateLine"]] == [
        (line["rule"], cents(line["amount"]["value"])) for line in rebate["line"]]
    assert sorted(Decimal(r["amount"]) for r in tables["statementLine"]) == [Decimal("370.37")] * 2
    assert [float(r["seconds"]) for r in tables["exclusion"]] == [3600.0]
    assert len([r for r in tables["chart"] if r["rule"] == "availability"]) == 31

    # PDF: the totals read back out of the document.
    pdf_response = client.get(f"{SLA_API}/sla/{sla['id']}/report?period=month&start=2026-10-01",
                              headers={"Accept": "application/pdf"})
    assert pdf_response.status_code == 200, pdf_response.text
    assert pdf_response.headers["content-type"] == "application/pdf"
    text = pdf_text(pdf_response.content)
    assert "Rebate total: EUR 370.37" in text
    assert "308.64" in text and "61.73" in text
    assert str(int(evaluation["ruleResult"][0]["evaluatedSeconds"])) in text
    assert str(evaluation["ruleResult"][0]["actualValue"]) in text
    assert "planned PE upgrade" in text

    # The HTML view: the same totals, the name escaped, one inline chart per rule.
    page = render_report_html(report)
    assert "Rebate total: EUR 370.37" in page
    assert "<b>ACME</b>" not in page and "&lt;b&gt;ACME&lt;/b&gt;" in page
    assert page.count("<svg") == 2
    fragment = render_report_html(report, standalone=False)
    assert fragment.lstrip().startswith('<section class="sqm-report">') and "<html" not in fragment


def test_the_party_report_holds_its_slas_and_its_statements_totals(suite, closed_october):
    client, _ = suite
    statements = {s["party"]["id"]: s for s in client.get(f"{SLA_API}/settlementStatement").json()}
    response = client.get(f"{SLA_API}/report?partyId=operator&period=month&start=2026-10-17")
    assert response.status_code == 200, response.text
    report = response.json()
    assert document_errors("PartyReport", report) == []
    assert sorted(r["sla"]["id"] for r in report["slaReport"]) == sorted(
        [closed_october["sla"]["id"], closed_october["partner"]["id"]])
    [statement] = report["statement"]
    expected = statements["operator"]
    assert (statement["owed"], statement["owedTo"], statement["net"]) == (
        expected["owed"], expected["owedTo"], expected["net"])
    assert statement["line"] == expected["line"]
    tables = parse_report_csv(client.get(f"{SLA_API}/report?partyId=operator&period=month&start=2026-10-17",
                                         headers={"Accept": "text/csv"}).text)
    [row] = tables["statement"]
    assert (Decimal(row["owed"]), Decimal(row["owedTo"]), Decimal(row["net"])) == (
        cents(expected["owed"]["value"]), cents(expected["owedTo"]["value"]), cents(expected["net"]["value"]))
    assert len(tables["statementEntry"]) == len(expected["line"]) == 2
    text = pdf_text(client.get(f"{SLA_API}/report?partyId=operator&period=month&start=2026-10-17&format=pdf").content)
    assert (f"owed EUR {cents(expected['owed']['value'])}, owed to {cents(expected['owedTo']['value'])}, "
            f"net {cents(expected['net']['value'])}") in text


def test_parties_report_only_on_their_own_slas(suite, closed_october):
    client, settings = suite
    sla_id, partner_sla = closed_october["sla"]["id"], closed_october["partner"]["id"]
    partner = bearer(settings, role="partner", party="partner-a")
    customer = bearer(settings, role="customer", party="acme")
    path = "period=month&start=2026-10-01"
    for fmt in ("json", "csv", "pdf"):
        tmf_error(client.get(f"{SLA_API}/sla/{sla_id}/report?{path}&format={fmt}", headers=partner), [404])
    tmf_error(client.get(f"{SLA_API}/report?partyId=acme&{path}", headers=partner), [404])
    tmf_error(client.get(f"{SLA_API}/sla/{partner_sla}/report?{path}", headers=customer), [404])

    own = client.get(f"{SLA_API}/sla/{partner_sla}/report?{path}", headers=partner)
    assert own.status_code == 200, own.text
    # The partner sees its own statement line of the rebate, not the operator's.
    assert [line["party"]["id"] for line in own.json()["statementLine"]] == ["partner-a"]
    mine = client.get(f"{SLA_API}/sla/{sla_id}/report?{path}", headers=customer)
    assert mine.status_code == 200, mine.text
    assert [line["party"]["id"] for line in mine.json()["statementLine"]] == ["acme"]
    assert mine.json()["ruleResult"] == closed_october["evaluation"]["ruleResult"]
    party = client.get(f"{SLA_API}/report?partyId=acme&{path}&format=csv", headers=customer)
    assert party.status_code == 200, party.text
    assert [row["party"] for row in parse_report_csv(party.text)["statement"]] == ["acme"]


def test_a_day_and_a_week_across_the_autumn_clock_change_in_stockholm(suite):
    client, _ = suite
    sla = create_sla(client, "Stockholm VPN", "vpn-se", "operator", "acme", time_zone="Europe/Stockholm")
    # Monday 19 October 00:00 CEST to Monday 26 October 00:00 CET: 7 days and an hour.
    week_start, week_end = datetime(2026, 10, 18, 22, 0, tzinfo=UTC), datetime(2026, 10, 25, 23, 0, tzinfo=UTC)
    # Down from 00:30 UTC on Sunday the 25th for 90 minutes: from 02:30 CEST until 03:00 CET.
    send(client, availability("vpn-se", week_start, week_end, [(datetime(2026, 10, 25, 0, 30, tzinfo=UTC), 90)]))

    day = client.get(f"{SLA_API}/sla/{sla['id']}/report?period=day&start=2026-10-25").json()
    assert (day["period"]["startDateTime"], day["period"]["endDateTime"]) == (
        "2026-10-24T22:00:00.000Z", "2026-10-25T23:00:00.000Z")
    assert day["period"]["seconds"] == 25 * 3600
    assert document_errors("SLAReport", day) == []
    assert day["state"] == "open"
    local_day = (datetime(2026, 10, 24, 22, tzinfo=UTC), datetime(2026, 10, 25, 23, tzinfo=UTC))
    expected = evaluate(client, sla["id"], *local_day)
    assert day["ruleResult"] == expected["ruleResult"]
    assert day["ruleResult"][0]["evaluatedSeconds"] == 25 * 3600
    bars = next(c for c in day["chart"] if c["rule"] == "availability")["bar"]
    labels = [b["label"] for b in bars]
    assert len(bars) == 25
    assert labels[:5] == ["00:00+02:00", "01:00+02:00", "02:00+02:00", "02:00+01:00", "03:00+01:00"]
    # Down 02:30-03:00 CEST, then (clocks back) 02:00-03:00 CET: half the first 02:00 hour, all the second.
    assert [b["actualValue"] for b in bars[2:5]] == [50.0, 0.0, 100.0]
    hour = evaluate(client, sla["id"], datetime(2026, 10, 25, 1, tzinfo=UTC), datetime(2026, 10, 25, 2, tzinfo=UTC))
    assert bars[3]["actualValue"] == hour["ruleResult"][0]["actualValue"]

    week = client.get(f"{SLA_API}/sla/{sla['id']}/report?period=week&start=2026-10-22&format=json").json()
    assert (week["period"]["startDateTime"], week["period"]["endDateTime"]) == (
        "2026-10-18T22:00:00.000Z", "2026-10-25T23:00:00.000Z")
    assert week["period"]["seconds"] == 7 * 86_400 + 3600
    assert week["ruleResult"] == evaluate(client, sla["id"], week_start, week_end)["ruleResult"]
    week_bars = next(c for c in week["chart"] if c["rule"] == "availability")["bar"]
    assert [b["label"] for b in week_bars] == [f"2026-10-{d}" for d in range(19, 26)]
    assert week_bars[-1]["actualValue"] == day["ruleResult"][0]["actualValue"]

    # Spring: the last Sunday of March has 23 hours.
    spring = client.get(f"{SLA_API}/sla/{sla['id']}/report?period=day&start=2026-03-29").json()
    assert spring["period"]["seconds"] == 23 * 3600
    assert len(spring["chart"][0]["bar"]) == 23
    assert spring["ruleResult"][0]["actualValue"] is None  # no samples: nothing judged


@pytest.mark.parametrize(("query", "headers", "status", "fragment"), [
    ("period=year&start=2026-10-01", {}, 400, "not one of ['day', 'week', 'month']"),
    ("period=month", {}, 400, "start"),
    ("period=month&start=2026-13-01", {}, 400, "start"),
    ("period=month&start=0001-01-01", {}, 400, "1970-01-02"),
    ("period=month&start=2026-10-01&format=xml", {}, 400, "not one of ['json', 'csv', 'pdf']"),
    ("period=month&start=2026-10-01", {"Accept": "image/png"}, 406, "format=json|csv|pdf"),
])
def test_bad_report_parameters_say_what_to_fix(suite, query, headers, status, fragment):
    client, _ = suite
    sla = create_sla(client, "Bad params", "vpn-bad", "operator", "acme")
    error = tmf_error(client.get(f"{SLA_API}/sla/{sla['id']}/report?{query}", headers=headers), [status])
    assert fragment in error["message"]
    tmf_error(client.get(f"{SLA_API}/report?partyId=acme&{query}", headers=headers), [status])


def test_an_unknown_sla_is_a_404(suite):
    client, _ = suite
    error = tmf_error(client.get(f"{SLA_API}/sla/nothing-here/report?period=day&start=2026-10-01"), [404])
    assert "nothing-here" in error["message"]
