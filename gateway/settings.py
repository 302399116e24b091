"""The gateway's configuration, read once from the environment (``SQM_GATEWAY_*`` and the few
suite-wide ``SQM_*`` variables it shares with the API processes)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from limits import RateLimitItem, parse_many

from services.tmf.settings import SettingsError, env_float

MIN_TIMEOUT_SECONDS = 0.001


def parse_upstreams(raw: str, known: dict[str, str]) -> dict[str, str]:
    """``serviceInventory=http://inventory:8080,slaManagement=http://sla:8080`` -> {api name: URL}.
    ``known`` maps every API name the suite serves to its base path."""
    upstreams: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in raw.split(","))):
        name, sep, url = item.partition("=")
        name, url = name.strip(), url.strip().rstrip("/")
        if not sep or not url:
            raise SettingsError(f"SQM_GATEWAY_UPSTREAMS: '{item}' is not apiName=http://host:port")
        if name not in known:
            raise SettingsError(
                f"SQM_GATEWAY_UPSTREAMS names an unknown API '{name}'; the APIs are {', '.join(sorted(known))}")
        parts = urlsplit(url)
        if parts.scheme not in {"http", "https"} or not parts.netloc or parts.path not in {"", "/"}:
            raise SettingsError(f"SQM_GATEWAY_UPSTREAMS: the URL of {name} must be http(s)://host:port, got {url!r}")
        upstreams[name] = url
    return upstreams


def parse_rate_limit(raw: str, variable: str) -> list[RateLimitItem]:
    try:
        return list(parse_many(raw)) if raw else []
    except ValueError:
        raise SettingsError(f"{variable} must look like '100/second' or '1000/minute;50/second', got {raw!r}"
                            ) from None


@dataclass(frozen=True)
class GatewaySettings:
    """``upstreams`` empty means in-process: the gateway fronts the suite's own app."""

    public_url: str = "http://127.0.0.1:8080"
    upstreams: dict[str, str] = field(default_factory=dict)
    cors_origins: tuple[str, ...] = ()
    # Per authenticated client, and per address for calls without a valid token.
    rate_limit: tuple[RateLimitItem, ...] = ()
    anonymous_rate_limit: tuple[RateLimitItem, ...] = ()
    connect_timeout_seconds: float = 5.0
    read_timeout_seconds: float = 60.0
    max_connections: int = 200

    @classmethod
    def from_env(cls, known_apis: dict[str, str], **overrides: object) -> GatewaySettings:
        values: dict[str, object] = {
            "public_url": os.environ.get("SQM_PUBLIC_URL", cls.public_url).rstrip("/"),
            "upstreams": parse_upstreams(os.environ.get("SQM_GATEWAY_UPSTREAMS", ""), known_apis),
            "cors_origins": tuple(o.strip() for o in os.environ.get("SQM_GATEWAY_CORS_ORIGINS", "").split(",")
                                  if o.strip()),
            "rate_limit": tuple(parse_rate_limit(os.environ.get("SQM_GATEWAY_RATE_LIMIT", "50/second"),
                                                 "SQM_GATEWAY_RATE_LIMIT")),
            "anonymous_rate_limit": tuple(parse_rate_limit(
                os.environ.get("SQM_GATEWAY_ANONYMOUS_RATE_LIMIT", "10/second"), "SQM_GATEWAY_ANONYMOUS_RATE_LIMIT")),
            "connect_timeout_seconds": env_float("SQM_GATEWAY_CONNECT_TIMEOUT_SECONDS", cls.connect_timeout_seconds,
                                              MIN_TIMEOUT_SECONDS),
            "read_timeout_seconds": env_float("SQM_GATEWAY_READ_TIMEOUT_SECONDS", cls.read_timeout_seconds,
                                           MIN_TIMEOUT_SECONDS),
        }
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]
