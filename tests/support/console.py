"""The whole suite with the gateway and the console in front, on a loopback port, seeded with a
small value chain of two partners and two customers, and people to log in as."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from pymongo import AsyncMongoClient

from console.store import ConsoleStore
from gateway.wiring import in_process
from services.app import create_app
from services.sla.evaluation import period_containing
from services.tmf.api import issuer_of
from services.tmf.embedded import free_port
from services.tmf.settings import Settings
from tests.conftest import make_settings
from tests.support.auth import bearer
from tests.support.listener import eventually
from tests.support.server import serve

INVENTORY = "/tmf-api/serviceInventory/v4"
SLA = "/tmf-api/slaManagement/v4"
ALARMS = "/tmf-api/alarmManagement/v4"
PROBLEMS = "/tmf-api/serviceProblemManagement/v4"
PASSWORD = "correct horse battery"
# name -> (party, role)
PEOPLE = {"olga": ("operator", "operator"), "pia": ("partner-a", "partner"), "pablo": ("partner-b", "partner"),
          "carl": ("acme", "customer"), "bea": ("beta", "customer")}
# What only partner B (and the operator) may see, by name: none of it may show on partner A's pages.
PARTNER_B_NAMES = ("partner-b", "access-2", "link-2", "beta-vpn", "sla-b")
PARTNER_A_NAMES = ("partner-a", "access-1", "link-1", "sla-a")


def names_shown(text: str, names: tuple[str, ...]) -> list[str]:
    """The names that appear in the text as whole names: an element id such as `sla-b436...` built
    from a random identifier is not the name `sla-b`."""
    return [name for name in names if re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text)]


@dataclass
class Seeded:
    url: str
    settings: Settings
    api: httpx.Client
    ids: dict[str, str]




async def _add_people(settings: Settings) -> None:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(settings.mongodb_uri, tz_aware=True)
    try:
        store = ConsoleStore(client[settings.database])
        for name, (party, role) in PEOPLE.items():
            await store.add_user(name, party, role, PASSWORD)
    finally:
        await client.close()


@contextmanager
def console_suite(mongo_uri: str) -> Iterator[Seeded]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    settings = make_settings(mongo_uri, public_url=base, inventory_url=f"{base}{INVENTORY}",
                             alarm_hub_url=f"{base}{ALARMS}", sla_hub_url=f"{base}{SLA}",
                             delivery_poll_seconds=0.05)
    app = create_app(settings)
    front = in_process(app, issuer_of(app), base, (settings.mongodb_uri, settings.database))
    with serve(front, port), httpx.Client(base_url=base, timeout=30) as api:
        api.headers.update(bearer(settings))
        assert eventually(lambda: api.get("/health/ready").status_code == 200)
        asyncio.run(_add_people(settings))
        yield Seeded(base, settings, api, {})


def _created(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def _party(party: str, role: str) -> dict[str, str]:
    return {"id": party, "name": party, "role": role, "@referredType": "Organization"}


def _service(api: httpx.Client, name: str, category: str, parties: list[dict[str, str]], **refs: Any) -> str:
    return str(_created(api.post(f"{INVENTORY}/service", json={
        "name": name, "category": category, "state": "active", "serviceSpecification": {"id": f"spec-{category}"},
        "relatedParty": parties, **refs}))["id"])


def _sla(api: httpx.Client, name: str, provider: str, consumer: str, service: str) -> str:
    return str(_created(api.post(f"{SLA}/sla", json={
        "name": name, "relatedParty": [_party(provider, "SLAProvider"), _party(consumer, "SLAConsumer")],
        "relatedEntity": [{"id": service, "role": "coveredService", "@referredType": "Service"}],
        "evaluationPeriod": {"kind": "quarter", "timeZone": "UTC"}, "charge": {"unit": "EUR", "value": 1000},
        "rule": [{"id": "availability", "metric": "availability", "operator": ".ge", "referenceValue": 99,
                  "unit": "%", "rebateTier": [{"threshold": 99, "rebatePercent": 10}]}]}))["id"])


def down_samples(service: str, start: datetime, seconds: float) -> list[dict[str, Any]]:
    """Availability samples saying ``service`` was down for ``seconds`` from ``start``."""
    samples = []
    while seconds > 0:
        interval = min(seconds, 86400.0)
        samples.append({"metric": "availability", "value": 0, "observedAt": start.isoformat().replace("+00:00", "Z"),
                        "interval": interval, "service": {"id": service}})
        start += timedelta(seconds=interval)
        seconds -= interval
    return samples


def at_risk_samples(service: str, now: datetime) -> list[dict[str, Any]]:
    """Down time in the running quarter that has spent more of the 99 % rule's error budget than
    the share of the quarter gone by, yet not all of it: the SLA is at risk, not violated."""
    period = period_containing(now, "quarter", "UTC")
    total = (period.end - period.start).total_seconds()
    elapsed = (now - period.start).total_seconds() / total
    down = 0.01 * total * (1 + elapsed) / 2
    return down_samples(service, period.start, down)


def seed(seeded: Seeded, *, alarm_on_link_1: bool = True) -> None:
    """Partner A supplies access-1 on link-1, under acme's VPN; partner B access-2 on link-2, under
    beta's VPN. Each partner has an SLA with the operator whose last quarter closed with a
    rebate (statements for both parties); the operator has an SLA with acme."""
    api, ids = seeded.api, seeded.ids
    ids["access-1"] = _service(api, "access-1", "RFS", [_party("partner-a", "supplier")],
                               supportingResource=[{"id": "link-1", "name": "link-1"}])
    ids["access-2"] = _service(api, "access-2", "RFS", [_party("partner-b", "supplier")],
                               supportingResource=[{"id": "link-2", "name": "link-2"}])
    ids["acme-vpn"] = _service(api, "acme-vpn", "CFS", [_party("acme", "customer")],
                               supportingService=[{"id": ids["access-1"]}])
    ids["beta-vpn"] = _service(api, "beta-vpn", "CFS", [_party("beta", "customer")],
                               supportingService=[{"id": ids["access-2"]}])
    ids["sla-a"] = _sla(api, "sla-a", "partner-a", "operator", ids["access-1"])
    ids["sla-b"] = _sla(api, "sla-b", "partner-b", "operator", ids["access-2"])
    ids["sla-acme"] = _sla(api, "sla-acme", "operator", "acme", ids["acme-vpn"])
    now = datetime.now(UTC)
    current = period_containing(now, "quarter", "UTC")
    last = period_containing(current.start - timedelta(days=1), "quarter", "UTC")
    for name in ("access-1", "access-2"):
        response = api.post(f"{SLA}/measurement", json=down_samples(ids[name], last.start, 5 * 86400))
        assert response.status_code in (200, 201), response.text
    for name in ("sla-a", "sla-b"):
        _created(api.post(f"{SLA}/slaEvaluation", json={
            "sla": {"id": ids[name]}, "close": True,
            "period": {"startDateTime": last.start.isoformat(), "endDateTime": last.end.isoformat()}}))
    links = ("link-1", "link-2") if alarm_on_link_1 else ("link-2",)
    for link in links:
        raise_alarm(api, link)
    assert eventually(lambda: len(api.get(f"{PROBLEMS}/serviceProblem?category=alarm").json()) == len(links))


def raise_alarm(api: httpx.Client, link: str) -> None:
    _created(api.post(f"{ALARMS}/alarm", json={
        "alarmType": "communicationsAlarm", "perceivedSeverity": "critical", "probableCause": "lossOfSignal",
        "alarmedObject": {"id": link, "@referredType": "Resource"}, "sourceSystemId": "nms", "state": "raised",
        "alarmRaisedTime": datetime.now(UTC).isoformat().replace("+00:00", "Z")}))


def visible_text(html: str) -> str:
    """The page's text and attribute values without its markup's fixed words (the CSRF token aside)."""
    return re.sub(r'name="csrf-token" content="[^"]*"', "", html)
