"""The gateway's server span and request metrics: proxied calls are counted per upstream API
under the route the gateway matched (``<base path>/{path}``), its own pages under their path."""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING

from starlette.types import ASGIApp, Scope

from services.tmf import telemetry
from services.tmf.metrics import UNMATCHED, HttpMetricsMiddleware

if TYPE_CHECKING:
    from .app import Gateway

GATEWAY = "gateway"


def instrument(app: ASGIApp, gateway: Gateway, own_paths: Collection[str]) -> ASGIApp:
    """``app`` with request metrics, inside a server span per request while tracing is on.
    Under the all-in-one server, calls handed to the suite's app in this process are left to
    that app, which records them with their operation's route: nothing is counted twice."""
    templates = {id(upstream): (upstream.name, f"{base_path}/{{path}}") for base_path, upstream in gateway.routes}

    def classify(scope: Scope) -> tuple[str, str] | None:
        path: str = scope.get("path", "")
        upstream = gateway.upstream_for(path)
        if upstream is not None:
            return templates[id(upstream)]
        if path in own_paths:
            return GATEWAY, path
        if gateway.local_app is not None:
            return None
        return GATEWAY, UNMATCHED

    wrapped: ASGIApp = telemetry.wrap_asgi(HttpMetricsMiddleware(app, classify))
    return wrapped
