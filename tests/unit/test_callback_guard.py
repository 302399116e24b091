"""Which callbacks the suite's own are (services/tmf/delivery.py): they pass the private-address
guard; anything else on a private address does not."""

from __future__ import annotations

import asyncio

import pytest

from services.tmf.delivery import checked_target, is_own_url, may_call
from services.tmf.settings import Settings

SUITE = Settings().with_values(public_url="http://127.0.0.1:8080",
                               alarm_hub_url="http://alarms.internal:9000/tmf-api/alarmManagement/v4",
                               internal_urls=("https://problems.internal/tmf-api/serviceProblemManagement/v4",))


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:8080",
    "http://127.0.0.1:8080/tmf-api/serviceProblemManagement/v4/listener/alarmCreateEvent",
    "HTTP://127.0.0.1:8080/x",
    "http://alarms.internal:9000/tmf-api/alarmManagement/v4/listener/x",
    "http://ALARMS.internal:9000/tmf-api/alarmManagement/v4",
    "https://problems.internal:443/tmf-api/serviceProblemManagement/v4/listener/alarmCreateEvent",
])
def test_the_suites_own_urls(url: str) -> None:
    assert is_own_url(url, SUITE)


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:8081/x",                                # another port on the same host
    "https://127.0.0.1:8080/x",                               # another scheme
    "http://127.0.0.1:80/x",
    "http://127.0.0.1:8080.example.com/x",                    # a host that merely starts the same
    "http://alarms.internal:9000/tmf-api/alarmManagement/v40",  # a path that merely starts the same
    "http://alarms.internal:9000/tmf-api",                    # above the base path
    "http://alarms.internal:9000/tmf-api/alarmManagement/v4/../../admin",
    "http://alarms.internal:9000/tmf-api/alarmManagement/v4/%2e%2e/x",
    "http://problems.internal/tmf-api/serviceProblemManagement/v4",  # https only
    "http://127.0.0.1:99999/x",                               # not even a port
    "not a url",
])
def test_not_the_suites_own(url: str) -> None:
    assert not is_own_url(url, SUITE)


def test_the_guard_refuses_private_addresses_except_the_suites_own() -> None:
    # The suite's own addresses pass only for the suite's own subscriptions (made by a service).
    assert asyncio.run(may_call("http://127.0.0.1:8080/tmf-api/x", SUITE, internal=True))
    assert not asyncio.run(may_call("http://127.0.0.1:8080/tmf-api/x", SUITE))
    assert not asyncio.run(may_call("http://127.0.0.1:8081/tmf-api/x", SUITE, internal=True))
    assert not asyncio.run(may_call("http://10.0.0.1/x", SUITE))
    assert asyncio.run(may_call("http://10.0.0.1/x", Settings(allow_private_callbacks=True)))


@pytest.mark.parametrize("url", [
    "http://100.64.0.1/x", "http://169.254.169.254/latest", "http://[::1]/x", "http://[::ffff:10.0.0.1]/x",
    "http://192.0.2.1/x", "http://198.18.0.1/x", "http://224.0.0.1/x", "http://0.0.0.0/x",
    "http://no-such-host.invalid/x",
])
def test_special_use_addresses_and_names_that_do_not_resolve_are_refused(url: str) -> None:
    assert not asyncio.run(may_call(url, SUITE))


def test_a_delivery_connects_to_the_address_it_checked() -> None:
    target = asyncio.run(checked_target("https://93.184.215.14:8443/hook"))
    assert target is not None
    assert target.url == "https://93.184.215.14:8443/hook"
    assert target.headers == {"Host": "93.184.215.14:8443"}
    assert target.extensions == {"sni_hostname": "93.184.215.14"}
