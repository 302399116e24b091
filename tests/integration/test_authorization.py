"""The authorization matrix: the operator, two partners and a customer, against every operation of
every API, on their own resources and on each other's, over real HTTP both ways.

One world is built per module (an access service per partner on its own link, a customer VPN on
both, three SLAs, alarms and the problems they open, measurements, a closed past day with its
rebates and settlement statements), with a hub subscription of each party on every API. Then:

- reads: GET by id, lists, and lists with filters aimed at others' resources, for each caller,
  each resource kind, own and other's. Each list must hold exactly what the caller may see
  (judged from the resources' own content by the README's visibility rules), and every id a
  caller is shown is kept: the last test counts the ids shown to a party it may not see.
- writes: PATCH, DELETE and POST naming another party, refused with a TMF Error (403/404, the
  same as for an id that does not exist) and nothing changed, as the operator re-reads it.
- the operations beside the resources: measurements, evaluation and close, hub registration,
  deliveries, redelivery and replay, problem tasks, graph queries.
- events: each party's listener hears only about what that party may see, live and replayed.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import httpx
import pytest

from services.app import create_app
from services.tmf.auth.identity import SCOPES
from services.tmf.embedded import free_port
from tests.conftest import INVENTORY, make_settings
from tests.support.auth import bearer
from tests.support.listener import Listener
from tests.support.parties import OPERATOR, Ledger, Policy, ids_at, tmf_error
from tests.support.server import serve

SLA_API = "/tmf-api/slaManagement/v4"
ALARMS = "/tmf-api/alarmManagement/v4"
PROBLEMS = "/tmf-api/serviceProblemManagement/v4"
APIS = {"serviceInventory": INVENTORY, "slaManagement": SLA_API, "alarmManagement": ALARMS,
        "serviceProblemManagement": PROBLEMS}

A, B, C = "partner-a", "partner-b", "customer-c"
ROLES = {OPERATOR: "operator", A: "partner", B: "partner", C: "customer"}
CALLERS = (OPERATOR, A, B, C)
PARTNERS = (A, B)
OTHER_PARTNER = {A: B, B: A}
LINK = {A: "link-a", B: "link-b"}

BASE = {"service": INVENTORY, "sla": SLA_API, "slaViolation": SLA_API, "slaEvaluation": SLA_API,
        "rebate": SLA_API, "settlementStatement": SLA_API, "serviceProblem": PROBLEMS,
        "serviceProblemEventRecord": PROBLEMS, "alarm": ALARMS}
KINDS = tuple(BASE)
# Resources clients change; the others are made by the system and only read.
WRITABLE = ("service", "sla", "serviceProblem", "alarm")
# Filters naming a party, and filters naming another resource, that a caller may aim at others.
PARTY_FILTERS = {"service": ("relatedParty.id",), "sla": ("relatedParty.id",), "slaViolation": ("relatedParty.id",),
                 "rebate": ("payer.id", "payee.id"), "settlementStatement": ("party.id",),
                 "serviceProblem": ("relatedParty.id", "responsibleParty.id")}
REFERENCE_FILTERS = {"slaViolation": ("sla.id", "sla"), "slaEvaluation": ("sla.id", "sla"),
                     "rebate": ("sla.id", "sla"), "serviceProblemEventRecord": ("serviceProblem.id", "serviceProblem")}
HARMLESS_ATTRIBUTE = {"service": "description", "sla": "description", "serviceProblem": "description",
                      "alarm": "specificProblem"}
TIERS = [{"threshold": 99.9, "rebatePercent": 10}, {"threshold": 95, "rebatePercent": 25}]
# A generous bound for asynchronous work (deliveries, correlation) to settle; it only tells a
# stall of minutes from normal operation and is never asserted as a timing.
SETTLE_SECONDS = 120

LEDGER = Ledger()


def eventually(predicate: Callable[[], Any], what: str, bound: float = SETTLE_SECONDS) -> Any:
    deadline = time.monotonic() + bound
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"still waiting after {bound}s for {what}")


def harmless(kind: str) -> dict[str, str]:
    """A change of a free-text attribute, different every time (a PATCH that changes nothing is
    checked on its own)."""
    return {HARMLESS_ATTRIBUTE[kind]: f"checked {uuid.uuid4().hex[:8]}"}


def settles(predicate: Callable[[], Any], what: str) -> str:
    """'' when ``predicate`` comes to hold, else what did not happen (for a test to report)."""
    try:
        # Correlation takes a few seconds even on a loaded machine; a minute is a stall.
        eventually(predicate, what, bound=60)
    except AssertionError as failure:
        return str(failure)
    return ""


def must(response: httpx.Response, status: int = 201) -> Any:
    assert response.status_code == status, (
        f"{response.request.method} {response.request.url} -> {response.status_code}: {response.text[:400]}")
    return response.json() if response.content else None


def day(offset: int) -> datetime:
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return today + timedelta(days=offset)


def period(start: datetime) -> dict[str, str]:
    return {"startDateTime": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "endDateTime": (start + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")}


def day_of_samples(service_id: str, start: datetime, down_hours: tuple[int, ...] = (10, 11)) -> list[dict[str, Any]]:
    return [{"metric": "availability", "value": 0 if h in down_hours else 1,
             "observedAt": (start + timedelta(hours=h)).strftime("%Y-%m-%dT%H:%M:%SZ"),
             "service": {"id": service_id}, "interval": 3600} for h in range(24)]


def party_ref(party: str, role: str) -> dict[str, str]:
    return {"id": party, "name": party, "role": role, "@referredType": "Organization"}


def service_body(name: str, **attributes: Any) -> dict[str, Any]:
    return {"name": name, "state": "active", "serviceSpecification": {"id": f"spec-{name}"}, **attributes}


def alarm_body(target: str, severity: str = "critical", referred: str = "Resource") -> dict[str, Any]:
    return {"alarmType": "communicationsAlarm", "perceivedSeverity": severity, "probableCause": "lossOfSignal",
            "alarmedObject": {"id": target, "@referredType": referred}, "sourceSystemId": "nms",
            "state": "raised", "alarmRaisedTime": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}


def problem_body(originator: str, **attributes: Any) -> dict[str, Any]:
    return {"category": "manual", "description": "reported by hand", "priority": 3, "reason": "test",
            "originatorParty": party_ref(originator, "originator"), **attributes}


def sla_body(name: str, service_id: str, provider: str, consumer: str, charge: int) -> dict[str, Any]:
    return {"name": name,
            "relatedParty": [party_ref(provider, "SLAProvider"), party_ref(consumer, "SLAConsumer")],
            "relatedEntity": [{"id": service_id, "role": "coveredService", "@referredType": "Service"}],
            "evaluationPeriod": {"kind": "day", "timeZone": "UTC"}, "charge": {"unit": "EUR", "value": charge},
            "rule": [{"id": "availability", "metric": "availability", "operator": ".ge", "referenceValue": 99.9,
                      "unit": "%", "rebateTier": TIERS}]}


@dataclass
class Truth:
    """Everything as the operator reads it now, and who may see each of it."""

    items: dict[str, dict[str, dict[str, Any]]]
    policy: Policy

    def allowed(self, party: str, kind: str) -> set[str]:
        return {i for i, body in self.items[kind].items() if self.policy.may_see(party, kind, body)}

    def named(self, party: str, kind: str) -> set[str]:
        return {i for i, body in self.items[kind].items() if party in self.policy.parties(kind, body)}


@dataclass
class World:
    base: str
    clients: dict[str, httpx.Client]
    narrow: dict[str, httpx.Client]  # the default scopes of each role
    anonymous: httpx.Client
    listeners: dict[str, Listener]
    hubs: dict[str, dict[str, dict[str, Any]]]  # party -> api -> subscription
    owners: dict[str, str | None]  # owner-only resources (alarms, hubs, task records) -> creator
    ids: dict[str, str]
    started: datetime
    past_day: datetime
    internal_hubs: list[str] = field(default_factory=list)
    narrow_hub_refusals: list[str] = field(default_factory=list)
    correlation: list[str] = field(default_factory=list)  # what the problem service failed to do
    _impacts: dict[tuple[str, str], set[str]] = field(default_factory=dict)

    def __call__(self, party: str) -> httpx.Client:
        return self.clients[party]

    @property
    def operator(self) -> httpx.Client:
        return self.clients[OPERATOR]

    def impact_parties(self, kind: str, element: str) -> set[str]:
        if (kind, element) not in self._impacts:
            path = f"/resourceImpact/{element}" if kind == "resource" else f"/service/{element}/impact"
            response = self.operator.get(f"{INVENTORY}{path}")
            graph = response.json() if response.status_code == 200 else {}
            nodes = [graph.get("root") or {}, *(graph.get("node") or [])]
            self._impacts[(kind, element)] = {p for n in nodes for p in ids_at(n, "relatedParty", "id")}
        return self._impacts[(kind, element)]

    def list_all(self, party: str, kind: str, query: str = "") -> list[dict[str, Any]]:
        return must(self(party).get(f"{BASE[kind]}/{kind}?limit=1000{query}"), 200)

    def truth(self) -> Truth:
        items = {kind: {item["id"]: item for item in self.list_all(OPERATOR, kind)} for kind in KINDS}
        return Truth(items, Policy(items["sla"], self.impact_parties, self.owners))

    def snapshot(self, kind: str, resource_id: str) -> tuple[str | None, Any]:
        response = self.operator.get(f"{BASE[kind]}/{kind}/{resource_id}")
        return response.headers.get("etag"), response.json()

    def alarm(self, party: str, target: str, **extra: Any) -> dict[str, Any]:
        return self.create(party, "alarm", alarm_body(target, **extra))

    def attempt(self, party: str, kind: str, body: dict[str, Any], client: httpx.Client | None = None,
                ) -> httpx.Response:
        """POST a ``kind`` as ``party``; whatever is created is remembered as that party's."""
        response = (client or self(party)).post(f"{BASE[kind]}/{kind}", json=body)
        if response.status_code == 201:
            self.owners[response.json()["id"]] = party
        return response

    def create(self, party: str, kind: str, body: dict[str, Any], client: httpx.Client | None = None,
               ) -> dict[str, Any]:
        created: dict[str, Any] = must(self.attempt(party, kind, body, client))
        return created

    def settled(self) -> None:
        """Wait until every subscription of the parties has nothing left to deliver."""
        def idle() -> bool:
            for party, per_api in self.hubs.items():
                for api, hub in per_api.items():
                    summary = must(self(party).get(f"{APIS[api]}/hub/{hub['id']}/deliverySummary"), 200)
                    if summary.get("pending", 0) or summary.get("retrying", 0):
                        return False
            return True
        eventually(idle, "every delivery to the parties' listeners")


