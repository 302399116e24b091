"""Evaluating an SLA over a period, and closing the period: violations, the rebate, and the
settlement statements of the parties involved.

Closing is idempotent: every object it makes has an id derived from (SLA, period), so closing
twice, or resuming a close that stopped half-way, gives the same result and creates nothing
twice. Closing also settles what was raised early: a provisional violation is made final when
the period missed its rule, and withdrawn when it did not.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, time
from decimal import Context, Decimal
from typing import TYPE_CHECKING, Any

from pymongo import ReturnDocument

from services.tmf.call import SYSTEM
from services.tmf.errors import ConcurrentChanges, Conflict
from services.tmf.events import ATTRIBUTE_CHANGE
from services.tmf.query import normalize_date_time
from services.tmf.repository import META, public
from services.tmf.repository.events import in_transaction
from services.tmf.resource import KeyedLocks

from .evaluation import (
    METRICS,
    BusinessHours,
    Period,
    RuleResult,
    Sample,
    Window,
    compute_rebate,
    evaluate_rule,
    period_containing,
)
from .metrics import timed_evaluation
from .repository import BucketWrites, MeasurementStore
from .rules import covered_services, rules_of

if TYPE_CHECKING:
    from services.tmf.api import ApiContext
    from services.tmf.resource import ResourceApi

CENT = Decimal("0.01")
MAX_RULES = 50  # the document's bound on an SLA's rules and on an evaluation's violation lists
# Money is quantized to cents whatever its size: the default 28 digits would fail on a large charge.
MONEY_CONTEXT = Context(prec=1000)
# A close's transaction fails when something it relies on changed since it looked (another
# process closing the same party, a violation raised meanwhile); it looks again this many times.
CLOSE_ROUNDS = 20
# SLAs the period scheduler closes at once.
CLOSE_CONCURRENCY = 4
STATEMENT_LOCKS = "sla.statement_locks"
BUCKET_WRITES = "sla.bucket_writes"
PROVIDER_ROLES = {"slaprovider", "provider", "supplier"}
CONSUMER_ROLES = {"slaconsumer", "consumer", "customer"}


def stable_id(*parts: str) -> str:
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]


def violation_id(sla_id: str, rule_id: str, period: Period) -> str:
    return stable_id("violation", sla_id, rule_id, text(period.start), text(period.end))


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(normalize_date_time(text).replace("Z", "+00:00"))


def text(instant: datetime) -> str:
    return normalize_date_time(instant.isoformat())


def money(amount: Decimal, unit: str) -> dict[str, Any]:
    return {"unit": unit, "value": float(amount.quantize(CENT, context=MONEY_CONTEXT))}


def decimal_money(value: float) -> Decimal:
    """The exact cents of an amount stored by ``money`` (its shortest repr is the cent value)."""
    return Decimal(repr(float(value)))


def period_body(period: Period) -> dict[str, str]:
    return {"startDateTime": text(period.start), "endDateTime": text(period.end)}


def period_kind(sla: dict[str, Any]) -> tuple[str, str]:
    settings = sla.get("evaluationPeriod") or {}
    return settings.get("kind", "month"), settings.get("timeZone") or "UTC"


def windows_of(sla: dict[str, Any]) -> list[Window]:
    return [Window(parse_time(w["validFor"]["startDateTime"]), parse_time(w["validFor"]["endDateTime"]),
                   w.get("reason")) for w in sla.get("maintenanceWindow") or []]


def business_hours_of(sla: dict[str, Any]) -> BusinessHours | None:
    hours = sla.get("businessHours")
    if not hours:
        return None
    start = datetime.strptime(hours.get("startTime", "00:00"), "%H:%M").time()
    end = (datetime.strptime(hours["endTime"], "%H:%M").time() if hours.get("endTime")
           else time.max)  # until midnight
    days = frozenset(hours.get("dayOfWeek") or range(1, 8))
    return BusinessHours(days, start, end, period_kind(sla)[1])


def sla_parties(sla: dict[str, Any]) -> list[str]:
    """The parties of an SLA, who may see what is computed under it."""
    return sorted({str(p["id"]) for p in sla.get("relatedParty") or [] if isinstance(p, dict) and p.get("id")})


def party(sla: dict[str, Any], roles: set[str]) -> dict[str, Any] | None:
    return next((p for p in sla.get("relatedParty") or [] if str(p.get("role", "")).lower() in roles), None)


def _rank(result: RuleResult) -> tuple[int, Decimal]:
    """Lower ranks are worse: violated before met before no data, then by how far off."""
    if result.met is None or result.actual is None:
        return (2, Decimal(0))
    higher_is_better = METRICS[result.rule.metric].higher_is_better
    return (1 if result.met else 0, result.actual if higher_is_better else -result.actual)


def withdrawal_reason(result: RuleResult | None) -> str:
    if result is None:
        return "withdrawn at period close: the rule is no longer part of the SLA"
    rule = result.rule
    if result.met is None:
        return "withdrawn at period close: no data counted for the rule, so it was not missed"
    unit = rule.unit or METRICS[rule.metric].unit
    return (f"withdrawn at period close: the period met the rule ({rule.metric} {result.actual} {unit}, "
            f"rule {rule.operator} {rule.reference})")


async def load_samples(store: MeasurementStore, services: list[str], metrics: list[str],
                       period: Period) -> dict[tuple[str, str], list[Sample]]:
    rows = await store.samples(services, metrics, int(period.start.timestamp()), int(period.end.timestamp()))
    samples = {}
    for key, found in rows.items():
        # A batch sent twice stores its samples twice; one instant counts once (the last sent).
        latest = {at: (value, interval) for at, value, interval in found}
        samples[key] = [Sample(datetime.fromtimestamp(at / 1000, UTC), value, interval)
                        for at, (value, interval) in sorted(latest.items())]
    return samples


def evaluate_rules(sla: dict[str, Any], period: Period,
                   samples: dict[tuple[str, str], list[Sample]]) -> list[RuleResult]:
    """Each rule per covered service; with several services the worst result counts."""
    windows = windows_of(sla)
    hours = business_hours_of(sla)
    services = covered_services(sla) or [""]
    results = []
    for rule in rules_of(sla):
        per_service = [evaluate_rule(rule, period, samples.get((s, rule.metric), []), windows, hours)
                       for s in services]
        results.append(min(per_service, key=_rank))
    return results


def result_body(result: RuleResult) -> dict[str, Any]:
    rule = result.rule
    return {
        "rule": rule.id, "metric": rule.metric, "unit": rule.unit or METRICS[rule.metric].unit,
        "operator": rule.operator, "referenceValue": float(rule.reference), "tolerance": float(rule.tolerance),
        "actualValue": None if result.actual is None else float(result.actual), "met": result.met,
        "sampleCount": result.sample_count, "evaluatedSeconds": result.evaluated_seconds,
        "excludedSeconds": result.excluded_seconds, "missingSeconds": result.missing_seconds,
        # A maintenance window need not give a reason; the document's reason is a string when present.
        "exclusion": [{**({"reason": e.reason} if e.reason is not None else {}), "start": text(e.start),
                       "end": text(e.end), "seconds": e.seconds} for e in result.exclusions],
        "rebatePercent": float(result.rebate_percent),
    }


def statement_totals(lines: list[dict[str, Any]], currency: str, owed: Decimal = Decimal(0),
                     owed_to: Decimal = Decimal(0)) -> dict[str, Any]:
    """owed, owedTo and net of a statement's lines, on top of ``owed`` and ``owed_to`` already
    counted, exactly (Decimal cents)."""
    for line in lines:
        amount = decimal_money(line["amount"]["value"])
        if line["direction"] == "payable":
            owed = MONEY_CONTEXT.add(owed, amount)
        else:
            owed_to = MONEY_CONTEXT.add(owed_to, amount)
    return {"owed": money(owed, currency), "owedTo": money(owed_to, currency),
            "net": money(MONEY_CONTEXT.subtract(owed_to, owed), currency), "line": lines}


@dataclass(frozen=True)
class StatementLine:
    """A rebate's line on one party's statement (``header``: the statement's party, period,
    currency and type)."""

    statement_id: str
    header: dict[str, Any]
    line: dict[str, Any]
    rebate_id: str


class Closer:
    """Evaluations, violations, rebates and statements of one SLA API."""

    def __init__(self, context: ApiContext) -> None:
        self.context = context
        self.measurements = MeasurementStore(context.db, context.components.setdefault(BUCKET_WRITES, BucketWrites()))

    def api(self, name: str) -> ResourceApi:
        return self.context.resource_apis[name]

    def sla_ref(self, sla: dict[str, Any]) -> dict[str, Any]:
        ref = {"id": sla["id"], "href": self.api("sla").href(sla["id"])}
        if sla.get("name"):
            ref["name"] = sla["name"]
        return ref

    async def closed(self, sla: dict[str, Any], period: Period) -> bool:
        """Whether ``period`` of ``sla`` has been closed."""
        evaluation_id = stable_id("evaluation", sla["id"], text(period.start), text(period.end))
        return await self.api("slaEvaluation").store.get(evaluation_id, SYSTEM) is not None

    @timed_evaluation  # telemetry: sqm_sla_evaluations_total, sqm_sla_evaluation_duration_seconds
    async def evaluate(self, sla: dict[str, Any], period: Period, close: bool) -> dict[str, Any]:
        """Evaluate ``sla`` over ``period``; with ``close``, also settle the period (once)."""
        evaluation_id = stable_id("evaluation", sla["id"], text(period.start), text(period.end))
        evaluations = self.api("slaEvaluation")
        if close:
            existing = await evaluations.store.get(evaluation_id, SYSTEM)
            if existing is not None:
                return existing
        rules = rules_of(sla)
        samples = await load_samples(self.measurements, covered_services(sla), sorted({r.metric for r in rules}),
                                     period)
        results = evaluate_rules(sla, period, samples)
        document: dict[str, Any] = {
            "sla": self.sla_ref(sla), "period": period_body(period), "close": close,
            "state": "closed" if close else "open", "evaluatedAt": text(self.context.clock()),
            "ruleResult": [result_body(r) for r in results], "violation": [], "@type": "SLAEvaluation",
        }
        if close:
            return await self.settle(sla, period, results, document, evaluation_id)
        return await evaluations.insert(document, SYSTEM, parties=sla_parties(sla))

    async def settle(self, sla: dict[str, Any], period: Period, results: list[RuleResult],
                     document: dict[str, Any], evaluation_id: str) -> dict[str, Any]:
        """Close ``period`` of ``sla`` with its evaluation ``document``: confirm the violations
        of the rules it missed, withdraw the provisional ones it did not confirm, make the
        rebate, put it on both parties' statements and store the evaluation, all in one
        transaction with their events. A close is then there whole or not at all, and costs
        one commit instead of one per object it writes.

        What the transaction relies on is read before it and checked by its writes (ids that
        must not exist yet, versions that must not have moved): when one of them fails, the
        close looks again. If the evaluation exists by then, another close of the period
        committed first, with the same result, and that result is returned."""
        evaluations, violations = self.api("slaEvaluation"), self.api("slaViolation")
        parties = sla_parties(sla)
        violated = [r for r in results if r.met is False]
        by_rule = {r.rule.id: r for r in results}
        retrying = False
        for _ in range(CLOSE_ROUNDS):
            stored = {v["id"]: v for v in await violations.store.find_internal(
                {"sla.id": sla["id"], "period.startDateTime": text(period.start),
                 "period.endDateTime": text(period.end)}, SYSTEM, {})}
            confirmed = [violation_id(sla["id"], r.rule.id, period) for r in violated]
            document["violation"] = [{"id": v, "href": violations.href(v)} for v in confirmed]
            withdrawn = [stored[v] for v in sorted(stored)
                         if stored[v].get("status") == "provisional" and v not in confirmed]
            document.pop("withdrawnViolation", None)
            if withdrawn:
                # Rules renamed during the period can leave more provisional violations than an SLA
                # has rules; all are withdrawn, the evaluation lists as many as its document allows.
                document["withdrawnViolation"] = [{"id": v["id"], "href": violations.href(v["id"])}
                                                  for v in withdrawn[:MAX_RULES]]
            # A rebate made before closes wrote in one transaction (by a close that stopped
            # half-way) is kept as it is; only a retry needs to look for one.
            rebate, new_rebate = await self.rebate_of(sla, period, results, evaluation_id, document["violation"],
                                                      look=retrying)
            document.pop("rebate", None)
            statements: list[StatementLine] = []
            if rebate is not None:
                document["rebate"] = {"id": rebate["id"], "href": self.api("rebate").href(rebate["id"]),
                                      "amount": rebate["amount"]}
                statements = self.statement_lines(rebate)

            async def write(session: Any, stored: dict[str, dict[str, Any]] = stored,
                            withdrawn: list[dict[str, Any]] = withdrawn, rebate: dict[str, Any] | None = rebate,
                            new_rebate: bool = new_rebate,
                            statements: list[StatementLine] = statements,
                            ) -> dict[str, Any]:
                for result in violated:
                    await self.record_violation(sla, period, result, final=True, session=session,
                                                known=stored.get(violation_id(sla["id"], result.rule.id, period)))
                for before in withdrawn:
                    rule_id = str(((before.get("violation") or {}).get("rule") or {}).get("id"))
                    await violations.modify(before["id"], self.withdrawal(by_rule.get(rule_id)), SYSTEM,
                                            system=True, session=session)
                if rebate is not None and new_rebate:
                    await self.api("rebate").insert(rebate, SYSTEM, resource_id=rebate["id"], parties=parties,
                                                    session=session)
                for entry in statements:
                    await self.append_line(session, entry)
                return await evaluations.insert(document, SYSTEM, resource_id=evaluation_id, parties=parties,
                                                session=session)

            try:
                async with self.statement_turns([entry.statement_id for entry in statements]):
                    evaluation: dict[str, Any] = await in_transaction(self.context.db, write)
            except Conflict:
                existing = await evaluations.store.get(evaluation_id, SYSTEM)
                if existing is not None:
                    return existing
                retrying = True
                continue
            self.context.outbox.committed()
            return evaluation
        raise ConcurrentChanges(f"the period of SLA {sla['id']} kept changing while it was closed; close again")

    async def record_violation(self, sla: dict[str, Any], period: Period, result: RuleResult,
                               final: bool, *, session: Any = None,
                               known: dict[str, Any] | None = None) -> dict[str, Any]:
        """Raise (provisional) or confirm (``final``) the violation of ``result``'s rule in
        ``period``. Within a close's transaction (``session``), ``known`` is the violation as
        read before it, or None when there was none: the write then fails (Conflict) rather
        than overwrite what changed meanwhile."""
        rule = result.rule
        identity = violation_id(sla["id"], rule.id, period)
        actual = None if result.actual is None else float(result.actual)
        raw_rule: dict[str, Any] = next((r for r in sla.get("rule") or [] if str(r.get("id")) == rule.id), {})
        body: dict[str, Any] = {
            "date": text(self.context.clock()), "sla": self.sla_ref(sla), "period": period_body(period),
            "status": "final" if final else "provisional",
            **({"statusChangeReason": "confirmed at period close"} if final else {}),
            "relatedParty": sla.get("relatedParty") or [],
            "relatedEntity": [{"id": s, "role": "coveredService", "@referredType": "Service"}
                              for s in covered_services(sla)],
            "violation": {
                "rule": {"id": rule.id, "href": f"{self.api('sla').href(sla['id'])}#rule-{rule.id}",
                         "description": f"{rule.metric} {rule.operator} {rule.reference}"},
                "metric": rule.metric, "unit": rule.unit or METRICS[rule.metric].unit,
                "referenceValue": float(rule.reference), "operator": rule.operator,
                "tolerance": float(rule.tolerance),
                "comment": ("confirmed at period close" if final
                            else "the downtime observed so far already exceeds what the rule allows over the "
                                 "whole period; final value at close"),
            },
            "@type": "SLAViolation",
        }
        if actual is not None:
            body["violation"]["actualValue"] = actual
            body["violation"]["violationAverage"] = actual
        if raw_rule.get("consequence"):
            body["violation"]["consequence"] = raw_rule["consequence"]
        violations = self.api("slaViolation")
        existing = known if session is not None else await violations.store.get(identity, SYSTEM)
        if existing is None:
            if session is not None:
                return await violations.insert(body, SYSTEM, resource_id=identity, session=session)
            try:
                return await violations.insert(body, SYSTEM, resource_id=identity)
            except Conflict:
                existing = await violations.store.get(identity, SYSTEM)
                assert existing is not None
        if not final:
            return existing

        def finalise(before: dict[str, Any]) -> dict[str, Any]:
            after = {**before, **{k: v for k, v in body.items() if k != "date"}}
            if before.get("status") != "final":
                after["statusChangeDate"] = body["date"]
            return after

        return await violations.modify(identity, finalise, SYSTEM, system=True, session=session)

    def withdrawal(self, result: RuleResult | None) -> Callable[[dict[str, Any]], dict[str, Any]]:
        reason = withdrawal_reason(result)
        at = text(self.context.clock())

        def withdraw(before: dict[str, Any]) -> dict[str, Any]:
            if before.get("status") != "provisional":
                return before  # confirmed or withdrawn meanwhile: nothing to undo
            details = {**(before.get("violation") or {}), "comment": reason}
            if result is not None and result.actual is not None:
                details["actualValue"] = details["violationAverage"] = float(result.actual)
            return {**before, "status": "withdrawn", "statusChangeReason": reason, "statusChangeDate": at,
                    "violation": details}

        return withdraw

    async def rebate_of(self, sla: dict[str, Any], period: Period, results: list[RuleResult], evaluation_id: str,
                        violations: list[dict[str, Any]], look: bool) -> tuple[dict[str, Any] | None, bool]:
        """The rebate a close of ``period`` makes, if any, and whether it is still to be stored
        (with ``look``, one already stored is returned as it is)."""
        charge = sla.get("charge")
        if not charge or not violations:
            return None, False
        currency = charge["unit"]
        cap = (sla.get("rebateCap") or {}).get("percent")
        computed = compute_rebate(Decimal(str(charge["value"])), results,
                                  None if cap is None else Decimal(str(cap)))
        if computed.amount <= 0:
            return None, False
        rebate_id = stable_id("rebate", sla["id"], text(period.start), text(period.end))
        if look:
            existing = await self.api("rebate").store.get(rebate_id, SYSTEM)
            if existing is not None:
                return public(existing), False
        body: dict[str, Any] = {
            "id": rebate_id, "sla": self.sla_ref(sla), "period": period_body(period),
            "charge": money(Decimal(str(charge["value"])), currency), "amount": money(computed.amount, currency),
            "capped": computed.capped,
            # The cap line belongs to no rule: it has no rule id rather than a null one.
            "line": [{**({"rule": line.rule_id} if line.rule_id is not None else {}), "description": line.description,
                      "percent": float(line.percent), "amount": money(line.amount, currency)}
                     for line in computed.lines],
            "evaluation": {"id": evaluation_id, "href": self.api("slaEvaluation").href(evaluation_id)},
            "violation": violations, "@type": "Rebate",
        }
        for key, roles in (("payer", PROVIDER_ROLES), ("payee", CONSUMER_ROLES)):
            found = party(sla, roles)
            if found is not None:
                body[key] = found
        return body, True

    def statement_lines(self, rebate: dict[str, Any]) -> list[StatementLine]:
        """The line ``rebate`` puts on the statement of each of its parties, for its period and currency."""
        period, currency = rebate["period"], rebate["amount"]["unit"]
        lines = []
        for role in ("payer", "payee"):
            who = rebate.get(role)
            if who and who.get("id"):
                statement_id = stable_id("statement", who["id"], period["startDateTime"], period["endDateTime"],
                                         currency)
                header = {"party": who, "period": period, "currency": currency, "@type": "SettlementStatement"}
                lines.append(StatementLine(statement_id, header, self.statement_line(who, rebate), rebate["id"]))
        return lines

    def statement_line(self, who: dict[str, Any], rebate: dict[str, Any]) -> dict[str, Any]:
        payable = (rebate.get("payer") or {}).get("id") == who["id"]
        counterparty = rebate.get("payee" if payable else "payer")
        other = (counterparty or {}).get("name") or (counterparty or {}).get("id") or "an unnamed party"
        what = f"rebate owed to {other}" if payable else f"credit due from {other}"
        line = {"rebate": {"id": rebate["id"], "href": self.api("rebate").href(rebate["id"])},
                "sla": rebate["sla"], "direction": "payable" if payable else "receivable",
                "amount": rebate["amount"],
                "description": f"{what} for {rebate['sla'].get('name') or rebate['sla']['id']}"}
        if counterparty:
            line["counterparty"] = counterparty
        return line

    @asynccontextmanager
    async def statement_turns(self, statement_ids: list[str]) -> AsyncIterator[None]:
        """Closes in this process take turns on a statement for the whole of their transaction
        (one that began before another's commit would conflict on the statement and start
        over): its versioned write then only meets closes in other processes. Several
        statements are taken in one order, so that two closes never wait for each other."""
        locks = self.context.components.setdefault(STATEMENT_LOCKS, KeyedLocks())
        async with AsyncExitStack() as held:
            for statement_id in sorted(set(statement_ids)):
                await held.enter_async_context(locks.hold(statement_id))
            yield

    async def append_line(self, session: Any, entry: StatementLine) -> None:
        """Put ``entry``'s line on its statement within the close's transaction, once.

        Rebates never change once made, so a close only appends its line and adds its amount to
        the totals, in one versioned write that carries the line's absence as a condition: what
        a close costs does not grow with the lines already there (the lines are neither read,
        rebuilt nor validated again). A statement another process changed since the transaction
        began fails the write (Conflict, or the database's own write conflict, which retries
        the transaction), so no close can drop a line or an amount another close added."""
        statements = self.api("settlementStatement")
        collection = statements.store.collection
        statement_id, header, line = entry.statement_id, entry.header, entry.line
        currency = header["currency"]
        current = await collection.find_one({"_id": statement_id}, {"line": 0}, session=session)
        if current is None:
            await statements.insert({**header, **statement_totals([line], currency)}, SYSTEM,
                                    resource_id=statement_id, session=session)
            return
        totals = statement_totals([line], currency, owed=decimal_money(current["owed"]["value"]),
                                  owed_to=decimal_money(current["owedTo"]["value"]))
        totals.pop("line")
        # The line's shape is checked on a statement of that line alone: the same schema, O(1).
        statements.check_valid({"id": statement_id, "href": statements.href(statement_id), **header, **totals,
                                "line": [line]})
        version = current[META]["version"]

        async def append(session: Any) -> tuple[dict[str, Any] | None, int, list[Any]]:
            stored: dict[str, Any] | None = await collection.find_one_and_update(
                {"_id": statement_id, f"{META}.version": version, "line.rebate.id": {"$ne": entry.rebate_id}},
                {"$push": {"line": line}, "$set": totals, "$inc": {f"{META}.version": 1}},
                projection={"line": 0}, return_document=ReturnDocument.AFTER, session=session)
            if stored is None:
                return None, 0, []
            # The change event carries the new totals and the line this close added (its
            # fieldPath names both), not every line of the statement again.
            changed = statements.present({**stored, "line": [line]})
            return stored, stored[META]["version"], [
                statements.event(ATTRIBUTE_CHANGE, changed, ["line", "net", "owed", "owedTo"])]

        if await statements._commit(append, statement_id, session) is not None:
            return
        if await collection.find_one({"_id": statement_id, "line.rebate.id": entry.rebate_id}, {"_id": 1},
                                     session=session):
            return  # this rebate's line is there already: put there by a close that stopped half-way
        raise ConcurrentChanges(f"the settlement statement of {header['party']['id']} changed during the close")

    async def close_due(self, concurrency: int = CLOSE_CONCURRENCY) -> int:
        """Close every period that has ended, for every SLA with an evaluation period; returns
        how many were closed. An SLA's first period is the one it was created in (or its
        validFor start, if later): earlier periods are for slaEvaluation tasks to rerun.

        Up to ``concurrency`` SLAs close at once, each its periods in order: one close's
        reads and evaluation overlap another's writes (the database applies writes one at a
        time, but not reads). An SLA whose close fails does not hold up the others; the first
        failure is raised once all have been tried."""
        now = self.context.clock()
        slas = self.api("sla")
        turns = asyncio.Semaphore(concurrency)

        async def close_periods_of(stored: dict[str, Any]) -> int:
            meta = stored.get(META, {})
            sla = public(stored)
            kind, zone = period_kind(sla)
            starts = [(sla.get("validFor") or {}).get("startDateTime"), meta.get("created")]
            anchor = meta.get("closedThrough") or max((s for s in starts if s), default=None)
            if anchor is None:
                return 0
            period = period_containing(parse_time(anchor), kind, zone)
            valid_until = (sla.get("validFor") or {}).get("endDateTime")
            closed = 0
            async with turns:
                for _ in range(100):
                    if period.end > now or (valid_until and text(period.start) >= valid_until):
                        break
                    await self.evaluate(sla, period, close=True)
                    await slas.store.set_meta(sla["id"], {"closedThrough": text(period.end)})
                    closed += 1
                    period = period_containing(period.end, kind, zone)
            return closed

        found = await slas.store.find_internal({"evaluationPeriod": {"$exists": True}}, SYSTEM, {})
        outcomes = await asyncio.gather(*(close_periods_of(stored) for stored in found), return_exceptions=True)
        failures = [o for o in outcomes if isinstance(o, BaseException)]
        if failures:
            raise failures[0]
        return sum(o for o in outcomes if isinstance(o, int))

    async def compact_measurements(self, since: datetime, before: datetime) -> int:
        """Merge the hour buckets of the whole days in ``[since, before)`` into day buckets, for
        the services and metrics of every SLA with an evaluation period (the ones a close reads);
        returns how many hour buckets went. See :meth:`MeasurementStore.compact`."""
        found = await self.api("sla").store.find_internal({"evaluationPeriod": {"$exists": True}}, SYSTEM, {})
        series = sorted({(service, rule.metric) for stored in found for rule in rules_of(public(stored))
                         for service in covered_services(public(stored))})
        return await self.measurements.compact(series, int(since.timestamp()), int(before.timestamp()))
