"""Bookkeeping for authorization tests: what each party may see of each resource, judged from
the resource's own content by the visibility rules the README states (never from the
service's bookkeeping), every id each party was shown, and a short matrix of the checks made."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

OPERATOR = "operator"
ERROR_KEYS = ("code", "reason", "message", "status")


def ids_at(value: Any, *path: str) -> set[str]:
    """The string ids found at ``path`` (objects and arrays of objects alike)."""
    found: set[str] = set()
    if not path:
        return {value} if isinstance(value, str) else set()
    items = value if isinstance(value, list) else [value]
    for item in items:
        if isinstance(item, dict) and path[0] in item:
            found |= ids_at(item[path[0]], *path[1:])
    return found


def tmf_error(response: httpx.Response, statuses: Iterable[int]) -> dict[str, Any]:
    """Assert the response is a TMF Error with one of ``statuses``; returns its body."""
    allowed = set(statuses)
    assert response.status_code in allowed, (
        f"{response.request.method} {response.request.url} answered {response.status_code}, "
        f"expected one of {sorted(allowed)}: {response.text[:300]}")
    body = response.json()
    missing = [k for k in ERROR_KEYS if k not in body]
    assert not missing, f"not a TMF Error (missing {missing}): {response.text[:300]}"
    assert str(body["status"]) == str(response.status_code), response.text[:300]
    return body


@dataclass
class Policy:
    """Who besides the operator may see a resource, from what the operator reads.

    ``slas`` are the SLAs by id, ``impact_parties`` gives the parties of every service resting on
    a failing element, ``owners`` the creator of each resource the test made (a creator sees
    what it created; alarms, hub subscriptions and task records only their creator)."""

    slas: Mapping[str, dict[str, Any]]
    impact_parties: Callable[[str, str], set[str]]
    owners: Mapping[str, str | None]

    def sla_parties(self, sla_id: Any) -> set[str]:
        return ids_at(self.slas.get(str(sla_id)) or {}, "relatedParty", "id")

    def problem_parties(self, problem: Mapping[str, Any]) -> set[str]:
        named = (ids_at(problem, "originatorParty", "id") | ids_at(problem, "responsibleParty", "id")
                 | ids_at(problem, "relatedParty", "id"))
        # A problem the system opened for an alarm is also seen by the parties of the services
        # its root cause takes down.
        if (problem.get("firstAlert") or {}).get("role") == "alarm":
            for key, kind in (("rootCauseResource", "resource"), ("rootCauseService", "service")):
                for root in ids_at(problem, key, "id"):
                    named |= self.impact_parties(kind, root)
        return named

    def parties(self, kind: str, body: Mapping[str, Any]) -> set[str]:
        # Whoever created a resource sees it, whatever it names.
        owner = self.owners.get(str(body.get("id")))
        return self.named_parties(kind, body) | ({owner} if owner else set())

    def named_parties(self, kind: str, body: Mapping[str, Any]) -> set[str]:
        if kind in ("service", "sla"):
            return ids_at(body, "relatedParty", "id")
        if kind == "slaViolation":
            return ids_at(body, "relatedParty", "id") | self.sla_parties((body.get("sla") or {}).get("id"))
        if kind == "slaEvaluation":
            return self.sla_parties((body.get("sla") or {}).get("id"))
        if kind == "rebate":
            return (ids_at(body, "payer", "id") | ids_at(body, "payee", "id")
                    | self.sla_parties((body.get("sla") or {}).get("id")))
        if kind == "settlementStatement":
            return ids_at(body, "party", "id")
        if kind == "serviceProblem":
            return self.problem_parties(body)
        if kind == "serviceProblemEventRecord":
            problem = ((body.get("notification") or {}).get("event") or {}).get("serviceProblem") or {}
            creator = self.owners.get(str(problem.get("id")))
            return self.problem_parties(problem) | ({creator} if creator else set())
        return set()  # owner-only resources: alarms, hub subscriptions, task records

    def may_see(self, party: str, kind: str, body: Mapping[str, Any]) -> bool:
        return party == OPERATOR or party in self.parties(kind, body)


@dataclass
class Ledger:
    """Every id shown to each party, the leaks among them, and the outcome of every check."""

    seen: dict[str, set[tuple[str, str]]] = field(default_factory=lambda: defaultdict(set))
    leaks: list[str] = field(default_factory=list)
    cells: dict[tuple[str, str, str], list[int]] = field(default_factory=dict)

    def observe(self, party: str, kind: str, shown: Iterable[str], allowed: set[str], where: str) -> set[str]:
        shown = set(shown)
        self.seen[party] |= {(kind, i) for i in shown}
        leaked = shown - allowed
        self.leaks += [f"{party} saw {kind} {i} via {where}" for i in sorted(leaked)]
        return leaked

    def check(self, party: str, kind: str, whose: str, passed: bool) -> None:
        cell = self.cells.setdefault((party, kind, whose), [0, 0])
        cell[0 if passed else 1] += 1

    def summary(self) -> str:
        parties = sorted({p for p, _, _ in self.cells})
        kinds = sorted({k for _, k, _ in self.cells})
        lines = ["checks passed/failed per caller and kind (own | other's):",
                 f"{'kind':28}" + "".join(f"{p:>22}" for p in parties)]
        for kind in kinds:
            row = f"{kind:28}"
            for party in parties:
                own = self.cells.get((party, kind, "own"), [0, 0])
                other = self.cells.get((party, kind, "other"), [0, 0])
                row += f"{f'{own[0]}/{own[1]} | {other[0]}/{other[1]}':>22}"
            lines.append(row)
        lines.append("ids seen: " + ", ".join(f"{p}={len(s)}" for p, s in sorted(self.seen.items())))
        lines.append(f"leaks: {len(self.leaks)}")
        lines += [f"  {leak}" for leak in self.leaks[:40]]
        return "\n".join(lines)