def refused(response: httpx.Response, statuses: tuple[int, ...] = (403, 404)) -> dict[str, Any]:
    return tmf_error(response, statuses)


@pytest.fixture(scope="module")
def world(mongo_uri: str) -> Iterator[World]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    settings = make_settings(mongo_uri, public_url=base, inventory_url=f"{base}{INVENTORY}",
                             alarm_hub_url=f"{base}{ALARMS}", sla_hub_url=f"{base}{SLA_API}",
                             delivery_poll_seconds=0.05, sla_close_interval_seconds=3600)
    listeners = {p: Listener().start() for p in (OPERATOR, A, B)}
    with serve(create_app(settings), port):
        with httpx.Client(base_url=base, timeout=30) as probe:
            eventually(lambda: probe.get("/health/ready").status_code == 200, "the suite to be ready")
            internal = [s["subscription"] for s in probe.get("/health").json()["subscriptions"]]
        clients = {p: httpx.Client(base_url=base, timeout=30,
                                   headers=bearer(settings, role=ROLES[p], party=p, scopes=SCOPES))
                   for p in CALLERS}
        narrow = {p: httpx.Client(base_url=base, timeout=30, headers=bearer(settings, role=ROLES[p], party=p))
                  for p in CALLERS}
        anonymous = httpx.Client(base_url=base, timeout=30)
        try:
            world = World(base, clients, narrow, anonymous, listeners, {}, {}, {},
                          started=datetime.now(UTC) - timedelta(seconds=5), past_day=day(-2),
                          internal_hubs=internal)
            build(world)
            yield world
        finally:
            for client in [*clients.values(), *narrow.values(), anonymous]:
                client.close()
    for listener in listeners.values():
        listener.stop()


