"""What one alarm costs the database when it joins a storm's problem, straight through PyMongo,
without the suite: the write correlation makes (``Correlator.append``) on problem documents
shaped like the storm's, against the alternatives for the next step.

    python -m bench.problem_write             # 100 problems, 3 rounds of 1,000 alarms per variant
    python -m bench.problem_write --rounds 1 --alarms 300

Variants, each on its own collection of the same embedded database, run in turns round after
round, every alarm in its own transaction:

- as stored: the problem lists its alarms in ``underlyingAlarm`` (indexed by id), and each
  alarm is one ``findAndModify`` appending it, as correlation writes it today;
- without the alarm index: the same, with no index on ``underlyingAlarm.id``;
- alarms beside the problem: the problem holds no alarm list; each alarm is one insert into a
  membership collection (keyed by alarm id) and a ``findAndModify`` that moves the problem's
  version and ``lastUpdate``;
- 4 alarms per write: as stored, with 4 alarms of one root appended together.

The database's CPU time per alarm is read from /proc (Linux). Prints a markdown table; numbers
only, nothing passes or fails here.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pymongo import ASCENDING, IndexModel, MongoClient, ReturnDocument
from pymongo.client_session import ClientSession
from pymongo.collection import Collection
from pymongo.read_concern import ReadConcern
from pymongo.write_concern import WriteConcern

from bench.events import cpu_seconds
from services.problem import PROBLEM
from services.tmf.embedded import EmbeddedDatabase

OWNERS = [None, "operator"]
BASE = "https://sqm.example.net/tmf-api"


@dataclass
class Variant:
    name: str
    collection: str
    alarm_index: bool = True
    beside: bool = False
    per_write: int = 1
    cpu: list[float] = field(default_factory=list)  # database CPU seconds, per round
    wall: list[float] = field(default_factory=list)
    alarms: int = 0


def problem(n: int, parties: int, services: int, alarms: int, beside: bool) -> dict[str, Any]:
    """A problem as correlation opens it in the storm, with ``alarms`` already listed."""
    affected = [{"id": f"svc-{n}-{s}", "href": f"{BASE}/serviceInventory/v4/service/svc-{n}-{s}",
                 "name": f"customer service {n}-{s}", "@referredType": "Service"} for s in range(services)]
    document: dict[str, Any] = {
        "_id": f"problem-{n}", "id": f"problem-{n}", "name": f"lossOfSignal on access link {n}",
        "category": "alarm", "description": f"communicationsAlarm: lossOfSignal on resource access link {n}",
        "priority": 1, "reason": "lossOfSignal", "status": "pending",
        "originatorParty": {"id": "operator", "role": "originator", "@referredType": "Organization"},
        "responsibleParty": {"id": "partner-a", "role": "supplier", "@referredType": "Organization"},
        "relatedParty": [{"id": "partner-a", "role": "supplier", "@referredType": "Organization"}],
        "rootCauseResource": [{"id": f"link-{n}", "@referredType": "Resource", "name": f"access link {n}"}],
        "affectedService": affected,
        "firstAlert": {"id": f"alarm-{n}-0", "role": "alarm", "@referredType": "Alarm"},
        "trackingRecord": [{"description": "opened by alarm", "time": "2026-11-27T10:00:00.000Z"}],
        "originatingSystem": "nms-1", "creationDate": "2026-11-27T10:00:00.000Z",
        "lastUpdate": "2026-11-27T10:00:00.000Z",
        "_meta": {"parties": [f"party-{p}" for p in range(parties)], "owner": None, "version": 1,
                  "openRoot": f"resource:link-{n}", "activeAlarms": [f"alarm-{n}-{a}" for a in range(alarms)]},
    }
    if not beside:
        document["underlyingAlarm"] = [alarm_ref(f"alarm-{n}-{a}") for a in range(alarms)]
    return document


def alarm_ref(alarm_id: str) -> dict[str, Any]:
    return {"id": alarm_id, "@referredType": "Alarm", "href": f"{BASE}/alarmManagement/v4/alarm/{alarm_id}"}


def append(collection: Collection[dict[str, Any]], members: Collection[dict[str, Any]], variant: Variant,
           root: int, ids: list[str], session: ClientSession) -> None:
    key = f"resource:link-{root}"
    now = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
    if variant.beside:
        members.insert_many([{"_id": i, "problem": f"problem-{root}"} for i in ids], session=session)
        found = collection.find_one_and_update(
            {"_meta.openRoot": key, "_meta.owner": {"$in": OWNERS}},
            {"$set": {"lastUpdate": now}, "$addToSet": {"_meta.activeAlarms": {"$each": ids}},
             "$inc": {"_meta.version": 1}},
            projection={"_meta.activeAlarms": 0}, return_document=ReturnDocument.AFTER, session=session)
    else:
        found = collection.find_one_and_update(
            {"_meta.openRoot": key, "_meta.owner": {"$in": OWNERS}, "underlyingAlarm.id": {"$nin": ids}},
            {"$push": {"underlyingAlarm": {"$each": [alarm_ref(i) for i in ids]}}, "$set": {"lastUpdate": now},
             "$addToSet": {"_meta.activeAlarms": {"$each": ids}}, "$inc": {"_meta.version": 1}},
            projection={"underlyingAlarm": 0, "_meta.activeAlarms": 0}, return_document=ReturnDocument.AFTER,
            session=session)
    if found is None:
        raise RuntimeError(f"problem of root {root} not found")


def run_round(client: MongoClient[dict[str, Any]], database: str, variant: Variant, round_no: int,
              alarms: int, roots: int, pid: int) -> None:
    db = client[database]
    collection, members = db[variant.collection], db[f"{variant.collection}Alarm"]
    sequence = 0
    before_cpu, before = cpu_seconds(pid), time.perf_counter()
    for start in range(0, alarms, variant.per_write):
        root = (start // variant.per_write) % roots
        ids = [f"alarm-{root}-r{round_no}-{sequence + k}" for k in range(variant.per_write)]
        sequence += variant.per_write

        def body(session: ClientSession, root: int = root, ids: list[str] = ids) -> None:
            append(collection, members, variant, root, ids, session)

        with client.start_session() as session:
            session.with_transaction(body, read_concern=ReadConcern("snapshot"),
                                     write_concern=WriteConcern("majority", j=True))
    variant.cpu.append(cpu_seconds(pid) - before_cpu)
    variant.wall.append(time.perf_counter() - before)
    variant.alarms += alarms


def seed(client: MongoClient[dict[str, Any]], database: str, variant: Variant, roots: int, parties: int,
         services: int, listed: int) -> None:
    collection = client[database][variant.collection]
    indexes = [IndexModel([("_meta.parties", ASCENDING)]), *PROBLEM.indexes]
    if not variant.alarm_index:
        indexes = [i for i in indexes if "underlyingAlarm.id" not in i.document["key"]]
    collection.create_indexes(indexes)
    client[database][f"{variant.collection}Alarm"].create_index([("problem", ASCENDING)])
    collection.insert_many([problem(n, parties, services, listed, variant.beside) for n in range(roots)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--roots", type=int, default=100, help="problems, one per root cause (default 100)")
    parser.add_argument("--alarms", type=int, default=1000, help="alarms per variant and round (default 1000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, the variants in turn in each (default 3)")
    parser.add_argument("--listed", type=int, default=50, help="alarms each problem lists at the start (default 50)")
    parser.add_argument("--parties", type=int, default=50, help="parties who may see each problem (default 50)")
    parser.add_argument("--services", type=int, default=50, help="affected services per problem (default 50)")
    args = parser.parse_args()
    variants = [Variant("as stored (today)", "asStored"),
                Variant("without the alarm index", "noAlarmIndex", alarm_index=False),
                Variant("alarms beside the problem", "beside", beside=True),
                Variant("as stored, 4 alarms per write", "fourPerWrite", per_write=4)]
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="sqm-problem-write-") as workdir, \
            EmbeddedDatabase(str(Path(workdir) / "db"), log_path=Path(workdir) / "database.log") as database:
        assert database.process is not None
        pid = database.process.pid
        client: MongoClient[dict[str, Any]]
        with MongoClient(database.uri) as client:
            for variant in variants:
                seed(client, "bench", variant, args.roots, args.parties, args.services, args.listed)
            for round_no in range(args.rounds):
                for variant in variants:
                    run_round(client, "bench", variant, round_no, args.alarms, args.roots, pid)
    report(variants, args, load_before, os.getloadavg()[0])


def report(variants: list[Variant], args: argparse.Namespace, load_before: float, load_after: float) -> None:
    per_alarm: Callable[[Variant], float] = lambda v: sum(v.cpu) / v.alarms * 1000  # noqa: E731
    baseline = per_alarm(variants[0])
    print(f"{args.roots} problems, each with {args.parties} parties, {args.services} affected services and "
          f"{args.listed} alarms at the start; {args.rounds} rounds of {args.alarms} alarms per variant; "
          f"load average {load_before:.2f} at the start, {load_after:.2f} at the end\n")
    print("| variant | database CPU per alarm | vs as stored | alarms/s |")
    print("|---|---:|---:|---:|")
    for variant in variants:
        rate = variant.alarms / sum(variant.wall)
        print(f"| {variant.name} | {per_alarm(variant):.2f} ms | {per_alarm(variant) / baseline:.2f} | {rate:.1f} |")


if __name__ == "__main__":
    main()
