"""OAuth2 pieces that need no server: settings, scopes and roles, the caller, secret hashing,
and the 401/403 TMF errors with their challenges."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from services.tmf.auth import DEFAULT_SCOPES, SCOPES, AuthSettings, Caller, scope_for
from services.tmf.auth.identity import check_scopes
from services.tmf.auth.issuer import check_client, hash_secret, verify_secret
from services.tmf.errors import Forbidden, Unauthorized, handle_tmf_error
from services.tmf.settings import SettingsError


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    for name in list(os.environ):
        if name.startswith("SQM_"):
            monkeypatch.delenv(name)
    yield monkeypatch


def test_without_an_issuer_the_suite_issues_its_own_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    assert AuthSettings.from_env() == AuthSettings()
    monkeypatch.setenv("SQM_PUBLIC_URL", "https://sqm.example.com/")
    settings = AuthSettings.from_env()
    assert settings.issuer == "https://sqm.example.com" and settings.builtin_issuer
    assert settings.audience == "tmf-sqm" and settings.clock_skew_seconds == 30
    assert settings.token_lifetime_seconds == 300


def test_every_oauth_variable_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    values = {
        "SQM_OAUTH_ISSUER": "https://idp.example.com/realms/sqm",
        "SQM_OAUTH_AUDIENCE": "sqm-api",
        "SQM_OAUTH_JWKS_URL": "https://idp.example.com/realms/sqm/protocol/openid-connect/certs",
        "SQM_OAUTH_PARTY_CLAIM": "org.id",
        "SQM_OAUTH_ROLE_CLAIM": "realm_access.roles",
        "SQM_OAUTH_SCOPE_CLAIM": "scp",
        "SQM_OAUTH_CLOCK_SKEW_SECONDS": "5",
        "SQM_TOKEN_LIFETIME_SECONDS": "120",
        "SQM_OAUTH_JWKS_REFETCH_SECONDS": "2.5",
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    assert AuthSettings.from_env() == AuthSettings(
        issuer="https://idp.example.com/realms/sqm", builtin_issuer=False, audience="sqm-api",
        jwks_url=values["SQM_OAUTH_JWKS_URL"], party_claim="org.id", role_claim="realm_access.roles",
        scope_claim="scp", clock_skew_seconds=5, token_lifetime_seconds=120, jwks_refetch_interval_seconds=2.5)


@pytest.mark.parametrize(("name", "value", "fragment"), [
    ("SQM_OAUTH_ISSUER", "idp.example.com", "SQM_OAUTH_ISSUER must be an http(s) URL"),
    ("SQM_OAUTH_JWKS_URL", "file:///etc/keys", "SQM_OAUTH_JWKS_URL must be an http(s) URL"),
    ("SQM_OAUTH_ROLE_CLAIM", "realm_access..roles", "SQM_OAUTH_ROLE_CLAIM must be a claim name"),
    ("SQM_OAUTH_CLOCK_SKEW_SECONDS", "-1", "SQM_OAUTH_CLOCK_SKEW_SECONDS must be at least 0"),
    ("SQM_TOKEN_LIFETIME_SECONDS", "soon", "SQM_TOKEN_LIFETIME_SECONDS must be a whole number"),
])
def test_bad_oauth_settings_name_the_variable(monkeypatch: pytest.MonkeyPatch, name: str, value: str,
                                              fragment: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=re.escape(fragment)):
        AuthSettings.from_env()


def test_scopes_are_read_and_write_per_api() -> None:
    assert len(SCOPES) == 8
    assert scope_for("slaManagement", "GET") == "slaManagement.read"
    assert scope_for("slaManagement", "head") == "slaManagement.read"
    for method in ("POST", "PATCH", "DELETE"):
        assert scope_for("alarmManagement", method) == "alarmManagement.write"


def test_default_scopes_by_role() -> None:
    assert DEFAULT_SCOPES["operator"] == SCOPES
    assert set(DEFAULT_SCOPES["customer"]) == {"serviceInventory.read", "slaManagement.read", "alarmManagement.read",
                                               "serviceProblemManagement.read"}
    assert set(DEFAULT_SCOPES["partner"]) == set(DEFAULT_SCOPES["customer"]) | {
        "alarmManagement.write", "slaManagement.write", "serviceProblemManagement.write"}
    assert "serviceInventory.write" not in DEFAULT_SCOPES["partner"]


def test_check_scopes_orders_deduplicates_and_names_unknown_ones() -> None:
    assert check_scopes(["slaManagement.read", "serviceInventory.read", "slaManagement.read"]) == (
        "serviceInventory.read", "slaManagement.read")
    with pytest.raises(ValueError, match=re.escape("unknown scope inventory.read")):
        check_scopes(["inventory.read"])


@pytest.mark.parametrize(("name", "party", "role", "fragment"), [
    ("", "acme", "partner", "client name"),
    ("bad\nname", "acme", "partner", "client name"),
    ("ok", "-acme", "partner", "party id"),
    ("ok", "a" * 129, "partner", "party id"),
    ("ok", "acme", "admin", "role must be one of"),
])
def test_new_clients_are_checked(name: str, party: str, role: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        check_client(name, party, role, None)


def test_caller_scope_checks() -> None:
    partner = Caller("partner-a", "partner", "c1", frozenset({"alarmManagement.write"}))
    partner.require_scope("alarmManagement.write")
    with pytest.raises(Forbidden) as caught:
        partner.require_scope("serviceInventory.write")
    assert caught.value.status == 403
    assert caught.value.headers == {
        "WWW-Authenticate": 'Bearer error="insufficient_scope", scope="serviceInventory.write"'}
    assert (partner.party_id, partner.role) == ("partner-a", "partner")


def test_secret_hashes_are_salted_and_verified() -> None:
    first, second = hash_secret("s3cret"), hash_secret("s3cret")
    assert first != second and "s3cret" not in first
    assert verify_secret("s3cret", first) and verify_secret("s3cret", second)
    assert not verify_secret("s3cret!", first)
    assert not verify_secret("s3cret", "not a hash")
    assert not verify_secret("s3cret", first.replace("scrypt$", "bcrypt$"))


def _request() -> Any:
    return SimpleNamespace(url=SimpleNamespace(path="/tmf-api/serviceInventory/v4/service"), method="GET")


def test_401_and_403_are_tmf_errors_carrying_their_challenges() -> None:
    response = handle_tmf_error(_request(), Unauthorized("send a token", challenge='Bearer realm="tmf-sqm"'))
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="tmf-sqm"'
    assert json.loads(response.body) == {"code": "401", "reason": "Unauthorized", "message": "send a token",
                                         "status": "401", "@type": "Error"}
    response = handle_tmf_error(_request(), Forbidden("partners cannot do this"))
    assert response.status_code == 403
    assert "WWW-Authenticate" not in (response.headers or {})
    assert json.loads(response.body)["reason"] == "Forbidden"