def build(world: World) -> None:
    op = world.operator
    # Every party but the customer (who may only read) listens to every API from the start.
    for party in (OPERATOR, A, B):
        world.hubs[party] = {}
        for api, base in APIS.items():
            subscription = {"callback": f"{world.listeners[party].url}/{api}"}
            response = world.narrow[party].post(f"{base}/hub", json=subscription)
            if response.status_code == 403:
                # A partner's default scopes lack the write scope of some APIs, hub included.
                world.narrow_hub_refusals.append(f"{party} on {api}: {response.json()['message']}")
                response = world(party).post(f"{base}/hub", json=subscription)
            hub = must(response)
            world.hubs[party][api] = hub
            world.owners[hub["id"]] = party
    ids = world.ids
    for partner in PARTNERS:
        access = world.create(OPERATOR, "service", service_body(
            f"access-{partner}", category="RFS", relatedParty=[party_ref(partner, "supplier")],
            supportingResource=[{"id": LINK[partner], "name": f"access link of {partner}"}]))
        ids[f"access-{partner}"] = access["id"]
    vpn = world.create(OPERATOR, "service", service_body(
        "vpn-c", category="CFS", relatedParty=[party_ref(C, "customer")],
        supportingService=[{"id": ids[f"access-{A}"]}, {"id": ids[f"access-{B}"]}]))
    ids["vpn"] = vpn["id"]

    # Each partner raises an alarm on its own link (with only the scopes a partner has by
    # default); the operator one of its own that opens nothing.
    for partner in PARTNERS:
        ids[f"alarm-{partner}"] = world.create(partner, "alarm", alarm_body(LINK[partner]),
                                               world.narrow[partner])["id"]
    ids["alarm-operator"] = world.alarm(OPERATOR, LINK[B], severity="minor")["id"]
    # Problems filed by hand, whatever correlation does: one per partner, one the operator files
    # about the customer's VPN.
    for party in PARTNERS:
        ids[f"problem-{party}"] = world.create(party, "serviceProblem", problem_body(party),
                                               world.narrow[party])["id"]
    ids["problem-c"] = world.create(OPERATOR, "serviceProblem", problem_body(
        OPERATOR, relatedParty=[party_ref(C, "customer")], affectedService=[{"id": ids["vpn"]}]))["id"]
    world.correlation.append(settles(
        lambda: len(world.list_all(OPERATOR, "serviceProblem", "&category=alarm")) == 2,
        "a problem per alarmed link"))

    ids["sla-c"] = world.create(OPERATOR, "sla", sla_body("VPN of C", ids["vpn"], OPERATOR, C, 1000))["id"]
    for partner in PARTNERS:
        ids[f"sla-{partner}"] = world.create(OPERATOR, "sla", sla_body(
            f"access of {partner}", ids[f"access-{partner}"], partner, OPERATOR, 200))["id"]

    # Two hours down on a past day, reported by whoever is entitled: a provisional violation each.
    past = world.past_day
    assert must(op.post(f"{SLA_API}/measurement", json=day_of_samples(ids["vpn"], past)))["violationsRaised"] == 1
    for partner in PARTNERS:
        taken = must(world.narrow[partner].post(f"{SLA_API}/measurement",
                                                json=day_of_samples(ids[f"access-{partner}"], past)))
        assert taken["violationsRaised"] == 1, taken
    for sla in ("sla-c", f"sla-{A}", f"sla-{B}"):
        closed = must(op.post(f"{SLA_API}/slaEvaluation", json={"sla": {"id": ids[sla]}, "period": period(past),
                                                               "close": True}))
        assert closed.get("rebate"), closed
    # A partner looks at where its own SLA stands (no close): an evaluation it and the operator see.
    must(world.narrow[A].post(f"{SLA_API}/slaEvaluation", json={"sla": {"id": ids[f"sla-{A}"]},
                                                                 "period": period(past)}))

    def every_violation_in_a_problem() -> bool:
        violations = {v["id"] for v in world.list_all(OPERATOR, "slaViolation")}
        held = {v for p in world.list_all(OPERATOR, "serviceProblem") for v in ids_at(p, "slaViolation", "id")}
        return len(violations) == 3 and violations <= held
    if not world.correlation[0]:
        world.correlation.append(settles(every_violation_in_a_problem, "each SLA violation to reach a problem"))
    world.settled()


def id_filter(values: set[str] | list[str]) -> str:
    return ",".join(sorted(values))


# -- reads ------------------------------------------------------------------------------------

def list_ids(world: World, party: str, kind: str, query: str, allowed: set[str], where: str,
             ) -> tuple[set[str], httpx.Response]:
    response = world(party).get(f"{BASE[kind]}/{kind}?{query}")
    assert response.status_code in (200, 206), f"{where}: {response.status_code} {response.text[:300]}"
    shown = {item["id"] for item in response.json()}
    assert all("_meta" not in item for item in response.json()), f"{where} shows bookkeeping"
    leaked = LEDGER.observe(party, kind, shown, allowed, where)
    assert not leaked, f"{party} was shown {kind} {sorted(leaked)} by {where}"
    if response.status_code == 200:
        assert response.headers["x-total-count"] == str(len(shown)), where
    return shown, response


