"""TMF642 alarms as the problem service takes them in: raised, updated and cleared, with the
times the standard expects."""

from __future__ import annotations

from typing import Any

from services.tmf.errors import BadRequest
from services.tmf.events import now_text
from services.tmf.repository import AccessScope
from services.tmf.resource import ResourceApi, ResourceRules


class AlarmRules(ResourceRules):
    async def on_create(self, api: ResourceApi, document: dict[str, Any], scope: AccessScope) -> dict[str, Any]:
        document.setdefault("alarmReportingTime", now_text())
        if document.get("state") == "cleared":
            document.setdefault("alarmClearedTime", document["alarmReportingTime"])
        return {}

    async def on_update(self, api: ResourceApi, before: dict[str, Any], after: dict[str, Any],
                        scope: AccessScope, system: bool = False) -> dict[str, Any]:
        now = now_text()
        after["alarmChangedTime"] = now
        if after.get("state") == "cleared" and before.get("state") != "cleared":
            after.setdefault("alarmClearedTime", now)
            if after.get("alarmRaisedTime") and after["alarmClearedTime"] < after["alarmRaisedTime"]:
                raise BadRequest("alarmClearedTime is before alarmRaisedTime")
        elif after.get("state") != "cleared" and before.get("state") == "cleared":
            # Raised again: the clear time belongs to the previous occurrence.
            after.pop("alarmClearedTime", None)
        return {}
