"""Runtime configuration, read once from the environment (``SQM_*`` variables)."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from typing import Any


class SettingsError(ValueError):
    """A configuration value cannot be used; the message names the variable."""


def _int(name: str, default: int, minimum: int = 0) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a whole number, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{name} must be at least {minimum}, got {value}")
    return value


def _float(name: str, default: float, minimum: float = 0.0) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None
    if not value >= minimum:
        raise SettingsError(f"{name} must be at least {minimum}, got {raw}")
    return value


def _bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in {"1", "true", "yes", "on"}:
        return True
    if raw.lower() in {"0", "false", "no", "off"}:
        return False
    raise SettingsError(f"{name} must be true or false, got {raw!r}")


def _urls(name: str) -> tuple[str, ...]:
    raw = os.environ.get(name) or ""
    urls = tuple(part.strip().rstrip("/") for part in raw.split(",") if part.strip())
    for url in urls:
        if not url.startswith(("http://", "https://")):
            raise SettingsError(f"{name} must be a comma-separated list of http(s) URLs, got {url!r}")
    return urls


@dataclass(frozen=True)
class Settings:
    """Everything a service process can be configured with.

    Each field maps to the environment variable ``SQM_<FIELD NAME IN UPPER CASE>``.
    """

    mongodb_uri: str = ""
    database: str = "sqm"
    # Acknowledge writes before they reach the disk: faster, but a crash or power cut can lose
    # changes that were already answered 2xx, and their events.
    unsafe_skip_fsync: bool = False
    public_url: str = "http://127.0.0.1:8080"
    page_default_limit: int = 100
    page_max_limit: int = 1000
    max_body_bytes: int = 1_048_576
    max_json_depth: int = 32
    query_timeout_ms: int = 5000
    regex_max_length: int = 128
    # A regex the database cannot run safely is matched here over the documents the other
    # conditions select; past this many, the list is refused as too expensive.
    regex_scan_limit: int = 100_000
    graph_max_nodes: int = 50_000
    log_level: str = "INFO"
    # Event delivery to hub subscribers.
    allow_private_callbacks: bool = False
    delivery_max_attempts: int = 12
    delivery_max_age_seconds: int = 86_400
    delivery_backoff_seconds: float = 1.0
    delivery_backoff_max_seconds: float = 600.0
    delivery_timeout_seconds: float = 10.0
    delivery_lease_seconds: float = 60.0
    delivery_concurrency: int = 64
    delivery_per_subscription: int = 8
    delivery_poll_seconds: float = 0.5
    # SLA management.
    inventory_url: str = ""
    sla_close_interval_seconds: float = 60.0
    measurement_future_skew_seconds: int = 300
    # Problem management: where it takes alarms and SLA violations from, and how it correlates.
    alarm_hub_url: str = ""
    sla_hub_url: str = ""
    operator_party_id: str = "operator"
    problem_damping_seconds: int = 300
    impact_cache_seconds: float = 30.0
    # Base URLs of the suite's own services beyond those above (split deployments): hub
    # callbacks under them are the suite's own and are called even when private callbacks are not.
    internal_urls: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, **overrides: Any) -> Settings:
        base = cls(
            mongodb_uri=os.environ.get("SQM_MONGODB_URI", ""),
            database=os.environ.get("SQM_DATABASE", "sqm"),
            unsafe_skip_fsync=_bool("SQM_UNSAFE_SKIP_FSYNC", False),
            public_url=os.environ.get("SQM_PUBLIC_URL", cls.public_url).rstrip("/"),
            page_default_limit=_int("SQM_PAGE_DEFAULT_LIMIT", cls.page_default_limit, 1),
            page_max_limit=_int("SQM_PAGE_MAX_LIMIT", cls.page_max_limit, 1),
            max_body_bytes=_int("SQM_MAX_BODY_BYTES", cls.max_body_bytes, 1024),
            max_json_depth=_int("SQM_MAX_JSON_DEPTH", cls.max_json_depth, 4),
            query_timeout_ms=_int("SQM_QUERY_TIMEOUT_MS", cls.query_timeout_ms, 100),
            regex_max_length=_int("SQM_REGEX_MAX_LENGTH", cls.regex_max_length, 1),
            regex_scan_limit=_int("SQM_REGEX_SCAN_LIMIT", cls.regex_scan_limit, 1),
            graph_max_nodes=_int("SQM_GRAPH_MAX_NODES", cls.graph_max_nodes, 10),
            log_level=os.environ.get("SQM_LOG_LEVEL", "INFO").upper(),
            allow_private_callbacks=_bool("SQM_ALLOW_PRIVATE_CALLBACKS", False),
            delivery_max_attempts=_int("SQM_DELIVERY_MAX_ATTEMPTS", cls.delivery_max_attempts, 1),
            delivery_max_age_seconds=_int("SQM_DELIVERY_MAX_AGE_SECONDS", cls.delivery_max_age_seconds, 1),
            delivery_backoff_seconds=_float("SQM_DELIVERY_BACKOFF_SECONDS", cls.delivery_backoff_seconds, 0.001),
            delivery_backoff_max_seconds=_float("SQM_DELIVERY_BACKOFF_MAX_SECONDS",
                                                cls.delivery_backoff_max_seconds, 0.001),
            delivery_timeout_seconds=_float("SQM_DELIVERY_TIMEOUT_SECONDS", cls.delivery_timeout_seconds, 0.1),
            delivery_lease_seconds=_float("SQM_DELIVERY_LEASE_SECONDS", cls.delivery_lease_seconds, 0.5),
            delivery_concurrency=_int("SQM_DELIVERY_CONCURRENCY", cls.delivery_concurrency, 1),
            delivery_per_subscription=_int("SQM_DELIVERY_PER_SUBSCRIPTION", cls.delivery_per_subscription, 1),
            delivery_poll_seconds=_float("SQM_DELIVERY_POLL_SECONDS", cls.delivery_poll_seconds, 0.01),
            inventory_url=os.environ.get("SQM_INVENTORY_URL", "").rstrip("/"),
            sla_close_interval_seconds=_float("SQM_SLA_CLOSE_INTERVAL_SECONDS", cls.sla_close_interval_seconds, 0.05),
            measurement_future_skew_seconds=_int("SQM_MEASUREMENT_FUTURE_SKEW_SECONDS",
                                                 cls.measurement_future_skew_seconds, 0),
            alarm_hub_url=os.environ.get("SQM_ALARM_HUB_URL", "").rstrip("/"),
            sla_hub_url=os.environ.get("SQM_SLA_HUB_URL", "").rstrip("/"),
            operator_party_id=os.environ.get("SQM_OPERATOR_PARTY_ID", cls.operator_party_id),
            problem_damping_seconds=_int("SQM_PROBLEM_DAMPING_SECONDS", cls.problem_damping_seconds, 0),
            impact_cache_seconds=_float("SQM_IMPACT_CACHE_SECONDS", cls.impact_cache_seconds, 0.0),
            internal_urls=_urls("SQM_INTERNAL_URLS"),
        )
        settings = replace(base, **overrides)
        settings.check()
        return settings

    def check(self) -> None:
        if self.page_default_limit > self.page_max_limit:
            raise SettingsError(
                "SQM_PAGE_DEFAULT_LIMIT must not exceed SQM_PAGE_MAX_LIMIT "
                f"({self.page_default_limit} > {self.page_max_limit})"
            )
        if not self.public_url.startswith(("http://", "https://")):
            raise SettingsError(f"SQM_PUBLIC_URL must be an http(s) URL, got {self.public_url!r}")
        if self.log_level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise SettingsError(f"SQM_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, got {self.log_level!r}")

    @staticmethod
    def documented() -> list[tuple[str, Any]]:
        return [(f"SQM_{f.name.upper()}", f.default) for f in fields(Settings)]