@pytest.mark.parametrize("whose", ["own", "other"])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("caller", CALLERS)
def test_read(world: World, caller: str, kind: str, whose: str) -> None:
    truth = world.truth()
    every = set(truth.items[kind])
    allowed = truth.allowed(caller, kind)
    base = f"{BASE[kind]}/{kind}"
    passed = False
    try:
        if whose == "own":
            # The whole list is exactly what the caller may see, and its total counts nothing else.
            shown, _ = list_ids(world, caller, kind, "limit=1000", allowed, "list")
            assert shown == allowed, f"{caller} lists {kind} {sorted(shown)}, may see {sorted(allowed)}"
            _, page = list_ids(world, caller, kind, "limit=1", allowed, "list?limit=1")
            assert page.headers["x-total-count"] == str(len(allowed)), "X-Total-Count counts others' resources"
            for resource_id in sorted(truth.named(caller, kind) if caller != OPERATOR else allowed):
                response = world(caller).get(f"{base}/{resource_id}")
                assert must(response, 200)["id"] == resource_id
                LEDGER.observe(caller, kind, {resource_id}, allowed, "GET by id")
        else:
            others = sorted(every - truth.named(caller, kind))
            if caller == OPERATOR:
                for resource_id in others:
                    assert must(world(caller).get(f"{base}/{resource_id}"), 200)["id"] == resource_id
                passed = True
                return
            unknown = refused(world(caller).get(f"{base}/{uuid.uuid4()}"), (404,))
            for resource_id in sorted(every - allowed):
                body = refused(world(caller).get(f"{base}/{resource_id}"), (404,))
                assert body["reason"] == unknown["reason"], "a hidden resource answers unlike a missing one"
                assert "_meta" not in body
            forbidden = every - allowed
            if forbidden:
                shown, _ = list_ids(world, caller, kind, f"id={id_filter(forbidden)}", allowed, "id=<others>")
                assert not shown
                shown, _ = list_ids(world, caller, kind, f"id={id_filter(every)}&limit=1000", allowed, "id=<all>")
                assert shown == allowed
            for attribute in PARTY_FILTERS.get(kind, ()):
                for other in CALLERS:
                    if other != caller:
                        list_ids(world, caller, kind, f"{attribute}={other}", allowed, f"{attribute}={other}")
            if kind != "rebate":
                # The one the requirement names: payer.id exists on rebates only, elsewhere a 400.
                response = world(caller).get(f"{base}?payer.id={OPERATOR}")
                assert response.status_code == 400 or {i["id"] for i in response.json()} <= allowed
            if kind in REFERENCE_FILTERS:
                attribute, target = REFERENCE_FILTERS[kind]
                hidden = set(truth.items[target]) - truth.allowed(caller, target)
                if hidden:
                    list_ids(world, caller, kind, f"{attribute}={id_filter(hidden)}", allowed, f"{attribute}=<hidden>")
            if kind == "alarm":
                list_ids(world, caller, kind, f"alarmedObject.id={LINK[A]},{LINK[B]}", allowed, "alarmedObject.id")
            # Bookkeeping is neither a field nor a filter, and no sort or pattern widens the view.
            tmf_error(world(caller).get(f"{base}?fields=_meta"), (400,))
            tmf_error(world(caller).get(f"{base}?_meta.parties={caller}"), (400,))
            list_ids(world, caller, kind, "sort=-id&limit=1000", allowed, "sorted")
            list_ids(world, caller, kind, "id.regex=^[0-9a-f].*[0-9a-f]$&limit=1000", allowed, "regex")
            if kind == "service":
                read_graphs(world, caller, truth, allowed)
        passed = True
    finally:
        LEDGER.check(caller, kind, whose, passed)


def read_graphs(world: World, caller: str, truth: Truth, allowed: set[str]) -> None:
    """The graph queries show only services the caller may see, and nothing about the others."""
    for service_id in sorted(set(truth.items["service"]) - allowed):
        for path in ("dependency", "impact"):
            refused(world(caller).get(f"{INVENTORY}/service/{service_id}/{path}"), (404,))
    for service_id in sorted(allowed):
        for path in ("dependency", "impact"):
            graph = must(world(caller).get(f"{INVENTORY}/service/{service_id}/{path}"), 200)
            nodes = {n["id"] for n in graph["node"] if n["@referredType"] == "Service" and not n["external"]}
            LEDGER.observe(caller, "service", nodes, allowed, f"service/{{id}}/{path}")
    for link in LINK.values():
        response = world(caller).get(f"{INVENTORY}/resourceImpact/{link}")
        if response.status_code == 404:
            refused(response, (404,))
            continue
        nodes = {n["id"] for n in must(response, 200)["node"]}
        leaked = LEDGER.observe(caller, "service", nodes, allowed, f"resourceImpact/{link}")
        assert not leaked, f"resourceImpact/{link} shows {caller} {sorted(leaked)}"


# -- writes -----------------------------------------------------------------------------------

def unchanged(world: World, kind: str, resource_id: str, before: tuple[str | None, Any]) -> None:
    assert world.snapshot(kind, resource_id) == before, f"a refused call changed {kind} {resource_id}"


def refused_write(world: World, caller: str, kind: str, resource_id: str, send: Callable[[], httpx.Response],
                  statuses: tuple[int, ...] = (403, 404)) -> dict[str, Any]:
    before = world.snapshot(kind, resource_id)
    body = refused(send(), statuses)
    unchanged(world, kind, resource_id, before)
    return body


def throwaway(world: World, caller: str, kind: str) -> str:
    """A resource of ``kind`` that ``caller`` itself makes and may delete."""
    if kind == "service":
        spare = service_body("spare", relatedParty=[party_ref(caller, "supplier")])
        return str(world.create(caller, kind, spare)["id"])
    if kind == "serviceProblem":
        return str(world.create(caller, kind, problem_body(caller))["id"])
    if kind == "alarm":
        return str(world.alarm(caller, LINK.get(caller, LINK[A]), severity="warning")["id"])
    spare = {"name": "spare", "relatedParty": [party_ref(OPERATOR, "SLAProvider")]}
    return str(world.create(caller, kind, spare)["id"])


