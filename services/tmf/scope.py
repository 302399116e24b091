"""Where a request's :class:`AccessScope` comes from: the single seam a gateway plugs into."""

from __future__ import annotations

import re

from starlette.requests import Request

from .errors import BadRequest
from .repository import OPERATOR, OPERATOR_ROLE, AccessScope
from .settings import Settings

PARTY_HEADER = "x-party-id"
ROLE_HEADER = "x-party-role"
_PARTY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


def scope_of(request: Request, settings: Settings) -> AccessScope:
    """The caller's scope. Until a gateway authenticates callers and the services are told to
    trust its headers, every caller acts as the operator."""
    if not settings.trust_party_headers:
        return OPERATOR
    party = request.headers.get(PARTY_HEADER)
    role = request.headers.get(ROLE_HEADER, "partner")
    if party is None:
        return OPERATOR if role == OPERATOR_ROLE else AccessScope(None, "anonymous")
    if not _PARTY.fullmatch(party) or not _PARTY.fullmatch(role):
        raise BadRequest(f"{PARTY_HEADER} and {ROLE_HEADER} must be plain identifiers")
    return AccessScope(party, role)
