"""TMF642 alarms as the problem service takes them in: raised, updated and cleared, with the
times the standard expects."""

from __future__ import annotations

from typing import Any

from services.inventory.client import Suppliers
from services.tmf.call import Call
from services.tmf.errors import BadRequest
from services.tmf.events import now_text
from services.tmf.resource import ResourceApi, ResourceRules


class AlarmRules(ResourceRules):
    @staticmethod
    async def check_supplier(api: ResourceApi, document: dict[str, Any], call: Call) -> None:
        """A partner raises alarms only about what it supplies."""
        if call.unrestricted:
            return
        target = document.get("alarmedObject") or {}
        suppliers = Suppliers(api.context)
        if str(target.get("@referredType", "")).lower() == "service":
            await suppliers.check_services(call, {str(target.get("id", ""))})
        else:
            await suppliers.check_resource(call, str(target.get("id", "")))

    async def on_create(self, api: ResourceApi, document: dict[str, Any], call: Call) -> dict[str, Any]:
        await self.check_supplier(api, document, call)
        document.setdefault("alarmReportingTime", now_text())
        if document.get("state") == "cleared":
            document.setdefault("alarmClearedTime", document["alarmReportingTime"])
        return {}

    async def on_update(self, api: ResourceApi, before: dict[str, Any], after: dict[str, Any],
                        call: Call, system: bool = False) -> dict[str, Any]:
        if after.get("alarmedObject") != before.get("alarmedObject"):
            await self.check_supplier(api, after, call)
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
