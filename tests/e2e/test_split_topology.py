"""The split topology as an operator runs it on one machine: one embedded database, one
``sqm serve --api NAME`` process per API, and ``sqm gateway`` in front as the only address
anyone calls. The gateway issues the tokens; every API process validates them itself against
the gateway's key set, and the services call each other through the gateway with tokens of their
own. The value chain runs through the gateway only, and an API process killed and restarted
loses no event."""

from __future__ import annotations

import base64
import json
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.tmf.embedded import EmbeddedDatabase
from tests.support.listener import Listener
from tests.support.sqm_process import READY_TIMEOUT, SQM, STOP_TIMEOUT, environment, free_port, pump

INVENTORY = "/tmf-api/serviceInventory/v4"
SLA_API = "/tmf-api/slaManagement/v4"
ALARMS = "/tmf-api/alarmManagement/v4"
PROBLEMS = "/tmf-api/serviceProblemManagement/v4"
APIS = ("serviceInventory", "slaManagement", "alarmManagement", "serviceProblemManagement")
# Safety bounds only: nothing here asserts how fast anything is.
EVENTUALLY_TIMEOUT = 90.0
# Short pauses so that a delivery left by a killed process is taken up again soon after its
# process returns; they change when, never whether, an event arrives.
QUICK_DELIVERY = {"delivery_poll_seconds": 0.1, "delivery_lease_seconds": 6, "delivery_timeout_seconds": 5,
                  "delivery_backoff_seconds": 0.2,
                  "delivery_backoff_max_seconds": 2}


@dataclass
class Process:
    name: str
    command: list[str]
    env: dict[str, str]
    port: int
    log: Path
    process: subprocess.Popen[str] | None = None
    lines: queue.Queue[str | None] = field(default_factory=queue.Queue)
    reader: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, ready_prefix: str) -> Process:
        self.lines = queue.Queue()
        with self.log.open("a") as stderr:
            self.process = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=stderr,
                                            stdin=subprocess.DEVNULL, text=True, env=self.env)
        self.reader = threading.Thread(target=pump, args=(self.process.stdout, self.lines), daemon=True)
        self.reader.start()
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            try:
                line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                line = ""
            if line is None:
                pytest.fail(f"{self.name} exited with {self.process.wait()} before it was ready:\n{self.tail()}")
            if line.startswith(ready_prefix):
                assert line.strip() == f"{ready_prefix} on {self.url}"
                return self
            if time.monotonic() > deadline:
                pytest.fail(f"{self.name} printed no ready line within {READY_TIMEOUT:.0f} s:\n{self.tail()}")

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-20_000:]

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=STOP_TIMEOUT)
        self._close()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=STOP_TIMEOUT)
        self._close()

    def _close(self) -> None:
        # The reader ends at the EOF the exited process sent; then its pipe can be closed.
        if self.reader is not None:
            self.reader.join(timeout=STOP_TIMEOUT)
        if self.process is not None and self.process.stdout is not None and not (
                self.reader is not None and self.reader.is_alive()):
            self.process.stdout.close()


def sqm(*args: str, env: dict[str, str]) -> dict[str, Any]:
    done = subprocess.run([str(SQM), *args], capture_output=True, text=True, env=env, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


@dataclass
class Topology:
    gateway: Process
    apis: dict[str, Process]
    clients: dict[str, dict[str, Any]]

    @property
    def url(self) -> str:
        return self.gateway.url

    def token(self, who: str) -> str:
        client = self.clients[who]
        basic = base64.b64encode(f"{client['client_id']}:{client['client_secret']}".encode()).decode()
        answer = httpx.post(f"{self.url}/oauth2/token", data={"grant_type": "client_credentials"},
                            headers={"Authorization": f"Basic {basic}"}, timeout=30)
        assert answer.status_code == 200, answer.text
        return str(answer.json()["access_token"])

    def client(self, who: str) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, headers={"Authorization": f"Bearer {self.token(who)}"})