@pytest.mark.parametrize("whose", ["own", "other"])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("caller", CALLERS)
def test_write(world: World, caller: str, kind: str, whose: str) -> None:
    truth = world.truth()
    base = f"{BASE[kind]}/{kind}"
    client = world(caller)
    passed = False
    try:
        if kind not in WRITABLE:
            write_system_resource(world, caller, kind, truth, whose)
        elif whose == "own":
            write_own(world, caller, kind, truth)
        elif caller == OPERATOR:
            # The operator changes anybody's resource, and its change is kept.
            target = sorted(set(truth.items[kind]) - truth.named(OPERATOR, kind) or set(truth.items[kind]))[0]
            must(client.patch(f"{base}/{target}", json=harmless(kind)), 200)
        else:
            write_others(world, caller, kind, truth)
        passed = True
    finally:
        LEDGER.check(caller, f"{kind} (write)", whose, passed)


def write_system_resource(world: World, caller: str, kind: str, truth: Truth, whose: str) -> None:
    """Violations, evaluations, rebates, statements and event records change only by the system:
    the operations do not exist (405), and a customer is refused before that (403)."""
    allowed = truth.allowed(caller, kind)
    targets = sorted(truth.named(caller, kind) if whose == "own" else set(truth.items[kind]) - allowed)
    statuses = (405,) if caller in (OPERATOR, A, B) else (403,)
    base = f"{BASE[kind]}/{kind}"
    for resource_id in targets[:2]:
        refused_write(world, caller, kind, resource_id,
                      partial(world(caller).patch, f"{base}/{resource_id}", json={"description": "x"}), statuses)
        refused_write(world, caller, kind, resource_id, partial(world(caller).delete, f"{base}/{resource_id}"),
                      statuses)
    if kind != "slaEvaluation":
        tmf_error(world(caller).post(base, json={"name": "forged", "relatedParty": [party_ref(caller, "x")]}),
                  statuses)


def write_own(world: World, caller: str, kind: str, truth: Truth) -> None:
    base = f"{BASE[kind]}/{kind}"
    client = world(caller)
    mine = sorted(truth.items[kind] if caller == OPERATOR else truth.named(caller, kind))
    if caller == C:
        assert mine or kind == "alarm", f"the world gives {caller} no {kind}"
        for resource_id in mine:
            refused_write(world, caller, kind, resource_id,
                          partial(client.patch, f"{base}/{resource_id}", json=harmless(kind)), (403,))
            refused_write(world, caller, kind, resource_id, partial(client.delete, f"{base}/{resource_id}"), (403,))
        tmf_error(world.attempt(caller, kind, creation_naming(world, kind, caller, caller)), (403,))
        return
    if caller in PARTNERS and kind == "sla":
        # SLAs are agreed by the operator: a partner changes none, not even its own.
        for resource_id in mine:
            refused_write(world, caller, kind, resource_id,
                          partial(client.patch, f"{base}/{resource_id}", json=harmless(kind)), (403,))
            refused_write(world, caller, kind, resource_id, partial(client.delete, f"{base}/{resource_id}"), (403,))
        tmf_error(client.post(base, json=sla_body("mine", world.ids[f"access-{caller}"], caller, OPERATOR, 1)),
                  (403,))
        return
    assert mine, f"the world gives {caller} no {kind}"
    target = mine[0]
    change = harmless(kind)
    changed = must(client.patch(f"{base}/{target}", json=change), 200)
    assert all(changed.get(k) == v for k, v in change.items())
    spare = throwaway(world, caller, kind)
    assert client.delete(f"{base}/{spare}").status_code == 204
    refused(world.operator.get(f"{base}/{spare}"), (404,))
    if caller in PARTNERS:
        hand_over(world, caller, kind)


def hand_over(world: World, caller: str, kind: str) -> None:
    """A partner may not give its own resource away: afterwards it must still be a party to it."""
    other = OTHER_PARTNER[caller]
    base = f"{BASE[kind]}/{kind}"
    spare = throwaway(world, caller, kind)
    change = {"service": {"relatedParty": [party_ref(other, "supplier")]},
              "serviceProblem": {"originatorParty": party_ref(other, "originator")},
              # An alarm is about what its raiser supplies, also after a change.
              "alarm": {"alarmedObject": {"id": LINK[other], "@referredType": "Resource"}}}[kind]
    refused_write(world, caller, kind, spare, partial(world(caller).patch, f"{base}/{spare}", json=change), (403,))
    assert world(caller).delete(f"{base}/{spare}").status_code == 204


def creation_naming(world: World, kind: str, party: str, caller: str) -> dict[str, Any]:
    """A create body whose only party is ``party``."""
    if kind == "service":
        return service_body("forged", relatedParty=[party_ref(party, "supplier")])
    if kind == "serviceProblem":
        return problem_body(party)
    if kind == "alarm":
        return alarm_body(LINK.get(party, "link-unknown"))
    return sla_body("forged", world.ids["vpn"], OPERATOR, party, 1)


