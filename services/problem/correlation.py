"""From alarms and SLA violations to problems: one problem per root cause, found through the
inventory's impact graph, with the responsible party, the customer-facing services hit, and the
problems above it grouped under it.

The problem service learns of alarms and violations as any partner would, from the public hubs
of the alarm and SLA APIs, and asks the inventory through its public API. In an alarm storm
most alarms share a few root causes, so the work is shaped per root: one impact lookup per root
at a time (answers kept for a while and refreshed in the background, never waited for twice),
and a delivered alarm kept as pending (pending.py) until a pass folds the pending alarms of
every root into their problems: one transaction appends each root's in one write, so that a
storm over many roots costs one problem write per root and pass, and one commit per pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx
import structlog

from services.tmf import outgoing, telemetry
from services.tmf.call import SYSTEM
from services.tmf.events import INFORMATION_REQUIRED, now_text
from services.tmf.query import normalize_date_time
from services.tmf.repository import META, public
from services.tmf.repository.events import in_transaction
from services.tmf.resource import ResourceApi

from .impact import ImpactRecords
from .lifecycle import FINAL, OPEN, root_key, set_status, tracking
from .metrics import problem_updated
from .pending import PendingAlarms
from .tasks import grouping_changes

if TYPE_CHECKING:
    from services.tmf.api import ApiContext

log = structlog.get_logger("problem.correlation")
SERIOUS = {"critical", "major"}
PRIORITY = {"critical": 1, "major": 2}
SUPPLIER = "supplier"
# A pass folding pending alarms into problems is followed by a pause this many times as long,
# and never longer than FOLD_PAUSE_MAX seconds (a storm's first pass, which opens its problems,
# is slow, and what it opened takes alarms right away).
FOLD_PAUSE = 2.0
FOLD_PAUSE_MAX = 5.0
SWEEP_SECONDS = 30.0
VIOLATION_STATE_CHANGE = "SLAViolationStateChangeEvent"


def qualifies(alarm: dict[str, Any]) -> bool:
    return str(alarm.get("perceivedSeverity", "")).lower() in SERIOUS or alarm.get("serviceAffecting") is True


def element(alarm: dict[str, Any]) -> tuple[str, str, dict[str, Any]] | None:
    """(kind, id, the alarmed object) of what the alarm is about."""
    target = alarm.get("alarmedObject") or {}
    if not target.get("id"):
        return None
    kind = "service" if str(target.get("@referredType", "")).lower() == "service" else "resource"
    return kind, str(target["id"]), target


ImpactKey = tuple[str, str]


class ImpactCache:
    """Impact graphs from the inventory's public API. An answer is fresh for ``ttl`` seconds;
    after that it is still served while one background lookup replaces it, so a storm longer
    than ``ttl`` never waits on the inventory again for a root it already knows, and the graph
    it uses is at most one lookup older than ``ttl``. Concurrent misses for one element share
    a single lookup."""

    def __init__(self, inventory_url: str, ttl: float, auth: httpx.Auth | None = None) -> None:
        self.inventory_url = inventory_url
        self.ttl = ttl
        self.auth = auth
        self._entries: dict[ImpactKey, tuple[float, dict[str, Any] | None]] = {}
        self._lookups: dict[ImpactKey, asyncio.Task[dict[str, Any] | None]] = {}

    async def impact(self, kind: str, element_id: str) -> dict[str, Any] | None:
        key = (kind, element_id)
        cached = self._entries.get(key)
        if cached is not None:
            if cached[0] <= time.monotonic():
                self._lookup(key)  # refreshed in the background; the last answer serves meanwhile
            return cached[1]
        return await asyncio.shield(self._lookup(key))

    def _lookup(self, key: ImpactKey) -> asyncio.Task[dict[str, Any] | None]:
        running = self._lookups.get(key)
        if running is None:
            running = self._lookups[key] = asyncio.create_task(self._fetch(key))
            running.add_done_callback(lambda _: self._lookups.pop(key, None))
            # A failed background refresh is only logged; the next caller after expiry tries again.
            running.add_done_callback(_log_failure)
        return running

    async def _fetch(self, key: ImpactKey) -> dict[str, Any] | None:
        kind, element_id = key
        path = f"/resourceImpact/{element_id}" if kind == "resource" else f"/service/{element_id}/impact"
        async with outgoing.client(30, auth=self.auth) as client:
            response = await client.get(f"{self.inventory_url}{path}")
        graph: dict[str, Any] | None = response.json() if response.status_code == 200 else None
        if response.status_code not in (200, 404):
            response.raise_for_status()
        if len(self._entries) > 50_000:
            self._entries.clear()
        self._entries[key] = (time.monotonic() + self.ttl, graph)
        return graph

    async def get_json(self, url: str) -> dict[str, Any] | None:
        try:
            async with outgoing.client(30, auth=self.auth) as client:
                response = await client.get(url)
        except httpx.HTTPError:
            return None
        found: dict[str, Any] | None = response.json() if response.status_code == 200 else None
        return found


@dataclass(frozen=True)
class Raised:
    """An alarm waiting to join its root's problem, with what correlation learned about it."""

    alarm: dict[str, Any]
    target: dict[str, Any]
    graph: dict[str, Any]
    accepted_at: str | None = None  # telemetry: when the alarm hub took it
    trace: dict[str, str] = field(default_factory=dict)  # telemetry: the delivery's trace


