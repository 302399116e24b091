"""Who is calling: roles, the per-API scopes, and the :class:`Caller` a validated token becomes."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from ..call import OPERATOR_ROLE
from ..errors import Forbidden

# The protection space named in every WWW-Authenticate challenge.
REALM = "tmf-sqm"

OPERATOR = OPERATOR_ROLE
PARTNER = "partner"
CUSTOMER = "customer"
# The suite's own services calling each other (the problem service reading the inventory,
# subscribing to hubs). They act for the operator: operator-equivalent for reads and for the
# system operations. The final permission matrix is decided where requests are authorised.
SERVICE = "service"
ROLES = (OPERATOR, PARTNER, CUSTOMER, SERVICE)
# The roles a person can give a client from the command line; service identities are the suite's.
CLIENT_ROLES = (OPERATOR, PARTNER, CUSTOMER)

API_NAMES = ("serviceInventory", "slaManagement", "alarmManagement", "serviceProblemManagement")
READ = "read"
WRITE = "write"
SCOPES = tuple(f"{api}.{access}" for api in API_NAMES for access in (READ, WRITE))

# A partner reads everything it may see, raises alarms, reports measurements and works on the
# problems it is responsible for; a customer only reads.
_PARTNER_WRITES = ("alarmManagement.write", "slaManagement.write", "serviceProblemManagement.write")
DEFAULT_SCOPES: dict[str, tuple[str, ...]] = {
    OPERATOR: SCOPES,
    SERVICE: SCOPES,
    PARTNER: tuple(s for s in SCOPES if s.endswith(f".{READ}") or s in _PARTNER_WRITES),
    CUSTOMER: tuple(s for s in SCOPES if s.endswith(f".{READ}")),
}

PARTY_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}")
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def scope_for(api_name: str, method: str) -> str:
    """The scope an operation needs: ``<api>.read`` for reads, ``<api>.write`` for the rest."""
    return f"{api_name}.{READ if method.upper() in _SAFE_METHODS else WRITE}"


def check_scopes(scopes: Iterable[str]) -> tuple[str, ...]:
    """The scopes, deduplicated in the canonical order; ValueError names an unknown one."""
    wanted = set(scopes)
    unknown = sorted(wanted - set(SCOPES))
    if unknown:
        raise ValueError(f"unknown scope {', '.join(unknown)}; known scopes are {', '.join(SCOPES)}")
    return tuple(s for s in SCOPES if s in wanted)


@dataclass(frozen=True)
class Caller:
    """An authenticated caller. ``party_id`` is None only for operator and service callers whose
    token names no party."""

    party_id: str | None
    role: str
    client_id: str
    scopes: frozenset[str]

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes

    def require_scope(self, scope: str) -> None:
        """Raise :class:`Forbidden` (403, with an RFC 6750 ``insufficient_scope`` challenge)
        unless the token grants ``scope``."""
        if scope not in self.scopes:
            raise Forbidden(f"this operation needs the scope {scope}, which the token does not grant; "
                            "ask for it when requesting the token",
                            challenge=f'Bearer error="insufficient_scope", scope="{scope}"')
