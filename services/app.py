"""The suite: every API this product serves, or a selection of them, in one ASGI application."""

from __future__ import annotations

from collections.abc import Callable, Collection
from datetime import datetime

from connexion import AsyncApp

from services import inventory, problem, sla
from services.tmf.api import ApiDeclaration, build_app
from services.tmf.settings import Settings

APIS: list[ApiDeclaration] = [inventory.API, sla.API, problem.ALARM_API, problem.PROBLEM_API]
API_NAMES = tuple(declaration.name for declaration in APIS)


def select(names: Collection[str] | None) -> list[ApiDeclaration]:
    """The declarations of the named APIs, in the suite's order (all of them for None or empty);
    ValueError names an unknown one."""
    if not names:
        return list(APIS)
    unknown = sorted(set(names) - set(API_NAMES))
    if unknown:
        raise ValueError(f"unknown API {', '.join(unknown)}; the APIs are {', '.join(API_NAMES)}")
    return [declaration for declaration in APIS if declaration.name in names]


def create_app(settings: Settings | None = None, clock: Callable[[], datetime] | None = None,
               apis: Collection[str] | None = None) -> AsyncApp:
    """The app serving ``apis`` (by name; default every API of the suite)."""
    return build_app(select(apis), settings or Settings.from_env(), clock)
