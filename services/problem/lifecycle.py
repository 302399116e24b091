"""The TMF656 problem lifecycle and the bookkeeping the server keeps on every problem."""

from __future__ import annotations

import uuid
from typing import Any

from services.tmf.call import Call
from services.tmf.errors import Conflict
from services.tmf.events import now_text
from services.tmf.resource import ResourceApi, ResourceRules

FINAL = frozenset({"rejected", "cancelled", "closed"})
OPEN = ("pending", "acknowledged", "inProgress", "held")
# Where each status may go. "pending" also means "detected by the system, waiting for an
# operator to acknowledge it".
TRANSITIONS: dict[str, frozenset[str]] = {
    "pending": frozenset({"acknowledged", "inProgress", "resolved", "cancelled"}),
    "acknowledged": frozenset({"inProgress", "rejected", "cancelled"}),
    "inProgress": frozenset({"held", "pending", "resolved", "cancelled"}),
    "held": frozenset({"inProgress", "resolved", "cancelled"}),
    "resolved": frozenset({"closed", "inProgress"}),
    "rejected": frozenset(),
    "cancelled": frozenset(),
    "closed": frozenset(),
}
SYSTEM_ID = "tmf-sqm"


def tracking(description: str, **extra: Any) -> dict[str, Any]:
    return {"id": uuid.uuid4().hex[:12], "description": description, "time": now_text(), "systemId": SYSTEM_ID,
            **extra}


def check_transition(before: str | None, after: str) -> None:
    if before is None or before == after:
        return
    allowed = TRANSITIONS.get(before, frozenset())
    if after not in allowed:
        options = ", ".join(sorted(allowed)) if allowed else "none: it is final"
        raise Conflict(f"a problem cannot go from {before} to {after}; from {before} it may go to {options}")


def set_status(problem: dict[str, Any], status: str, reason: str, record: dict[str, Any] | None = None) -> None:
    """Move ``problem`` to ``status`` with the dates and the tracking record that go with it."""
    now = now_text()
    problem["status"] = status
    problem["statusChangeDate"] = now
    problem["statusChangeReason"] = reason
    if status == "resolved":
        problem["resolutionDate"] = now
    elif status == "inProgress":
        problem.pop("resolutionDate", None)
    problem["trackingRecord"] = [*(problem.get("trackingRecord") or []), record or tracking(reason)]


class ProblemRules(ResourceRules):
    async def on_create(self, api: ResourceApi, document: dict[str, Any], call: Call) -> dict[str, Any]:
        now = now_text()
        document.setdefault("status", "acknowledged")
        document.setdefault("statusChangeDate", now)
        document["creationDate"] = now
        document["lastUpdate"] = now
        document["affectedNumberOfServices"] = len(document.get("affectedService") or [])
        if not document.get("trackingRecord"):
            document["trackingRecord"] = [tracking(f"problem created ({document['status']})")]
        return {"openRoot": open_root(document)}

    async def on_update(self, api: ResourceApi, before: dict[str, Any], after: dict[str, Any],
                        call: Call, system: bool = False) -> dict[str, Any]:
        old, new = before.get("status"), after.get("status")
        if old in FINAL and after != before:
            raise Conflict(f"the problem is {old}, a final status; it cannot change any more")
        if new != old:
            if not system:
                check_transition(old, str(new))
            if after.get("statusChangeDate") == before.get("statusChangeDate"):
                set_status(after, str(new), after.get("statusChangeReason") or f"status set to {new}")
        after["lastUpdate"] = now_text()
        after["affectedNumberOfServices"] = len(after.get("affectedService") or [])
        return {"openRoot": open_root(after)}


def root_key(problem: dict[str, Any]) -> str | None:
    for key, kind in (("rootCauseResource", "resource"), ("rootCauseService", "service")):
        refs = problem.get(key) or []
        if refs and refs[0].get("id"):
            return f"{kind}:{refs[0]['id']}"
    return None


def open_root(problem: dict[str, Any]) -> str | None:
    """The root cause an open problem stands for; at most one open problem per root."""
    return root_key(problem) if problem.get("status") in OPEN else None