def write_others(world: World, caller: str, kind: str, truth: Truth) -> None:
    base = f"{BASE[kind]}/{kind}"
    client = world(caller)
    allowed = truth.allowed(caller, kind)
    hidden = sorted(set(truth.items[kind]) - allowed)
    assert hidden, f"the world hides no {kind} from {caller}"
    missing_patch = refused(client.patch(f"{base}/{uuid.uuid4()}", json=harmless(kind)))
    missing_delete = refused(client.delete(f"{base}/{uuid.uuid4()}"))
    for resource_id in hidden:
        patched = refused_write(world, caller, kind, resource_id,
                                partial(client.patch, f"{base}/{resource_id}", json=harmless(kind)))
        deleted = refused_write(world, caller, kind, resource_id, partial(client.delete, f"{base}/{resource_id}"))
        # A hidden resource is refused exactly like one that does not exist: no oracle.
        assert (patched["status"], deleted["status"]) == (missing_patch["status"], missing_delete["status"])
    # Creates naming another party only, with the widest scopes and with a role's own.
    for other in CALLERS:
        if other == caller:
            continue
        for clients in (world.clients, world.narrow):
            before = {item["id"] for item in world.list_all(OPERATOR, kind)}
            refused(world.attempt(caller, kind, creation_naming(world, kind, other, caller), clients[caller]),
                    (403,))
            after = {item["id"] for item in world.list_all(OPERATOR, kind)}
            assert after == before, f"a refused create of {kind} stored something"


# -- the operations beside the resources --------------------------------------------------------

def violations(world: World) -> set[str]:
    return {v["id"] for v in world.list_all(OPERATOR, "slaViolation")}


def rule_samples(world: World, sla: str, start: datetime) -> int:
    evaluation = must(world.operator.post(f"{SLA_API}/slaEvaluation", json={
        "sla": {"id": world.ids[sla]}, "period": period(start)}))
    return int(sum(r["sampleCount"] for r in evaluation["ruleResult"]))


@pytest.mark.parametrize("caller", [A, B, C])
def test_measurements_about_others_are_refused_and_store_nothing(world: World, caller: str) -> None:
    other = OTHER_PARTNER.get(caller, A)
    when = day(-3 - PARTNERS.index(other))
    raised_before = violations(world)
    batches = {
        "other partner's access": day_of_samples(world.ids[f"access-{other}"], when, down_hours=tuple(range(24))),
        "customer VPN": day_of_samples(world.ids["vpn"], when, down_hours=tuple(range(24))),
        "unknown service": day_of_samples("no-such-service", when),
    }
    if caller in PARTNERS:
        batches["own and other's"] = (day_of_samples(world.ids[f"access-{caller}"], when)
                                      + day_of_samples(world.ids[f"access-{other}"], when, tuple(range(24))))
    for batch in batches.values():
        for client in (world(caller), world.narrow[caller]):
            refused(client.post(f"{SLA_API}/measurement", json=batch), (403,))
    assert violations(world) == raised_before, "a refused measurement raised a violation"
    for sla in ("sla-c", f"sla-{A}", f"sla-{B}"):
        assert rule_samples(world, sla, when) == 0, f"a refused batch left samples on {sla}"
    LEDGER.check(caller, "measurement", "other", True)


@pytest.mark.parametrize("caller", [A, B, C])
def test_evaluation_and_close(world: World, caller: str) -> None:
    client = world(caller)
    past = period(world.past_day)
    for sla in ("sla-c", f"sla-{A}", f"sla-{B}"):
        mine = sla == f"sla-{caller}"
        for close in (False, True):
            before = world.list_all(OPERATOR, "slaEvaluation")
            response = client.post(f"{SLA_API}/slaEvaluation",
                                   json={"sla": {"id": world.ids[sla]}, "period": past, "close": close})
            if caller == C:
                refused(response, (403,))
            elif not mine:
                refused(response, (404,))
            elif close:
                refused(response, (403,))
            else:
                evaluation = must(response)
                assert evaluation["sla"]["id"] == world.ids[sla] and evaluation["state"] == "open"
                continue
            assert world.list_all(OPERATOR, "slaEvaluation") == before, "a refused evaluation was stored"
    missing = client.post(f"{SLA_API}/slaEvaluation", json={"sla": {"id": "no-such-sla"}, "period": past})
    refused(missing, (403,) if caller == C else (404,))
    LEDGER.check(caller, "slaEvaluation (task)", "other", True)


@pytest.mark.parametrize("caller", CALLERS)
def test_reports_only_of_slas_and_parties_the_caller_may_see(world: World, caller: str) -> None:
    truth = world.truth()
    allowed = truth.allowed(caller, "sla")
    start = day(-1).date().isoformat()
    for sla_id in sorted(truth.items["sla"]):
        response = world(caller).get(f"{SLA_API}/sla/{sla_id}/report?period=day&start={start}")
        if sla_id in allowed:
            assert must(response, 200)["sla"]["id"] == sla_id
        else:
            refused(response, (404,))
    for party in CALLERS:
        response = world(caller).get(f"{SLA_API}/report?partyId={party}&period=day&start={start}")
        if caller == OPERATOR or party == caller:
            assert must(response, 200)["party"]["id"] == party
        else:
            refused(response, (404,))


@pytest.mark.parametrize("caller", [A, B, C])
def test_alarms_about_others_are_refused(world: World, caller: str) -> None:
    other = OTHER_PARTNER.get(caller, A)
    targets = [alarm_body(LINK[other]), alarm_body(world.ids[f"access-{other}"], referred="Service"),
               alarm_body(world.ids["vpn"], referred="Service"), alarm_body("link-unknown")]
    before = {a["id"] for a in world.list_all(OPERATOR, "alarm")}
    for body in targets:
        for client in (world(caller), world.narrow[caller]):
            refused(client.post(f"{ALARMS}/alarm", json=body), (403,))
    assert {a["id"] for a in world.list_all(OPERATOR, "alarm")} == before, "a refused alarm was stored"
    LEDGER.check(caller, "alarm (raise)", "other", True)


