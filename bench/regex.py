"""What linear-time regular expressions cost on a list: the same patterns answered by the suite
(RE2 over the candidates when the database must not run them, the database itself for plain
literals) and by the database running ``$regex`` itself, as before, on the same data.

    python -m bench.regex [--services 2000] [--rounds 20]

Prints a table with the load average; ratios are suite / raw database find of the same page.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
import warnings
from typing import Any

warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")

from pymongo import MongoClient  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from services.app import create_app  # noqa: E402
from services.tmf.embedded import EmbeddedDatabase  # noqa: E402
from services.tmf.settings import Settings  # noqa: E402
from tests.support.auth import bearer  # noqa: E402

INVENTORY = "/tmf-api/serviceInventory/v4"
PATTERNS = [
    ("literal prefix (database)", "^svc-1"),
    ("literal infix (database)", "vpn-7"),
    ("quantified (RE2 scan)", "svc-1.*-vpn-7"),
    ("alternation (RE2 scan)", "svc-(12|34)"),
    ("catastrophic for backtracking (RE2 scan)", "(a+)+b"),
]


def seed(uri: str, database: str, count: int) -> None:
    with MongoClient(uri) as client:
        documents = [{"_id": f"s{i}", "id": f"s{i}", "name": f"svc-{i}-vpn-{i % 10}", "state": "active",
                      "serviceSpecification": {"id": "spec"}, "@type": "Service",
                      "_meta": {"version": 1, "owner": None, "parties": []}} for i in range(count)]
        # One adversarial name: 22 a's then no b costs a backtracking engine about 2^22 steps
        # for (a+)+b, and each further a doubles it; RE2 reads it once.
        documents.append({**documents[0], "_id": "adversarial", "id": "adversarial", "name": "a" * 22 + "c"})
        client[database]["service"].insert_many(documents)


def timed(call: Any, rounds: int) -> float:
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.regex", description=__doc__.split("\n\n")[0])
    parser.add_argument("--services", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=20)
    options = parser.parse_args()
    load_before = os.getloadavg()
    rows = []
    with EmbeddedDatabase(":memory:") as db:
        database = f"bench_{uuid.uuid4().hex[:8]}"
        settings = Settings(mongodb_uri=db.uri, database=database, public_url="http://testserver")
        with TestClient(create_app(settings), base_url="http://testserver") as client, MongoClient(db.uri) as raw:
            client.headers.update(bearer(settings))
            seed(db.uri, database, options.services)
            collection = raw[database]["service"]
            for label, pattern in PATTERNS:
                def suite(pattern: str = pattern) -> None:
                    answer = client.get(f"{INVENTORY}/service", params={"name.regex": pattern, "limit": 50})
                    assert answer.status_code in (200, 206), answer.text

                def database_run(pattern: str = pattern) -> None:
                    collection.find({"name": {"$regex": pattern}}, {"_id": 0, "_meta": 0}).limit(50).to_list()

                ours = timed(suite, options.rounds)
                # The backtracking engine on a catastrophic pattern is what RE2 replaces: one run only.
                theirs = timed(database_run, 1 if "catastrophic" in label else options.rounds)
                rows.append((label, pattern, ours, theirs))
    load_after = os.getloadavg()
    print(f"\n{options.services} services, median of {options.rounds} requests; load average "
          f"{load_before[0]:.2f} at the start, {load_after[0]:.2f} at the end.\n")
    print("| pattern | `name.regex=` | suite p50 ms | database `$regex` p50 ms | suite / database |")
    print("|---|---|---:|---:|---:|")
    for label, pattern, ours, theirs in rows:
        print(f"| {label} | `{pattern}` | {ours:,.1f} | {theirs:,.1f} | {ours / theirs:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
