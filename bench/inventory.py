"""Service Inventory benchmark: create, get-by-id, filtered lists and impact walks over a
10,000-service graph of depth 8, against a bare Starlette + PyMongo get-by-id measured in the
same run on the same database server and collection.

    python -m bench.inventory                # full run: 10,000 services (about 10 minutes)
    python -m bench.inventory --quick        # smoke run: 500 services (under a minute)
    python -m bench.inventory --services 10000 --requests 1000 --concurrency 8

See bench/README.md for what each row measures. Prints a markdown table and writes it to
bench/results/inventory.md. Numbers only: nothing here passes or fails on timings.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from bench.events import cpu_seconds
from services.tmf.embedded import EmbeddedDatabase, free_port
from services.tmf.settings import Settings

# The same filter `sqm serve` applies: the token helper's imports reach connexion, which imports
# starlette's test client, which warns.
warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
from tests.support.auth import mint  # noqa: E402

HOST = "127.0.0.1"
INVENTORY = "/tmf-api/serviceInventory/v4"
DATABASE = "bench"
RESULTS = Path(__file__).resolve().parent / "results" / "inventory.md"
OPERATOR_PARTY = os.environ.get("SQM_OPERATOR_PARTY_ID", Settings.operator_party_id)

# Share of the services at each level, bottom (level 1, resting on resources) to top (level 8,
# customer-facing). Each service above level 1 rests on 1-3 services of the level below.
LEVEL_SHARE = (0.20, 0.17, 0.15, 0.13, 0.11, 0.09, 0.08, 0.07)
LEVELS = len(LEVEL_SHARE)
STATES = ("active",) * 16 + ("inactive", "inactive", "designed", "reserved")
BANDWIDTHS = (10, 50, 100, 500, 1000, 10_000)
SERVICE_TYPES = ("Access", "Aggregation", "Transport", "Core", "Edge", "Platform", "Connectivity", "IP-VPN")
EPOCH = datetime(2024, 1, 1, tzinfo=UTC)


# ---------------------------------------------------------------- the graph


@dataclass
class Graph:
    """What was seeded: service ids per level (index 0 = level 1) and the resource ids."""

    levels: list[list[str]] = field(default_factory=list)
    access_links: list[str] = field(default_factory=list)
    pe_routers: list[str] = field(default_factory=list)

    @property
    def services(self) -> list[str]:
        return [i for level in self.levels for i in level]


def level_sizes(total: int) -> list[int]:
    sizes = [max(1, math.floor(total * share)) for share in LEVEL_SHARE]
    sizes[0] += total - sum(sizes)
    return sizes


def service_body(level: int, index: int, below: Sequence[str], rng: random.Random,
                 access_links: Sequence[str], pe_routers: Sequence[str]) -> dict[str, Any]:
    top = level == LEVELS
    parties = [{"id": f"partner-{rng.randrange(20)}", "name": "Partner", "role": rng.choice(
        ("supplier", "supplier", "provider")), "@referredType": "Organization"}]
    if top:
        parties.append({"id": f"customer-{rng.randrange(200)}", "role": "customer",
                        "@referredType": "Organization"})
    start = EPOCH + timedelta(minutes=rng.randrange(2 * 365 * 24 * 60))
    body: dict[str, Any] = {
        "name": f"L{level}-{index}",
        "category": "CFS" if top else "RFS",
        "serviceType": SERVICE_TYPES[level - 1],
        "state": rng.choice(STATES),
        "serviceSpecification": {"id": f"spec-L{level}", "name": f"{SERVICE_TYPES[level - 1]} spec"},
        "startDate": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "relatedParty": parties,
        "serviceCharacteristic": [{"name": "bandwidthMbps", "valueType": "integer",
                                   "value": rng.choice(BANDWIDTHS)}],
    }
    if level == 1:
        # Every bottom service rides one access link (some links carry 2-3 services) and sits
        # on one of a few PE routers shared by about 50 services each: the "hot" resource.
        link = access_links[index] if index < len(access_links) else rng.choice(access_links)
        body["supportingResource"] = [
            {"id": link, "name": "access link", "@referredType": "Resource"},
            {"id": pe_routers[index % len(pe_routers)], "name": "PE router", "@referredType": "Resource"},
        ]
    else:
        body["supportingService"] = [{"id": i} for i in rng.sample(list(below), min(len(below), rng.randint(1, 3)))]
    return body


# ---------------------------------------------------------------- load


@dataclass
class Row:
    operation: str
    requests: int
    seconds: float
    latencies: list[float]
    errors: Counter[str]
    note: str = ""
    stopped_early: bool = False
    # CPU seconds the serving processes used during the row (NaN when not measured).
    cpu: float = float("nan")

    @property
    def throughput(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    @property
    def cpu_ms_per_request(self) -> float:
        return 1000 * self.cpu / self.requests if self.requests else float("nan")

    def percentile(self, p: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[max(0, math.ceil(p * len(ordered)) - 1)] * 1000


Request = tuple[str, str, Any]  # method, url, json body
Inspect = Callable[[httpx.Response], float | None]


async def drive(client: httpx.AsyncClient, make: Callable[[int], Request], count: int, *,
                concurrency: int, max_seconds: float, expect: frozenset[int] = frozenset({200, 206}),
                inspect: Inspect | None = None, start_index: int = 0) -> tuple[Row, list[float], list[Any]]:
    """Send ``count`` requests from ``concurrency`` workers (stopping early after
    ``max_seconds``); returns the row, the values ``inspect`` drew from the responses, and the
    response bodies of successful creates (for seeding)."""
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    sizes: list[float] = []
    created: list[Any] = [None] * count
    next_index = 0
    deadline = time.monotonic() + max_seconds
    stopped = False

    async def worker() -> None:
        nonlocal next_index, stopped
        while next_index < count:
            if time.monotonic() > deadline:
                stopped = True
                return
            i = next_index
            next_index += 1
            method, url, body = make(start_index + i)
            began = time.perf_counter()
            try:
                response = await client.request(method, url, json=body)
            except httpx.HTTPError as exc:
                latencies.append(time.perf_counter() - began)
                errors[type(exc).__name__] += 1
                continue
            latencies.append(time.perf_counter() - began)
            if response.status_code not in expect:
                errors[f"{response.status_code} {response.text[:160]}"] += 1
                continue
            if method == "POST":
                created[i] = response.json()["id"]
            if inspect is not None:
                value = inspect(response)
                if value is not None:
                    sizes.append(value)

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    seconds = time.perf_counter() - began
    row = Row("", len(latencies), seconds, latencies, errors, stopped_early=stopped)
    return row, sizes, created


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and of its live descendants (the workers of a
    server run with several), from /proc (Linux)."""
    total = cpu_seconds(pid)
    try:
        children = [int(c) for task in Path(f"/proc/{pid}/task").iterdir()
                    for c in (task / "children").read_text().split()]
    except OSError:
        children = []
    return total + sum(tree_cpu_seconds(child) for child in children)


