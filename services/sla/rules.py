"""What TMF623 leaves open about an SLA: its rules must name known metrics with sensible tiers,
its periods and windows must make sense, its covered services must exist, and its currency
cannot change once rebates were computed in it."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from itertools import pairwise
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import httpx

from services.tmf import outgoing
from services.tmf.call import SYSTEM, Call
from services.tmf.errors import BadRequest, Conflict
from services.tmf.query import normalize_date_time
from services.tmf.resource import ResourceApi, ResourceRules

from .coverage import coverage
from .evaluation import METRICS, Rule, Tier, check_rule

COVERED_ROLE = "coveredService"


def decimal(value: Any, where: str) -> Decimal:
    try:
        number = Decimal(str(value))
    except (InvalidOperation, ValueError):
        raise BadRequest(f"{where} must be a number") from None
    if not number.is_finite():
        raise BadRequest(f"{where} must be a finite number")
    return number


def rules_of(sla: dict[str, Any]) -> list[Rule]:
    """The SLA's rules in the evaluator's terms, checked."""
    rules = []
    seen: set[str] = set()
    for i, raw in enumerate(sla.get("rule") or []):
        where = f"rule[{i}]"
        metric = raw.get("metric")
        if metric not in METRICS:
            raise BadRequest(f"{where}.metric '{str(metric)[:64]}' is unknown; GET /metric lists the metrics: "
                             + ", ".join(sorted(METRICS)))
        rule_id = str(raw.get("id", ""))
        if rule_id in seen:
            raise BadRequest(f"{where}.id '{rule_id}' is used twice; rule ids must be unique within an SLA")
        seen.add(rule_id)
        tiers = tuple(Tier(decimal(t.get("threshold"), f"{where}.rebateTier[{j}].threshold"),
                           decimal(t.get("rebatePercent"), f"{where}.rebateTier[{j}].rebatePercent"))
                      for j, t in enumerate(raw.get("rebateTier") or []))
        rule = Rule(id=rule_id, metric=metric, operator=str(raw.get("operator")),
                    reference=decimal(raw.get("referenceValue"), f"{where}.referenceValue"),
                    tolerance=decimal(raw.get("tolerance", 0), f"{where}.tolerance"), tiers=tiers,
                    unit=raw.get("unit"))
        try:
            check_rule(rule)
        except ValueError as exc:
            raise BadRequest(f"{where}: {exc}") from None
        rules.append(rule)
    return rules


def covered_services(sla: dict[str, Any]) -> list[str]:
    ids = []
    for entity in sla.get("relatedEntity") or []:
        if entity.get("role") == COVERED_ROLE or entity.get("@referredType") == "Service":
            service_id = entity.get("id") or str(entity.get("href", "")).rstrip("/").rsplit("/", 1)[-1]
            if service_id:
                ids.append(str(service_id))
    return sorted(set(ids))


def _check_period(period: dict[str, Any] | None, where: str) -> None:
    if period and period.get("startDateTime") and period.get("endDateTime"):
        if period["endDateTime"] <= period["startDateTime"]:
            raise BadRequest(f"{where}: endDateTime must be after startDateTime")


def check_sla(sla: dict[str, Any]) -> None:
    rules_of(sla)
    _check_period(sla.get("validFor"), "validFor")
    windows = []
    for i, window in enumerate(sla.get("maintenanceWindow") or []):
        valid_for = window.get("validFor") or {}
        if not valid_for.get("startDateTime") or not valid_for.get("endDateTime"):
            raise BadRequest(f"maintenanceWindow[{i}].validFor needs startDateTime and endDateTime")
        _check_period(valid_for, f"maintenanceWindow[{i}].validFor")
        windows.append((valid_for["startDateTime"], valid_for["endDateTime"], i))
    windows.sort()
    for (_, end, i), (start, _, j) in pairwise(windows):
        if start < end:
            raise BadRequest(f"maintenanceWindow[{i}] and maintenanceWindow[{j}] overlap; merge them into one window")
    period = sla.get("evaluationPeriod")
    if period:
        try:
            ZoneInfo(period.get("timeZone") or "UTC")
        except (ZoneInfoNotFoundError, ValueError):
            raise BadRequest(f"evaluationPeriod.timeZone '{str(period.get('timeZone'))[:64]}' is not an IANA time zone"
                             ) from None
    hours = sla.get("businessHours")
    if hours and hours.get("startTime") and hours.get("endTime") and hours["endTime"] <= hours["startTime"]:
        raise BadRequest("businessHours.endTime must be after startTime")
    charge = sla.get("charge")
    if charge is not None:
        if decimal(charge.get("value"), "charge.value") < 0:
            raise BadRequest("charge.value must not be negative")
    if sla.get("rebateCap") is not None and charge is None:
        raise BadRequest("rebateCap needs a charge to cap rebates against")


class SlaRules(ResourceRules):
    async def _check_services(self, api: ResourceApi, sla: dict[str, Any]) -> list[str]:
        services = covered_services(sla)
        inventory = api.settings.inventory.url
        if not inventory or not services:
            return services
        missing = []
        async with outgoing.client(5, auth=api.context.service_auth()) as client:
            for service_id in services:
                try:
                    response = await client.get(f"{inventory}/service/{service_id}", params={"fields": "none"})
                except httpx.HTTPError:
                    raise BadRequest("the service inventory cannot be reached to check relatedEntity; try again"
                                     ) from None
                if response.status_code == 404:
                    missing.append(service_id)
        if missing:
            raise BadRequest(f"relatedEntity names services the inventory does not hold: {', '.join(missing[:5])}")
        return services

    async def on_create(self, api: ResourceApi, document: dict[str, Any], call: Call) -> dict[str, Any]:
        check_sla(document)
        coverage(api.context).forget()
        created = normalize_date_time(api.context.clock().isoformat())
        return {"services": await self._check_services(api, document), "created": created}

    async def on_delete(self, api: ResourceApi, stored: dict[str, Any], call: Call) -> None:
        if await api.context.resource_apis["rebate"].store.find_one({"sla.id": stored["id"]}, SYSTEM,
                                                                    {"_id": 1}) is not None:
            raise Conflict("rebates were computed under this SLA; it stays for the record (end it with validFor)")
        coverage(api.context).forget()

    async def on_update(self, api: ResourceApi, before: dict[str, Any], after: dict[str, Any],
                        call: Call, system: bool = False) -> dict[str, Any]:
        check_sla(after)
        old_currency = (before.get("charge") or {}).get("unit")
        new_currency = (after.get("charge") or {}).get("unit")
        if old_currency and new_currency != old_currency:
            rebates = api.context.resource_apis["rebate"]
            if await rebates.store.find_one({"sla.id": after["id"]}, SYSTEM, {"_id": 1}) is not None:
                raise Conflict(f"rebates of this SLA are in {old_currency}; an SLA keeps one currency "
                               "(create a new SLA version for another currency)")
        services = await self._check_services(api, after)
        coverage(api.context).forget()
        return {"services": services}