def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("impact lookup failed", error=f"{type(task.exception()).__name__}: {task.exception()}"[:300])


def responsible_party(graph: dict[str, Any]) -> dict[str, Any] | None:
    """The supplier of the nearest service at or above the failing element."""
    nodes = [graph.get("root") or {}, *sorted(graph.get("node") or [], key=lambda n: n.get("depth", 0))]
    for node in nodes:
        for party in node.get("relatedParty") or []:
            if str(party.get("role", "")).lower() == SUPPLIER:
                return dict(party)
    return None


def graph_parties(graph: dict[str, Any]) -> list[str]:
    """The parties of every service in an impact graph: each may see the problem."""
    nodes = [graph.get("root") or {}, *(graph.get("node") or [])]
    return sorted({str(p["id"]) for n in nodes for p in n.get("relatedParty") or []
                   if isinstance(p, dict) and p.get("id")})


def impacted_services(key: str, graph: dict[str, Any]) -> list[str]:
    """The services a problem about root ``key`` impacts: those above it, and itself if a service."""
    kind, element_id = key.split(":", 1)
    return sorted({n["id"] for n in graph.get("node") or [] if n.get("@referredType") == "Service"}
                  | ({element_id} if kind == "service" else set()))


def service_ref(node: dict[str, Any]) -> dict[str, Any]:
    ref = {"id": node["id"], "@referredType": "Service"}
    for key in ("href", "name"):
        if node.get(key):
            ref[key] = node[key]
    return ref


