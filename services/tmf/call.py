"""The call: who is asking (party, role, client, granted scopes), for which request, under which
trace, at what time. One middleware resolves it once per request from the bearer token;
handlers, rules and repositories receive it and never read identity from headers themselves.
Work the suite does on its own account (closing SLA periods, correlating alarms) runs as
:data:`SYSTEM`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

OPERATOR_ROLE = "operator"
PARTNER_ROLE = "partner"
CUSTOMER_ROLE = "customer"
SERVICE_ROLE = "service"


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Call:
    party_id: str | None = None
    role: str = OPERATOR_ROLE
    client_id: str | None = None
    scopes: frozenset[str] = frozenset()
    request_id: str | None = None
    traceparent: str | None = None
    clock: Callable[[], datetime] = field(default=utc_now, compare=False, repr=False)

    @property
    def unrestricted(self) -> bool:
        """The operator and the suite's own services see and may change everything."""
        return self.role in (OPERATOR_ROLE, SERVICE_ROLE)

    @property
    def read_only(self) -> bool:
        return self.role == CUSTOMER_ROLE

    def with_request(self, request_id: str | None, traceparent: str | None) -> Call:
        return replace(self, request_id=request_id, traceparent=traceparent)

    def describe(self) -> dict[str, Any]:
        """What the access log says about the caller (never the token)."""
        return {"party": self.party_id, "role": self.role, "client": self.client_id}


# The suite acting on its own account: background work and what it does for events it takes.
SYSTEM = Call(None, SERVICE_ROLE, "tmf-sqm")
# The operator without a token: only for code paths (tests, tools) that act as the operator.
OPERATOR = Call(None, OPERATOR_ROLE)