@pytest.fixture
def topology(tmp_path: Path) -> Iterator[Topology]:
    database = EmbeddedDatabase(str(tmp_path / "db"), log_path=tmp_path / "database.log")
    uri = database.start()
    started: list[Process] = []
    try:
        plain = environment()
        people = {"operator": ("operator", "operator"), "partner-a": ("partner-a", "partner"),
                  "partner-b": ("partner-b", "partner"), "acme": ("acme", "customer")}
        clients = {name: sqm("client", "add", f"{name}-client", "--party", party, "--role", role,
                             "--mongodb-uri", uri, env=plain) for name, (party, role) in people.items()}
        # Each API process is a client of its own, acting for the operator.
        services = {api: sqm("client", "add", f"tmf-sqm-{api}", "--party", "operator", "--role", "service",
                             "--mongodb-uri", uri, env=plain) for api in APIS}
        ports = {api: free_port() for api in APIS}
        gateway_port = free_port()
        public = f"http://127.0.0.1:{gateway_port}"
        gateway = Process("sqm gateway", [str(SQM), "gateway", "--port", str(gateway_port), "--mongodb-uri", uri],
                          environment(public_url=public, gateway_upstreams=",".join(
                              f"{api}=http://127.0.0.1:{port}" for api, port in ports.items())),
                          gateway_port, tmp_path / "gateway.log")
        started.append(gateway.start("tmf-sqm gateway ready"))
        processes = {}
        for api in APIS:
            env = environment(public_url=public, oauth_issuer=public, token_url=f"{public}/oauth2/token",
                              client_id=services[api]["client_id"], client_secret=services[api]["client_secret"],
                              # Partners' listeners run on this machine.
                              allow_private_callbacks="true", **QUICK_DELIVERY)
            processes[api] = Process(f"sqm serve --api {api}", [
                str(SQM), "serve", "--api", api, "--port", str(ports[api]), "--mongodb-uri", uri], env,
                ports[api], tmp_path / f"{api}.log")
        # Started together: the problem service becomes ready once the alarm and SLA hubs answer.
        for api in ("serviceInventory", "slaManagement", "alarmManagement"):
            started.append(processes[api].start("tmf-sqm ready"))
        started.append(processes["serviceProblemManagement"].start("tmf-sqm ready"))
        yield Topology(gateway, processes, clients)
    finally:
        for process in reversed(started):
            print(f"--- {process.name} ---\n{process.tail()}")
            process.stop()
        database.stop()


def eventually(predicate: Callable[[], Any]) -> Any:
    """Poll until ``predicate`` holds (events are delivered asynchronously); a safety bound."""
    deadline = time.monotonic() + EVENTUALLY_TIMEOUT
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.1)
    return predicate()


