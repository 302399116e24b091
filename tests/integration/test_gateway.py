"""The gateway in front of real API processes on loopback: routing, href rewriting, upstream
failures as TMF errors, rate limits shared through MongoDB, CORS, the catalogue and docs page,
and the audit line."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import jwt
import pytest
import structlog
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from gateway import GatewaySettings, Identity, create_gateway
from gateway.portal import suite_apis
from gateway.ratelimit import batch_size
from gateway.settings import parse_rate_limit, parse_upstreams
from services.app import create_app
from services.tmf.embedded import free_port
from services.tmf.settings import Settings, SettingsError
from tests.conftest import make_settings
from tests.support.auth import bearer
from tests.support.server import serve

INVENTORY = "/tmf-api/serviceInventory/v4"
SERVICE = {"name": "vpn", "state": "active", "serviceSpecification": {"id": "ip-vpn"}}


@pytest.fixture(scope="module")
def upstream_settings(mongo_uri: str) -> Settings:
    return make_settings(mongo_uri, public_url=f"http://127.0.0.1:{free_port()}")


@pytest.fixture(scope="module")
def inventory_upstream(upstream_settings: Settings) -> Iterator[str]:
    port = int(upstream_settings.public_url.rsplit(":", 1)[1])
    with serve(create_app(upstream_settings), port) as url:
        yield url


@pytest.fixture
def operator(upstream_settings: Settings, inventory_upstream: str) -> dict[str, str]:
    """The operator's Authorization header, which the gateway passes on to the API process."""
    return bearer(upstream_settings)


@contextmanager
def gateway_on(settings: GatewaySettings, **options: Any) -> Iterator[str]:
    port = free_port()
    settings = GatewaySettings(**{**settings.__dict__, "public_url": f"http://127.0.0.1:{port}"})
    with serve(create_gateway(settings, suite_apis(), **options), port) as url:
        yield url


def test_routes_to_the_api_process_and_rewrites_hrefs_to_the_public_url(inventory_upstream: str,
                                                                         operator: dict[str, str]) -> None:
    with gateway_on(GatewaySettings(upstreams={"serviceInventory": inventory_upstream})) as public:
        created = httpx.post(f"{public}{INVENTORY}/service", json=SERVICE, headers=operator)
        assert created.status_code == 201, created.text
        body = created.json()
        assert body["href"] == f"{public}{INVENTORY}/service/{body['id']}"
        assert created.headers["location"] == body["href"]
        assert inventory_upstream not in created.text
        listed = httpx.get(f"{public}{INVENTORY}/service", params={"name": "vpn"}, headers=operator)
        assert listed.status_code == 200
        assert all(item["href"].startswith(public) for item in listed.json())
        assert listed.headers["x-total-count"] == str(len(listed.json()))
        # Errors come back as the upstream wrote them.
        missing = httpx.get(f"{public}{INVENTORY}/service/nope", headers=operator)
        assert missing.status_code == 404 and missing.json()["@type"] == "Error"
        # The API process, not the gateway, refuses a call without a token, and says so as TMF.
        anonymous = httpx.get(f"{public}{INVENTORY}/service")
        assert anonymous.status_code == 401 and anonymous.json()["@type"] == "Error"
        assert anonymous.headers["www-authenticate"].startswith("Bearer")


def test_a_path_no_api_serves_is_a_tmf_404(inventory_upstream: str) -> None:
    with gateway_on(GatewaySettings(upstreams={"serviceInventory": inventory_upstream})) as public:
        answer = httpx.get(f"{public}/tmf-api/slaManagement/v4/sla")
        assert answer.status_code == 404
        assert set(answer.json()) >= {"code", "reason", "message", "status"}


def test_an_unreachable_api_process_is_a_502_with_retry_after() -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    with gateway_on(GatewaySettings(upstreams={"serviceInventory": dead})) as public:
        answer = httpx.get(f"{public}{INVENTORY}/service")
        assert answer.status_code == 502
        assert answer.json()["status"] == "502"
        assert answer.headers["retry-after"].isdigit()


