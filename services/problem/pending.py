"""Alarms taken from the alarm hub and not yet in their root cause's problem.

A problem write costs the database about as much for one alarm as for several (measured by
bench/problem_write.py: a quarter as much per alarm with four per write), and in a storm over
many roots the alarms of one root rarely arrive together. So an alarm's delivery is answered
once the alarm is kept here, durably, with the others that arrived meanwhile in one insert;
correlation then folds what is kept into the problems in passes (``Correlator.fold``), each
root's alarms in one write, and removes them from here in the same transaction. A process that
stops leaves its pending alarms here for the next pass of any process.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from services.tmf import telemetry
from services.tmf.batching import Coalescer
from services.tmf.repository.events import in_transaction

if TYPE_CHECKING:
    from pymongo.asynchronous.collection import AsyncCollection

    from services.tmf.api import ApiContext

PENDING_COLLECTION = "serviceProblemPendingAlarm"
PENDING_INDEXES = ()  # read whole, by its _id (the alarm's id) only
# At most this many pending alarms are folded in one pass: a bounded transaction.
FOLD_MAX = 5000
# A long ``$in`` costs the embedded database time that grows with its square: removed in chunks.
CHUNK = 100
# What correlation reads of an alarm: kept instead of the whole alarm.
ALARM_FIELDS = ("id", "href", "alarmType", "perceivedSeverity", "probableCause", "specificProblem",
                "sourceSystemId", "serviceAffecting")
OBJECT_FIELDS = ("id", "href", "name", "@referredType")


def kept_alarm(alarm: dict[str, Any]) -> dict[str, Any]:
    kept = {k: alarm[k] for k in ALARM_FIELDS if k in alarm}
    target = alarm.get("alarmedObject")
    if isinstance(target, dict):
        kept["alarmedObject"] = {k: target[k] for k in OBJECT_FIELDS if k in target}
    return kept


class PendingAlarms:
    """``{_id: alarm id, root: "kind:id", alarm: {...}, acceptedAt: str | None, trace: {...}}``."""

    def __init__(self, context: ApiContext) -> None:
        self.context = context
        # Alarms delivered at the same time are kept with one insert.
        self._inserts: Coalescer[dict[str, Any], Exception | None] = Coalescer(self._insert_many)

    @property
    def collection(self) -> AsyncCollection[dict[str, Any]]:
        return self.context.db[PENDING_COLLECTION]

    async def keep(self, root: str, alarm: dict[str, Any], accepted_at: str | None) -> None:
        """Returns once the alarm is stored (or was already pending: a redelivery)."""
        # The trace of the delivery goes on in the pass that puts the alarm in its problem.
        failure = await self._inserts.submit({"_id": alarm["id"], "root": root, "alarm": kept_alarm(alarm),
                                              "acceptedAt": accepted_at, "trace": telemetry.trace_fields()})
        if failure is not None:
            raise failure

    async def _insert_many(self, entries: list[dict[str, Any]]) -> list[Exception | None]:
        # In a transaction, not as a retryable write: the embedded database scans the answers of
        # all retryable writes of the last 30 minutes at each new one (see ListenerApi._mark_taken).
        async def insert(session: Any) -> None:
            ids = list({e["_id"] for e in entries})
            kept: set[Any] = set()
            for start in range(0, len(ids), CHUNK):
                found = self.collection.find({"_id": {"$in": ids[start:start + CHUNK]}}, {"_id": 1}, session=session)
                kept.update(d["_id"] for d in await found.to_list())
            fresh = list({e["_id"]: e for e in entries if e["_id"] not in kept}.values())  # redeliveries: once
            if fresh:
                await self.collection.insert_many(fresh, session=session)

        try:
            await in_transaction(self.context.db, insert)
        except Exception as exc:
            return [exc] * len(entries)
        return [None] * len(entries)

    async def waiting(self) -> list[dict[str, Any]]:
        """Up to ``FOLD_MAX`` pending alarms, in no particular order."""
        return await self.collection.find({}).limit(FOLD_MAX).to_list()

    async def remove(self, alarm_ids: Sequence[str], session: Any = None) -> None:
        for start in range(0, len(alarm_ids), CHUNK):
            await self.collection.delete_many({"_id": {"$in": list(alarm_ids[start:start + CHUNK])}}, session=session)
