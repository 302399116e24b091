"""The value chain end to end over real HTTP: alarms and SLA violations become problems through
the public hubs, with root cause, impact and responsibility found in the inventory graph."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from pymongo import MongoClient

from services.app import create_app
from services.problem.pending import PENDING_COLLECTION
from services.tmf.embedded import free_port
from services.tmf.settings import Settings
from tests.conftest import INVENTORY, make_settings
from tests.support.auth import bearer
from tests.support.listener import eventually
from tests.support.server import serve

ALARMS = "/tmf-api/alarmManagement/v4"
PROBLEMS = "/tmf-api/serviceProblemManagement/v4"
SLA_API = "/tmf-api/slaManagement/v4"
PARTNER = {"id": "partner-a", "name": "Partner A", "role": "supplier", "@referredType": "Organization"}


@pytest.fixture
def served(mongo_uri) -> Iterator[tuple[httpx.Client, Settings]]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    settings = make_settings(mongo_uri, public_url=base, inventory_url=f"{base}{INVENTORY}",
                             alarm_hub_url=f"{base}{ALARMS}", sla_hub_url=f"{base}{SLA_API}",
                             delivery_poll_seconds=0.05, problem_damping_seconds=300)
    with serve(create_app(settings), port), httpx.Client(base_url=base, timeout=30) as client:
        client.headers.update(bearer(settings))
        assert eventually(lambda: client.get("/health/ready").status_code == 200)
        client.headers.update(bearer(settings))
        yield client, settings


@pytest.fixture
def suite(served) -> httpx.Client:
    return served[0]




def service(client, name, **attributes):
    body = {"name": name, "state": "active", "serviceSpecification": {"id": f"spec-{name}"}, **attributes}
    response = client.post(f"{INVENTORY}/service", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def value_chain(client):
    link1 = {"id": "link-1", "name": "access link 1", "@referredType": "Resource"}
    access1 = service(client, "access-1", category="RFS", relatedParty=[PARTNER], supportingResource=[link1])
    access2 = service(client, "access-2", category="RFS", supportingResource=[{"id": "link-2"}])
    vpn = service(client, "acme-vpn", category="CFS",
                  relatedParty=[{"id": "acme", "role": "customer", "@referredType": "Organization"}],
                  supportingService=[{"id": access1["id"]}, {"id": access2["id"]}])
    return vpn, access1, access2


def alarm(client, target, severity="critical", referred="Resource", name=None):
    body = {"alarmType": "communicationsAlarm", "perceivedSeverity": severity, "probableCause": "lossOfSignal",
            "alarmedObject": {"id": target, "@referredType": referred, **({"name": name} if name else {})},
            "sourceSystemId": "nms-1", "state": "raised", "alarmRaisedTime": "2026-10-10T10:00:00Z"}
    response = client.post(f"{ALARMS}/alarm", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def clear(client, alarm_id):
    response = client.patch(f"{ALARMS}/alarm/{alarm_id}", json={"state": "cleared",
                                                               "alarmClearedTime": "2026-10-10T11:00:00Z"})
    assert response.status_code == 200, response.text


def problems(client, query=""):
    return client.get(f"{PROBLEMS}/serviceProblem?{query}").json()


def test_value_chain_alarms_group_resolve_and_sla_violation(suite):
    client = suite
    vpn, _, _ = value_chain(client)
    first = alarm(client, "link-1", name="access link 1")
    [problem] = eventually(lambda: problems(client, "category=alarm"))
    assert problem["rootCauseResource"][0]["id"] == "link-1"
    assert [s["id"] for s in problem["affectedService"]] == [vpn["id"]]
    assert problem["affectedNumberOfServices"] == 1
    assert problem["responsibleParty"]["id"] == "partner-a"
    assert problem["status"] == "pending"
    assert problem["firstAlert"]["id"] == first["id"]

    second = alarm(client, "link-1", severity="major")
    assert eventually(lambda: len(problems(client)[0]["underlyingAlarm"]) == 2)
    assert len(problems(client)) == 1

    alarm(client, vpn["id"], referred="Service")
    grouped = eventually(lambda: [p for p in problems(client) if p.get("parentProblem")])
    [child] = grouped
    assert child["rootCauseService"][0]["id"] == vpn["id"]
    assert child["parentProblem"][0]["id"] == problem["id"]
    parent = client.get(f"{PROBLEMS}/serviceProblem/{problem['id']}").json()
    assert [p["id"] for p in parent["underlyingProblem"]] == [child["id"]]

    clear(client, first["id"])
    clear(client, second["id"])
    resolved = eventually(lambda: client.get(f"{PROBLEMS}/serviceProblem/{problem['id']}").json()["status"]
                          == "resolved")
    assert resolved
    assert client.get(f"{PROBLEMS}/serviceProblem/{problem['id']}").json()["resolutionDate"]

    again = alarm(client, "link-1")
    reopened = eventually(lambda: client.get(f"{PROBLEMS}/serviceProblem/{problem['id']}").json()["status"]
                          == "inProgress")
    assert reopened
    assert len(problems(client, "category=alarm")) == 2
    # Reopening and listing the alarm are two writes: the second may land a moment later.
    assert eventually(lambda: again["id"] in {a["id"] for a in client.get(
        f"{PROBLEMS}/serviceProblem/{problem['id']}").json()["underlyingAlarm"]})

    violation_event_source = client.post(f"{SLA_API}/sla", json={
        "name": "ACME VPN", "relatedEntity": [{"id": vpn["id"], "role": "coveredService", "@referredType": "Service"}],
        "relatedParty": [{"id": "operator", "role": "SLAProvider", "@referredType": "Organization"},
                         {"id": "acme", "role": "SLAConsumer", "@referredType": "Organization"}],
        "rule": [{"id": "a", "metric": "availability", "operator": ".ge", "referenceValue": 99.9}],
        "evaluationPeriod": {"kind": "day", "timeZone": "UTC"}})
    assert violation_event_source.status_code == 201, violation_event_source.text
    samples = [{"metric": "availability", "value": 0, "observedAt": f"2026-10-10T{h:02d}:00:00Z",
                "service": {"id": vpn["id"]}, "interval": 3600} for h in range(3)]
    assert client.post(f"{SLA_API}/measurement", json=samples).json()["violationsRaised"] == 1
    attached = eventually(lambda: [p for p in problems(client) if p.get("slaViolation")])
    assert [p["id"] for p in attached] == [problem["id"]]


def test_alarm_storm_gives_one_problem_per_root_cause(suite):
    client = suite
    links = []
    for i in range(10):
        link = f"storm-link-{i}"
        service(client, f"storm-access-{i}", supportingResource=[{"id": link}])
        links.append(link)
    for n in range(1000):
        alarm(client, links[n % 10], severity="major" if n % 2 else "critical")
    settled = eventually(lambda: sum(len(p["underlyingAlarm"]) for p in problems(client, "limit=100")) == 1000,
                         attempts=2400)
    assert settled
    storm = problems(client, "limit=100")
    assert len(storm) == 10
    assert sorted(p["rootCauseResource"][0]["id"] for p in storm) == sorted(links)


async def post_concurrently(client: httpx.Client, bodies: list[dict[str, Any]], clients: int) -> list[httpx.Response]:
    """POST every alarm body, ``clients`` requests in flight at a time."""
    queue = list(bodies)
    answers: list[httpx.Response] = []
    async with httpx.AsyncClient(base_url=str(client.base_url), headers=client.headers, timeout=60) as sender:
        async def worker() -> None:
            while queue:
                answers.append(await sender.post(f"{ALARMS}/alarm", json=queue.pop()))

        await asyncio.gather(*(worker() for _ in range(clients)))
    return answers


def test_concurrent_alarms_on_several_roots_each_join_their_roots_one_problem_once(suite):
    # Alarms of several roots arriving together are appended to their problems in one
    # transaction: each problem must still get exactly its own alarms and a change event for them.
    client = suite
    links = [f"burst-link-{i}" for i in range(6)]
    for i, link in enumerate(links):
        service(client, f"burst-access-{i}", supportingResource=[{"id": link}])
    bodies = [{"alarmType": "communicationsAlarm", "perceivedSeverity": "major" if n % 2 else "critical",
               "probableCause": "lossOfSignal", "alarmedObject": {"id": links[n % 6], "@referredType": "Resource"},
               "sourceSystemId": "nms-1", "state": "raised", "alarmRaisedTime": "2026-10-10T10:00:00Z"}
              for n in range(300)]
    answers = asyncio.run(post_concurrently(client, bodies, clients=16))
    assert [a.status_code for a in answers] == [201] * len(bodies), [a.text for a in answers if a.status_code != 201]
    root_of = {a.json()["id"]: a.json()["alarmedObject"]["id"] for a in answers}

    def listed() -> int:
        return sum(len(p.get("underlyingAlarm") or []) for p in problems(client, "category=alarm&limit=100"))

    assert eventually(lambda: listed() >= len(bodies), attempts=2400)
    found = problems(client, "category=alarm&limit=100")
    # One problem per root, and nothing else.
    assert sorted(p["rootCauseResource"][0]["id"] for p in found) == sorted(links)
    # Every alarm listed exactly once, in its own root's problem.
    listings = Counter(a["id"] for p in found for a in p["underlyingAlarm"])
    assert set(listings) == set(root_of)
    assert [alarm_id for alarm_id, times in listings.items() if times > 1] == []
    for problem in found:
        root = problem["rootCauseResource"][0]["id"]
        assert {root_of[a["id"]] for a in problem["underlyingAlarm"]} == {root}
        # The problem's change events carry the alarms each write added; together they are
        # the alarms the problem lists beyond the one that opened it, each once.
        records = client.get(f"{PROBLEMS}/serviceProblemEventRecord",
                             params={"serviceProblem.id": problem["id"], "limit": 1000}).json()
        appended = [a["id"] for r in records if r["eventType"] == "ServiceProblemAttributeValueChangeEvent"
                    for a in r["notification"]["event"]["serviceProblem"].get("underlyingAlarm") or []]
        opened = [a["id"] for r in records if r["eventType"] == "ServiceProblemCreateEvent"
                  for a in r["notification"]["event"]["serviceProblem"].get("underlyingAlarm") or []]
        assert sorted(opened + appended) == sorted(a["id"] for a in problem["underlyingAlarm"])


def test_alarms_appended_while_the_operator_patches_the_problem_lose_nothing(suite):
    client = suite
    link = "patched-link"
    service(client, "patched-access", supportingResource=[{"id": link}])
    opening = alarm(client, link)
    [problem] = eventually(lambda: problems(client, "category=alarm"))
    url = f"{PROBLEMS}/serviceProblem/{problem['id']}"
    assert client.patch(url, json={"note": [{"text": "opened"}]}).status_code == 200

    bodies = [{"alarmType": "communicationsAlarm", "perceivedSeverity": "major", "probableCause": "lossOfSignal",
               "alarmedObject": {"id": link, "@referredType": "Resource"}, "sourceSystemId": "nms-1",
               "state": "raised", "alarmRaisedTime": "2026-10-10T10:00:00Z"} for _ in range(60)]

    async def notes(sender: httpx.AsyncClient) -> list[int]:
        statuses = []
        for n in range(15):
            patch = [{"op": "add", "path": "/note/-", "value": {"text": f"note {n}"}}]
            response = await sender.patch(url, json=patch, headers={"content-type": "application/json-patch+json"})
            if response.status_code == 409:  # kept changing: the answer says to send it again
                response = await sender.patch(url, json=patch,
                                              headers={"content-type": "application/json-patch+json"})
            statuses.append(response.status_code)
        return statuses

    async def both() -> tuple[list[httpx.Response], list[int]]:
        async with httpx.AsyncClient(base_url=str(client.base_url), headers=client.headers, timeout=60) as sender:
            answers, statuses = await asyncio.gather(post_concurrently(client, bodies, clients=8), notes(sender))
        return answers, statuses

    answers, statuses = asyncio.run(both())
    assert [a.status_code for a in answers] == [201] * len(bodies)
    assert statuses == [200] * 15
    expected = {opening["id"], *(a.json()["id"] for a in answers)}
    assert eventually(lambda: len(client.get(url).json()["underlyingAlarm"]) >= len(expected), attempts=2400)
    final = client.get(url).json()
    # Neither writer lost the other's changes: every note and every alarm, each alarm once.
    assert [n["text"] for n in final["note"]] == ["opened", *(f"note {n}" for n in range(15))]
    assert sorted(a["id"] for a in final["underlyingAlarm"]) == sorted(expected)


def keep_pending(settings: Settings, alarm_id: str, link: str) -> None:
    """What a process leaves when it stops after answering an alarm's delivery and before the
    pass that would put the alarm in its problem."""
    with MongoClient(settings.mongodb_uri) as database:
        database[settings.database][PENDING_COLLECTION].insert_one(
            {"_id": alarm_id, "root": f"resource:{link}", "acceptedAt": None,
             "alarm": {"id": alarm_id, "perceivedSeverity": "critical", "probableCause": "lossOfSignal",
                       "alarmedObject": {"id": link, "@referredType": "Resource"}}})


def pending_alarms(settings: Settings) -> list[str]:
    with MongoClient(settings.mongodb_uri) as database:
        return [d["_id"] for d in database[settings.database][PENDING_COLLECTION].find({})]


def problem_of(client, link):
    found = [p for p in problems(client, "category=alarm&limit=100") if p["rootCauseResource"][0]["id"] == link]
    return found[0] if found else None


def alarm_ids(problem):
    return sorted(a["id"] for a in problem.get("underlyingAlarm") or [])


def test_an_alarm_left_pending_by_a_stopped_process_joins_its_problem_at_the_next_pass(served):
    client, settings = served
    service(client, "left-access", supportingResource=[{"id": "left-link"}])
    service(client, "other-access", supportingResource=[{"id": "other-link"}])
    first = alarm(client, "left-link")
    assert eventually(lambda: problem_of(client, "left-link"))
    keep_pending(settings, "alarm-left-behind", "left-link")
    alarm(client, "other-link")  # a pass takes every pending alarm, whoever kept it
    assert eventually(lambda: alarm_ids(problem_of(client, "left-link") or {}) == sorted([first["id"],
                                                                                            "alarm-left-behind"]))
    assert eventually(lambda: pending_alarms(settings) == [])
    assert problem_of(client, "other-link") is not None


def test_a_clear_first_puts_the_pending_alarms_in_their_problems(served):
    client, settings = served
    service(client, "held-access", supportingResource=[{"id": "held-link"}])
    first = alarm(client, "held-link")
    opened = eventually(lambda: problem_of(client, "held-link"))
    assert opened and opened["status"] == "pending"
    keep_pending(settings, "alarm-still-raised", "held-link")
    clear(client, first["id"])
    subscription = next(s["subscription"] for s in client.get("/health").json()["subscriptions"]
                        if "AlarmCreateEvent" in s["events"])

    def clear_taken() -> bool:
        summary = client.get(f"{ALARMS}/hub/{subscription}/deliverySummary").json()
        return summary["delivered"] == 2 and summary["pending"] == 0

    assert eventually(clear_taken)
    after = client.get(f"{PROBLEMS}/serviceProblem/{opened['id']}").json()
    # The clear counted the alarm still pending, which is raised: the problem stays open.
    assert alarm_ids(after) == sorted([first["id"], "alarm-still-raised"])
    assert after["status"] == "pending"
    assert pending_alarms(settings) == []


def test_minor_and_unknown_alarms_open_nothing(suite):
    client = suite
    value_chain(client)
    alarm(client, "link-2", severity="minor")
    alarm(client, "no-such-link")
    marker = alarm(client, "link-1")
    assert eventually(lambda: problems(client))
    assert [p["rootCauseResource"][0]["id"] for p in problems(client)] == ["link-1"]
    assert marker["state"] == "raised"


def test_lifecycle_and_tasks(suite):
    client = suite
    created = client.post(f"{PROBLEMS}/serviceProblem", json={
        "category": "customer.complaint", "description": "VPN slow", "priority": 3, "reason": "Unknown",
        "originatorParty": {"id": "acme", "role": "customer", "@referredType": "Organization"}, "status": "closed"})
    assert created.status_code == 201, created.text
    problem = created.json()
    assert problem["status"] == "acknowledged"
    assert problem["trackingRecord"]
    url = f"{PROBLEMS}/serviceProblem/{problem['id']}"
    illegal = client.patch(url, json={"status": "closed"})
    assert illegal.status_code == 409
    assert "inProgress" in illegal.json()["message"]
    assert client.patch(url, json={"status": "inProgress"}).json()["status"] == "inProgress"
    for bad in (0, 11, "high"):
        body = {**{k: problem[k] for k in ("category", "description", "reason", "originatorParty")}, "priority": bad}
        assert client.post(f"{PROBLEMS}/serviceProblem", json=body).status_code == 400

    other = client.post(f"{PROBLEMS}/serviceProblem", json={
        "category": "c", "description": "d", "priority": 5, "reason": "r",
        "originatorParty": {"id": "acme", "@referredType": "Organization"}}).json()
    group = client.post(f"{PROBLEMS}/problemGroup", json={"parentProblem": {"id": problem["id"]},
                                                           "childProblem": [{"id": other["id"]}]})
    assert group.status_code == 201, group.text
    assert client.get(f"{PROBLEMS}/serviceProblem/{other['id']}").json()["parentProblem"][0]["id"] == problem["id"]
    cycle = client.post(f"{PROBLEMS}/problemGroup", json={"parentProblem": {"id": other["id"]},
                                                           "childProblem": [{"id": problem["id"]}]})
    assert cycle.status_code == 409
    itself = client.post(f"{PROBLEMS}/problemGroup", json={"parentProblem": {"id": problem["id"]},
                                                            "childProblem": [{"id": problem["id"]}]})
    assert itself.status_code == 409
    missing = client.post(f"{PROBLEMS}/problemUngroup", json={"parentProblem": {"id": problem["id"]},
                                                               "childProblem": [{"id": other["id"]}, {"id": "nope"}]})
    assert missing.status_code == 404
    assert client.get(f"{PROBLEMS}/serviceProblem/{other['id']}").json()["parentProblem"][0]["id"] == problem["id"]
    ungroup = client.post(f"{PROBLEMS}/problemUngroup", json={"parentProblem": {"id": problem["id"]},
                                                              "childProblem": [{"id": other["id"]}]})
    assert ungroup.status_code == 201
    assert not client.get(f"{PROBLEMS}/serviceProblem/{other['id']}").json().get("parentProblem")

    auto = client.post(f"{PROBLEMS}/serviceProblem", json={
        "category": "c", "description": "d", "priority": 5, "reason": "r",
        "originatorParty": {"id": "acme", "@referredType": "Organization"}}).json()
    client.patch(f"{PROBLEMS}/serviceProblem/{auto['id']}", json={"status": "cancelled"}).raise_for_status()
    final = client.post(f"{PROBLEMS}/problemAcknowledgement", json={"problem": [{"id": other["id"]},
                                                                               {"id": auto["id"]}]})
    assert final.status_code == 409
    records = client.get(f"{PROBLEMS}/serviceProblemEventRecord?serviceProblem.id={problem['id']}").json()
    assert {r["eventType"] for r in records} >= {"ServiceProblemCreateEvent", "ServiceProblemStateChangeEvent"}


def test_sla_violation_without_a_problem_opens_one_that_asks_for_its_root_cause(suite):
    client = suite
    covered = service(client, "lonely-vpn", category="CFS")
    parties = [{"id": "partner-b", "role": "SLAProvider", "@referredType": "Organization"},
               {"id": "operator", "role": "SLAConsumer", "@referredType": "Organization"}]
    created = client.post(f"{SLA_API}/sla", json={
        "name": "Partner B access", "importance": 2, "relatedParty": parties,
        "relatedEntity": [{"id": covered["id"], "role": "coveredService", "@referredType": "Service"}],
        "rule": [{"id": "a", "metric": "availability", "operator": ".ge", "referenceValue": 99.9}],
        "evaluationPeriod": {"kind": "day", "timeZone": "UTC"}})
    assert created.status_code == 201, created.text
    samples = [{"metric": "availability", "value": 0, "observedAt": "2026-10-11T00:00:00Z",
                "service": {"id": covered["id"]}, "interval": 7200}]
    assert client.post(f"{SLA_API}/measurement", json=samples).json()["violationsRaised"] == 1
    [problem] = eventually(lambda: problems(client, "category=SLA violation"))
    assert problem["priority"] == 2
    assert problem["status"] == "pending"
    assert [s["id"] for s in problem["affectedService"]] == [covered["id"]]
    assert {p["id"] for p in problem["relatedParty"]} == {"partner-b", "operator"}
    records = client.get(f"{PROBLEMS}/serviceProblemEventRecord?serviceProblem.id={problem['id']}").json()
    asked = [r for r in records if r["eventType"] == "ServiceProblemInformationRequiredEvent"]
    assert [r["notification"]["fieldPath"] for r in asked] == ["rootCauseService,rootCauseResource"]


def day_sla(client, name, service_id, charge=None):
    body = {"name": name, "relatedEntity": [{"id": service_id, "role": "coveredService", "@referredType": "Service"}],
            "relatedParty": [{"id": "operator", "role": "SLAProvider", "@referredType": "Organization"},
                             {"id": "acme", "role": "SLAConsumer", "@referredType": "Organization"}],
            "rule": [{"id": "a", "metric": "availability", "operator": ".ge", "referenceValue": 99.9,
                      "rebateTier": [{"threshold": 99.9, "rebatePercent": 10}]}],
            "evaluationPeriod": {"kind": "day", "timeZone": "UTC"}}
    if charge is not None:
        body["charge"] = {"unit": "EUR", "value": charge}
    response = client.post(f"{SLA_API}/sla", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def outage_then_probes(client, service_id, day):
    """An outage report (60 minutes down from 10:00, over the day's 1.44-minute budget on its own)
    raises a provisional violation; the day's minute probes then show it lasted one minute."""
    report = [{"metric": "availability", "value": 0, "observedAt": f"{day}T10:00:00Z",
               "service": {"id": service_id}, "interval": 3600}]
    assert client.post(f"{SLA_API}/measurement", json=report).json()["violationsRaised"] == 1
    [violation] = client.get(f"{SLA_API}/slaViolation?relatedEntity.id={service_id}").json()
    assert violation["status"] == "provisional"
    probes = [{"metric": "availability", "value": 0 if minute == 600 else 1, "interval": 60,
               "observedAt": f"{day}T{minute // 60:02d}:{minute % 60:02d}:00Z", "service": {"id": service_id}}
              for minute in range(1440)]
    assert client.post(f"{SLA_API}/measurement", json=probes).json()["violationsRaised"] == 0
    return violation


def test_a_problem_opened_only_by_a_withdrawn_violation_is_closed_with_the_reason(suite):
    client = suite
    covered = service(client, "briefly-down-vpn", category="CFS")
    agreement = day_sla(client, "Briefly down", covered["id"], charge=500)
    violation = outage_then_probes(client, covered["id"], "2026-10-12")
    [problem] = eventually(lambda: problems(client, "category=SLA violation"))
    assert problem["firstAlert"]["id"] == violation["id"]
    assert problem["status"] == "pending"

    response = client.post(f"{SLA_API}/slaEvaluation", json={
        "sla": {"id": agreement["id"]}, "close": True,
        "period": {"startDateTime": "2026-10-12T00:00:00Z", "endDateTime": "2026-10-13T00:00:00Z"}})
    assert response.status_code == 201, response.text
    evaluation = response.json()
    # 1 of 1,440 minutes down: 99.93 %, the day met its rule: no final violation, no rebate.
    assert evaluation["ruleResult"][0]["met"] is True
    assert [v["id"] for v in evaluation["withdrawnViolation"]] == [violation["id"]]
    assert evaluation["violation"] == [] and "rebate" not in evaluation
    assert client.get(f"{SLA_API}/slaViolation/{violation['id']}").json()["status"] == "withdrawn"

    url = f"{PROBLEMS}/serviceProblem/{problem['id']}"
    closed = eventually(lambda: client.get(url).json()["status"] == "closed")
    assert closed
    after = client.get(url).json()
    assert violation["id"] in after["statusChangeReason"]
    assert "withdrawn" in after["statusChangeReason"] and "met the rule" in after["statusChangeReason"]
    assert after["resolutionDate"]
    assert [r["description"] for r in after["trackingRecord"][-2:]] == [after["statusChangeReason"]] * 2
    records = client.get(f"{PROBLEMS}/serviceProblemEventRecord?serviceProblem.id={problem['id']}").json()
    assert "ServiceProblemStateChangeEvent" in {r["eventType"] for r in records}
    assert client.get(f"{SLA_API}/rebate").json() == []


def test_a_withdrawn_violation_leaves_a_problem_with_other_causes_open(suite):
    client = suite
    vpn, _, _ = value_chain(client)
    alarm(client, "link-1", name="access link 1")
    [problem] = eventually(lambda: problems(client, "category=alarm"))
    agreement = day_sla(client, "ACME VPN daily", vpn["id"])
    violation = outage_then_probes(client, vpn["id"], "2026-10-13")
    url = f"{PROBLEMS}/serviceProblem/{problem['id']}"
    assert eventually(lambda: client.get(url).json().get("slaViolation"))

    response = client.post(f"{SLA_API}/slaEvaluation", json={
        "sla": {"id": agreement["id"]}, "close": True,
        "period": {"startDateTime": "2026-10-13T00:00:00Z", "endDateTime": "2026-10-14T00:00:00Z"}})
    assert response.status_code == 201, response.text
    assert [v["id"] for v in response.json()["withdrawnViolation"]] == [violation["id"]]

    dropped = eventually(lambda: not client.get(url).json().get("slaViolation"))
    assert dropped
    after = client.get(url).json()
    assert after["status"] == "pending"  # the alarm still stands
    assert [a["id"] for a in after["underlyingAlarm"]]
    note = after["trackingRecord"][-1]["description"]
    assert violation["id"] in note and "withdrawn" in note and "other causes" in note
    assert problems(client, "category=SLA violation") == []


def test_sla_violation_on_a_service_the_problem_impacts_but_does_not_list_joins_that_problem(suite):
    # The access service is impacted by the link's problem (it rides the link) without being one
    # of its affected (customer-facing) services: only the problem's impact record names it.
    client = suite
    vpn, access1, _ = value_chain(client)
    alarm(client, "link-1", name="access link 1")
    [problem] = eventually(lambda: problems(client, "category=alarm"))
    assert [s["id"] for s in problem["affectedService"]] == [vpn["id"]]
    created = client.post(f"{SLA_API}/sla", json={
        "name": "access 1", "relatedEntity": [{"id": access1["id"], "role": "coveredService",
                                               "@referredType": "Service"}],
        "relatedParty": [{"id": "operator", "role": "SLAProvider", "@referredType": "Organization"}],
        "rule": [{"id": "a", "metric": "availability", "operator": ".ge", "referenceValue": 99.9}],
        "evaluationPeriod": {"kind": "day", "timeZone": "UTC"}})
    assert created.status_code == 201, created.text
    samples = [{"metric": "availability", "value": 0, "observedAt": f"2026-10-10T{h:02d}:00:00Z",
                "service": {"id": access1["id"]}, "interval": 3600} for h in range(3)]
    assert client.post(f"{SLA_API}/measurement", json=samples).json()["violationsRaised"] == 1
    attached = eventually(lambda: [p for p in problems(client) if p.get("slaViolation")])
    assert [p["id"] for p in attached] == [problem["id"]]
    assert len(problems(client)) == 1
