"""The whole suite: every API this product serves, in one ASGI application."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from connexion import AsyncApp

from services import inventory, problem, sla
from services.tmf.api import ApiDeclaration, build_app
from services.tmf.settings import Settings

APIS: list[ApiDeclaration] = [inventory.API, sla.API, problem.ALARM_API, problem.PROBLEM_API]


def create_app(settings: Settings | None = None, clock: Callable[[], datetime] | None = None) -> AsyncApp:
    return build_app(APIS, settings or Settings.from_env(), clock)