def test_an_api_process_that_does_not_answer_in_time_is_a_504() -> None:
    async def stuck(request: Request) -> JSONResponse:
        await asyncio.sleep(5)
        return JSONResponse([])

    port = free_port()
    slow = Starlette(routes=[Route(f"{INVENTORY}/service", stuck)])
    with serve(slow, port) as url, gateway_on(
            GatewaySettings(upstreams={"serviceInventory": url}, read_timeout_seconds=0.3)) as public:
        answer = httpx.get(f"{public}{INVENTORY}/service", timeout=30)
        assert answer.status_code == 504
        assert answer.json()["reason"] == "Gateway timeout"


async def _identify_bearer(authorization: str | None) -> Identity | None:
    # Test stand-in for the gateway's token reading: the claims, unchecked (the API process
    # behind checks the token itself).
    if authorization and authorization.startswith("Bearer "):
        claims = jwt.decode(authorization[7:], options={"verify_signature": False})
        return Identity(claims["client_id"], claims["party_id"], claims["role"])
    return None


def partner(settings: Settings, client: str) -> dict[str, str]:
    return bearer(settings, role="partner", party=f"party-of-{client}", client_id=client)


def test_rate_limits_per_client_are_shared_by_gateway_replicas(inventory_upstream: str, mongo_uri: str,
                                                               upstream_settings: Settings) -> None:
    database = f"gw_{uuid.uuid4().hex[:10]}"
    settings = GatewaySettings(upstreams={"serviceInventory": inventory_upstream},
                               rate_limit=tuple(parse_rate_limit("3/minute", "X")),
                               anonymous_rate_limit=tuple(parse_rate_limit("100/minute", "X")))

    store = (mongo_uri, database)
    with gateway_on(settings, rate_limit_store=store, identify=_identify_bearer) as first, \
            gateway_on(settings, rate_limit_store=store, identify=_identify_bearer) as second:
        alice = partner(upstream_settings, "alice")
        answers = [httpx.get(f"{url}{INVENTORY}/service", headers=alice).status_code
                   for url in (first, second, first)]
        assert answers == [200, 200, 200]
        refused = httpx.get(f"{second}{INVENTORY}/service", headers=alice)
        assert refused.status_code == 429
        assert int(refused.headers["retry-after"]) >= 1
        assert refused.json()["reason"] == "Too many requests"
        # Another client has its own budget.
        assert httpx.get(f"{first}{INVENTORY}/service", headers=partner(upstream_settings, "bob")).status_code == 200


def test_replicas_counting_in_batches_together_refuse_past_the_shared_limit(inventory_upstream: str, mongo_uri: str,
                                                                          upstream_settings: Settings) -> None:
    # 40 a day: a replica counts calls in memory and writes them in batches of 4 (a tenth of the
    # limit), so together two replicas admit at least 40 calls and at most 40 + 2 x 4. A day-long
    # window keeps the test clear of a window ending halfway through.
    limit, batch = parse_rate_limit("40/day", "X"), 4
    assert batch_size(limit[0]) == batch
    settings = GatewaySettings(upstreams={"serviceInventory": inventory_upstream}, rate_limit=tuple(limit))
    store = (mongo_uri, f"gw_{uuid.uuid4().hex[:10]}")
    dave = partner(upstream_settings, "dave")
    answers: dict[str, list[httpx.Response]] = {}
    with gateway_on(settings, rate_limit_store=store, identify=_identify_bearer) as first, \
            gateway_on(settings, rate_limit_store=store, identify=_identify_bearer) as second, \
            httpx.Client(headers=dave) as client:
        for _ in range(35):
            for url in (first, second):
                answers.setdefault(url, []).append(client.get(f"{url}{INVENTORY}/service/nothing-here"))
        elsewhere = client.get(f"{first}{INVENTORY}/service/nothing-here", headers=partner(upstream_settings, "erin"))
    admitted = sum(answer.status_code != 429 for replica in answers.values() for answer in replica)
    assert 40 <= admitted <= 40 + 2 * batch
    assert all(answer.status_code == 404 for replica in answers.values() for answer in replica[:20])
    for replica in answers.values():
        # Once the shared count is past the limit, each replica learns it within one batch of its own.
        assert [answer.status_code for answer in replica[-batch:]] == [429] * batch
        assert 1 <= int(replica[-1].headers["retry-after"]) <= 86_400
    assert elsewhere.status_code == 404  # another client has its own budget