@pytest.mark.parametrize("caller", [A, B, C])
def test_problem_tasks_on_others_problems(world: World, caller: str) -> None:
    truth = world.truth()
    allowed = truth.allowed(caller, "serviceProblem")
    hidden = sorted(set(truth.items["serviceProblem"]) - allowed)
    assert hidden
    statuses = (403,) if caller == C else (404,)
    before = {i: world.snapshot("serviceProblem", i) for i in hidden}
    for task in ("problemAcknowledgement", "problemUnacknowledgement"):
        refused(world(caller).post(f"{PROBLEMS}/{task}", json={"problem": [{"id": hidden[0]}]}), statuses)
    own = sorted(allowed)
    for parent, child in ((hidden[0], own[0] if own else hidden[-1]), (own[0] if own else hidden[-1], hidden[0])):
        for task in ("problemGroup", "problemUngroup"):
            refused(world(caller).post(f"{PROBLEMS}/{task}", json={"parentProblem": {"id": parent},
                                                                   "childProblem": [{"id": child}]}), statuses)
    for problem_id, snapshot in before.items():
        unchanged(world, "serviceProblem", problem_id, snapshot)
    LEDGER.check(caller, "serviceProblem (task)", "other", True)


# -- hubs ---------------------------------------------------------------------------------------

def hub_calls(world: World, caller: str, api: str, hub_id: str) -> list[httpx.Response]:
    base = f"{APIS[api]}/hub/{hub_id}"
    window = {"startDateTime": world.started.isoformat(), "endDateTime": datetime.now(UTC).isoformat()}
    client = world(caller)
    return [client.get(base), client.get(f"{base}/delivery"), client.get(f"{base}/deliverySummary"),
            client.post(f"{base}/redelivery", json={}), client.post(f"{base}/replay", json=window),
            client.delete(base)]


@pytest.mark.parametrize("caller", CALLERS)
def test_hub_of_another_party(world: World, caller: str) -> None:
    others = [(party, api, hub["id"]) for party, per_api in world.hubs.items() if party != caller
              for api, hub in per_api.items()]
    statuses = (403, 404) if caller == C else (404,)
    for party, api, hub_id in others:
        if caller == OPERATOR:
            assert must(world.operator.get(f"{APIS[api]}/hub/{hub_id}"), 200)["id"] == hub_id
            continue
        for response in hub_calls(world, caller, api, hub_id):
            refused(response, statuses)
        assert must(world(party).get(f"{APIS[api]}/hub/{hub_id}"), 200)["status"] == "active"
    if caller != OPERATOR:
        # The suite's own subscriptions are nobody else's either.
        for hub_id in world.internal_hubs:
            for api in APIS:
                for response in hub_calls(world, caller, api, hub_id):
                    refused(response, statuses)
        assert all(s["status"] == "ready" for s in world.anonymous.get("/health").json()["subscriptions"])
    LEDGER.check(caller, "hub", "other", True)


@pytest.mark.parametrize("caller", CALLERS)
def test_hub_of_ones_own(world: World, caller: str) -> None:
    if caller == C:
        # A customer only reads, and subscribing is reading: it keeps subscriptions of its own.
        for api, base in APIS.items():
            listener_url = world.listeners[OPERATOR].url
            created = must(world.narrow[C].post(f"{base}/hub", json={"callback": f"{listener_url}/c-{api}"}), 201)
            assert must(world.narrow[C].get(f"{base}/hub/{created['id']}"), 200)["id"] == created["id"]
            assert world.narrow[C].delete(f"{base}/hub/{created['id']}").status_code == 204
        LEDGER.check(caller, "hub", "own", True)
        return
    for api, hub in world.hubs[caller].items():
        base = f"{APIS[api]}/hub/{hub['id']}"
        assert must(world(caller).get(base), 200)["callback"].endswith(f"/{api}")
        rows = must(world(caller).get(f"{base}/delivery?limit=1000"), 200)
        heard = {e["eventId"] for e in received(world, caller, api)}
        assert {r["eventId"] for r in rows if r["state"] == "delivered"} <= heard
        must(world(caller).get(f"{base}/deliverySummary"), 200)
    LEDGER.check(caller, "hub", "own", True)


# -- events -------------------------------------------------------------------------------------

def received(world: World, party: str, api: str) -> list[dict[str, Any]]:
    prefix = f"/{api}/listener/"
    return [r.event for r in world.listeners[party].received if r.path.startswith(prefix)]


