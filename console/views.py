"""What each page shows, assembled from the APIs' answers for one session."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from services.sla.evaluation import period_containing
from services.tmf.auth.identity import CUSTOMER, OPERATOR

from .store import Session
from .suite import ALARM, INVENTORY, PROBLEM, SLA, Suite, SuiteError

OPEN_PROBLEM = "pending,acknowledged,inProgress,held"
MAX_SEARCH = 64
CHOICES = 50
# Bounds on what one page asks for: the console shows one customer-facing service's tree, and
# at most this many problems, alarms and SLAs around it.
LIST_LIMIT = 500
SLA_LIMIT = 100
GRAPH_DEPTH = 32
EVALUATIONS_AT_ONCE = 4
_LITERAL = re.compile(r"[A-Za-z0-9 ._:@-]*")


def _text(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def age(text: str | None, now: datetime) -> str:
    start = parse_time(text)
    if start is None:
        return "unknown"
    seconds = max(0, int((now - start).total_seconds()))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 172800:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} d"


def parties(resource: dict[str, Any], role: str | None = None) -> list[str]:
    return [str(p.get("name") or p.get("id")) for p in resource.get("relatedParty") or []
            if role is None or p.get("role") == role]


# -- SLA standing ------------------------------------------------------------------------------


@dataclass
class RuleStanding:
    metric: str
    operator: str
    objective: str
    actual: str
    met: bool | None
    budget_used: float | None  # share of the period's error budget spent (availability rules)
    status: str  # "ok", "at risk", "violated", "no data"


@dataclass
class SlaStanding:
    sla: dict[str, Any]
    period_start: datetime
    period_end: datetime
    elapsed: float  # share of the period gone
    time_left: str
    rules: list[RuleStanding] = field(default_factory=list)
    violations: list[dict[str, Any]] = field(default_factory=list)
    rebate: str | None = None
    evaluated: bool = True
    note: str | None = None

    @property
    def status(self) -> str:
        statuses = {r.status for r in self.rules}
        for worst in ("violated", "at risk", "ok"):
            if worst in statuses:
                return worst
        return "no data"


def _budget_used(result: dict[str, Any], period_seconds: float) -> float | None:
    """Down time so far over the down time the availability objective allows in the whole period."""
    if result.get("metric") != "availability" or result.get("operator") not in (".ge", ".gt"):
        return None
    actual = result.get("actualValue")
    if actual is None:
        return None
    allowed_share = (100.0 - (float(result.get("referenceValue", 0)) - float(result.get("tolerance") or 0))) / 100
    budget = allowed_share * max(0.0, period_seconds - float(result.get("excludedSeconds") or 0))
    down = (100.0 - float(actual)) / 100 * float(result.get("evaluatedSeconds") or 0)
    if budget <= 0:
        return 0.0 if down <= 0 else float("inf")
    return down / budget


def _money(value: Decimal, currency: str) -> str:
    return f"{value.quantize(Decimal('0.01'))} {currency}"


def _time_left(seconds: float) -> str:
    if seconds <= 0:
        return "ended"
    if seconds < 3600:
        return f"{int(seconds // 60)} min"
    if seconds < 172800:
        return f"{int(seconds // 3600)} h"
    return f"{int(seconds // 86400)} d"


async def sla_standing(suite: Suite, session: Session, sla: dict[str, Any], now: datetime) -> SlaStanding:
    """Where an SLA stands in its running period, rule by rule, from the SLA API's evaluation: a
    fresh preview for those who may evaluate (operator, partner), the latest evaluation kept
    for the others (a customer may not write, not even a preview)."""
    settings = sla.get("evaluationPeriod") or {}
    period = period_containing(now, settings.get("kind", "month"), settings.get("timeZone") or "UTC")
    total = (period.end - period.start).total_seconds()
    elapsed = min(1.0, max(0.0, (now - period.start).total_seconds() / total))
    standing = SlaStanding(sla, period.start, period.end, elapsed, _time_left((period.end - now).total_seconds()))
    evaluation: dict[str, Any] | None
    if session.role == CUSTOMER:
        kept = await suite.get(session, f"{SLA}/slaEvaluation", **{
            "sla.id": sla["id"], "period.startDateTime": _text(period.start), "sort": "-evaluatedAt", "limit": 1})
        evaluation = kept[0] if kept else None
        if evaluation is None:
            standing.evaluated = False
            standing.note = "not evaluated yet in this period"
    else:
        evaluation = await suite.post(session, f"{SLA}/slaEvaluation", {
            "sla": {"id": sla["id"]},
            "period": {"startDateTime": _text(period.start), "endDateTime": _text(period.end)}})
    rebate_percent = Decimal(0)
    for result in (evaluation or {}).get("ruleResult") or []:
        used = _budget_used(result, total)
        met = result.get("met")
        actual = result.get("actualValue")
        if actual is None:
            status = "no data"
        elif used is not None:
            status = "violated" if used >= 1 else "at risk" if used > elapsed else "ok"
        else:
            # Means and percentiles are judged at close; a miss so far is a risk, not a violation.
            status = "ok" if met else "at risk"
        if met is False:
            rebate_percent += Decimal(str(result.get("rebatePercent") or 0))
        unit = result.get("unit") or ""
        standing.rules.append(RuleStanding(
            metric=str(result.get("metric")), operator=str(result.get("operator")),
            objective=f"{result.get('operator', '')[1:]} {result.get('referenceValue')} {unit}".strip(),
            actual="no data" if actual is None else f"{float(actual):.4g} {unit}".strip(),
            met=met, budget_used=used, status=status))
    violations = await suite.get(session, f"{SLA}/slaViolation", **{"sla.id": sla["id"], "limit": 20,
                                                                    "sort": "-date"})
    def this_period(violation: dict[str, Any]) -> bool:
        start = parse_time((violation.get("period") or {}).get("startDateTime"))
        return start is None or start >= period.start

    standing.violations = [v for v in violations if v.get("status") != "withdrawn" and this_period(v)]
    charge = sla.get("charge") or {}
    if charge.get("value") is not None:
        cap = (sla.get("rebateCap") or {}).get("percent")
        if cap is not None:
            rebate_percent = min(rebate_percent, Decimal(str(cap)))
        amount = Decimal(str(charge["value"])) * rebate_percent / 100
        standing.rebate = _money(amount, str(charge.get("unit") or ""))
    return standing


async def standings(suite: Suite, session: Session, slas: list[dict[str, Any]], now: datetime) -> list[SlaStanding]:
    """The standing of each SLA, a few evaluated at a time."""
    gate = asyncio.Semaphore(EVALUATIONS_AT_ONCE)

    async def one(sla: dict[str, Any]) -> SlaStanding:
        async with gate:
            return await sla_standing(suite, session, sla, now)

    return list(await asyncio.gather(*(one(sla) for sla in slas)))


async def sla_board(suite: Suite, session: Session, now: datetime) -> list[SlaStanding]:
    slas = await suite.get(session, f"{SLA}/sla", sort="name", limit=SLA_LIMIT)
    return await standings(suite, session, slas, now)


# -- problems ----------------------------------------------------------------------------------


async def open_problems(suite: Suite, session: Session) -> list[dict[str, Any]]:
    problems: list[dict[str, Any]] = await suite.get(
        session, f"{PROBLEM}/serviceProblem", status=OPEN_PROBLEM, sort="-creationDate", limit=LIST_LIMIT)
    return problems


# -- settlement --------------------------------------------------------------------------------


async def statements(suite: Suite, session: Session) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = await suite.get(session, f"{SLA}/settlementStatement",
                                                  sort="-period.startDateTime,party.id", limit=LIST_LIMIT)
    return found


# -- service graph -----------------------------------------------------------------------------


@dataclass
class Node:
    id: str
    kind: str  # "Service" or "Resource"
    name: str
    category: str | None
    state: str | None
    supplier: list[str]
    external: bool
    marks: list[str] = field(default_factory=list)  # "problem", "alarm", "at risk", "violated"
    children: list[Node] = field(default_factory=list)

    @property
    def tone(self) -> str:
        for mark in ("violated", "problem", "alarm", "at risk"):
            if mark in self.marks:
                return mark.replace(" ", "-")
        return "ok"


async def customer_facing(suite: Suite, session: Session, search: str) -> list[dict[str, Any]]:
    """Services to choose from, at most :data:`CHOICES`, by name: the customer-facing ones for the
    operator; for a partner or customer every service the API shows it (a partner is rarely a
    party to the customer-facing services resting on what it supplies)."""
    params: dict[str, Any] = {"fields": "name,state,category", "sort": "name", "limit": CHOICES}
    if session.role == OPERATOR:
        params["category"] = "CFS,customerFacing"
    search = search.strip()[:MAX_SEARCH]
    if search and _LITERAL.fullmatch(search):
        params["name.regex"] = re.escape(search).replace("\\ ", " ")
    found: list[dict[str, Any]] = await suite.get(session, f"{INVENTORY}/service", **params)
    return found


async def service_tree(suite: Suite, session: Session, service_id: str, now: datetime) -> Node | None:
    graph = await suite.find(session, f"{INVENTORY}/service/{service_id}/dependency", depth=GRAPH_DEPTH)
    if graph is None:
        return None
    nodes: dict[str, Node] = {}
    root_data = graph["root"]
    ordered = [root_data, *sorted(graph.get("node") or [], key=lambda n: n.get("depth", 0))]
    for data in ordered:
        node = Node(id=str(data["id"]), kind=str(data.get("@referredType", "Service")),
                    name=str(data.get("name") or data["id"]), category=data.get("category"),
                    state=data.get("state"), supplier=parties(data, "supplier"), external=bool(data.get("external")))
        key = f"{node.kind}:{node.id}"
        nodes[key] = node
        path = data.get("path") or []
        if len(path) >= 2:
            parent = nodes.get(f"Service:{path[-2]}")
            if parent is not None:
                parent.children.append(node)
    await _mark(suite, session, nodes, now)
    return nodes[f"Service:{root_data['id']}"]


async def _mark(suite: Suite, session: Session, nodes: dict[str, Node], now: datetime) -> None:
    services = {n.id for n in nodes.values() if n.kind == "Service"}
    # The three questions are independent: asked at once.
    problems, alarms, covering = await asyncio.gather(
        suite.get(session, f"{PROBLEM}/serviceProblem", status=OPEN_PROBLEM, limit=LIST_LIMIT,
                  fields="rootCauseService,rootCauseResource,affectedService"),
        suite.get(session, f"{ALARM}/alarm", state="raised", limit=LIST_LIMIT, fields="alarmedObject"),
        suite.get(session, f"{SLA}/sla", **{"relatedEntity.id": ",".join(sorted(services)[:100]),
                                            "limit": SLA_LIMIT}))
    for problem in problems:
        for ref in problem.get("rootCauseService") or []:
            if f"Service:{ref.get('id')}" in nodes:
                nodes[f"Service:{ref['id']}"].marks.append("problem")
        for ref in problem.get("rootCauseResource") or []:
            if f"Resource:{ref.get('id')}" in nodes:
                nodes[f"Resource:{ref['id']}"].marks.append("problem")
        for ref in problem.get("affectedService") or []:
            if f"Service:{ref.get('id')}" in nodes:
                nodes[f"Service:{ref['id']}"].marks.append("problem")
    for alarm in alarms:
        target = (alarm.get("alarmedObject") or {}).get("id")
        for kind in ("Resource", "Service"):
            if f"{kind}:{target}" in nodes:
                nodes[f"{kind}:{target}"].marks.append("alarm")
    try:
        judged = await standings(suite, session, covering, now)
    except SuiteError:
        judged = []
    for standing in judged:
        if standing.status in ("at risk", "violated"):
            for entity in standing.sla.get("relatedEntity") or []:
                if f"Service:{entity.get('id')}" in nodes:
                    nodes[f"Service:{entity['id']}"].marks.append(standing.status)
    for node in nodes.values():
        node.marks = sorted(set(node.marks))


async def node_detail(suite: Suite, session: Session, kind: str, node_id: str, now: datetime) -> dict[str, Any]:
    """The problems, raised alarms and SLAs about one node of the graph."""
    problem_filter = "rootCauseResource.id" if kind == "Resource" else "affectedService.id"
    problems = await suite.get(session, f"{PROBLEM}/serviceProblem", status=OPEN_PROBLEM, limit=50,
                               **{problem_filter: node_id})
    if kind == "Service":
        problems += [p for p in await suite.get(session, f"{PROBLEM}/serviceProblem", status=OPEN_PROBLEM,
                                                limit=50, **{"rootCauseService.id": node_id})
                     if p["id"] not in {q["id"] for q in problems}]
    alarms = await suite.get(session, f"{ALARM}/alarm", state="raised", limit=50, **{"alarmedObject.id": node_id})
    slas = []
    if kind == "Service":
        for sla in await suite.get(session, f"{SLA}/sla", limit=20, **{"relatedEntity.id": node_id}):
            slas.append(await sla_standing(suite, session, sla, now))
    return {"kind": kind, "id": node_id, "problems": problems, "alarms": alarms, "slas": slas}


# -- reports -----------------------------------------------------------------------------------

REPORT_PERIODS = ("day", "week", "month")
REPORT_FORMATS = {"csv": "text/csv; charset=utf-8", "pdf": "application/pdf"}
PARTY_REPORT = "party"
# An SLA id as the console puts it in an API path: no slash, no dot segment, bounded.
_SLA_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")


async def report_choices(suite: Suite, session: Session) -> list[tuple[str, str]]:
    """The reports this person may ask for, as (form value, label): each SLA the API shows them
    and, for a partner or a customer, the report of their own party."""
    slas = await suite.get(session, f"{SLA}/sla", sort="name", limit=SLA_LIMIT, fields="id,name")
    choices = [(f"sla:{s['id']}", f"SLA {s.get('name') or s['id']}") for s in slas]
    if session.role != OPERATOR:
        choices.insert(0, (PARTY_REPORT, f"Every SLA of {session.party_id} (party report)"))
    return choices


def report_target(session: Session, choice: str) -> tuple[str, dict[str, str]] | None:
    """The API path and extra parameters of the report a form value names; None when it names
    no report the console offers (the API still decides what this person may see)."""
    if choice == PARTY_REPORT and session.role != OPERATOR:
        return f"{SLA}/report", {"partyId": session.party_id}
    sla_id = choice.removeprefix("sla:")
    if choice.startswith("sla:") and _SLA_ID.fullmatch(sla_id):
        return f"{SLA}/sla/{sla_id}/report", {}
    return None
