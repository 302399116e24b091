"""The two ways the gateway runs: in front of the suite's app in the same process (the
all-in-one ``sqm serve``), or on its own in front of one process per API (``sqm gateway``)."""

from __future__ import annotations

import os
from dataclasses import replace

from starlette.types import ASGIApp

from console.app import Console
from console.settings import ConsoleSettings
from services.tmf.auth.issuer import TokenIssuer
from services.tmf.auth.settings import AuthSettings
from services.tmf.auth.validator import TokenValidator
from services.tmf.settings import SettingsError

from .app import create_gateway, identify_with
from .portal import suite_apis
from .settings import GatewaySettings, parse_rate_limit


def known_apis() -> dict[str, str]:
    """Every API the suite serves: name -> base path."""
    from services.app import APIS

    return {declaration.name: declaration.base_path for declaration in APIS}


def in_process(app: ASGIApp, issuer: TokenIssuer | None, public_url: str, database: tuple[str, str]) -> ASGIApp:
    """The gateway in front of the all-in-one app: catalogue and docs, CORS, the audit line,
    and rate limits only where ``SQM_GATEWAY_RATE_LIMIT`` / ``SQM_GATEWAY_ANONYMOUS_RATE_LIMIT``
    ask for them (a laptop or a test bench has no partners to hold back). The token endpoints
    stay the app's own (``issuer``, when the suite issues its tokens itself)."""
    limits = {field: tuple(parse_rate_limit(os.environ.get(variable, ""), variable)) for field, variable in (
        ("rate_limit", "SQM_GATEWAY_RATE_LIMIT"), ("anonymous_rate_limit", "SQM_GATEWAY_ANONYMOUS_RATE_LIMIT"))}
    # Upstreams are ignored here: every API is served by the app itself.
    settings = GatewaySettings.from_env(known_apis(), public_url=public_url, upstreams={}, **limits)
    validator = (TokenValidator(issuer.settings, key_source=issuer.jwks) if issuer is not None
                 else TokenValidator(AuthSettings.from_env()))
    store = database if settings.rate_limit or settings.anonymous_rate_limit else None
    console = Console(ConsoleSettings.from_env(public_url, database), issuer,
                      os.environ.get("SQM_OPERATOR_PARTY_ID") or "operator")
    return create_gateway(settings, suite_apis(), local_app=app, identify=identify_with(validator),
                          rate_limit_store=store, console=console)


def standalone(database: tuple[str, str], public_url: str) -> ASGIApp:
    """``sqm gateway``: routes to the API processes of ``SQM_GATEWAY_UPSTREAMS``; keeps its rate
    limit counters in ``database`` (MongoDB URI, database name), shared with its replicas; and,
    unless ``SQM_OAUTH_ISSUER`` names another issuer, hosts the built-in token issuer with
    ``public_url`` as its issuer URL and its clients and keys in the same database."""
    settings = GatewaySettings.from_env(known_apis(), public_url=public_url)
    if not settings.upstreams:
        raise SettingsError("SQM_GATEWAY_UPSTREAMS names no API process; set it to "
                            "serviceInventory=http://HOST:PORT,slaManagement=http://HOST:PORT,...")
    auth = AuthSettings.from_env()
    issuer: TokenIssuer | None = None
    if auth.builtin_issuer:
        issuer = TokenIssuer(replace(auth, issuer=public_url))
        validator = TokenValidator(issuer.settings, key_source=issuer.jwks)
    else:
        validator = TokenValidator(auth)
    store = database if settings.rate_limit or settings.anonymous_rate_limit else None
    console = Console(ConsoleSettings.from_env(public_url, database), issuer,
                      os.environ.get("SQM_OPERATOR_PARTY_ID") or "operator")
    return create_gateway(settings, suite_apis(), rate_limit_store=store, identify=identify_with(validator),
                          issuer=(issuer, *database) if issuer is not None else None, console=console)