def event_subject(event: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    [(kind, body)] = event["event"].items()
    return kind, body


def leaks_in_events(world: World, party: str, policy: Policy) -> list[str]:
    found = []
    for api in APIS:
        for event in received(world, party, api):
            kind, body = event_subject(event)
            if not policy.may_see(party, kind, body):
                found.append(f"{party} heard {event['eventType']} about {kind} {body.get('id')}")
    return found


def test_events_reach_only_the_parties_that_may_see_them(world: World) -> None:
    created = {}
    for party, role in ((A, "supplier"), (B, "supplier"), (C, "customer")):
        created[party] = must(world.operator.post(f"{INVENTORY}/service", json=service_body(
            f"late-{party}", relatedParty=[party_ref(party, role)])))["id"]

    def creates(party: str) -> set[str]:
        return {e["event"]["service"]["id"] for e in received(world, party, "serviceInventory")
                if e["eventType"] == "ServiceCreateEvent"}
    eventually(lambda: set(created.values()) <= creates(OPERATOR), "the operator to hear every new service")
    for partner in PARTNERS:
        eventually(partial(lambda p: created[p] in creates(p), partner), f"{partner} to hear of its new service")
    world.settled()
    for partner in PARTNERS:
        assert creates(partner) & set(created.values()) == {created[partner]}
    policy = world.truth().policy
    heard = {p: sum(len(received(world, p, api)) for api in APIS) for p in world.listeners}
    leaks = [leak for party in (A, B) for leak in leaks_in_events(world, party, policy)]
    LEDGER.leaks += leaks
    for party in (A, B):
        LEDGER.check(party, "event (live)", "other", not leaks)
    assert heard[A] and heard[B] and heard[OPERATOR] > heard[A]
    assert not leaks, "\n".join(leaks[:20])


@pytest.mark.parametrize("caller", PARTNERS)
def test_replay_gives_a_partner_only_its_events(world: World, caller: str) -> None:
    world.settled()
    replayed: dict[str, set[str]] = {}
    for api, hub in world.hubs[caller].items():
        live = received(world, caller, api)
        live_ids = {e["eventId"] for e in live}
        window = {"startDateTime": (world.started - timedelta(minutes=1)).isoformat(),
                  "endDateTime": (datetime.now(UTC) + timedelta(minutes=1)).isoformat()}
        queued = must(world(caller).post(f"{APIS[api]}/hub/{hub['id']}/replay", json=window))["queued"]
        # What a partner's subscription is replayed is what it heard live: the events it may see.
        assert queued == len(live_ids), f"{caller} replay on {api} queued {queued}, heard {len(live_ids)} live"
        expected = len(live) + queued
        eventually(partial(lambda a, n: len(received(world, caller, a)) >= n, api, expected),
                   f"{caller}'s replay on {api}")
        again = received(world, caller, api)[len(live):]
        replayed[api] = {e["eventId"] for e in again}
        assert replayed[api] == live_ids
    world.settled()
    leaks = leaks_in_events(world, caller, world.truth().policy)
    LEDGER.leaks += leaks
    LEDGER.check(caller, "event (replay)", "other", not leaks)
    assert not leaks, "\n".join(leaks[:20])


# -- the rest of the front door ------------------------------------------------------------------

def test_no_token_is_a_401_everywhere(world: World) -> None:
    truth = world.truth()
    for kind in KINDS:
        some = next(iter(truth.items[kind]))
        for response in (world.anonymous.get(f"{BASE[kind]}/{kind}"),
                         world.anonymous.get(f"{BASE[kind]}/{kind}/{some}"),
                         world.anonymous.post(f"{BASE[kind]}/{kind}", json={})):
            tmf_error(response, (401,))
            assert response.headers["www-authenticate"].startswith("Bearer")
    for api, hub in world.hubs[A].items():
        tmf_error(world.anonymous.get(f"{APIS[api]}/hub/{hub['id']}"), (401,))
        tmf_error(world.anonymous.post(f"{APIS[api]}/hub", json={"callback": world.listeners[A].url}), (401,))
    tmf_error(world.anonymous.post(f"{SLA_API}/measurement", json=[]), (401,))


def test_default_partner_scopes_keep_partners_out_of_the_inventory_writes(world: World) -> None:
    for partner in PARTNERS:
        client = world.narrow[partner]
        target = world.ids[f"access-{partner}"]
        refused_write(world, partner, "service", target,
                      partial(client.patch, f"{INVENTORY}/service/{target}", json={"description": "x"}), (403,))
        refused(client.post(f"{INVENTORY}/service", json=service_body(
            "mine", relatedParty=[party_ref(partner, "supplier")])), (403,))


def test_a_change_that_changes_nothing_is_still_authorized(world: World) -> None:
    """A partner may not change an SLA at all: an empty or same-value PATCH is refused too."""
    target = world.ids[f"sla-{A}"]
    current = world.snapshot("sla", target)[1]
    for change in ({"name": current["name"]}, {"description": current.get("description")}):
        refused_write(world, A, "sla", target, partial(world(A).patch, f"{SLA_API}/sla/{target}", json=change), (403,))


def test_refusals_name_nothing_the_caller_may_not_see(world: World) -> None:
    """A partner deleting the access a customer's VPN rests on is refused (409), without being
    told which services rest on it: it may not see them."""
    response = world(A).delete(f"{INVENTORY}/service/{world.ids[f'access-{A}']}")
    body = tmf_error(response, (409,))
    assert world.ids["vpn"] not in body["message"], f"{A} is told of the VPN it may not see: {body['message']}"


def test_a_problem_on_another_partners_link_does_not_capture_its_alarms(world: World) -> None:
    """Partner A files a problem naming partner B's (new) link as root cause; when B then raises
    an alarm there, B must see the problem its alarm lands in, and A must not see B's alarm."""
    assert not any(world.correlation), f"correlation does not work, so this cannot be judged: {world.correlation}"
    op = world.operator
    link = "link-b2"
    must(op.post(f"{INVENTORY}/service", json=service_body(
        "access-b2", category="RFS", relatedParty=[party_ref(B, "supplier")], supportingResource=[{"id": link}])))
    filed = world(A).post(f"{PROBLEMS}/serviceProblem", json=problem_body(
        A, rootCauseResource=[{"id": link, "@referredType": "Resource"}]))
    assert filed.status_code in (201, 403), filed.text
    alarm = world.alarm(B, link)
    holder = eventually(lambda: [p for p in world.list_all(OPERATOR, "serviceProblem")
                                 if alarm["id"] in ids_at(p, "underlyingAlarm", "id")], "B's alarm in a problem")
    [problem] = holder
    seen_by_b = world(B).get(f"{PROBLEMS}/serviceProblem/{problem['id']}")
    seen_by_a = world(A).get(f"{PROBLEMS}/serviceProblem/{problem['id']}")
    assert seen_by_b.status_code == 200, (
        f"B's alarm {alarm['id']} joined problem {problem['id']}, which B cannot see (filed by A: "
        f"{filed.status_code})")
    assert seen_by_a.status_code == 404, f"A sees the problem holding B's alarm {alarm['id']}"


def test_alarms_and_violations_reach_problems(world: World) -> None:
    """The world's alarms and SLA violations became problems (the problem part of the matrix
    means little otherwise)."""
    assert not any(world.correlation), world.correlation


def test_no_leaks_across_the_matrix(world: World) -> None:
    """Every id shown to a party, across every read above, is one it may see."""
    assert LEDGER.seen, "no reads were recorded"
    notes = [f"partner default scopes refused hub registration: {n}" for n in world.narrow_hub_refusals]
    print("\n" + LEDGER.summary() + "".join(f"\n{n}" for n in notes))
    assert not LEDGER.leaks, LEDGER.summary()