def created(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def party(id: str, role: str) -> dict[str, str]:
    return {"id": id, "role": role, "@referredType": "Organization"}


def sla_body(name: str, service: str, provider: str, consumer: str, charge: int,
             tiers: list[dict[str, float]], reference: float) -> dict[str, Any]:
    return {"name": name, "relatedParty": [party(provider, "SLAProvider"), party(consumer, "SLAConsumer")],
            "relatedEntity": [{"id": service, "role": "coveredService", "@referredType": "Service"}],
            "evaluationPeriod": {"kind": "day", "timeZone": "UTC"}, "charge": {"unit": "EUR", "value": charge},
            "rule": [{"id": "availability", "metric": "availability", "operator": ".ge",
                      "referenceValue": reference, "unit": "%", "rebateTier": tiers}]}


def day_of_probes(service: str, day: datetime, down_minutes: int) -> list[dict[str, Any]]:
    """One availability sample a minute for the whole day; the first ``down_minutes`` are down."""
    return [{"metric": "availability", "value": 0 if minute < down_minutes else 1,
             "observedAt": (day + timedelta(minutes=minute)).strftime("%Y-%m-%dT%H:%M:%SZ"),
             "service": {"id": service}, "interval": 60} for minute in range(24 * 60)]


def test_value_chain_through_the_gateway_only(topology: Topology) -> None:
    public = topology.url
    with topology.client("operator") as operator, topology.client("partner-a") as partner_a, \
            topology.client("partner-b") as partner_b, topology.client("acme") as acme:
        # The operator builds the inventory: a customer VPN on two access services, each
        # supplied by a partner and resting on its own access link.
        access_a = created(operator.post(f"{INVENTORY}/service", json={
            "name": "access-a", "category": "RFS", "state": "active", "serviceSpecification": {"id": "access"},
            "relatedParty": [party("partner-a", "supplier")], "supportingResource": [{"id": "link-a"}]}))
        access_b = created(operator.post(f"{INVENTORY}/service", json={
            "name": "access-b", "category": "RFS", "state": "active", "serviceSpecification": {"id": "access"},
            "relatedParty": [party("partner-b", "supplier")], "supportingResource": [{"id": "link-b"}]}))
        vpn = created(operator.post(f"{INVENTORY}/service", json={
            "name": "acme-vpn", "category": "CFS", "state": "active", "serviceSpecification": {"id": "ip-vpn"},
            "relatedParty": [party("acme", "customer")],
            "supportingService": [{"id": access_a["id"]}, {"id": access_b["id"]}]}))
        # Every href names the gateway, the only address partners know.
        assert vpn["href"] == f"{public}{INVENTORY}/service/{vpn['id']}"

        tiers = [{"threshold": 99.9, "rebatePercent": 10}, {"threshold": 99.5, "rebatePercent": 25},
                 {"threshold": 99.0, "rebatePercent": 50}]
        customer_sla = created(operator.post(f"{SLA_API}/sla", json=sla_body(
            "ACME VPN", vpn["id"], "operator", "acme", 1000, tiers, 99.9)))
        sla_a = created(operator.post(f"{SLA_API}/sla", json=sla_body(
            "Partner A access", access_a["id"], "partner-a", "operator", 200,
            [{"threshold": 99.95, "rebatePercent": 20}], 99.95)))
        created(operator.post(f"{SLA_API}/sla", json=sla_body(
            "Partner B access", access_b["id"], "partner-b", "operator", 200,
            [{"threshold": 99.95, "rebatePercent": 20}], 99.95)))

        # Partner A's network raises an alarm on its link: the problem service (subscribed to
        # the alarm hub through the gateway) opens a problem naming partner A responsible.
        alarm = created(partner_a.post(f"{ALARMS}/alarm", json={
            "alarmType": "communicationsAlarm", "perceivedSeverity": "critical", "probableCause": "lossOfSignal",
            "alarmedObject": {"id": "link-a", "@referredType": "Resource"}, "sourceSystemId": "nms-a",
            "state": "raised", "alarmRaisedTime": "2026-10-10T10:00:00Z"}))
        # A partner raises alarms only about what it supplies.
        refused = partner_b.post(f"{ALARMS}/alarm", json={**{k: alarm[k] for k in (
            "alarmType", "perceivedSeverity", "probableCause", "sourceSystemId", "state", "alarmRaisedTime")},
            "alarmedObject": {"id": "link-a", "@referredType": "Resource"}})
        assert refused.status_code == 403, refused.text

        def alarm_problem() -> dict[str, Any] | None:
            found = operator.get(f"{PROBLEMS}/serviceProblem", params={"underlyingAlarm.id": alarm["id"]})
            assert found.status_code == 200, found.text
            return found.json()[0] if found.json() else None

        problem = eventually(alarm_problem)
        assert problem, "the alarm opened no problem"
        assert problem["responsibleParty"]["id"] == "partner-a"
        assert problem["rootCauseResource"][0]["id"] == "link-a"
        assert [s["id"] for s in problem["affectedService"]] == [vpn["id"]]

        # Yesterday, the VPN and partner A's access were down for 10 minutes; the operator
        # reports the measurements and closes the day.
        day = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1)
        for service in (vpn["id"], access_a["id"]):
            assert operator.post(f"{SLA_API}/measurement", json=day_of_probes(service, day, 10)).status_code == 201
        period = {"startDateTime": day.isoformat(), "endDateTime": (day + timedelta(days=1)).isoformat()}
        closed_customer = created(operator.post(f"{SLA_API}/slaEvaluation", json={
            "sla": {"id": customer_sla["id"]}, "close": True, "period": period}))
        closed_a = created(operator.post(f"{SLA_API}/slaEvaluation", json={
            "sla": {"id": sla_a["id"]}, "close": True, "period": period}))
        # 1,430 of 1,440 minutes = 99.31 %: the 25 % tier of 1,000 EUR for ACME; partner A owes
        # 20 % of 200 EUR.
        assert closed_customer["rebate"]["amount"] == {"unit": "EUR", "value": 250.0}
        assert closed_a["rebate"]["amount"] == {"unit": "EUR", "value": 40.0}

        # Partner A sees the problem it is responsible for and its own statement.
        seen = partner_a.get(f"{PROBLEMS}/serviceProblem/{problem['id']}")
        assert seen.status_code == 200 and seen.json()["responsibleParty"]["id"] == "partner-a"
        statements_a = partner_a.get(f"{SLA_API}/settlementStatement").json()
        assert {s["party"]["id"] for s in statements_a} == {"partner-a"}
        assert statements_a[0]["owed"] == {"unit": "EUR", "value": 40.0}

        # Partner B sees nothing of partner A: not its problem, statement, rebate or SLA.
        assert partner_b.get(f"{PROBLEMS}/serviceProblem/{problem['id']}").status_code == 404
        assert problem["id"] not in {p["id"] for p in partner_b.get(f"{PROBLEMS}/serviceProblem").json()}
        assert all(s["party"]["id"] == "partner-b" for s in partner_b.get(f"{SLA_API}/settlementStatement").json())
        rebates_b = partner_b.get(f"{SLA_API}/rebate").json()
        assert all("partner-a" not in (r["payer"]["id"], r["payee"]["id"]) for r in rebates_b)
        assert partner_b.get(f"{SLA_API}/sla/{sla_a['id']}").status_code == 404

        # The customer sees its SLA (and no partner's) and its rebate.
        assert [s["id"] for s in acme.get(f"{SLA_API}/sla").json()] == [customer_sla["id"]]
        [rebate] = acme.get(f"{SLA_API}/rebate").json()
        assert rebate["payee"]["id"] == "acme" and rebate["amount"] == {"unit": "EUR", "value": 250.0}
        assert rebate["href"].startswith(public)
        # A customer only reads.
        assert acme.post(f"{INVENTORY}/service", json={"name": "x", "state": "active"}).status_code == 403

    # The API processes trust no identity but a token they validate themselves.
    direct = httpx.get(f"{topology.apis['serviceInventory'].url}{INVENTORY}/service",
                       headers={"X-Party-Id": "operator"}, timeout=30)
    assert direct.status_code == 401


