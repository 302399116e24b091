"""Configuration from SQM_* environment variables (services/tmf/settings.py)."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import fields

import pytest

from services.app import APIS
from services.inventory.settings import InventorySettings
from services.problem.settings import ProblemSettings
from services.sla.settings import SlaSettings
from services.tmf.settings import SECTIONS, DeliverySettings, Settings, SettingsError


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    for name in list(os.environ):
        if name.startswith("SQM_"):
            monkeypatch.delenv(name)
    yield monkeypatch


def test_defaults() -> None:
    assert Settings.from_env() == Settings()
    settings = Settings.from_env()
    assert settings.page_default_limit == 100
    assert settings.page_max_limit == 1000
    assert settings.allow_private_callbacks is False
    assert settings.public_url == "http://127.0.0.1:8080"


def test_every_variable_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    values = {
        "SQM_MONGODB_URI": "mongodb://db:27017/?replicaSet=rs0",
        "SQM_DATABASE": "sqm_test",
        "SQM_PUBLIC_URL": "https://api.example.com/",
        "SQM_PAGE_DEFAULT_LIMIT": "25",
        "SQM_PAGE_MAX_LIMIT": "250",
        "SQM_MAX_BODY_BYTES": "4096",
        "SQM_MAX_JSON_DEPTH": "8",
        "SQM_QUERY_TIMEOUT_MS": "700",
        "SQM_REGEX_MAX_LENGTH": "64",
        "SQM_REGEX_SCAN_LIMIT": "500",
        "SQM_GRAPH_MAX_NODES": "500",
        "SQM_LOG_LEVEL": "debug",
        "SQM_ALLOW_PRIVATE_CALLBACKS": "true",
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    assert Settings.from_env() == Settings(
        mongodb_uri="mongodb://db:27017/?replicaSet=rs0", database="sqm_test",
        public_url="https://api.example.com", page_default_limit=25, page_max_limit=250,
        max_body_bytes=4096, max_json_depth=8, query_timeout_ms=700, regex_max_length=64,
        regex_scan_limit=500, graph_max_nodes=500, log_level="DEBUG", allow_private_callbacks=True,
    )


def test_documented_variables_cover_every_field() -> None:
    documented = dict(Settings.documented())
    assert documented["SQM_PAGE_MAX_LIMIT"] == 1000
    assert documented["SQM_ALLOW_PRIVATE_CALLBACKS"] is False
    assert documented["SQM_DELIVERY_POLL_SECONDS"] == 0.5
    assert documented["SQM_INVENTORY_URL"] == ""
    assert documented["SQM_SLA_CLOSE_INTERVAL_SECONDS"] == 60.0
    assert documented["SQM_PROBLEM_DAMPING_SECONDS"] == 300
    sections = [getattr(Settings(), name) for name in SECTIONS]
    plain = len(fields(Settings)) - len(SECTIONS)
    assert len(Settings.documented()) == len(documented) == plain + sum(len(fields(s)) for s in sections)


def test_every_section_variable_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    values = {
        "SQM_DELIVERY_MAX_ATTEMPTS": "3", "SQM_DELIVERY_MAX_AGE_SECONDS": "60", "SQM_DELIVERY_BACKOFF_SECONDS": "0.5",
        "SQM_DELIVERY_BACKOFF_MAX_SECONDS": "5", "SQM_DELIVERY_TIMEOUT_SECONDS": "2", "SQM_DELIVERY_LEASE_SECONDS": "9",
        "SQM_DELIVERY_CONCURRENCY": "4", "SQM_DELIVERY_PER_SUBSCRIPTION": "2", "SQM_DELIVERY_POLL_SECONDS": "0.1",
        "SQM_INVENTORY_URL": "http://inventory:8080/tmf-api/serviceInventory/v4/",
        "SQM_SLA_CLOSE_INTERVAL_SECONDS": "5", "SQM_MEASUREMENT_FUTURE_SKEW_SECONDS": "30",
        "SQM_ALARM_HUB_URL": "http://alarms:8080/a", "SQM_SLA_HUB_URL": "http://sla:8080/s",
        "SQM_PROBLEM_DAMPING_SECONDS": "60", "SQM_IMPACT_CACHE_SECONDS": "0",
        "SQM_OPERATOR_PARTY_ID": "noc",
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    settings = Settings.from_env()
    assert settings.delivery == DeliverySettings(max_attempts=3, max_age_seconds=60, backoff_seconds=0.5,
                                                 backoff_max_seconds=5, timeout_seconds=2, lease_seconds=9,
                                                 concurrency=4, per_subscription=2, poll_seconds=0.1)
    assert settings.inventory == InventorySettings(url="http://inventory:8080/tmf-api/serviceInventory/v4")
    assert settings.sla == SlaSettings(close_interval_seconds=5, measurement_future_skew_seconds=30)
    assert settings.problem == ProblemSettings(alarm_hub_url="http://alarms:8080/a", sla_hub_url="http://sla:8080/s",
                                               damping_seconds=60, impact_cache_seconds=0)
    assert settings.operator_party_id == "noc"
    assert sorted(values) == sorted(name for name, _ in Settings.documented() if name in values)


def test_only_the_named_sections_are_read_and_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SQM_PROBLEM_DAMPING_SECONDS", "soon")
    monkeypatch.setenv("SQM_SLA_CLOSE_INTERVAL_SECONDS", "5")
    settings = Settings.from_env(("delivery", "sla", "inventory"))
    assert settings.sla.close_interval_seconds == 5
    assert settings.problem == ProblemSettings()
    with pytest.raises(SettingsError, match="SQM_PROBLEM_DAMPING_SECONDS must be a whole number, got 'soon'"):
        Settings.from_env()
    with pytest.raises(ValueError, match="unknown settings sections"):
        Settings.from_env(("billing",))


def test_every_api_names_known_sections() -> None:
    assert {section for declaration in APIS for section in declaration.settings} == set(SECTIONS)


@pytest.mark.parametrize(("name", "raw", "message"), [
    ("SQM_INVENTORY_URL", "inventory:8080", "SQM_INVENTORY_URL must be an http(s) URL, got 'inventory:8080'"),
    ("SQM_ALARM_HUB_URL", "ftp://alarms", "SQM_ALARM_HUB_URL must be an http(s) URL"),
    ("SQM_SLA_CLOSE_INTERVAL_SECONDS", "0.01", "SQM_SLA_CLOSE_INTERVAL_SECONDS must be at least 0.05, got 0.01"),
    ("SQM_MEASUREMENT_FUTURE_SKEW_SECONDS", "-1", "SQM_MEASUREMENT_FUTURE_SKEW_SECONDS must be at least 0, got -1"),
    ("SQM_DELIVERY_POLL_SECONDS", "fast", "SQM_DELIVERY_POLL_SECONDS must be a number, got 'fast'"),
    ("SQM_DELIVERY_CONCURRENCY", "0", "SQM_DELIVERY_CONCURRENCY must be at least 1, got 0"),
])
def test_bad_section_values_name_the_variable(monkeypatch: pytest.MonkeyPatch, name: str, raw: str,
                                              message: str) -> None:
    monkeypatch.setenv(name, raw)
    with pytest.raises(SettingsError, match=re.escape(message)):
        Settings.from_env()


def test_overrides_are_named_like_their_variables() -> None:
    settings = Settings.from_env(delivery_poll_seconds=0.05, inventory_url="http://i/x", problem_damping_seconds=5,
                                 sla=SlaSettings(close_interval_seconds=1), database="d")
    assert (settings.delivery.poll_seconds, settings.inventory.url, settings.problem.damping_seconds) == (0.05,
                                                                                                       "http://i/x", 5)
    assert (settings.sla.close_interval_seconds, settings.database) == (1, "d")
    with pytest.raises(TypeError, match="no setting is named 'problem_damping'"):
        Settings.from_env(problem_damping=5)
    with pytest.raises(SettingsError, match=re.escape("SQM_DELIVERY_LEASE_SECONDS must be at least 0.5, got 0.1")):
        Settings.from_env(delivery_lease_seconds=0.1)


def test_empty_values_mean_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SQM_PAGE_MAX_LIMIT", "")
    monkeypatch.setenv("SQM_ALLOW_PRIVATE_CALLBACKS", "")
    settings = Settings.from_env()
    assert settings.page_max_limit == 1000
    assert settings.allow_private_callbacks is False


@pytest.mark.parametrize(("raw", "expected"), [
    ("1", True), ("true", True), ("TRUE", True), ("yes", True), ("on", True),
    ("0", False), ("false", False), ("No", False), ("off", False),
])
def test_booleans(monkeypatch: pytest.MonkeyPatch, raw: str, expected: bool) -> None:
    monkeypatch.setenv("SQM_ALLOW_PRIVATE_CALLBACKS", raw)
    assert Settings.from_env().allow_private_callbacks is expected


@pytest.mark.parametrize("raw", ["maybe", "2", "t"])
def test_bad_boolean_names_the_variable(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv("SQM_ALLOW_PRIVATE_CALLBACKS", raw)
    with pytest.raises(SettingsError, match="SQM_ALLOW_PRIVATE_CALLBACKS must be true or false"):
        Settings.from_env()


@pytest.mark.parametrize(("name", "raw"), [
    ("SQM_PAGE_DEFAULT_LIMIT", "ten"),
    ("SQM_PAGE_MAX_LIMIT", "1.5"),
    ("SQM_MAX_BODY_BYTES", "1MB"),
    ("SQM_MAX_JSON_DEPTH", "deep"),
    ("SQM_QUERY_TIMEOUT_MS", "5s"),
    ("SQM_REGEX_MAX_LENGTH", "0x10"),
    ("SQM_GRAPH_MAX_NODES", "many"),
])
def test_bad_number_names_the_variable(monkeypatch: pytest.MonkeyPatch, name: str, raw: str) -> None:
    monkeypatch.setenv(name, raw)
    with pytest.raises(SettingsError, match=f"{name} must be a whole number, got '{raw}'"):
        Settings.from_env()


@pytest.mark.parametrize(("name", "raw", "minimum"), [
    ("SQM_PAGE_DEFAULT_LIMIT", "0", 1),
    ("SQM_PAGE_MAX_LIMIT", "-5", 1),
    ("SQM_MAX_BODY_BYTES", "1023", 1024),
    ("SQM_MAX_JSON_DEPTH", "3", 4),
    ("SQM_QUERY_TIMEOUT_MS", "99", 100),
    ("SQM_REGEX_MAX_LENGTH", "0", 1),
    ("SQM_GRAPH_MAX_NODES", "9", 10),
])
def test_numbers_below_their_minimum(monkeypatch: pytest.MonkeyPatch, name: str, raw: str, minimum: int) -> None:
    monkeypatch.setenv(name, raw)
    with pytest.raises(SettingsError, match=f"{name} must be at least {minimum}, got {raw}"):
        Settings.from_env()


def test_default_limit_above_maximum_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SQM_PAGE_DEFAULT_LIMIT", "500")
    monkeypatch.setenv("SQM_PAGE_MAX_LIMIT", "100")
    with pytest.raises(SettingsError, match=r"SQM_PAGE_DEFAULT_LIMIT must not exceed SQM_PAGE_MAX_LIMIT \(500 > 100\)"):
        Settings.from_env()


def test_default_limit_equal_to_maximum_is_fine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SQM_PAGE_DEFAULT_LIMIT", "100")
    monkeypatch.setenv("SQM_PAGE_MAX_LIMIT", "100")
    assert Settings.from_env().page_default_limit == 100


@pytest.mark.parametrize("url", ["ftp://example.com", "example.com", "/relative"])
def test_public_url_must_be_http(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("SQM_PUBLIC_URL", url)
    with pytest.raises(SettingsError, match="SQM_PUBLIC_URL must be an http"):
        Settings.from_env()


def test_log_level_must_be_known(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SQM_LOG_LEVEL", "chatty")
    with pytest.raises(SettingsError, match="SQM_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, got 'CHATTY'"):
        Settings.from_env()


def test_overrides_win_and_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SQM_DATABASE", "from_env")
    settings = Settings.from_env(database="override", page_max_limit=5, page_default_limit=5)
    assert (settings.database, settings.page_max_limit) == ("override", 5)
    with pytest.raises(SettingsError, match="SQM_PAGE_DEFAULT_LIMIT must not exceed"):
        Settings.from_env(page_max_limit=5)


def test_settings_are_immutable() -> None:
    settings = Settings()
    with pytest.raises(AttributeError):
        settings.page_max_limit = 5  # type: ignore[misc]


def test_internal_urls_are_a_comma_separated_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SQM_INTERNAL_URLS", " http://problems:8080/ ,https://alarms.internal/tmf-api/alarmManagement/v4,")
    assert Settings.from_env().internal_urls == ("http://problems:8080",
                                                 "https://alarms.internal/tmf-api/alarmManagement/v4")
    monkeypatch.setenv("SQM_INTERNAL_URLS", "http://problems:8080,problems:8080")
    with pytest.raises(SettingsError, match="SQM_INTERNAL_URLS"):
        Settings.from_env()
