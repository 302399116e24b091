"""TMF656 task resources that really act: acknowledging, unacknowledging, grouping and
ungrouping problems. Each checks every named problem first and then changes them all in one
transaction, so a task either does everything or nothing."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from connexion import request
from starlette.responses import Response

from services.tmf.authentication import call_of
from services.tmf.call import Call
from services.tmf.errors import BadRequest, Conflict, NotFound
from services.tmf.repository.events import in_transaction
from services.tmf.resource import Handler, ResourceApi, json_response

from .lifecycle import FINAL, set_status, tracking

if TYPE_CHECKING:
    from services.tmf.api import ApiContext

MAX_ANCESTORS = 1000


def problem_ref(api: ResourceApi, problem: dict[str, Any]) -> dict[str, Any]:
    ref = {"id": problem["id"], "href": api.href(problem["id"]), "@referredType": "ServiceProblem"}
    if problem.get("name"):
        ref["name"] = problem["name"]
    return ref


def _ids(refs: Any, where: str) -> list[str]:
    if not isinstance(refs, list) or not refs:
        raise BadRequest(f"{where} must list at least one problem")
    ids = []
    for i, ref in enumerate(refs):
        if not isinstance(ref, dict) or not ref.get("id"):
            raise BadRequest(f"{where}[{i}] needs the problem id")
        ids.append(str(ref["id"]))
    return list(dict.fromkeys(ids))


class Tasks:
    def __init__(self, context: ApiContext) -> None:
        self.context = context

    @property
    def problems(self) -> ResourceApi:
        return self.context.resource_apis["serviceProblem"]

    async def _load_open(self, ids: list[str], call: Call) -> dict[str, dict[str, Any]]:
        found = {}
        for problem_id in ids:
            stored = await self.problems.store.get(problem_id, call)
            if stored is None:
                raise NotFound(f"no ServiceProblem with id '{problem_id}'; nothing was changed")
            if stored.get("status") in FINAL:
                raise Conflict(f"problem {problem_id} is {stored['status']}, a final status; nothing was changed")
            found[problem_id] = stored
        return found

    async def _apply(self, changes: dict[str, Callable[[dict[str, Any]], dict[str, Any]]],
                     call: Call) -> list[dict[str, Any]]:
        async def all_of_them(session: Any) -> list[dict[str, Any]]:
            return [await self.problems.modify(problem_id, change, call, session=session, system=True)
                    for problem_id, change in changes.items()]

        changed = await in_transaction(self.context.db, all_of_them)
        self.context.outbox.committed()
        return [self.problems.present(p) for p in changed]

    async def _record(self, task: str, body: dict[str, Any]) -> Response:
        api = self.context.resource_apis[task]
        stored = await api.insert(body, call_of(request))
        presented = api.present(stored)
        return json_response(presented, 201, {"Location": presented["href"]})

    def _acknowledgement(self, task: str, result_key: str, start: str, end: str) -> Handler:
        async def run(body: Any = None) -> Response:
            body = body or {}
            call = call_of(request)
            ids = _ids(body.get("problem"), "problem")
            await self._load_open(ids, call)
            given = body.get("trackingRecord") or {}
            words = "acknowledged" if end == "acknowledged" else "unacknowledged"

            def change(problem: dict[str, Any]) -> dict[str, Any]:
                after = dict(problem)
                record = {**tracking(f"problem {words}"), **given}
                if after.get("status") == start:
                    set_status(after, end, given.get("description") or f"problem {words}", record)
                else:
                    after["trackingRecord"] = [*(after.get("trackingRecord") or []), record]
                return after

            changed = await self._apply({i: change for i in ids}, call)
            return await self._record(task, {
                "problem": [problem_ref(self.problems, p) for p in changed],
                **({"trackingRecord": given} if given else {}), result_key: changed})

        return run

    async def _ancestors(self, problem_id: str, call: Call) -> set[str]:
        seen: set[str] = set()
        frontier = [problem_id]
        while frontier and len(seen) < MAX_ANCESTORS:
            parents = []
            for current in frontier:
                stored = await self.problems.store.get(current, call)
                for ref in (stored or {}).get("parentProblem") or []:
                    if ref.get("id") and ref["id"] not in seen:
                        seen.add(ref["id"])
                        parents.append(ref["id"])
            frontier = parents
        return seen

    async def group(self, body: Any = None) -> Response:
        body = body or {}
        call = call_of(request)
        parent_id = _ids([body.get("parentProblem")], "parentProblem")[0]
        child_ids = _ids(body.get("childProblem"), "childProblem")
        if parent_id in child_ids:
            raise Conflict("a problem cannot be grouped under itself; nothing was changed")
        loaded = await self._load_open([parent_id, *child_ids], call)
        ancestors = await self._ancestors(parent_id, call)
        looping = sorted(set(child_ids) & ancestors)
        if looping:
            raise Conflict(f"grouping would make a cycle: {', '.join(looping)} already rank above {parent_id}; "
                           "nothing was changed")
        changes = grouping_changes(self.problems, loaded[parent_id], [loaded[c] for c in child_ids], link=True)
        changed = await self._apply(changes, call)
        return await self._record("problemGroup", {
            "parentProblem": problem_ref(self.problems, changed[0]),
            "childProblem": [problem_ref(self.problems, p) for p in changed[1:]]})

    async def ungroup(self, body: Any = None) -> Response:
        body = body or {}
        call = call_of(request)
        parent_id = _ids([body.get("parentProblem")], "parentProblem")[0]
        child_ids = _ids(body.get("childProblem"), "childProblem")
        loaded = await self._load_open([parent_id, *child_ids], call)
        strangers = [c for c in child_ids
                     if parent_id not in {r.get("id") for r in loaded[c].get("parentProblem") or []}]
        if strangers:
            raise Conflict(f"{', '.join(strangers)} are not grouped under {parent_id}; nothing was changed")
        changes = grouping_changes(self.problems, loaded[parent_id], [loaded[c] for c in child_ids], link=False)
        changed = await self._apply(changes, call)
        return await self._record("problemUngroup", {
            "parentProblem": problem_ref(self.problems, changed[0]),
            "childProblem": [problem_ref(self.problems, p) for p in changed[1:]]})

    def handlers(self) -> dict[str, Handler]:
        return {
            "createProblemAcknowledgement": self._acknowledgement("problemAcknowledgement", "ackProblem",
                                                                  "pending", "acknowledged"),
            "createProblemUnacknowledgement": self._acknowledgement("problemUnacknowledgement", "unackProblem",
                                                                    "acknowledged", "pending"),
            "createProblemGroup": self.group,
            "createProblemUngroup": self.ungroup,
        }


def grouping_changes(api: ResourceApi, parent: dict[str, Any], children: list[dict[str, Any]],
                     link: bool) -> dict[str, Callable[[dict[str, Any]], dict[str, Any]]]:
    """The changes that link (or unlink) children under a parent: the parent's
    ``underlyingProblem`` and each child's ``parentProblem``. The parent comes first."""
    child_ids = {c["id"] for c in children}
    child_refs = [problem_ref(api, c) for c in children]
    parent_ref = problem_ref(api, parent)
    verb = "grouped" if link else "ungrouped"

    def parent_change(problem: dict[str, Any]) -> dict[str, Any]:
        kept = [r for r in problem.get("underlyingProblem") or [] if r.get("id") not in child_ids]
        after = {**problem, "underlyingProblem": kept + (child_refs if link else [])}
        after["trackingRecord"] = [*(problem.get("trackingRecord") or []),
                                   tracking(f"{verb} {len(children)} problems under this one")]
        return after

    def child_change(problem: dict[str, Any]) -> dict[str, Any]:
        kept = [r for r in problem.get("parentProblem") or [] if r.get("id") != parent["id"]]
        after = {**problem, "parentProblem": kept + ([parent_ref] if link else [])}
        after["trackingRecord"] = [*(problem.get("trackingRecord") or []),
                                   tracking(f"{verb} {'under' if link else 'from'} problem {parent['id']}")]
        return after

    changes: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {parent["id"]: parent_change}
    changes.update({c["id"]: child_change for c in children})
    return changes