def test_a_killed_api_process_answers_502_and_loses_no_event(topology: Topology) -> None:
    listener = Listener().start()
    inventory = topology.apis["serviceInventory"]
    try:
        with topology.client("operator") as operator:
            hub = operator.post(f"{INVENTORY}/hub", json={"callback": listener.url,
                                                          "query": "eventType=ServiceCreateEvent"})
            assert hub.status_code == 201, hub.text

            def create(name: str) -> str:
                return str(created(operator.post(f"{INVENTORY}/service", json={
                    "name": name, "state": "active", "serviceSpecification": {"id": "spec"}}))["id"])

            before = [create(f"before-{i}") for i in range(5)]
            inventory.kill()
            down = operator.get(f"{INVENTORY}/service")
            assert down.status_code == 502, down.text
            assert down.json()["@type"] == "Error" and down.json()["status"] == "502"
            # The other APIs go on meanwhile.
            created(operator.post(f"{ALARMS}/alarm", json={
                "alarmType": "communicationsAlarm", "perceivedSeverity": "minor", "probableCause": "lossOfSignal",
                "alarmedObject": {"id": "link-z", "@referredType": "Resource"}, "sourceSystemId": "nms",
                "state": "raised", "alarmRaisedTime": "2026-10-10T10:00:00Z"}))

            inventory.start("tmf-sqm ready")
            after = [create(f"after-{i}") for i in range(5)]

            def delivered() -> set[str]:
                return {e["event"]["service"]["id"] for e in listener.events()}

            eventually(lambda: delivered() >= {*before, *after})
            assert delivered() == {*before, *after}
            assert all(e["eventType"] == "ServiceCreateEvent" for e in listener.events())
    finally:
        listener.stop()
