"""TMF623 SLA Management: SLAs, measurements, evaluation over calendar periods, violations,
rebates in money and settlement statements."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, time, timedelta
from typing import Any

import structlog
from connexion import request
from pymongo import ASCENDING, IndexModel
from starlette.responses import Response

from services.tmf.api import ApiContext, ApiDeclaration
from services.tmf.authentication import call_of
from services.tmf.errors import BadRequest, Conflict, Forbidden, NotFound, TmfError
from services.tmf.repository import Visibility, public
from services.tmf.resource import Handler, ResourceType, json_response
from services.tmf.validation import parsed_body

from .evaluate import Closer, parse_time
from .evaluation import METRICS, Period
from .measurements import Intake
from .report_documents import report_csv, report_pdf
from .reports import Reports, parse_report_request
from .repository import BUCKET_INDEXES, BUCKETS
from .rules import SlaRules

log = structlog.get_logger("sla")
MAX_EVALUATION_DAYS = 400
# Calendar arithmetic (business hours, time zones) needs a day of room on either side of a period.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9999, 1, 1, tzinfo=UTC)
# A day's hour buckets are merged into one day bucket this long after the day ended (samples
# arrive late by minutes; what arrives later still is read, and merged next time), looking back
# this many days (a service that was down for a day is caught up on its restart).
COMPACT_GRACE = timedelta(hours=1)
COMPACT_DAYS = timedelta(days=3)

# SLAs are agreed by the operator with each party, who may read them.
SLA = ResourceType(
    name="sla", type_name="ServiceLevelAgreement", event_prefix="SLA", rules=SlaRules(), party_writes=False,
    indexes=(IndexModel([("_meta.services", ASCENDING)]), IndexModel([("relatedParty.id", ASCENDING)])),
)
# A violation's status (provisional, final, withdrawn) is its state: a change of it is announced
# as SLAViolationStateChangeEvent.
VIOLATION = ResourceType(
    name="slaViolation", type_name="SLAViolation", state_attribute="status",
    indexes=(IndexModel([("sla.id", ASCENDING), ("period.startDateTime", ASCENDING)]),),
)
# Evaluations are seen by the SLA's parties (named when the evaluation is made).
EVALUATION = ResourceType(name="slaEvaluation", type_name="SLAEvaluation",
                          indexes=(IndexModel([("sla.id", ASCENDING)]),), visibility=Visibility(()))
REBATE = ResourceType(
    name="rebate", type_name="Rebate", visibility=Visibility(("payer.id", "payee.id")),
    indexes=(IndexModel([("sla.id", ASCENDING)]), IndexModel([("period.startDateTime", ASCENDING)]),
             IndexModel([("payer.id", ASCENDING)]), IndexModel([("payee.id", ASCENDING)])),
)
# A statement is its party's alone.
STATEMENT = ResourceType(name="settlementStatement", type_name="SettlementStatement",
                         indexes=(IndexModel([("party.id", ASCENDING)]),), visibility=Visibility(("party.id",)))


def sla_handlers(context: ApiContext) -> dict[str, Handler]:
    async def take_measurements() -> Response:
        # A batch is parsed once, by the body validator (no ``body`` argument: connexion would parse it again).
        return json_response(await Intake(context).take(await parsed_body(request), call_of(request)), 201)

    async def list_metrics() -> Response:
        return json_response([
            {"name": m.name, "unit": m.unit, "description": m.description, "aggregation": m.aggregation,
             "higherIsBetter": m.higher_is_better} for m in METRICS.values()])

    async def evaluate(body: Any = None) -> Response:
        body = body or {}
        call = call_of(request)
        sla_id = str((body.get("sla") or {}).get("id", ""))
        stored = await context.resource_apis["sla"].store.get(sla_id, call)
        if stored is None:
            raise NotFound(f"no ServiceLevelAgreement with id '{sla_id}'")
        period_body = body.get("period") or {}
        start = parse_time(str(period_body.get("startDateTime", "")))
        end = parse_time(str(period_body.get("endDateTime", "")))
        # Checked before a Period is made: Period refuses an inverted interval itself, with an
        # error that is no client's business.
        if end <= start:
            raise BadRequest(f"period.endDateTime ({period_body.get('endDateTime')}) must be after "
                             f"period.startDateTime ({period_body.get('startDateTime')})")
        if end - start > timedelta(days=MAX_EVALUATION_DAYS):
            raise BadRequest(f"a period spans at most {MAX_EVALUATION_DAYS} days")
        if not (EARLIEST <= start and end <= LATEST):
            raise BadRequest(f"a period lies between {EARLIEST.date()} and {LATEST.date()}")
        period = Period(start, end)
        close = bool(body.get("close", False))
        if close and not call.unrestricted:
            raise Forbidden("only the operator closes a period; evaluate without close to see where it stands")
        if close and period.end > context.clock():
            raise Conflict("the period has not ended yet; evaluate it without close to see where it stands")
        evaluation = await Closer(context).evaluate(public(stored), period, close)
        presented = context.resource_apis["slaEvaluation"].present(evaluation)
        return json_response(presented, 201, {"Location": presented["href"]})

    async def sla_report(id: str, period: str | None = None, start: str | None = None,
                         format: str | None = None) -> Response:
        kind, day = parse_report_request(period, start)
        media_type = report_media_type(format, request.headers.get("accept"))
        report = await Reports(context).sla_report(id, kind, day, call_of(request))
        return report_response(report, media_type, f"sla-{id[:64]}-{kind}-{day}")

    async def party_report(partyId: str, period: str | None = None, start: str | None = None,
                           format: str | None = None) -> Response:
        kind, day = parse_report_request(period, start)
        media_type = report_media_type(format, request.headers.get("accept"))
        report = await Reports(context).party_report(partyId, kind, day, call_of(request))
        return report_response(report, media_type, f"party-{kind}-{day}")

    return {"createMeasurement": take_measurements, "listMetric": list_metrics, "createSLAEvaluation": evaluate,
            "retrieveSLAReport": sla_report, "retrievePartyReport": party_report}


REPORT_FORMATS = {"json": "application/json", "csv": "text/csv", "pdf": "application/pdf"}


def report_media_type(format: str | None, accept: str | None) -> str:
    """The report's media type: ``format`` when given, else the first the Accept header prefers
    (by its q values), JSON for none or ``*/*``; 406 when Accept names none we write."""
    if format:
        if format not in REPORT_FORMATS:
            raise BadRequest(f"format must be one of {', '.join(REPORT_FORMATS)}, got '{format[:32]}'")
        return REPORT_FORMATS[format]
    if not accept:
        return REPORT_FORMATS["json"]
    offered: list[tuple[float, int, str]] = []
    for position, entry in enumerate(accept.split(",")[:32]):
        media, *parameters = (part.strip() for part in entry.split(";"))
        quality = 1.0
        for parameter in parameters:
            name, _, value = parameter.partition("=")
            if name.strip() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if quality > 0:
            offered.append((-quality, position, media.lower()))
    for _, _, media in sorted(offered):
        if media in ("*/*", "application/*"):
            return REPORT_FORMATS["json"]
        if media == "text/*":
            return REPORT_FORMATS["csv"]
        if media in REPORT_FORMATS.values():
            return media
    raise TmfError(f"reports are written as {', '.join(REPORT_FORMATS.values())}; accept one of them "
                   "or ask with format=json|csv|pdf", status=406, reason="Not acceptable")


def report_response(report: dict[str, Any], media_type: str, name: str) -> Response:
    # The file name carries a client's id: only characters that need no quoting in a header.
    name = re.sub(r"[^A-Za-z0-9._-]", "_", name)
    if media_type == "text/csv":
        return Response(report_csv(report), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": f'attachment; filename="{name}.csv"'})
    if media_type == "application/pdf":
        return Response(report_pdf(report), media_type="application/pdf",
                        headers={"Content-Disposition": f'inline; filename="{name}.pdf"'})
    return json_response(report)


async def close_periods(context: ApiContext) -> None:
    """Close SLA periods as they end, for as long as the service runs."""
    compacted_before: datetime | None = None
    while True:
        closer = Closer(context)
        # The days ended at least COMPACT_GRACE ago are compacted, once a day, before the closes.
        before = datetime.combine((context.clock().astimezone(UTC) - COMPACT_GRACE).date(), time(), UTC)
        if compacted_before is None or before > compacted_before:
            try:
                merged = await closer.compact_measurements(before - COMPACT_DAYS, before)
                compacted_before = before
                if merged:
                    log.info("measurement hours compacted into days", buckets=merged)
            except asyncio.CancelledError:
                raise
            except Exception:  # the next round tries again; what is not compacted is read as hours
                log.exception("compacting measurements failed")
        try:
            closed = await closer.close_due()
            if closed:
                log.info("periods closed", count=closed)
        except asyncio.CancelledError:
            raise
        except Exception:  # the next round tries again; a close is idempotent
            log.exception("closing periods failed")
        await asyncio.sleep(context.settings.sla.close_interval_seconds)


API = ApiDeclaration(
    name="slaManagement",
    document="slaManagement.yaml",
    base_path="/tmf-api/slaManagement/v4",
    resources=(SLA, VIOLATION, EVALUATION, REBATE, STATEMENT),
    extra_handlers=sla_handlers,
    collections=((BUCKETS, BUCKET_INDEXES),),
    tasks=(close_periods,),
    settings=("delivery", "sla", "inventory"),
)

__all__ = ["API"]
