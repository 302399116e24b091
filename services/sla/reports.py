"""SLA reports: what one SLA, or all the SLAs of one party, did over a calendar day, week or
month, with the money that came of it.

A report is a JSON-ready dict (the ``SLAReport`` and ``PartyReport`` schemas of the API
document) built only from what the API itself computes and stores:

- the rule results are the evaluation's own: the closed evaluation of exactly that period when
  one exists (``state: closed``), otherwise the same functions ``POST /slaEvaluation`` runs,
  over the same stored measurements (``state: open``), so every number equals the API's to the
  second and the cent;
- the chart bars are evaluations of the same rules over each local day (week, month) or each
  hour (day) of the period, by the same functions;
- violations, rebates and settlement statement lines are the stored resources whose period
  overlaps the report's, as the caller may see them.

Periods are calendar periods in the SLA's time zone, exactly as the SLA evaluation makes them
(:func:`services.sla.evaluation.period_containing`), daylight-saving changes included: a day
report can have 23 or 25 hourly bars."""

from __future__ import annotations

from bisect import bisect_left
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from services.tmf.call import Call
from services.tmf.errors import BadRequest, NotFound
from services.tmf.repository import public

from .evaluate import (
    CENT,
    MONEY_CONTEXT,
    Closer,
    decimal_money,
    evaluate_rules,
    load_samples,
    money,
    period_body,
    period_kind,
    result_body,
    stable_id,
    text,
)
from .evaluation import Period, Sample, period_containing
from .repository import MAX_INTERVAL_SECONDS
from .rules import covered_services, rules_of

if TYPE_CHECKING:
    from services.tmf.api import ApiContext

REPORT_KINDS = ("day", "week", "month")
# Calendar arithmetic needs room on either side; the evaluation refuses periods outside these years.
FIRST_DAY = date(1970, 1, 2)
LAST_DAY = date(9998, 11, 30)
# A party report evaluates every SLA of the party; beyond this many, report per SLA.
MAX_PARTY_SLAS = 50
# Rebates, violations and statements overlapping one report: a month of daily SLA periods with
# every rule violated stays far below this.
MAX_ITEMS = 2000


def parse_report_request(kind: str | None, start: str | None) -> tuple[str, date]:
    """The period kind and the local date a report is asked for, checked."""
    if kind not in REPORT_KINDS:
        raise BadRequest(f"period must be one of {', '.join(REPORT_KINDS)}, got '{str(kind)[:32]}'")
    try:
        day = date.fromisoformat(str(start or ""))
    except ValueError:
        raise BadRequest(f"start must be a date written YYYY-MM-DD, e.g. 2026-10-01, got '{str(start)[:32]}'"
                         ) from None
    if not FIRST_DAY <= day <= LAST_DAY:
        raise BadRequest(f"start must lie between {FIRST_DAY} and {LAST_DAY}")
    return kind, day


def report_period(day: date, kind: str, time_zone: str) -> Period:
    """The calendar period of ``kind`` in ``time_zone`` that contains the local date ``day``."""
    # Local noon always exists and always lies on its own date, unlike midnight in some zones.
    return period_containing(datetime.combine(day, time(12), tzinfo=ZoneInfo(time_zone)), kind, time_zone)


def chart_periods(period: Period, kind: str, time_zone: str) -> list[tuple[str, Period]]:
    """The bars of a report's chart: the local days of a week or month, the hours of a day (23
    or 25 on a daylight-saving change), each with its label in local time."""
    zone = ZoneInfo(time_zone)
    bars: list[tuple[str, Period]] = []
    if kind == "day":
        start = period.start
        while start < period.end:
            end = min(start + timedelta(hours=1), period.end)
            # "02:00+02:00", then "02:00+01:00" on the night clocks go back.
            bars.append((start.astimezone(zone).isoformat(timespec="minutes")[11:], Period(start, end)))
            start = end
        return bars
    start = period.start
    while start < period.end:
        local_day = start.astimezone(zone).date()
        day = report_period(local_day, "day", time_zone)
        bars.append((local_day.isoformat(), day))
        start = day.end
    return bars


class _Timeline:
    """A period's samples, sliced for each bar of its chart as the evaluation would load them
    for that bar alone: those observed from a day before it (the longest a sample covers) until
    its end."""

    def __init__(self, samples: dict[tuple[str, str], list[Sample]]) -> None:
        self.samples = samples
        self.instants = {key: [s.at for s in rows] for key, rows in samples.items()}

    def within(self, period: Period) -> dict[tuple[str, str], list[Sample]]:
        first = period.start - timedelta(seconds=MAX_INTERVAL_SECONDS)
        return {key: rows[bisect_left(self.instants[key], first):bisect_left(self.instants[key], period.end)]
                for key, rows in self.samples.items()}


