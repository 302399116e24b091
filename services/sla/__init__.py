"""TMF623 SLA Management: SLAs, measurements, evaluation over calendar periods, violations,
rebates in money and settlement statements."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from connexion import request
from pymongo import ASCENDING, IndexModel
from starlette.responses import Response

from services.tmf.api import ApiContext, ApiDeclaration
from services.tmf.authentication import call_of
from services.tmf.errors import BadRequest, Conflict, Forbidden, NotFound
from services.tmf.repository import Visibility, public
from services.tmf.resource import Handler, ResourceType, json_response
from services.tmf.validation import parsed_body

from .evaluate import Closer, parse_time
from .evaluation import METRICS, Period
from .measurements import Intake
from .repository import MeasurementStore
from .rules import SlaRules

log = structlog.get_logger("sla")
MAX_EVALUATION_DAYS = 400
# Calendar arithmetic (business hours, time zones) needs a day of room on either side of a period.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9999, 1, 1, tzinfo=UTC)

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

    return {"createMeasurement": take_measurements, "listMetric": list_metrics, "createSLAEvaluation": evaluate}


async def close_periods(context: ApiContext) -> None:
    """Close SLA periods as they end, for as long as the service runs."""
    # The measurement buckets are not a TMF resource, so their index is made here, first.
    await MeasurementStore(context.db).ensure_indexes()
    while True:
        try:
            closed = await Closer(context).close_due()
            if closed:
                log.info("periods closed", count=closed)
        except asyncio.CancelledError:
            raise
        except Exception:  # the next round tries again; a close is idempotent
            log.exception("closing periods failed")
        await asyncio.sleep(context.settings.sla_close_interval_seconds)


API = ApiDeclaration(
    name="slaManagement",
    document="slaManagement.yaml",
    base_path="/tmf-api/slaManagement/v4",
    resources=(SLA, VIOLATION, EVALUATION, REBATE, STATEMENT),
    extra_handlers=sla_handlers,
    tasks=(close_periods,),
)

__all__ = ["API"]