def merge(name: str, rows: Sequence[Row], seconds: float) -> Row:
    errors: Counter[str] = Counter()
    for row in rows:
        errors.update(row.errors)
    return Row(name, sum(r.requests for r in rows), seconds, [x for r in rows for x in r.latencies], errors,
               stopped_early=any(r.stopped_early for r in rows), cpu=sum(r.cpu for r in rows))


def node_count(response: httpx.Response) -> float:
    return float(len(response.json().get("node", [])))


def item_count(response: httpx.Response) -> float:
    return float(response.headers.get("x-total-count", "nan"))


# ---------------------------------------------------------------- the run


@dataclass
class Options:
    services: int
    requests: int
    concurrency: int
    max_seconds: float
    seed: int
    output: Path
    quick: bool
    # Only the get-by-id row and its baseline (no list, impact or raw-find rows).
    get_only: bool = False
    # Processes serving the suite (``sqm serve --workers``); the baseline stays one process.
    workers: int = 1


async def seed_graph(client: httpx.AsyncClient, options: Options, rng: random.Random) -> tuple[Graph, Row]:
    """Create the services through the API, level by level (a level needs the one below)."""
    sizes = level_sizes(options.services)
    graph = Graph(access_links=[f"access-link-{i}" for i in range(max(1, sizes[0] * 2 // 3))],
                  pe_routers=[f"pe-router-{i}" for i in range(max(2, sizes[0] // 50))])
    rows: list[Row] = []
    began = time.perf_counter()
    for level, size in enumerate(sizes, start=1):
        below = graph.levels[-1] if graph.levels else []
        bodies = [service_body(level, i, below, rng, graph.access_links, graph.pe_routers) for i in range(size)]

        def post(i: int, bodies: list[dict[str, Any]] = bodies) -> Request:
            return "POST", f"{INVENTORY}/service", bodies[i]

        row, _, created = await drive(
            client, post, size, concurrency=options.concurrency, max_seconds=float("inf"), expect=frozenset({201}))
        if row.errors:
            example, _ = row.errors.most_common(1)[0]
            raise SystemExit(f"seeding failed at level {level}: {sum(row.errors.values())} creates failed, "
                             f"e.g. {example}")
        rows.append(row)
        graph.levels.append(created)
        print(f"  level {level}: {size} services created ({row.throughput:.0f}/s)", flush=True)
    seeding = merge("create (POST /service, seeding)", rows, time.perf_counter() - began)
    return graph, seeding


async def measure(suite_url: str, baseline_url: str, options: Options, *, token: str, mongodb_uri: str,
                  pids: dict[str, int]) -> tuple[list[Row], Row, list[str], list[ListRow]]:
    rng = random.Random(options.seed)
    limits = httpx.Limits(max_connections=options.concurrency, max_keepalive_connections=options.concurrency)
    notes: list[str] = []

    def client(base_url: str, headers: dict[str, str] | None = None) -> httpx.AsyncClient:
        # trust_env=False: no proxy from the environment ever sees these loopback requests.
        return httpx.AsyncClient(base_url=base_url, limits=limits, timeout=120.0, trust_env=False, headers=headers)

    operator = {"Authorization": f"Bearer {token}"}
    async with client(suite_url, operator) as suite, client(baseline_url) as baseline:
        print(f"seeding {options.services} services through POST /service "
              f"({options.concurrency} concurrent clients) ...", flush=True)
        graph, seeding = await seed_graph(suite, options, rng)
        sizes = [len(level) for level in graph.levels]
        notes.append(f"graph: {options.services} services in {LEVELS} levels (bottom to top "
                     f"{', '.join(map(str, sizes))}; top level category CFS), each resting on 1-3 services "
                     f"of the level below; level 1 rests on {len(graph.access_links)} access links and "
                     f"{len(graph.pe_routers)} PE routers; resource to CFS is depth {LEVELS}")

        services = graph.services
        ids = [rng.choice(services) for _ in range(options.requests + 64)]
        links = [rng.choice(graph.access_links) for _ in range(options.requests + 64)]
        routers = [rng.choice(graph.pe_routers) for _ in range(options.requests + 64)]
        bottom = [rng.choice(graph.levels[0]) for _ in range(options.requests + 64)]
        middle = [rng.choice(graph.levels[LEVELS // 2 - 1]) for _ in range(options.requests + 64)]
        tops = [rng.choice(graph.levels[-1]) for _ in range(options.requests + 64)]
        date_from = (EPOCH + timedelta(days=640)).strftime("%Y-%m-%dT%H:%M:%SZ")

        plan: list[tuple[str, httpx.AsyncClient, Callable[[int], Request], Inspect | None, str]] = [
            ("baseline get-by-id (Starlette + find_one)", baseline,
             lambda i: ("GET", f"/service/{ids[i % len(ids)]}", None), None, ""),
            ("get-by-id (GET /service/{id})", suite,
             lambda i: ("GET", f"{INVENTORY}/service/{ids[i % len(ids)]}", None), None, ""),
            ("list state=active&relatedParty.role=supplier&limit=50", suite,
             lambda i: ("GET", f"{INVENTORY}/service?state=active&relatedParty.role=supplier&limit=50"
                        f"&offset={(i % 4) * 50}", None), item_count, "matching services"),
            (f"list startDate.gte={date_from[:10]}&state=active&limit=50", suite,
             lambda i: ("GET", f"{INVENTORY}/service?startDate.gte={date_from}&state=active&limit=50"
                        f"&offset={(i % 4) * 50}", None), item_count, "matching services"),
            ("list serviceCharacteristic.value.gte=1000&limit=50", suite,
             lambda i: ("GET", f"{INVENTORY}/service?serviceCharacteristic.value.gte=1000&limit=50"
                        f"&offset={(i % 4) * 50}", None), item_count, "matching services"),
            ("resourceImpact, access link (GET /resourceImpact/{id})", suite,
             lambda i: ("GET", f"{INVENTORY}/resourceImpact/{links[i % len(links)]}", None),
             node_count, "nodes per answer"),
            ("resourceImpact, shared PE router", suite,
             lambda i: ("GET", f"{INVENTORY}/resourceImpact/{routers[i % len(routers)]}", None),
             node_count, "nodes per answer"),
            ("service impact, level-1 service (GET /service/{id}/impact)", suite,
             lambda i: ("GET", f"{INVENTORY}/service/{bottom[i % len(bottom)]}/impact", None),
             node_count, "nodes per answer"),
            (f"service impact, level-{LEVELS // 2} service", suite,
             lambda i: ("GET", f"{INVENTORY}/service/{middle[i % len(middle)]}/impact", None),
             node_count, "nodes per answer"),
            ("dependency, CFS (GET /service/{id}/dependency)", suite,
             lambda i: ("GET", f"{INVENTORY}/service/{tops[i % len(tops)]}/dependency", None),
             node_count, "nodes per answer"),
        ]
        if options.get_only:
            del plan[2:]
        # The baseline is measured first and again last; its row merges both, so that drift
        # over the run (other load on the machine, the database growing caches) weighs on
        # every ratio alike.
        plan.append(plan[0])
        rows = [seeding]
        baseline_runs: list[Row] = []
        warmup = min(32, max(options.concurrency, options.requests // 20))
        for name, target, make, inspect, unit in plan:
            print(f"measuring {name} ...", flush=True)
            await drive(target, make, warmup, concurrency=options.concurrency,
                        max_seconds=min(5.0, options.max_seconds / 4))
            server = pids["baseline" if target is baseline else "suite"]
            cpu_before = tree_cpu_seconds(server)
            row, values, _ = await drive(target, make, options.requests, concurrency=options.concurrency,
                                         max_seconds=options.max_seconds, inspect=inspect, start_index=warmup)
            row.cpu = tree_cpu_seconds(server) - cpu_before
            row.operation = name
            if target is baseline:
                baseline_runs.append(row)
                print(f"  {row.requests} requests, {row.throughput:.1f}/s", flush=True)
                continue
            if values:
                low, high, mean = min(values), max(values), sum(values) / len(values)
                row.note = (f"{low:.0f} {unit}" if low == high else
                            f"{mean:.0f} {unit} (mean; min {low:.0f}, max {high:.0f})")
            rows.append(row)
            print(f"  {row.requests} requests, {row.throughput:.1f}/s, p50 {row.percentile(0.5):.1f} ms, "
                  f"p99 {row.percentile(0.99):.1f} ms" + (f"; {row.note}" if row.note else ""), flush=True)
        baseline_row = merge(plan[0][0], baseline_runs, sum(r.seconds for r in baseline_runs))
        baseline_row.note = "measured before and after the suite rows: " + ", ".join(
            f"{r.throughput:,.0f}/s" for r in baseline_runs)
        rows.insert(1, baseline_row)
        lists = [] if options.get_only else await measure_lists(suite, mongodb_uri, options)
        return rows, baseline_row, notes, lists


# The list shapes of the performance issue, each against the same page read straight from the
# database with PyMongo: the filter, the projection the suite applies, skip and limit.
LIST_SHAPES: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("state=active", "state=active", {"state": "active"}),
    ("relatedParty.role=supplier", "relatedParty.role=supplier", {"relatedParty.role": "supplier"}),
    ("no filter", "", {}),
)
LIST_PAGE = 50
LIST_OFFSETS = (0, 50, 100, 150)


@dataclass
class ListRow:
    shape: str
    suite: Row
    raw: Row
    total: str

    @property
    def ratio(self) -> float:
        raw = self.raw.percentile(0.5)
        return self.suite.percentile(0.5) / raw if raw else float("nan")


async def drive_raw(fetch: Callable[[int], Any], count: int, *, concurrency: int, max_seconds: float) -> Row:
    """Like :func:`drive`, for database reads made here: ``fetch(i)`` is awaited ``count`` times."""
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    next_index = 0
    deadline = time.monotonic() + max_seconds
    stopped = False

    async def worker() -> None:
        nonlocal next_index, stopped
        while next_index < count:
            if time.monotonic() > deadline:
                stopped = True
                return
            i = next_index
            next_index += 1
            began = time.perf_counter()
            try:
                await fetch(i)
            except Exception as exc:  # counted and reported: the run goes on
                errors[type(exc).__name__] += 1
            latencies.append(time.perf_counter() - began)

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return Row("", len(latencies), time.perf_counter() - began, latencies, errors, stopped_early=stopped)


async def measure_lists(suite: httpx.AsyncClient, mongodb_uri: str, options: Options) -> list[ListRow]:
    """Each list shape through the suite, then the same pages straight from the database, with
    the same clients, requests and offsets."""
    from pymongo import AsyncMongoClient

    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongodb_uri)
    collection = mongo[DATABASE]["service"]
    results: list[ListRow] = []
    warmup = min(16, max(options.concurrency, options.requests // 20))
    try:
        for shape, query, mongo_filter in LIST_SHAPES:
            def request(i: int, query: str = query) -> Request:
                offset = LIST_OFFSETS[i % len(LIST_OFFSETS)]
                return "GET", f"{INVENTORY}/service?{query}&limit={LIST_PAGE}&offset={offset}", None

            async def fetch(i: int, mongo_filter: dict[str, Any] = mongo_filter) -> list[dict[str, Any]]:
                offset = LIST_OFFSETS[i % len(LIST_OFFSETS)]
                cursor = collection.find(mongo_filter, {"_id": 0, "_meta": 0}, skip=offset, limit=LIST_PAGE)
                return await cursor.to_list()

            print(f"measuring list {shape} and its raw find ...", flush=True)
            await drive(suite, request, warmup, concurrency=options.concurrency, max_seconds=5.0)
            suite_row, totals, _ = await drive(suite, request, options.requests, concurrency=options.concurrency,
                                               max_seconds=options.max_seconds, inspect=item_count,
                                               start_index=warmup)
            await drive_raw(fetch, warmup, concurrency=options.concurrency, max_seconds=5.0)
            raw_row = await drive_raw(fetch, options.requests, concurrency=options.concurrency,
                                      max_seconds=options.max_seconds)
            suite_row.operation = f"GET /service?{query}&limit={LIST_PAGE}"
            raw_row.operation = f"find({mongo_filter}).skip(offset).limit({LIST_PAGE})"
            seen = sorted({int(t) for t in totals if not math.isnan(t)})
            result = ListRow(shape, suite_row, raw_row, ", ".join(map(str, seen)) or "-")
            print(f"  suite p50 {suite_row.percentile(0.5):.1f} ms, raw p50 {raw_row.percentile(0.5):.1f} ms, "
                  f"ratio {result.ratio:.2f}", flush=True)
            results.append(result)
    finally:
        await mongo.close()
    return results


def list_table(rows: Sequence[ListRow]) -> str:
    lines = ["| list (offset 0-150) | suite req/s | suite p50 ms | suite p99 ms | raw find req/s | raw p50 ms "
             "| raw p99 ms | p50 suite / raw | X-Total-Count |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        suite, raw = row.suite, row.raw
        lines.append(f"| {row.shape} | {suite.throughput:,.1f} | {suite.percentile(0.5):,.1f} "
                     f"| {suite.percentile(0.99):,.1f} | {raw.throughput:,.1f} | {raw.percentile(0.5):,.1f} "
                     f"| {raw.percentile(0.99):,.1f} | {row.ratio:.2f} | {row.total} |")
    return "\n".join(lines)


def table(rows: Sequence[Row], baseline: Row) -> str:
    lines = ["| operation | requests | throughput (req/s) | p50 ms | p99 ms | vs baseline | server CPU ms/request "
             "| CPU vs baseline |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        ratio = row.throughput / baseline.throughput if baseline.throughput else float("nan")
        shown = f"{ratio:.2f}" if ratio >= 0.1 or ratio == 0 else f"{ratio:.3f}"
        cpu = row.cpu_ms_per_request
        # Baseline CPU per request over the row's: what throughput ratio the server's own CPU
        # cost allows when the cores are the limit, whatever else runs on the machine.
        cpu_ratio = baseline.cpu_ms_per_request / cpu if cpu > 0 else float("nan")
        lines.append(f"| {row.operation} | {row.requests} | {row.throughput:,.1f} | {row.percentile(0.5):,.1f} "
                     f"| {row.percentile(0.99):,.1f} | {shown} | "
                     + ("" if math.isnan(cpu) else f"{cpu:.2f}") + " | "
                     + ("" if math.isnan(cpu_ratio) else f"{cpu_ratio:.2f}") + " |")
    return "\n".join(lines)


def report(rows: Sequence[Row], baseline: Row, notes: list[str], options: Options, started: datetime,
           elapsed: float, load_before: tuple[float, float, float], lists: Sequence[ListRow] = ()) -> str:
    lines = [
        "# Service Inventory benchmark",
        "",
        "`" + " ".join(["python -m bench.inventory", *sys.argv[1:]]) + "`",
        "",
        f"{started:%Y-%m-%d %H:%M} UTC; {platform.python_implementation()} {platform.python_version()} on "
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs; embedded database "
        f"(SecantusDB, fresh temporary storage dir); concurrency {options.concurrency}; "
        f"at most {options.requests} requests or {options.max_seconds:.0f} s per row; whole run {elapsed:.0f} s; "
        f"load average {load_before[0]:.2f} at the start, {os.getloadavg()[0]:.2f} at the end.",
        "",
        table(rows, baseline),
        "",
        *(f"- {note}" for note in notes),
    ]
    if lists:
        lines += ["", "Lists against the same pages read straight from the database (PyMongo, same clients):",
                  "", list_table(lists)]
        for row in lists:
            for part in (row.suite, row.raw):
                if part.errors:
                    example, _ = part.errors.most_common(1)[0]
                    lines.append(f"- {part.operation}: {sum(part.errors.values())} unexpected answers, e.g. {example}")
                if part.stopped_early:
                    lines.append(f"- {part.operation}: stopped at the {options.max_seconds:.0f} s limit")
    for row in rows:
        if row.note:
            lines.append(f"- {row.operation}: {row.note}")
        if row.stopped_early:
            lines.append(f"- {row.operation}: stopped at the {options.max_seconds:.0f} s limit")
        if row.errors:
            example, _ = row.errors.most_common(1)[0]
            lines.append(f"- {row.operation}: {sum(row.errors.values())} unexpected answers, e.g. {example}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- processes


def start_server(kind: str, uri: str, workdir: Path, workers: int = 1) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port(HOST)
    log = open(workdir / f"{kind}.log", "ab")  # handed to the child, closed here after
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.servers", kind, "--host", HOST, "--port", str(port),
         "--mongodb-uri", uri, "--database", DATABASE, "--workers", str(workers)],
        stdout=log, stderr=log, stdin=subprocess.DEVNULL, cwd=Path(__file__).resolve().parent.parent,
    )
    log.close()
    return process, f"http://{HOST}:{port}"


def wait_ready(process: subprocess.Popen[bytes], url: str, log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    with httpx.Client(trust_env=False, timeout=2.0) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise SystemExit(f"{url}: the server exited with {process.returncode}; see {log}:\n"
                                 + log.read_text(errors="replace")[-2000:])
            try:
                if client.get(f"{url}/health").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
    raise SystemExit(f"{url}: the server did not answer within {timeout:.0f} s")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def parse_args(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m bench.inventory", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 500 services, 200 requests and 5 s per row (under a minute)")
    parser.add_argument("--services", type=int, default=None, help="services to seed (default 10000)")
    parser.add_argument("--requests", type=int, default=None, help="measured requests per row (default 1000)")
    parser.add_argument("--max-seconds", type=float, default=None,
                        help="time limit per row; a row stops early when reached (default 30)")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent clients (default 8)")
    parser.add_argument("--seed", type=int, default=1, help="random seed for the graph and the request mix")
    parser.add_argument("--output", type=Path, default=RESULTS, help=f"markdown result file (default {RESULTS})")
    parser.add_argument("--get-only", action="store_true",
                        help="measure only get-by-id against its baseline (no list, impact or raw-find rows)")
    parser.add_argument("--workers", type=int, default=1,
                        help="processes serving the suite, as sqm serve --workers (default 1; the baseline stays one)")
    args = parser.parse_args(argv)
    defaults = (500, 200, 5.0) if args.quick else (10_000, 1000, 30.0)
    options = Options(
        services=args.services if args.services is not None else defaults[0],
        requests=args.requests if args.requests is not None else defaults[1],
        max_seconds=args.max_seconds if args.max_seconds is not None else defaults[2],
        concurrency=args.concurrency, seed=args.seed, output=args.output, quick=args.quick,
        get_only=args.get_only, workers=args.workers,
    )
    if (options.services < 8 * LEVELS or options.requests < 1 or options.concurrency < 1 or options.max_seconds <= 0
            or options.workers < 1):
        parser.error(f"--services needs at least {8 * LEVELS}; "
                     "--requests, --concurrency, --max-seconds and --workers must be positive")
    return options


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    started = datetime.now(UTC)
    load_before = os.getloadavg()
    clock = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="sqm-bench-"))
    processes: list[subprocess.Popen[bytes]] = []
    try:
        with EmbeddedDatabase(str(workdir / "db"), log_path=workdir / "database.log") as database:
            suite, suite_url = start_server("suite", database.uri, workdir, options.workers)
            processes.append(suite)
            wait_ready(suite, suite_url, workdir / "suite.log")
            baseline, baseline_url = start_server("baseline", database.uri, workdir)
            processes.append(baseline)
            wait_ready(baseline, baseline_url, workdir / "baseline.log")
            # The suite made its signing key when it started: the benchmark calls as the operator.
            token = mint(database.uri, DATABASE, suite_url, party_id=OPERATOR_PARTY)
            rows, baseline_row, notes, lists = asyncio.run(
                measure(suite_url, baseline_url, options, token=token, mongodb_uri=database.uri,
                        pids={"suite": suite.pid, "baseline": baseline.pid}))
            for process in processes:
                stop(process)
    except BaseException:
        for process in processes:
            stop(process)
        print(f"the server and database logs are kept in {workdir}", file=sys.stderr)
        raise
    shutil.rmtree(workdir, ignore_errors=True)
    text = report(rows, baseline_row, notes, options, started, time.perf_counter() - clock, load_before, lists)
    print()
    print(text)
    options.output.parent.mkdir(parents=True, exist_ok=True)
    options.output.write_text(text)
    print(f"written to {options.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
