"""OAuth2 configuration, read once from the environment (``SQM_OAUTH_*``)."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Any

from ..settings import SettingsError, env_float, env_int

DEFAULT_AUDIENCE = "tmf-sqm"


def _url(name: str, raw: str) -> str:
    if not raw.startswith(("http://", "https://")):
        raise SettingsError(f"{name} must be an http(s) URL, got {raw!r}")
    return raw.rstrip("/")


def _claim(name: str, default: str) -> str:
    raw = os.environ.get(name) or default
    if any(not part for part in raw.split(".")):
        raise SettingsError(f"{name} must be a claim name or a dotted path such as realm_access.roles, got {raw!r}")
    return raw


@dataclass(frozen=True)
class AuthSettings:
    """How bearer tokens are validated and, for the embedded default, issued.

    Without ``SQM_OAUTH_ISSUER`` the suite is its own issuer: its public URL is the issuer,
    and tokens come from the built-in token endpoint (``builtin_issuer`` is then true).
    """

    issuer: str = "http://127.0.0.1:8080"
    builtin_issuer: bool = True
    audience: str = DEFAULT_AUDIENCE
    # Where the signing keys are; empty means discovered from the issuer's metadata.
    jwks_url: str = ""
    party_claim: str = "party_id"
    # A dotted path reaches into objects, e.g. Keycloak's realm_access.roles.
    role_claim: str = "role"
    scope_claim: str = "scope"
    clock_skew_seconds: int = 30
    token_lifetime_seconds: int = 300
    # An unknown key id makes the validator fetch the key set again, at most this often.
    jwks_refetch_interval_seconds: float = 30.0
    # Even with no unknown key id, the key set is fetched again when it is this old, so that a
    # key the issuer withdrew stops being accepted.
    jwks_max_age_seconds: float = 3600.0

    @classmethod
    def from_env(cls, **overrides: Any) -> AuthSettings:
        configured = os.environ.get("SQM_OAUTH_ISSUER", "")
        public_url = os.environ.get("SQM_PUBLIC_URL", cls.issuer)
        jwks_url = os.environ.get("SQM_OAUTH_JWKS_URL", "")
        base = cls(
            issuer=_url("SQM_OAUTH_ISSUER" if configured else "SQM_PUBLIC_URL", configured or public_url),
            builtin_issuer=not configured,
            audience=os.environ.get("SQM_OAUTH_AUDIENCE") or DEFAULT_AUDIENCE,
            jwks_url=_url("SQM_OAUTH_JWKS_URL", jwks_url) if jwks_url else "",
            party_claim=_claim("SQM_OAUTH_PARTY_CLAIM", cls.party_claim),
            role_claim=_claim("SQM_OAUTH_ROLE_CLAIM", cls.role_claim),
            scope_claim=_claim("SQM_OAUTH_SCOPE_CLAIM", cls.scope_claim),
            clock_skew_seconds=env_int("SQM_OAUTH_CLOCK_SKEW_SECONDS", cls.clock_skew_seconds, 0),
            token_lifetime_seconds=env_int("SQM_TOKEN_LIFETIME_SECONDS", cls.token_lifetime_seconds, 10),
            jwks_refetch_interval_seconds=env_float("SQM_OAUTH_JWKS_REFETCH_SECONDS",
                                                 cls.jwks_refetch_interval_seconds, 0.0),
        )
        return replace(base, **overrides)

    @classmethod
    def documented(cls) -> list[tuple[str, Any]]:
        """The variables read by :meth:`from_env`, with their defaults (an empty issuer: the
        suite issues its own tokens)."""
        return [("SQM_OAUTH_ISSUER", ""), ("SQM_OAUTH_AUDIENCE", DEFAULT_AUDIENCE), ("SQM_OAUTH_JWKS_URL", ""),
                ("SQM_OAUTH_PARTY_CLAIM", cls.party_claim), ("SQM_OAUTH_ROLE_CLAIM", cls.role_claim),
                ("SQM_OAUTH_SCOPE_CLAIM", cls.scope_claim), ("SQM_OAUTH_CLOCK_SKEW_SECONDS", cls.clock_skew_seconds),
                ("SQM_OAUTH_JWKS_REFETCH_SECONDS", cls.jwks_refetch_interval_seconds),
                ("SQM_TOKEN_LIFETIME_SECONDS", cls.token_lifetime_seconds)]