class Correlator:
    def __init__(self, context: ApiContext) -> None:
        self.context = context
        settings = context.settings
        self.impacts = ImpactCache(settings.inventory.url, settings.problem.impact_cache_seconds,
                                   context.service_auth())
        self.impact = ImpactRecords(context)
        self._locks: dict[str, asyncio.Lock] = {}
        self.pending = PendingAlarms(context)
        self._folding = asyncio.Lock()
        self._kept = asyncio.Event()

    @property
    def trusted_owners(self) -> list[str | None]:
        return [None, self.context.settings.operator_party_id]

    @property
    def problems(self) -> ResourceApi:
        return self.context.resource_apis["serviceProblem"]

    def lock(self, key: str) -> asyncio.Lock:
        if len(self._locks) > 100_000:
            self._locks = {k: v for k, v in self._locks.items() if v.locked()}
        return self._locks.setdefault(key, asyncio.Lock())

    # -- alarms ---------------------------------------------------------------------------------

    async def on_alarm(self, context: ApiContext, event: dict[str, Any]) -> None:
        alarm = (event.get("event") or {}).get("alarm") or {}
        if not alarm.get("id"):
            return
        if alarm.get("state") == "cleared":
            await self.cleared(alarm)
        elif qualifies(alarm):
            await self.raised(alarm, accepted_at=event.get("eventTime"))  # telemetry: accepted_at

    async def raised(self, alarm: dict[str, Any], accepted_at: str | None = None) -> None:
        found = element(alarm)
        if found is None or not self.context.settings.inventory.url:
            return
        kind, element_id, _ = found
        graph = await self.impacts.impact(kind, element_id)
        if graph is None:
            log.info("alarm not correlated: its object is not in the inventory", alarm=alarm["id"],
                     alarmedObject=element_id)
            return
        # The delivery is answered once the alarm is kept; the next pass puts it in its problem.
        await self.pending.keep(f"{kind}:{element_id}", alarm, accepted_at)
        self._kept.set()

    async def keep_folding(self) -> None:
        """Fold pending alarms into problems for as long as the app runs: a pass whenever alarms
        were kept, then a pause of ``FOLD_PAUSE`` times as long as that pass took (at most
        ``FOLD_PAUSE_MAX``). Under a trickle a pass takes milliseconds and an alarm is in its
        problem at once; in a storm the alarms arriving during a pass and its pause are many per
        root, each root's go into one write, and passes run at most a third of the time. Every
        ``SWEEP_SECONDS`` a pass also takes what a stopped process left pending."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._kept.wait(), SWEEP_SECONDS)
            self._kept.clear()
            started = time.monotonic()
            try:
                # Its own reads start no trace; what it does for an alarm continues the alarm's.
                with telemetry.untraced():
                    folded = await self.fold()
            except Exception as exc:
                log.warning("pending alarms not folded", error=f"{type(exc).__name__}: {exc}"[:300])
                await asyncio.sleep(1.0)
                continue
            if folded:
                self._kept.set()  # what arrived meanwhile, or what this pass could not take
                await asyncio.sleep(min((time.monotonic() - started) * FOLD_PAUSE, FOLD_PAUSE_MAX))

    async def fold(self) -> int:
        """One pass: the pending alarms into their roots' problems. Returns how many it took."""
        async with self._folding:
            entries = await self.pending.waiting()
            if not entries:
                return 0
            roots = sorted({str(e["root"]) for e in entries})
            graphs = dict(zip(roots, await asyncio.gather(*(self._graph(root) for root in roots),
                                                          return_exceptions=True), strict=True))
            batch: list[tuple[str, Raised]] = []
            gone: list[str] = []
            for entry in entries:
                graph, found = graphs[entry["root"]], element(entry["alarm"])
                if isinstance(graph, BaseException):
                    continue  # the inventory did not answer: it stays pending for the next pass
                if graph is None or found is None:
                    log.info("alarm not correlated: its object is no longer in the inventory", alarm=entry["_id"])
                    gone.append(entry["_id"])
                    continue
                batch.append((entry["root"], Raised(entry["alarm"], found[2], graph, entry.get("acceptedAt"),
                                                    entry.get("trace") or {})))
            await self.pending.remove(gone)
            return len(gone) + (await self._correlate(batch) if batch else 0)

    async def _graph(self, root: str) -> dict[str, Any] | None:
        kind, element_id = root.split(":", 1)
        return await self.impacts.impact(kind, element_id)

    async def _correlate(self, batch: list[tuple[str, Raised]]) -> int:
        """Put the alarms of each root cause in ``batch`` into its one open problem and remove
        them from the pending ones: every problem that lists none of them yet gets them
        appended, all in one transaction; the others (a problem to open or reopen, a redelivered
        alarm) are settled one root at a time, so that one root's failure fails no other (its
        alarms stay pending). Returns how many alarms it put in problems."""
        by_root: dict[str, list[Raised]] = {}
        for key, item in batch:
            by_root.setdefault(key, []).append(item)
        alarms = {key: list({r.alarm["id"]: r.alarm for r in items}.values()) for key, items in by_root.items()}
        done: list[str] = []
        opened: list[tuple[str, dict[str, Any], list[str]]] = []
        async with contextlib.AsyncExitStack() as locks:
            for key in sorted(by_root):  # in one order, so that two passes cannot wait on each other
                await locks.enter_async_context(self.lock(key))
            # One write for many alarms: it continues the trace of the first (as a root's does).
            with telemetry.continued(batch[0][1].trace):
                appended = await self.append_all(alarms)
            done += list(appended)

            async def one_root(key: str, raised: list[Raised]) -> None:
                try:
                    with telemetry.continued(raised[0].trace):
                        problem, fresh = appended.get(key), False
                        if problem is None:
                            problem, fresh = await self.settle(key, alarms[key], raised)
                            await self.pending.remove([a["id"] for a in alarms[key]])
                            done.append(key)
                        impacted = impacted_services(key, raised[-1].graph)
                        await self.impact.record(problem["id"], impacted)
                    if fresh:
                        opened.append((key, problem, impacted))
                except Exception as exc:
                    log.warning("alarms not correlated", root=key, error=f"{type(exc).__name__}: {exc}"[:300])

            # Concurrently: the problems a storm's first alarms open are created in one group.
            await asyncio.gather(*(one_root(key, raised) for key, raised in by_root.items()))

        async def group(key: str, problem: dict[str, Any], impacted: list[str]) -> None:
            # An alarm joining an open problem changes no grouping: that was settled when the
            # problem opened, and problems opened later settle it from their side.
            kind, element_id = key.split(":", 1)
            try:
                with telemetry.continued(by_root[key][0].trace):
                    await self.group_related(problem["id"], kind, element_id, impacted)
            except Exception as exc:
                log.warning("problems not grouped", root=key, error=f"{type(exc).__name__}: {exc}"[:300])

        await asyncio.gather(*(group(*opening) for opening in opened))
        for key in done:
            for raised in by_root[key]:
                problem_updated(raised.accepted_at)  # telemetry: sqm_correlation_lag_seconds
        return sum(len(alarms[key]) for key in done)

    async def settle(self, key: str, alarms: list[dict[str, Any]],
                     raised: list[Raised]) -> tuple[dict[str, Any], bool]:
        """The general path for alarms of one root whose open problem could not simply take
        them: opens, reopens or joins the problem. Returns it, and whether it was not open."""
        kind, element_id = key.split(":", 1)
        problem = await self.open_problem(key)
        fresh = problem is None
        if problem is None:
            problem = await self.reopen_recent(key)
        if problem is None:
            problem = await self.create_for_alarms(alarms, kind, element_id, raised[0].target, raised[-1].graph)
        else:
            problem = await self.join(problem, alarms, key)
        active = sorted({*problem.get(META, {}).get("activeAlarms", []), *(a["id"] for a in alarms)})
        if problem.get(META, {}).get("activeAlarms") != active:
            await self.problems.store.set_meta(problem["id"], {"activeAlarms": active})
        return problem, fresh

    async def open_problem(self, key: str) -> dict[str, Any] | None:
        # Only problems the suite or the operator opened take alarms: a problem a partner filed
        # about someone else's element must not collect that party's alarms.
        return await self.problems.store.find_one(
            {f"{META}.openRoot": key, f"{META}.owner": {"$in": self.trusted_owners}}, SYSTEM)

    async def append_all(self, alarms: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
        """:meth:`append` for each root, in one transaction that also removes those alarms from
        the pending ones: one hub-version read, one insert of the events and one commit for
        them all. Returns the problems appended to, by root."""

        async def each(session: Any) -> dict[str, dict[str, Any]]:
            appended = {}
            for key, listed in alarms.items():
                problem = await self.append(key, listed, session=session)
                if problem is not None:
                    appended[key] = problem
            await self.pending.remove([a["id"] for key in appended for a in alarms[key]], session)
            return appended

        appended = await in_transaction(self.context.db, each)
        if appended:
            self.context.outbox.committed()
        return appended

    async def append(self, key: str, alarms: list[dict[str, Any]], session: Any = None) -> dict[str, Any] | None:
        """The usual case in a storm, in one write: the root's open problem lists none of
        ``alarms`` yet, and gets them appended in place, with its bookkeeping, without reading
        or rewriting its other alarms (their number grows with the storm). None when there is
        no such problem (none open, or some of the alarms listed already: a redelivery), for
        the general path to settle."""
        ids = [a["id"] for a in alarms]
        refs = [self.alarm_ref(a) for a in alarms]
        # Its change event carries the alarms this write added, not every alarm again
        # (fieldPath names underlyingAlarm), as a settlement statement's carries its new line.
        return await self.problems.update_in_place(
            {f"{META}.openRoot": key, f"{META}.owner": {"$in": self.trusted_owners},
             "underlyingAlarm.id": {"$nin": ids}},
            {"$push": {"underlyingAlarm": {"$each": refs}},
             "$set": {"lastUpdate": now_text()},
             "$addToSet": {f"{META}.activeAlarms": {"$each": ids}}},
            ["lastUpdate", "underlyingAlarm"], SYSTEM, hide=["underlyingAlarm"], shown={"underlyingAlarm": refs},
            session=session)

    async def reopen_recent(self, key: str) -> dict[str, Any] | None:
        """A raise soon after the clear that resolved a problem reopens that problem."""
        damping = self.context.settings.problem.damping_seconds
        if damping <= 0:
            return None
        kind, element_id = key.split(":", 1)
        since = normalize_date_time((datetime.now(UTC) - timedelta(seconds=damping)).isoformat())
        field = "rootCauseResource.id" if kind == "resource" else "rootCauseService.id"
        recent = await self.problems.store.find({field: element_id, "status": "resolved",
                                                 "resolutionDate": {"$gte": since}},
                                                SYSTEM, sort=[("resolutionDate", -1)], limit=1)
        if not recent:
            return None

        def reopen(problem: dict[str, Any]) -> dict[str, Any]:
            after = dict(problem)
            set_status(after, "inProgress", "an alarm was raised again within the damping window")
            return after

        return await self.problems.modify(recent[0]["id"], reopen, SYSTEM, system=True)

    async def create_for_alarms(self, alarms: list[dict[str, Any]], kind: str, element_id: str,
                                target: dict[str, Any], graph: dict[str, Any]) -> dict[str, Any]:
        """The problem the first of ``alarms`` opens, holding them all."""
        alarm = alarms[0]
        severity = str(alarm.get("perceivedSeverity", "")).lower()
        name = target.get("name") or element_id
        referred = "Service" if kind == "service" else "Resource"
        root = {"id": element_id, "@referredType": referred, **({"name": target["name"]} if target.get("name") else {})}
        body: dict[str, Any] = {
            "name": f"{alarm.get('probableCause', 'alarm')} on {name}"[:256],
            "category": "alarm",
            "description": (f"{alarm.get('alarmType', 'alarm')}: {alarm.get('probableCause', '')} on "
                            f"{referred.lower()} {name}" + (f" ({alarm['specificProblem']})"
                                                            if alarm.get("specificProblem") else ""))[:4000],
            "priority": PRIORITY.get(severity, 3),
            "reason": str(alarm.get("probableCause") or "Unknown")[:256],
            "originatorParty": {"id": self.context.settings.operator_party_id, "role": "originator",
                                "@referredType": "Organization"},
            "status": "pending",
            "rootCauseService" if kind == "service" else "rootCauseResource": [root],
            "affectedService": [service_ref(n) for n in graph.get("customerFacingService") or []],
            "underlyingAlarm": [self.alarm_ref(a) for a in alarms],
            "firstAlert": {"id": alarm["id"], "role": "alarm", "@referredType": "Alarm",
                           **({"href": alarm["href"]} if alarm.get("href") else {})},
            "trackingRecord": [tracking(f"opened by alarm {alarm['id']} ({severity or 'service affecting'})")],
        }
        if alarm.get("sourceSystemId"):
            body["originatingSystem"] = str(alarm["sourceSystemId"])[:256]
        responsible = responsible_party(graph)
        if responsible is not None:
            body["responsibleParty"] = responsible
            body["relatedParty"] = [responsible]
        return await self.problems.insert(body, SYSTEM, parties=graph_parties(graph))

    @staticmethod
    def alarm_ref(alarm: dict[str, Any]) -> dict[str, Any]:
        ref = {"id": alarm["id"], "@referredType": "Alarm"}
        if alarm.get("href"):
            ref["href"] = alarm["href"]
        return ref

    async def join(self, problem: dict[str, Any], alarms: list[dict[str, Any]], key: str) -> dict[str, Any]:
        listed = {a.get("id") for a in problem.get("underlyingAlarm") or []}
        new_alarms = [a for a in alarms if a["id"] not in listed]
        if not new_alarms:
            return problem
        appended = await self.append(key, new_alarms)
        if appended is not None:
            return appended
        # Changed meanwhile (by another process of the suite): the versioned write re-reads it.

        def add(current: dict[str, Any]) -> dict[str, Any]:
            # The alarm list is the record of joins: a tracking record per alarm would only
            # swell the problem in a storm.
            known = {a.get("id") for a in current.get("underlyingAlarm") or []}
            new = [self.alarm_ref(a) for a in alarms if a["id"] not in known]
            if not new:
                return current
            return {**current, "underlyingAlarm": [*(current.get("underlyingAlarm") or []), *new]}

        return await self.problems.modify(problem["id"], add, SYSTEM, system=True)

    async def cleared(self, alarm: dict[str, Any]) -> None:
        await self.fold()  # a pending alarm is in its problem first
        holders = await self.problems.store.find({"underlyingAlarm.id": alarm["id"], "status": {"$in": list(OPEN)}},
                                                 SYSTEM)
        for problem in holders:
            async with self.lock(root_key(problem) or problem["id"]):
                stored = await self.problems.store.get(problem["id"], SYSTEM)
                if stored is None:
                    continue
                active = [a for a in stored.get(META, {}).get("activeAlarms", []) if a != alarm["id"]]
                await self.problems.store.set_meta(problem["id"], {"activeAlarms": active})
                if active or stored.get("status") not in OPEN:
                    continue

                def resolve(current: dict[str, Any]) -> dict[str, Any]:
                    after = dict(current)
                    set_status(after, "resolved", "every alarm of this problem has cleared")
                    return after

                await self.problems.modify(problem["id"], resolve, SYSTEM, system=True)

    async def group_related(self, problem_id: str, kind: str, element_id: str, impacted: list[str]) -> None:
        """Put problems about services above this element under this problem, and this problem
        under problems about elements below it."""
        above = [p for p in await self.problems.store.find_in(
            f"{META}.openRoot", [f"service:{s}" for s in impacted if s != element_id], SYSTEM,
            {}) if p["id"] != problem_id]
        below = []
        if kind == "service":
            below = [p for p in await self.problems.store.find_in(
                "_id", await self.impact.problems_impacting([element_id]), SYSTEM, {},
                {f"{META}.openRoot": {"$ne": None}}) if p["id"] != problem_id]
        for parent_id, child_id in [(problem_id, p["id"]) for p in above] + [(p["id"], problem_id) for p in below]:
            await self.link(parent_id, child_id)

    async def link(self, parent_id: str, child_id: str) -> None:
        # One link at a time: problems opened together may each find the other and link the
        # same pair, and the second must see the first's link.
        async with self.lock("problem-grouping"):
            parent = await self.problems.store.get(parent_id, SYSTEM)
            child = await self.problems.store.get(child_id, SYSTEM)
            if parent is None or child is None:
                return
            if any(r.get("id") == parent_id for r in child.get("parentProblem") or []):
                return
            changes = grouping_changes(self.problems, public(parent), [public(child)], link=True)

            async def both(session: Any) -> None:
                for problem_id, change in changes.items():
                    await self.problems.modify(problem_id, change, SYSTEM, session=session, system=True)

            await in_transaction(self.context.db, both)
            self.context.outbox.committed()

    # -- SLA violations -------------------------------------------------------------------------

    async def on_sla_violation(self, context: ApiContext, event: dict[str, Any]) -> None:
        violation = (event.get("event") or {}).get("slaViolation") or {}
        if not violation.get("id"):
            return
        if event.get("eventType") == VIOLATION_STATE_CHANGE:
            # provisional -> final changes nothing here: the problem is already open for it.
            if violation.get("status") == "withdrawn":
                await self.violation_withdrawn(violation)
            return
        services = sorted({str(e["id"]) for e in violation.get("relatedEntity") or [] if e.get("id")})
        ref = {"id": violation["id"], "@referredType": "SLAViolation",
               **({"href": violation["href"]} if violation.get("href") else {})}
        async with self.lock("sla-violations"):
            target = await self.problem_for_services(services)
            if target is not None:
                if any(v.get("id") == violation["id"] for v in target.get("slaViolation") or []):
                    return
                await self.problems.modify(target["id"], attach(ref, violation), SYSTEM, system=True)
                return
            # Nothing says yet what broke the SLA: the problem asks for its root cause.
            await self.problems.insert(await self.sla_problem(violation, services, ref), SYSTEM,
                                       also=[(INFORMATION_REQUIRED, ["rootCauseService", "rootCauseResource"])])

    async def violation_withdrawn(self, violation: dict[str, Any]) -> None:
        """A provisional violation was withdrawn at period close (the period met the rule): the
        problem it alone opened is closed, and problems with other causes forget it."""
        why = str(violation.get("statusChangeReason") or "withdrawn at period close: the period met the rule")
        reason = f"SLA violation {violation['id']} {why}"[:1000]
        async with self.lock("sla-violations"):
            holders = await self.problems.store.find(
                {"slaViolation.id": violation["id"], "status": {"$in": [*OPEN, "resolved"]}}, SYSTEM,
                sort=[("creationDate", 1)])
            for problem in holders:
                await self.problems.modify(problem["id"], withdraw(str(violation["id"]), reason), SYSTEM,
                                           system=True)

    async def problem_for_services(self, services: list[str]) -> dict[str, Any] | None:
        if not services:
            return None
        candidates = await self.problems.store.find(
            {"status": {"$in": list(OPEN)}, "$or": [{"affectedService.id": {"$in": services}},
                                                     {"rootCauseService.id": {"$in": services}}]},
            SYSTEM, sort=[("creationDate", 1)], limit=20)
        impacted = await self.problems.store.find_in("_id", await self.impact.problems_impacting(services), SYSTEM, {})
        pool = candidates + [public(p) for p in impacted if p.get("status") in OPEN]
        if not pool:
            return None
        # The root of a group is the problem to attach to.
        roots = [p for p in pool if not p.get("parentProblem")]
        return (roots or pool)[0]

    async def sla_problem(self, violation: dict[str, Any], services: list[str], ref: dict[str, Any]) -> dict[str, Any]:
        details = violation.get("violation") or {}
        sla = violation.get("sla") or {}
        importance = 5
        sla_api = self.context.settings.problem.sla_hub_url
        if sla.get("id") and sla_api:
            # The configured SLA service, asked by id: never a URL taken from the event.
            found = await self.impacts.get_json(f"{sla_api}/sla/{quote(str(sla['id']), safe='')}")
            if found and isinstance(found.get("importance"), int):
                importance = found["importance"]
        body: dict[str, Any] = {
            "name": f"SLA violation: {sla.get('name') or sla.get('id', '')}"[:256],
            "category": "SLA violation",
            "description": (f"{details.get('metric', 'a rule')} was {details.get('actualValue')} against "
                            f"{details.get('operator', '')} {details.get('referenceValue')} in "
                            f"{sla.get('name') or sla.get('id', 'an SLA')}")[:4000],
            "priority": max(1, min(10, importance)),
            "reason": "SLA violation",
            "originatorParty": {"id": self.context.settings.operator_party_id, "role": "originator",
                                "@referredType": "Organization"},
            "status": "pending",
            "affectedService": [{"id": s, "@referredType": "Service"} for s in services],
            "slaViolation": [ref],
            "firstAlert": {"id": violation["id"], "role": "slaViolation", "@referredType": "SLAViolation"},
            "relatedParty": [p for p in violation.get("relatedParty") or [] if p.get("id")],
            "trackingRecord": [tracking(f"opened by SLA violation {violation['id']}")],
        }
        return body


def attach(ref: dict[str, Any], violation: dict[str, Any]) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def change(problem: dict[str, Any]) -> dict[str, Any]:
        known = {p.get("id") for p in problem.get("relatedParty") or []}
        parties = [p for p in violation.get("relatedParty") or [] if p.get("id") and p["id"] not in known]
        return {**problem, "slaViolation": [*(problem.get("slaViolation") or []), ref],
                "relatedParty": [*(problem.get("relatedParty") or []), *parties],
                "trackingRecord": [*(problem.get("trackingRecord") or []),
                                   tracking(f"SLA violation {ref['id']} attached", time=now_text())]}
    return change


def withdraw(violation_id: str, reason: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """The change a withdrawn violation makes to a problem that refers to it."""

    def change(problem: dict[str, Any]) -> dict[str, Any]:
        listed = problem.get("slaViolation") or []
        if problem.get("status") in FINAL or not any(v.get("id") == violation_id for v in listed):
            return problem  # settled meanwhile, or this event was taken before
        others = [v for v in listed if v.get("id") != violation_id]
        after = dict(problem)
        if ((problem.get("firstAlert") or {}).get("id") == violation_id and not others
                and not problem.get("underlyingAlarm")):
            # Nothing else ever stood behind this problem: it is over. The reference stays, as the
            # record of why the problem existed.
            if after.get("status") != "resolved":
                set_status(after, "resolved", reason)
            set_status(after, "closed", reason)
            return after
        # Other alarms or violations keep the problem open; this violation is no longer one of them.
        if others:
            after["slaViolation"] = others
        else:
            after.pop("slaViolation", None)
        after["trackingRecord"] = [*(problem.get("trackingRecord") or []),
                                   tracking(f"{reason}; removed from the problem, which keeps its "
                                            "other causes")]
        return after

    return change
