"""The whole suite: every API this product serves, in one ASGI application."""

from __future__ import annotations

from connexion import AsyncApp

from services import inventory
from services.tmf.api import ApiDeclaration, build_app
from services.tmf.settings import Settings

APIS: list[ApiDeclaration] = [inventory.API]


def create_app(settings: Settings | None = None) -> AsyncApp:
    return build_app(APIS, settings or Settings.from_env())