def test_audit_line_per_partner_call(inventory_upstream: str, upstream_settings: Settings) -> None:
    settings = GatewaySettings(upstreams={"serviceInventory": inventory_upstream})
    carol = partner(upstream_settings, "carol")
    with structlog.testing.capture_logs() as logs, gateway_on(settings, identify=_identify_bearer) as public:
        httpx.get(f"{public}{INVENTORY}/service/unknown", headers=carol)
        httpx.get(f"{public}{INVENTORY}/service")  # anonymous: nobody to audit
    lines = [line for line in logs if line.get("event") == "call"]
    assert lines == [{"event": "call", "log_level": "info", "client": "carol", "party": "party-of-carol",
                      "role": "partner", "operation": f"GET {INVENTORY}/service/unknown", "status": 404}]


def test_cors_policy_answers_preflight_for_configured_origins_only(inventory_upstream: str) -> None:
    settings = GatewaySettings(upstreams={"serviceInventory": inventory_upstream},
                               cors_origins=("https://portal.example",))
    with gateway_on(settings) as public:
        allowed = httpx.options(f"{public}{INVENTORY}/service", headers={
            "Origin": "https://portal.example", "Access-Control-Request-Method": "GET"})
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == "https://portal.example"
        other = httpx.options(f"{public}{INVENTORY}/service", headers={
            "Origin": "https://evil.example", "Access-Control-Request-Method": "GET"})
        assert "access-control-allow-origin" not in other.headers


def test_catalogue_and_docs_list_every_api(inventory_upstream: str) -> None:
    with gateway_on(GatewaySettings(upstreams={"serviceInventory": inventory_upstream})) as public:
        catalogue = httpx.get(f"{public}/").json()
        names = {api["name"] for api in catalogue["apis"]}
        assert names == {"serviceInventory", "slaManagement", "alarmManagement", "serviceProblemManagement"}
        assert catalogue["tokenEndpoint"] == f"{public}/oauth2/token"
        page = httpx.get(f"{public}/docs")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        for api in catalogue["apis"]:
            assert f'href="{api["basePath"]}/ui/"' in page.text
        assert '<label for="client-id">' in page.text
        # The explorer of a routed API is reachable through the gateway.
        explorer = httpx.get(f"{public}{INVENTORY}/ui/")
        assert explorer.status_code == 200


def test_health_of_the_gateway(inventory_upstream: str) -> None:
    with gateway_on(GatewaySettings(upstreams={"serviceInventory": inventory_upstream})) as public:
        assert httpx.get(f"{public}/health/live").status_code == 200
        assert httpx.get(f"{public}/health/ready").json()["status"] == "up"


def test_upstream_configuration_is_checked() -> None:
    known = {"serviceInventory": INVENTORY}
    assert parse_upstreams("serviceInventory=http://inv:8080/", known) == {"serviceInventory": "http://inv:8080"}
    for bad in ("serviceInventory", "nope=http://x:1", "serviceInventory=ftp://x", "serviceInventory=http://x/a"):
        with pytest.raises(SettingsError):
            parse_upstreams(bad, known)
    with pytest.raises(SettingsError):
        parse_rate_limit("lots", "SQM_GATEWAY_RATE_LIMIT")


def test_entries_are_sorted_longest_base_path_first() -> None:
    from gateway.proxy import route_table

    table = route_table({"a": "/tmf-api/x", "b": "/tmf-api/x/y"}, {"a": 1, "b": 2})
    assert [upstream for _, upstream in table] == [2, 1]

