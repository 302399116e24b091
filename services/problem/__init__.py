"""TMF656 Service Problem Management and the TMF642 alarm intake that feeds it."""

from __future__ import annotations

from typing import Any

from pymongo import ASCENDING, IndexModel
from starlette.responses import Response

from services.tmf.api import ApiContext, ApiDeclaration
from services.tmf.listener import Consumption
from services.tmf.repository import OWNER_ONLY, Visibility
from services.tmf.resource import Handler, ResourceType

from .alarms import AlarmRules
from .correlation import Correlator
from .impact import IMPACT_COLLECTION, IMPACT_INDEXES
from .lifecycle import ProblemRules
from .pending import PENDING_COLLECTION, PENDING_INDEXES
from .tasks import Tasks

PROBLEM = ResourceType(
    name="serviceProblem", type_name="ServiceProblem", rules=ProblemRules(), state_attribute="status",
    # Also the parties of the services it affects, named by correlation.
    visibility=Visibility(("originatorParty.id", "responsibleParty.id", "relatedParty.id")),
    # What a problem impacts is kept beside it (impact.py), out of this often-updated document.
    indexes=(IndexModel([("_meta.openRoot", ASCENDING)]), IndexModel([("underlyingAlarm.id", ASCENDING)]),
             IndexModel([("affectedService.id", ASCENDING)]),
             IndexModel([("status", ASCENDING)])),
)
# A record is seen by the parties of its problem (stored with it by the outbox).
EVENT_RECORD = ResourceType(name="serviceProblemEventRecord", type_name="ServiceProblemEventRecord",
                            indexes=(IndexModel([("serviceProblem.id", ASCENDING)]),), visibility=Visibility(()))
TASKS = tuple(ResourceType(name=name, type_name=name[0].upper() + name[1:], emits_events=False,
                           visibility=OWNER_ONLY)
              for name in ("problemAcknowledgement", "problemUnacknowledgement", "problemGroup", "problemUngroup"))
# Alarms carry no parties: the party that raised them (and the operator) sees them.
ALARM = ResourceType(
    name="alarm", type_name="Alarm", rules=AlarmRules(), visibility=OWNER_ONLY,
    indexes=(IndexModel([("alarmedObject.id", ASCENDING)]), IndexModel([("state", ASCENDING)])),
)


def operator_responsibility(operator_party_id: str) -> dict[str, Any]:
    """The ``responsibleParty`` of a problem a client submits without one. Correlation replaces
    it (a party with this id and role) when it finds the supplier at fault."""
    return {"id": operator_party_id, "role": "operator", "@referredType": "Organization"}


def correlator(context: ApiContext) -> Correlator:
    # One per running app: its impact cache and per-root locks serve every event.
    if "correlator" not in context.components:
        context.components["correlator"] = Correlator(context)
    found: Correlator = context.components["correlator"]
    return found


async def take_alarm(context: ApiContext, event: dict[str, Any]) -> None:
    await correlator(context).on_alarm(context, event)


async def fold_pending_alarms(context: ApiContext) -> None:
    await correlator(context).keep_folding()


async def take_violation(context: ApiContext, event: dict[str, Any]) -> None:
    await correlator(context).on_sla_violation(context, event)


def problem_handlers(context: ApiContext) -> dict[str, Handler]:
    problems = context.resource_apis["serviceProblem"]

    async def create(body: Any = None) -> Response:
        if not isinstance(body, dict):
            return await problems.create(body)
        # Whatever status a client proposes, a problem it submits starts acknowledged; until
        # someone names a partner, the operator answers for it.
        return await problems.create({"responsibleParty": operator_responsibility(context.settings.operator_party_id),
                                      **body, "status": "acknowledged"})

    return {"createServiceProblem": create, **Tasks(context).handlers()}


PROBLEM_API = ApiDeclaration(
    name="serviceProblemManagement",
    document="serviceProblemManagement.yaml",
    base_path="/tmf-api/serviceProblemManagement/v4",
    resources=(PROBLEM, EVENT_RECORD, *TASKS),
    extra_handlers=problem_handlers,
    event_records=(("serviceProblem", "serviceProblemEventRecord"),),
    collections=((IMPACT_COLLECTION, IMPACT_INDEXES), (PENDING_COLLECTION, PENDING_INDEXES)),
    tasks=(fold_pending_alarms,),
    settings=("delivery", "problem", "inventory"),
    consumes=(
        Consumption(("AlarmCreateEvent", "AlarmStateChangeEvent"), hub=lambda s: s.problem.alarm_hub_url,
                    handle=take_alarm),
        # State changes carry withdrawals: a problem opened only by a withdrawn violation closes.
        Consumption(("SLAViolationCreateEvent", "SLAViolationStateChangeEvent"), hub=lambda s: s.problem.sla_hub_url,
                    handle=take_violation),
    ),
)

ALARM_API = ApiDeclaration(
    name="alarmManagement",
    document="alarmManagement.yaml",
    base_path="/tmf-api/alarmManagement/v4",
    resources=(ALARM,),
    settings=("delivery", "inventory"),
)
