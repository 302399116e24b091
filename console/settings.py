"""Console configuration, read once from the environment (``SQM_CONSOLE_*``)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from services.tmf.settings import SettingsError, env_int

SESSION_COOKIE = "sqm_console"
LOGIN_COOKIE = "sqm_console_login"


def _url(name: str, raw: str) -> str:
    if not raw.startswith(("http://", "https://")):
        raise SettingsError(f"{name} must be an http(s) URL, got {raw!r}")
    return raw.rstrip("/")


@dataclass(frozen=True)
class OidcSettings:
    """An OpenID Connect provider people log in with (authorization code with PKCE)."""

    issuer: str
    client_id: str
    client_secret: str
    party_claim: str
    role_claim: str
    scope: str


@dataclass(frozen=True)
class ConsoleSettings:
    public_url: str
    # Where the console calls the suite's APIs: the gateway itself, at the public URL, unless told.
    api_url: str
    mongodb_uri: str
    database: str
    session_seconds: int = 8 * 3600
    oidc: OidcSettings | None = None

    @property
    def secure_cookies(self) -> bool:
        return self.public_url.startswith("https://")

    @classmethod
    def documented(cls) -> list[tuple[str, object]]:
        """The variables read by :meth:`from_env`, with their defaults."""
        return [("SQM_CONSOLE_SESSION_SECONDS", cls.session_seconds), ("SQM_CONSOLE_API_URL", ""),
                ("SQM_CONSOLE_OIDC_ISSUER", ""), ("SQM_CONSOLE_OIDC_CLIENT_ID", ""),
                ("SQM_CONSOLE_OIDC_CLIENT_SECRET", ""), ("SQM_CONSOLE_OIDC_PARTY_CLAIM", "party_id"),
                ("SQM_CONSOLE_OIDC_ROLE_CLAIM", "role"), ("SQM_CONSOLE_OIDC_SCOPE", "openid")]

    @classmethod
    def from_env(cls, public_url: str, database: tuple[str, str]) -> ConsoleSettings:
        public_url = public_url.rstrip("/")
        api_url = os.environ.get("SQM_CONSOLE_API_URL", "")
        issuer = os.environ.get("SQM_CONSOLE_OIDC_ISSUER", "")
        oidc = None
        if issuer:
            client_id = os.environ.get("SQM_CONSOLE_OIDC_CLIENT_ID", "")
            if not client_id:
                raise SettingsError("SQM_CONSOLE_OIDC_CLIENT_ID must be set with SQM_CONSOLE_OIDC_ISSUER")
            oidc = OidcSettings(
                issuer=_url("SQM_CONSOLE_OIDC_ISSUER", issuer), client_id=client_id,
                client_secret=os.environ.get("SQM_CONSOLE_OIDC_CLIENT_SECRET", ""),
                party_claim=os.environ.get("SQM_CONSOLE_OIDC_PARTY_CLAIM") or "party_id",
                role_claim=os.environ.get("SQM_CONSOLE_OIDC_ROLE_CLAIM") or "role",
                scope=os.environ.get("SQM_CONSOLE_OIDC_SCOPE") or "openid")
        return cls(public_url=public_url,
                   api_url=_url("SQM_CONSOLE_API_URL", api_url) if api_url else public_url,
                   mongodb_uri=database[0], database=database[1],
                   session_seconds=env_int("SQM_CONSOLE_SESSION_SECONDS", cls.session_seconds, 60), oidc=oidc)