def _overlapping(sla_id: str | None, period: Period) -> dict[str, Any]:
    # Stored periods are normalized UTC texts, which sort as the instants they name.
    query: dict[str, Any] = {"period.startDateTime": {"$lt": text(period.end)},
                             "period.endDateTime": {"$gt": text(period.start)}}
    if sla_id is not None:
        query["sla.id"] = sla_id
    return query


def total(amounts: list[dict[str, Any]], currency: str) -> dict[str, Any]:
    """The exact sum of stored amounts (Money) in one currency."""
    summed = Decimal(0)
    for amount in amounts:
        summed = MONEY_CONTEXT.add(summed, decimal_money(amount["value"]))
    return money(summed, currency)


def money_text(amount: dict[str, Any]) -> str:
    """A stored amount as its exact cents, e.g. ``100.00``."""
    return str(decimal_money(amount["value"]).quantize(CENT, context=MONEY_CONTEXT))


class Reports:
    """Builds reports for one SLA API, as seen by one caller."""

    def __init__(self, context: ApiContext) -> None:
        self.context = context
        self.closer = Closer(context)

    def _store(self, name: str) -> Any:
        return self.context.resource_apis[name].store

    def _href(self, name: str, resource_id: str) -> str:
        return self.context.resource_apis[name].href(resource_id)

    async def sla_report(self, sla_id: str, kind: str, day: date, call: Call) -> dict[str, Any]:
        """The report of one SLA the caller may see; NotFound otherwise."""
        stored = await self._store("sla").get(sla_id, call)
        if stored is None:
            raise NotFound(f"no ServiceLevelAgreement with id '{sla_id[:128]}'")
        return await self._build(public(stored), kind, day, call)

    async def party_report(self, party_id: str, kind: str, day: date, call: Call) -> dict[str, Any]:
        """The reports of every SLA ``party_id`` is a party to, and its settlement statements
        for the periods they cover. A party other than the operator reports on itself only."""
        if not call.unrestricted and party_id != call.party_id:
            raise NotFound(f"no party '{party_id[:128]}' among those you may report on (your own party only)")
        slas = await self._store("sla").find({"relatedParty.id": party_id}, call, sort=[("id", 1)],
                                             limit=MAX_PARTY_SLAS + 1)
        if len(slas) > MAX_PARTY_SLAS:
            raise BadRequest(f"party '{party_id[:128]}' has more than {MAX_PARTY_SLAS} SLAs; "
                             "report per SLA with GET /sla/{id}/report")
        reports = [await self._build(public(s), kind, day, call) for s in slas]
        statements = []
        if reports:
            # Each SLA's period is in its own time zone: the statements are those overlapping any.
            start = min(r["period"]["startDateTime"] for r in reports)
            end = max(r["period"]["endDateTime"] for r in reports)
            found = await self._store("settlementStatement").find(
                {"party.id": party_id, "period.startDateTime": {"$lt": end}, "period.endDateTime": {"$gt": start}},
                call, sort=[("period.startDateTime", 1), ("currency", 1)], limit=MAX_ITEMS)
            statements = [{"id": s["id"], "href": self._href("settlementStatement", s["id"]),
                           "period": s["period"], "currency": s["currency"], "owed": s["owed"],
                           "owedTo": s["owedTo"], "net": s["net"], "line": s.get("line") or []}
                          for s in found]
        return {"@type": "PartyReport", "party": {"id": party_id},
                "period": {"kind": kind, "date": day.isoformat()},
                "generatedAt": text(self.context.clock()), "slaReport": reports, "statement": statements}

    async def _build(self, sla: dict[str, Any], kind: str, day: date, call: Call) -> dict[str, Any]:
        _, time_zone = period_kind(sla)
        period = report_period(day, kind, time_zone)
        rules = rules_of(sla)
        samples = await load_samples(self.closer.measurements, covered_services(sla),
                                     sorted({r.metric for r in rules}), period)
        evaluation_id = stable_id("evaluation", sla["id"], text(period.start), text(period.end))
        closed = await self._store("slaEvaluation").get(evaluation_id, call)
        if closed is not None and closed.get("state") == "closed":
            rule_results = closed.get("ruleResult") or []
        else:
            closed = None
            rule_results = [result_body(r) for r in evaluate_rules(sla, period, samples)]
        charts: list[dict[str, Any]] = [
            {"rule": r["rule"], "metric": r["metric"], "unit": r["unit"],
             "interval": "hour" if kind == "day" else "day", "bar": []} for r in rule_results]
        by_rule = {c["rule"]: c for c in charts}
        timeline = _Timeline(samples)
        for label, bar in chart_periods(period, kind, time_zone):
            for result in evaluate_rules(sla, bar, timeline.within(bar)):
                if result.rule.id in by_rule:
                    by_rule[result.rule.id]["bar"].append({
                        "label": label, "start": text(bar.start), "end": text(bar.end),
                        "actualValue": None if result.actual is None else float(result.actual), "met": result.met})
        report: dict[str, Any] = {
            "@type": "SLAReport", "sla": self.closer.sla_ref(sla),
            "period": {"kind": kind, "timeZone": time_zone, "date": day.isoformat(), **period_body(period),
                       "seconds": period.seconds},
            "state": "closed" if closed is not None else "open", "generatedAt": text(self.context.clock()),
            "ruleResult": rule_results, "chart": charts,
            # Windows and business hours are the SLA's, the same for every rule.
            "exclusion": rule_results[0].get("exclusion", []) if rule_results else [],
            **await self._settlement(sla, period, call),
        }
        if closed is not None:
            report["evaluation"] = {"id": closed["id"], "href": self._href("slaEvaluation", closed["id"])}
        return report

    async def _settlement(self, sla: dict[str, Any], period: Period, call: Call) -> dict[str, Any]:
        """Violations, rebates and statement lines of ``sla`` whose period overlaps ``period``."""
        sort = [("period.startDateTime", 1)]
        violations = await self._store("slaViolation").find(_overlapping(sla["id"], period), call, sort=sort,
                                                            limit=MAX_ITEMS)
        rebates = await self._store("rebate").find(_overlapping(sla["id"], period), call, sort=sort, limit=MAX_ITEMS)
        lines: list[dict[str, Any]] = []
        if rebates:
            # A rebate's lines are on the statements of its payer and payee for its period and
            # currency, whose ids the close derived from exactly these: read by id, no scan.
            statement_ids = sorted({
                stable_id("statement", who["id"], r["period"]["startDateTime"], r["period"]["endDateTime"],
                          r["amount"]["unit"])
                for r in rebates for who in (r.get("payer"), r.get("payee")) if who and who.get("id")})
            statements = await self._store("settlementStatement").find(
                {"_id": {"$in": statement_ids}}, call, sort=[("party.id", 1)], limit=MAX_ITEMS)
            wanted = {r["id"] for r in rebates}
            for statement in statements:
                for line in statement.get("line") or []:
                    if (line.get("rebate") or {}).get("id") in wanted:
                        lines.append({"statement": {"id": statement["id"],
                                                    "href": self._href("settlementStatement", statement["id"])},
                                      "party": statement["party"], "period": statement["period"], **line})
        currency = (sla.get("charge") or {}).get("unit") or next((r["amount"]["unit"] for r in rebates), None)
        return {
            "violation": [{
                "id": v["id"], "href": self._href("slaViolation", v["id"]), "status": v.get("status"),
                "period": v["period"], "rule": ((v.get("violation") or {}).get("rule") or {}).get("id"),
                "metric": (v.get("violation") or {}).get("metric"),
                "actualValue": (v.get("violation") or {}).get("actualValue"),
                **({"statusChangeReason": v["statusChangeReason"]} if v.get("statusChangeReason") else {}),
            } for v in violations],
            "rebate": [{"id": r["id"], "href": self._href("rebate", r["id"]), "period": r["period"],
                        "charge": r.get("charge"), "amount": r["amount"], "capped": bool(r.get("capped")),
                        "line": r.get("line") or [],
                        **{k: r[k] for k in ("payer", "payee") if r.get(k)}} for r in rebates],
            # An SLA keeps one currency once it has rebates.
            "rebateTotal": None if currency is None else total([r["amount"] for r in rebates], currency),
            "statementLine": lines,
        }


def _utc(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


def local_period(report: dict[str, Any]) -> str:
    """The report's period in its SLA's local time, e.g. ``2026-10-01 00:00 to 2026-11-01 00:00
    (Europe/Stockholm)``."""
    period = report["period"]
    zone = ZoneInfo(period["timeZone"])
    start = _utc(period["startDateTime"]).astimezone(zone)
    end = _utc(period["endDateTime"]).astimezone(zone)
    return f"{start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} ({period['timeZone']})"
