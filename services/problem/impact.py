"""Which services each problem impacts, kept beside the problems rather than in them.

A problem found by correlation impacts every service above its root cause (about 150 in a large
inventory). Kept in the problem as an indexed list, that impact was rewritten in the index at
every alarm the problem took, because the database rewrites all index entries of a document it
updates. Here it is one small document per problem, written when the problem opens and when its
impact changes, and indexed for the two questions asked of it: which problems impact these
services.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from pymongo import ASCENDING, IndexModel

if TYPE_CHECKING:
    from pymongo.asynchronous.collection import AsyncCollection

    from services.tmf.api import ApiContext

IMPACT_COLLECTION = "serviceProblemImpact"
# Made at start-up with the API's other collections (``ApiDeclaration.collections``).
IMPACT_INDEXES = (IndexModel([("services", ASCENDING)]),)
# A long ``$in`` costs the embedded database time that grows with its square: asked in chunks.
CHUNK = 100
# Problems whose written impact this process remembers, so that an unchanged impact is not
# written again at every alarm; forgotten wholesale past this (the next write re-learns it).
REMEMBERED = 100_000


class ImpactRecords:
    """The impact of each problem: ``{_id: problem id, services: [service ids]}``."""

    def __init__(self, context: ApiContext) -> None:
        self.context = context
        self._written: dict[str, tuple[str, ...]] = {}

    @property
    def collection(self) -> AsyncCollection[dict[str, Any]]:
        return self.context.db[IMPACT_COLLECTION]

    async def record(self, problem_id: str, services: list[str]) -> None:
        """Set the services ``problem_id`` impacts; nothing is written when this process wrote
        the same impact last."""
        wanted = tuple(services)
        if self._written.get(problem_id) == wanted:
            return
        await self.collection.replace_one({"_id": problem_id}, {"_id": problem_id, "services": list(wanted)},
                                          upsert=True)
        if len(self._written) >= REMEMBERED:
            self._written.clear()
        self._written[problem_id] = wanted

    async def problems_impacting(self, services: Iterable[str]) -> list[str]:
        """Ids of the problems that impact any of ``services``."""
        wanted = list(dict.fromkeys(services))
        if not wanted:
            return []
        found: dict[str, None] = {}
        for start in range(0, len(wanted), CHUNK):
            cursor = self.collection.find({"services": {"$in": wanted[start:start + CHUNK]}}, {"_id": 1})
            found.update((str(d["_id"]), None) for d in await cursor.to_list())
        return list(found)
