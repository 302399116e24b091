"""Configuration from SQM_* environment variables (services/tmf/settings.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from services.tmf.settings import Settings, SettingsError


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
    assert len(documented) == len(Settings.__dataclass_fields__)


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
