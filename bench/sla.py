"""SLA benchmark: measurement intake (POST /measurement, batches of 1,000 samples, with the
early-violation check running) against a bare PyMongo ``insert_many`` of the same batches, and
the time to close a month for 1,000 SLAs (POST /slaEvaluation with close=true), measured in the
same run on the same database server.

    python -m bench.sla                  # full run: 1,000 SLAs with a month of hourly probes (about 6 minutes)
    python -m bench.sla --quick          # smoke run: 50 SLAs (under a minute)
    python -m bench.sla --slas 1000 --probe-minutes 60 --concurrency 4 --batches 200

See bench/README.md for what each row measures. Prints markdown tables and writes them to
bench/results/sla.md. Numbers only: nothing here passes or fails on timings.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import random
import shutil
import signal
import sys
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

# The same filter `sqm serve` applies: connexion imports starlette's test client, which warns.
warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")

import httpx  # noqa: E402
from pymongo import AsyncMongoClient  # noqa: E402

from bench.events import cpu_seconds, percentile, start_process  # noqa: E402
from bench.inventory import Row, stop, wait_ready  # noqa: E402
from services.sla import COMPACT_GRACE  # noqa: E402
from services.sla.repository import BUCKET_SECONDS, BUCKETS, READ_BATCH, BucketWrites, MeasurementStore, StoredSample  # noqa: E402
from services.tmf.auth.identity import DEFAULT_SCOPES, OPERATOR  # noqa: E402
from services.tmf.auth.issuer import TokenIssuer  # noqa: E402
from services.tmf.auth.settings import AuthSettings  # noqa: E402
from services.tmf.embedded import EmbeddedDatabase, free_port  # noqa: E402

HOST = "127.0.0.1"
SLA_API = "/tmf-api/slaManagement/v4"
DATABASE = "bench"
RESULTS = Path(__file__).resolve().parent / "results" / "sla.md"
JSON_HEADERS = {"content-type": "application/json"}
# Longer than any run: the benchmark calls as one operator client throughout.
TOKEN_LIFETIME_SECONDS = 12 * 3600

OCTOBER = datetime(2026, 10, 1, tzinfo=UTC)
NOVEMBER = datetime(2026, 11, 1, tzinfo=UTC)
OCTOBER_MINUTES = 31 * 24 * 60  # 44,640
# The suite's fixed clock: October 2026 has ended, so its samples are in the past and it can be
# closed; the background scheduler is kept out of the way (SQM_SLA_CLOSE_INTERVAL_SECONDS).
NOW = NOVEMBER + timedelta(minutes=5)
CLOSE_INTERVAL_SECONDS = "1000000000"

TIERS = [{"threshold": 99.9, "rebatePercent": 10}, {"threshold": 99.5, "rebatePercent": 25},
         {"threshold": 99.0, "rebatePercent": 50}]
CHARGE = 1000
PROVIDER = "operator"
CUSTOMERS = 50
# Downtime of the SLAs that miss their month, in minutes: 1, 4 and 8 hours, one third each
# (99.87 %, 99.46 %, 98.92 % of October: the 10, 25 and 50 % tiers).
DOWNTIMES = (60, 240, 480)
LATENCY_EVERY_MINUTES = 5  # the collector sends a latency.p95 sample per service every 5 minutes
WARMUP_BATCHES = 4
READ_SAMPLE = 250  # SLAs whose month the read baseline reads
COMMANDS_SHOWN = 6
# The SLA with a full month of one-minute samples: three outages, 100 minutes in all (99.776 %).
FULL_OUTAGES = ((datetime(2026, 10, 10, 10, 0, tzinfo=UTC), 30), (datetime(2026, 10, 20, 3, 0, tzinfo=UTC), 30),
                (datetime(2026, 10, 30, 15, 0, tzinfo=UTC), 40))
FULL_EVALUATIONS = 3


def stamp(instant: datetime) -> str:
    return instant.strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------- data


def availability_rule(reference: float = 99.9) -> dict[str, Any]:
    return {"id": "availability", "metric": "availability", "operator": ".ge", "referenceValue": reference,
            "unit": "%", "rebateTier": TIERS}


def sla_body(name: str, service: str, provider: str, consumer: str, latency: bool = False) -> dict[str, Any]:
    rules = [availability_rule()]
    if latency:
        rules.append({"id": "latency", "metric": "latency.p95", "operator": ".le", "referenceValue": 30,
                      "unit": "ms", "rebateTier": [{"threshold": 30, "rebatePercent": 5}]})
    return {
        "name": name,
        "relatedParty": [{"id": provider, "name": provider, "role": "SLAProvider", "@referredType": "Organization"},
                         {"id": consumer, "name": consumer, "role": "SLAConsumer", "@referredType": "Organization"}],
        "relatedEntity": [{"id": service, "role": "coveredService", "@referredType": "Service"}],
        "evaluationPeriod": {"kind": "month", "timeZone": "UTC"},
        "charge": {"unit": "EUR", "value": CHARGE},
        "rule": rules,
    }


def batches(samples: Iterator[dict[str, Any]], size: int, count: int | None = None) -> list[list[dict[str, Any]]]:
    out: list[list[dict[str, Any]]] = []
    current: list[dict[str, Any]] = []
    for sample in samples:
        current.append(sample)
        if len(current) == size:
            out.append(current)
            current = []
            if count is not None and len(out) == count:
                return out
    if current and count is None:
        out.append(current)
    return out


@dataclass
class Collector:
    """What a PM collector sends: every minute an availability probe of every service, every
    ``LATENCY_EVERY_MINUTES`` a latency.p95 sample of every service, in time order from the
    start of October. Some services have an outage of ``outage_minutes`` (``outage_share`` of
    them, at least one) and as many a short blip of ``blip_minutes``, at random minutes of the
    stream."""

    services: int
    minutes: int
    seed: int
    outage_share: float = 0.03
    outage_minutes: int = 60
    blip_share: float = 0.03
    blip_minutes: int = 3
    down: dict[int, tuple[int, int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        rng = random.Random(self.seed)
        outages = max(1, round(self.services * self.outage_share))
        blips = max(1, round(self.services * self.blip_share))
        for i in rng.sample(range(self.services), min(self.services, outages + blips)):
            length = self.outage_minutes if outages > 0 else self.blip_minutes
            outages -= 1
            start = rng.randrange(max(1, self.minutes - length))
            self.down[i] = (start, start + length)

    def samples(self, prefix: str) -> Iterator[dict[str, Any]]:
        rng = random.Random(self.seed + 1)
        for minute in range(self.minutes):
            at = stamp(OCTOBER + timedelta(minutes=minute))
            for i in range(self.services):
                start, end = self.down.get(i, (0, 0))
                yield {"metric": "availability", "value": 0 if start <= minute < end else 1, "observedAt": at,
                       "service": {"id": f"{prefix}-{i}"}, "interval": 60}
            if minute % LATENCY_EVERY_MINUTES == 0:
                for i in range(self.services):
                    yield {"metric": "latency.p95", "value": round(rng.uniform(5, 40), 1), "observedAt": at,
                           "service": {"id": f"{prefix}-{i}"}, "interval": LATENCY_EVERY_MINUTES * 60}


def minutes_for(samples: int, services: int) -> int:
    per_minute = services * (1 + 1 / LATENCY_EVERY_MINUTES)
    return min(OCTOBER_MINUTES, math.ceil(samples / per_minute) + LATENCY_EVERY_MINUTES)


def downtime_of(index: int) -> int:
    """Minutes down in October for closing SLA ``index``: the odd ones miss their month."""
    return DOWNTIMES[(index // 2) % len(DOWNTIMES)] if index % 2 else 0


def month_probes(slas: int, probe_minutes: int) -> Iterator[dict[str, Any]]:
    """A month of probes for every closing SLA's service, one every ``probe_minutes``, in time
    order; an SLA's downtime is one outage starting on a day and hour that depend on its index."""
    probes = OCTOBER_MINUTES // probe_minutes
    down: dict[int, tuple[int, int]] = {}
    for i in range(slas):
        minutes = downtime_of(i)
        if minutes:
            first = (24 * (1 + i % 28) + i % 24) * 60 // probe_minutes
            down[i] = (first, first + math.ceil(minutes / probe_minutes))
    for k in range(probes):
        at = stamp(OCTOBER + timedelta(minutes=k * probe_minutes))
        for i in range(slas):
            start, end = down.get(i, (0, 0))
            yield {"metric": "availability", "value": 0 if start <= k < end else 1, "observedAt": at,
                   "service": {"id": f"close-{i}"}, "interval": probe_minutes * 60}


def bucket_documents(samples: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """The documents ``MeasurementStore.add`` makes of these samples (one per service, metric and
    hour), to write them in bulk; ``check_bucket_shape`` compares the two in every run."""
    grouped: dict[tuple[str, str, int], list[list[float]]] = {}
    for sample in samples:
        at_ms = int(datetime.fromisoformat(sample["observedAt"].replace("Z", "+00:00")).timestamp() * 1000)
        hour = at_ms // 1000 // BUCKET_SECONDS * BUCKET_SECONDS
        grouped.setdefault((sample["service"]["id"], sample["metric"], hour), []).append(
            [at_ms, float(sample["value"]), float(sample["interval"])])
    for (service, metric, hour), rows in grouped.items():
        yield {"_id": f"{service}|{metric}|{hour}", "service": service, "metric": metric, "hour": hour,
               "samples": rows, "n": len(rows)}


async def check_bucket_shape(mongo: AsyncMongoClient[dict[str, Any]]) -> None:
    """Bulk seeding writes what the store would write; if the store's shape changed, say so."""
    scratch = mongo[f"{DATABASE}_shape"]
    samples = list(month_probes(3, 20))[:12]
    await MeasurementStore(scratch).add(stored(samples))
    made = {d["_id"]: d async for d in scratch[BUCKETS].find({})}
    ours = {d["_id"]: d for d in bucket_documents(iter(samples))}
    await mongo.drop_database(scratch.name)
    if made != ours:
        raise SystemExit("MeasurementStore.add no longer writes the bucket documents bench/sla.py seeds in bulk; "
                         f"update bucket_documents (store: {next(iter(made.values()), None)}, "
                         f"bench: {next(iter(ours.values()), None)})")


def expected_result(index: int, probe_minutes: int) -> tuple[float, float]:
    """The availability (rounded as the suite reports it) and the rebate in EUR of SLA ``index``."""
    probes = OCTOBER_MINUTES // probe_minutes
    down = math.ceil(downtime_of(index) / probe_minutes)
    actual = (probes - down) / probes * 100
    percent: float = 0
    if actual < 99.9:
        percent = max(t["rebatePercent"] for t in TIERS if actual < t["threshold"])
    return round(actual, 4), CHARGE * percent / 100


def full_month() -> Iterator[dict[str, Any]]:
    for minute in range(OCTOBER_MINUTES):
        at = OCTOBER + timedelta(minutes=minute)
        down = any(start <= at < start + timedelta(minutes=length) for start, length in FULL_OUTAGES)
        yield {"metric": "availability", "value": 0 if down else 1, "observedAt": stamp(at),
               "service": {"id": "full-0"}, "interval": 60}


def encode(batch: list[dict[str, Any]]) -> bytes:
    return json.dumps(batch, separators=(",", ":")).encode()


def stored(batch: list[dict[str, Any]]) -> list[StoredSample]:
    return [StoredSample(s["service"]["id"], s["metric"],
                         int(datetime.fromisoformat(s["observedAt"].replace("Z", "+00:00")).timestamp() * 1000),
                         float(s["value"]), float(s["interval"])) for s in batch]


def documents(batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The samples as a plain collection would hold them, one document each."""
    return [{"service": {"id": s["service"]["id"]}, "metric": s["metric"], "value": s["value"],
             "observedAt": datetime.fromisoformat(s["observedAt"].replace("Z", "+00:00")),
             "interval": s["interval"]} for s in batch]


def has_down(batch: list[dict[str, Any]]) -> bool:
    return any(s["metric"] == "availability" and s["value"] == 0 for s in batch)


# ---------------------------------------------------------------- load


class Unexpected(Exception):
    pass


@dataclass
class Run:
    row: Row
    results: list[Any]
    latency_of: dict[int, float]
    clients: int


async def run_jobs(count: int, job: Callable[[int], Awaitable[Any]], *, concurrency: int,
                   max_seconds: float = float("inf")) -> Run:
    """Run ``job(0..count-1)`` from ``concurrency`` workers, each starting its next job as soon as
    the last one finished, stopping early after ``max_seconds``."""
    latencies: list[float] = []
    latency_of: dict[int, float] = {}
    errors: Counter[str] = Counter()
    results: list[Any] = [None] * count
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
                results[i] = await job(i)
            except (Unexpected, httpx.HTTPError) as exc:
                errors[str(exc)[:200] or type(exc).__name__] += 1
            finally:
                latency_of[i] = time.perf_counter() - began
                latencies.append(latency_of[i])

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    row = Row("", len(latencies), time.perf_counter() - began, latencies, errors, stopped_early=stopped)
    return Run(row, results, latency_of, concurrency)


@dataclass
class Measured:
    """One row: ``row.requests`` jobs (batches or closes) of ``items_per_job`` items each."""

    name: str
    run: Run
    items: int
    unit: str
    note: str = ""
    cpu: dict[str, float] = field(default_factory=dict)
    commands: dict[CommandKey, tuple[int, float]] = field(default_factory=dict)

    @property
    def items_per_second(self) -> float:
        return self.items / self.run.row.seconds if self.run.row.seconds > 0 else 0.0


CommandKey = tuple[str, str, str]  # command, collection, filter fields


class Cpu:
    """CPU seconds used by each process between ``start`` and ``stop``, and the suite's database
    commands in that time (``commands``: count and round-trip seconds per command, collection
    and filter fields), from bench/sla_server.py's command listener."""

    def __init__(self, pids: dict[str, int], stats: Path | None = None) -> None:
        self.pids = pids
        self.stats = stats
        self.seq = 0
        self.before: dict[str, float] = {}
        self.commands_before: dict[CommandKey, tuple[int, float]] = {}
        self.commands: dict[CommandKey, tuple[int, float]] = {}

    def _commands(self) -> dict[CommandKey, tuple[int, float]]:
        if self.stats is None:
            return {}
        self.seq += 1
        os.kill(self.pids["suite"], signal.SIGUSR1)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                found = json.loads(self.stats.read_text())
            except (OSError, ValueError):
                found = {}
            if found.get("seq", 0) >= self.seq:
                self.seq = found["seq"]
                return {(name, collection, fields): (count, seconds)
                        for name, collection, fields, count, seconds in found["commands"]}
            time.sleep(0.01)
        return {}

    def measured(self, name: str, run: Run, items: int, unit: str) -> Measured:
        """The row of what ran since ``start``, with what it used."""
        used = self.stop()
        return Measured(name, run, items, unit, cpu=used, commands=self.commands)

    def start(self) -> None:
        self.commands_before = self._commands()
        self.before = {name: cpu_seconds(pid) for name, pid in self.pids.items()}

    def stop(self) -> dict[str, float]:
        used = {name: cpu_seconds(pid) - self.before[name] for name, pid in self.pids.items()}
        after = self._commands()
        self.commands = {}
        for key, (count, seconds) in after.items():
            count_before, seconds_before = self.commands_before.get(key, (0, 0.0))
            if count > count_before:
                self.commands[key] = (count - count_before, seconds - seconds_before)
        return used


# ---------------------------------------------------------------- the run


@dataclass
class Options:
    services: int
    batches: int
    batch: int
    concurrency: int
    max_seconds: float
    slas: int
    probe_minutes: int
    full_resolution: bool
    intake: bool
    as_shipped: bool
    compact: bool
    seed: int
    profile: Path | None
    output: Path
    quick: bool


@dataclass
class Results:
    ingestion: list[Measured] = field(default_factory=list)
    baselines: list[Measured] = field(default_factory=list)
    closing: list[Measured] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


async def post_json(client: httpx.AsyncClient, path: str, body: Any, expect: int = 201) -> Any:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = await client.post(f"{SLA_API}{path}", content=content, headers=JSON_HEADERS)
    if response.status_code != expect:
        raise Unexpected(f"{path}: {response.status_code} {response.text[:160]}")
    return response.json()


async def create_slas(client: httpx.AsyncClient, bodies: list[dict[str, Any]], concurrency: int) -> Run:
    run = await run_jobs(len(bodies), lambda i: post_json(client, "/sla", bodies[i]), concurrency=concurrency)
    if run.row.errors:
        example, _ = run.row.errors.most_common(1)[0]
        raise SystemExit(f"creating SLAs failed: {sum(run.row.errors.values())} creates failed, e.g. {example}")
    return run


def close_body(sla_id: str, close: bool = True) -> bytes:
    return encode({"sla": {"id": sla_id}, "close": close,  # type: ignore[arg-type]
                   "period": {"startDateTime": stamp(OCTOBER), "endDateTime": stamp(NOVEMBER)}})


async def total_count(client: httpx.AsyncClient, path: str) -> int:
    # In the path itself: httpx's params= would replace the path's query string.
    response = await client.get(f"{SLA_API}{path}{'&' if '?' in path else '?'}limit=1")
    return int(response.headers.get("x-total-count", "-1"))


async def measure_ingestion(suite: httpx.AsyncClient, mongo: AsyncMongoClient[dict[str, Any]], options: Options,
                            results: Results, cpu: Cpu) -> None:
    total = (WARMUP_BATCHES + options.batches) * options.batch
    collector = Collector(options.services, minutes_for(total, options.services), options.seed)
    covered = batches(collector.samples("svc"), options.batch, WARMUP_BATCHES + options.batches)
    free = batches(collector.samples("free"), options.batch, WARMUP_BATCHES + options.batches)
    if len(covered) < WARMUP_BATCHES + options.batches:
        raise SystemExit("--batches x --batch is more than a month of samples for --services; ask for fewer")
    measured = covered[WARMUP_BATCHES:]
    down_batches = {i for i, batch in enumerate(measured) if has_down(batch)}
    span = (datetime.fromisoformat(measured[-1][-1]["observedAt"].replace("Z", "+00:00"))
            - datetime.fromisoformat(covered[0][0]["observedAt"].replace("Z", "+00:00")))
    outages = sum(1 for start, end in collector.down.values() if end - start == collector.outage_minutes)
    blips = len(collector.down) - outages
    results.notes.append(
        f"intake stream: {options.services} services, each with one availability sample a minute (interval 60 s) "
        f"and a latency.p95 sample every {LATENCY_EVERY_MINUTES} minutes (interval 300 s), in time order from "
        f"{stamp(OCTOBER)} ({span.total_seconds() / 3600:.1f} hours of October in {len(covered)} batches of "
        f"{options.batch}, the first {WARMUP_BATCHES} unmeasured); outages: {outages} of the services down "
        f"{collector.outage_minutes} minutes and {blips} down {collector.blip_minutes} minutes, so "
        f"{len(down_batches)} of the {len(measured)} measured batches hold down samples")

    print(f"creating {options.services} SLAs for the intake rows ...", flush=True)
    await create_slas(suite, [sla_body(f"intake {i}", f"svc-{i}", PROVIDER, f"customer-{i % CUSTOMERS}",
                                       latency=True) for i in range(options.services)], options.concurrency)

    plain = mongo[DATABASE]["baseline_sample"]
    direct = MeasurementStore(mongo[f"{DATABASE}_direct"], BucketWrites())  # as the suite makes it
    await direct.ensure_indexes()

    async def baseline(name: str) -> Measured:
        docs = [documents(batch) for batch in covered]  # fresh each run: insert_many adds _id
        for batch in docs[:WARMUP_BATCHES]:
            await plain.insert_many(batch)
        cpu.start()
        run = await run_jobs(len(measured), lambda i: plain.insert_many(docs[WARMUP_BATCHES + i]),
                             concurrency=options.concurrency, max_seconds=options.max_seconds)
        return cpu.measured(name, run, run.row.requests * options.batch, "samples")

    async def direct_add() -> Measured:
        rows = [stored(batch) for batch in covered]
        for batch in rows[:WARMUP_BATCHES]:
            await direct.add(batch)
        cpu.start()
        run = await run_jobs(len(measured), lambda i: direct.add(rows[WARMUP_BATCHES + i]),
                             concurrency=options.concurrency, max_seconds=options.max_seconds)
        return cpu.measured("MeasurementStore.add alone (hour buckets, PyMongo bulk upserts, no HTTP)", run,
                        run.row.requests * options.batch, "samples")

    async def through_api(name: str, stream: list[list[dict[str, Any]]]) -> Measured:
        bodies = [encode(batch) for batch in stream]
        for body in bodies[:WARMUP_BATCHES]:
            await post_json(suite, "/measurement", body)
        cpu.start()
        run = await run_jobs(len(measured), lambda i: post_json(suite, "/measurement", bodies[WARMUP_BATCHES + i]),
                             concurrency=options.concurrency, max_seconds=options.max_seconds)
        return cpu.measured(name, run, sum(r["accepted"] for r in run.results if r), "samples")

    plan: list[tuple[str, Callable[[], Awaitable[Measured]]]] = [
        ("baseline", lambda: baseline("baseline: insert_many, one document per sample (PyMongo)")),
        ("direct", direct_add),
        ("free", lambda: through_api("POST /measurement, services no SLA covers (no evaluation)", free)),
        ("covered", lambda: through_api("POST /measurement, services covered by SLAs (evaluation on)", covered)),
        ("baseline", lambda: baseline("baseline: insert_many, one document per sample (PyMongo)")),
    ]
    for key, step in plan:
        measured_row = await step()
        print(f"  {measured_row.name}: {measured_row.items_per_second:,.0f} samples/s, "
              f"{measured_row.run.row.throughput:.1f} batches/s, p50 {measured_row.run.row.percentile(0.5):.0f} ms, "
              f"p99 {measured_row.run.row.percentile(0.99):.0f} ms", flush=True)
        if key == "baseline":
            results.baselines.append(measured_row)
            continue
        if key == "covered":
            raised = sum(r["violationsRaised"] for r in measured_row.run.results if r)
            unmatched = sum(r["unmatched"] for r in measured_row.run.results if r)
            with_down = [s for i, s in measured_row.run.latency_of.items() if i in down_batches]
            without = [s for i, s in measured_row.run.latency_of.items() if i not in down_batches]
            measured_row.note = (
                f"{raised} provisional violations raised, {unmatched} samples unmatched; batch latency p50 "
                f"{percentile(with_down, 0.5):.0f} ms for the {len(with_down)} batches holding down samples, "
                f"{percentile(without, 0.5):.0f} ms for the {len(without)} others")
        results.ingestion.append(measured_row)


@dataclass
class Closing:
    ids: list[str]
    expected: list[tuple[float, float]]


async def seed_closing(suite: httpx.AsyncClient, mongo: AsyncMongoClient[dict[str, Any]], options: Options,
                       results: Results, cpu: Cpu) -> Closing:
    """The SLAs to close and their month. The up probes go straight into the bucket collection
    (in bulk, as ``MeasurementStore.add`` would store them: a month of 1,000 services is 744,000
    bucket documents, which the API writes at a few thousand a second); the down probes go
    through POST /measurement, so that the early check raises the provisional violations a live
    month would have left for the close to confirm."""
    slas, probe = options.slas, options.probe_minutes
    print(f"creating {slas} SLAs to close ...", flush=True)
    began = time.perf_counter()
    run = await create_slas(suite, [sla_body(f"close {i}", f"close-{i}", PROVIDER, f"customer-{i % CUSTOMERS}")
                                    for i in range(slas)], options.concurrency)
    results.notes.append(f"closing SLAs created through POST /sla: {slas} in {time.perf_counter() - began:.1f} s "
                         f"({run.row.throughput:.0f}/s)")
    await check_bucket_shape(mongo)
    probes = OCTOBER_MINUTES // probe
    print(f"writing a month of probes every {probe} minutes for {slas} services ({probes * slas:,} samples) ...",
          flush=True)
    buckets = mongo[DATABASE][BUCKETS]
    store = MeasurementStore(mongo[DATABASE])
    if not options.as_shipped:
        # The suite made its bucket index when it started; a bulk load is faster without it, so
        # it is dropped here and built again, by the store's own declaration, once written.
        await store.ensure_indexes()  # the same index, should the suite not have made it yet
        await buckets.drop_indexes()
    began = time.perf_counter()
    written = 0
    chunk: list[dict[str, Any]] = []
    for document in bucket_documents(s for s in month_probes(slas, probe) if s["value"] == 1):
        chunk.append(document)
        if len(chunk) == 5000:
            await buckets.insert_many(chunk, ordered=False)
            written, chunk = written + len(chunk), []
    if chunk:
        await buckets.insert_many(chunk, ordered=False)
        written += len(chunk)
    wrote = time.perf_counter() - began
    index = "; with the suite's bucket index in place (--as-shipped)"
    if not options.as_shipped:
        began = time.perf_counter()
        await store.ensure_indexes()
        index = (f", with the bucket index dropped; then the index built again (MeasurementStore.ensure_indexes) "
                 f"in {time.perf_counter() - began:.1f} s")
    results.notes.append(f"closing SLAs' up probes written straight into {BUCKETS}: {written:,} bucket documents "
                         f"in {wrote:.1f} s ({written / wrote:,.0f}/s, insert_many){index}")

    downs = batches((s for s in month_probes(slas, probe) if s["value"] == 0), options.batch)
    bodies = [encode(batch) for batch in downs]
    print(f"sending their {sum(len(b) for b in downs):,} down probes through POST /measurement ...", flush=True)
    cpu.start()
    seeding = await run_jobs(len(bodies), lambda i: post_json(suite, "/measurement", bodies[i]),
                             concurrency=options.concurrency)
    seeded = cpu.measured("POST /measurement, the closing SLAs' down probes (all down: an early check per SLA)",
                      seeding, sum(r["accepted"] for r in seeding.results if r), "samples")
    raised = sum(r["violationsRaised"] for r in seeding.results if r)
    per_batch = [len({s["service"]["id"] for s in batch}) for batch in downs]
    violators = sum(1 for i in range(slas) if downtime_of(i))
    seeded.note = (f"{raised} provisional violations counted in the answers for the {violators} SLAs that miss their "
                   f"month; a batch holds the down probes of "
                   f"{min(per_batch)}-{max(per_batch)} SLAs, each of which the early check loads and evaluates "
                   "over its whole month")
    results.ingestion.append(seeded)
    print(f"  {seeded.items_per_second:,.0f} samples/s, {raised} provisional violations", flush=True)
    if seeding.row.errors:
        example, _ = seeding.row.errors.most_common(1)[0]
        raise SystemExit(f"seeding failed: {sum(seeding.row.errors.values())} batches, e.g. {example}")
    return Closing([r["id"] for r in run.results], [expected_result(i, probe) for i in range(slas)])


async def compact_closing(mongo: AsyncMongoClient[dict[str, Any]], options: Options, results: Results,
                          cpu: Cpu) -> None:
    """What the period scheduler does once a day, done here for the whole month at once (its
    clock being fixed after the month): merge the hour buckets of each ended day of the closing
    SLAs into a day bucket. Up to the day that ended more than the scheduler's grace before the
    clock, as it would have: 30 October, so that the month's last day is still read in hours."""
    store = MeasurementStore(mongo[DATABASE])
    since = int(OCTOBER.timestamp()) - 86_400  # the day before: a close reads it too
    before = int(datetime.combine((NOW - COMPACT_GRACE).date(), datetime.min.time(), UTC).timestamp())
    print(f"compacting the closing SLAs' ended days into day buckets ({options.slas} series) ...", flush=True)
    cpu.start()
    compacted = await run_jobs(options.slas, lambda i: store.compact([(f"close-{i}", "availability")], since, before),
                               concurrency=1)
    row = cpu.measured("compaction of the month's ended days into day buckets (the scheduler's daily work, all at "
                       "once), per SLA", compacted, options.slas, "SLAs")
    row.note = (f"{sum(r or 0 for r in compacted.results):,} hour buckets merged into day buckets, "
                f"{(before - since) // 86_400} days per SLA; in a live month each day is compacted once, "
                "after it ended, about 1/31 of this a day")
    results.closing.append(row)
    print(f"  {compacted.row.seconds:.1f} s", flush=True)


async def measure_closing(suite: httpx.AsyncClient, mongo: AsyncMongoClient[dict[str, Any]], closing: Closing,
                          options: Options, results: Results, cpu: Cpu) -> None:
    slas, ids, expected = options.slas, closing.ids, closing.expected
    probes = OCTOBER_MINUTES // options.probe_minutes
    buckets = mongo[DATABASE][BUCKETS]
    total_buckets = await buckets.estimated_document_count()
    first_hour = (int(OCTOBER.timestamp()) - 86_400) // BUCKET_SECONDS * BUCKET_SECONDS

    def read_month(i: int, **kwargs: Any) -> Awaitable[list[dict[str, Any]]]:
        # The query MeasurementStore.samples makes for an SLA covering one service.
        return buckets.find({"service": f"close-{i}", "metric": "availability",
                             "hour": {"$gte": first_hour, "$lt": int(NOVEMBER.timestamp())}},
                            batch_size=READ_BATCH, **kwargs).to_list()

    def read_month_projected(i: int) -> Awaitable[list[dict[str, Any]]]:
        # The same read as the store made it before: $in of one value, a projection, batches of 101.
        return buckets.find({"service": {"$in": [f"close-{i}"]}, "metric": {"$in": ["availability"]},
                             "hour": {"$gte": first_hour, "$lt": int(NOVEMBER.timestamp())}},
                            {"service": 1, "metric": 1, "samples": 1}).to_list()

    sampled = min(slas, READ_SAMPLE)
    print(f"reading the month of buckets of {sampled} SLAs ({total_buckets:,} buckets in the collection) ...",
          flush=True)
    cpu.start()
    reads = await run_jobs(sampled, lambda i: read_month(i * slas // sampled), concurrency=options.concurrency)
    read_row = cpu.measured("baseline: find() of one SLA's October buckets (PyMongo), the read a close makes", reads,
                            sampled, "SLAs")
    read_row.note = (f"{sum(len(r) for r in reads.results if r) / max(1, sampled):.0f} bucket documents per SLA, "
                     f"{total_buckets:,} in the collection")
    results.closing.append(read_row)
    cpu.start()
    projected = await run_jobs(sampled, lambda i: read_month_projected(i * slas // sampled),
                               concurrency=options.concurrency)
    results.closing.append(cpu.measured("the same buckets read with $in, a projection and batches of 101 (the read "
                                        "before)", projected, sampled, "SLAs"))
    # What every read of a month costs without the bucket index (as before the suite made it): a scan.
    cpu.start()
    scans = await run_jobs(1, lambda i: read_month(i, hint=[("$natural", 1)]), concurrency=1)
    results.closing.append(cpu.measured(
        "the same find() as a collection scan (hint $natural), as without the index", scans, 1, "SLAs"))

    for label in ("close October (POST /slaEvaluation, close=true)", "close again (idempotent)"):
        print(f"{label}: {slas} SLAs, {options.concurrency} concurrent clients ...", flush=True)
        cpu.start()
        closed = await run_jobs(slas, lambda i: post_json(suite, "/slaEvaluation", close_body(ids[i])),
                                concurrency=options.concurrency)
        row = cpu.measured(f"{label}, {probes} samples per SLA", closed, slas, "SLAs")
        wrong = 0
        for i, evaluation in enumerate(closed.results):
            if evaluation is None:
                continue
            actual = evaluation["ruleResult"][0]["actualValue"]
            rebate = ((evaluation.get("rebate") or {}).get("amount") or {}).get("value", 0)
            if abs(actual - expected[i][0]) > 0.0001 or rebate != expected[i][1]:
                wrong += 1
        row.note = (f"{sum(1 for e in closed.results if e and e['violation'])} with a violation, "
                    f"{sum(1 for e in closed.results if e and e.get('rebate'))} with a rebate"
                    + (f"; {wrong} results differ from the expected availability or rebate" if wrong else ""))
        if label.startswith("close October") and slas >= 20:
            # Closes run in SLA order: a cost that grows with the closes before it shows here.
            tenth = slas // 10
            parts = []
            for name, indices in (("the first", range(tenth)), ("the last", range(slas - tenth, slas))):
                paying = [closed.latency_of[i] for i in indices if expected[i][1]]
                free = [closed.latency_of[i] for i in indices if not expected[i][1]]
                parts.append(f"{name} {tenth} closes p50 {percentile(paying, 0.5):.0f} ms with a rebate, "
                             f"{percentile(free, 0.5):.0f} ms without")
            row.note += "; " + ", ".join(parts)
        results.closing.append(row)
        print(f"  {closed.row.seconds:.1f} s, {closed.row.throughput:.1f} SLAs/s, "
              f"p50 {closed.row.percentile(0.5):.0f} ms, p99 {closed.row.percentile(0.99):.0f} ms"
              + (f"; {sum(closed.row.errors.values())} failed" if closed.row.errors else ""), flush=True)
        if label.startswith("close October") and closed.row.errors:
            # A close that failed half-way is completed by closing again (closing is idempotent).
            retried = [ids[i] for i, e in enumerate(closed.results) if e is None]

            async def close_again(k: int, retried: list[str] = retried) -> Any:
                return await post_json(suite, "/slaEvaluation", close_body(retried[k]))

            again = await run_jobs(len(retried), close_again, concurrency=1)
            row.note += (f"; the {len(retried)} failed closes closed again one at a time: "
                         f"{len(retried) - sum(again.row.errors.values())} succeeded")

    await check_settlement(suite, expected, results)


async def check_settlement(suite: httpx.AsyncClient, expected: list[tuple[float, float]], results: Results) -> None:
    """What closing left behind, checked against what the seeded data must give."""
    violators = sum(1 for _, rebate in expected if rebate)
    total = sum(rebate for _, rebate in expected)
    rebates = await total_count(suite, "/rebate")
    final = await total_count(suite, "/slaViolation?status=final")
    provisional = await total_count(suite, "/slaViolation?status=provisional")
    response = await suite.get(f"{SLA_API}/settlementStatement", params={"party.id": PROVIDER})
    statements = response.json() if response.status_code in (200, 206) else []
    note = (f"after closing: {rebates} rebates (expected {violators}), {final} final violations (expected "
            f"{violators}) and {provisional} provisional ones (the intake rows' SLAs', which are not closed)")
    if statements:
        statement = statements[0]
        lines = len(statement.get("line", []))
        owed = statement.get("owed", {}).get("value")
        note += (f"; the statement of '{PROVIDER}' (payer of every rebate) has {lines} lines and owes {owed} EUR "
                 f"(expected {violators} lines, {total:,.2f} EUR)")
        if lines != violators:
            note += ": LINES ARE MISSING (a close lost another close's line)"
    else:
        note += f"; no settlement statement for '{PROVIDER}' ({response.status_code})"
    results.notes.append(note)


async def measure_full_resolution(suite: httpx.AsyncClient, options: Options, results: Results, cpu: Cpu) -> None:
    print(f"one SLA with a full month of one-minute samples ({OCTOBER_MINUTES:,}) ...", flush=True)
    run = await create_slas(suite, [sla_body("full resolution", "full-0", "operator-full", "customer-full")], 1)
    sla_id = run.results[0]["id"]
    stream = batches(full_month(), options.batch)
    bodies = [encode(batch) for batch in stream]
    cpu.start()
    seeding = await run_jobs(len(bodies), lambda i: post_json(suite, "/measurement", bodies[i]), concurrency=1)
    seeded = cpu.measured("POST /measurement, one service's month of one-minute samples, one batch at a time",
                      seeding, sum(r["accepted"] for r in seeding.results if r), "samples")
    down = [i for i, batch in enumerate(stream) if has_down(batch)]
    others = [s for i, s in seeding.latency_of.items() if i not in down]
    seeded.note = ("batches holding down samples (the early check then loads the month so far): "
                   + ", ".join(f"#{i} {seeding.latency_of[i] * 1000:.0f} ms" for i in down)
                   + f"; the other batches p50 {percentile(others, 0.5):.0f} ms"
                   + f"; {sum(r['violationsRaised'] for r in seeding.results if r)} provisional violation raised")
    results.ingestion.append(seeded)
    cpu.start()
    evaluated = await run_jobs(FULL_EVALUATIONS, lambda i: post_json(suite, "/slaEvaluation",
                                                                     close_body(sla_id, close=False)), concurrency=1)
    results.closing.append(cpu.measured(f"evaluate October without closing, {OCTOBER_MINUTES:,} samples (1 SLA, "
                                    f"{FULL_EVALUATIONS} times)", evaluated, FULL_EVALUATIONS, "SLAs"))
    for label in ("close October", "close again (idempotent)"):
        cpu.start()
        closed = await run_jobs(1, lambda i: post_json(suite, "/slaEvaluation", close_body(sla_id)), concurrency=1)
        row = cpu.measured(f"{label}, {OCTOBER_MINUTES:,} samples (1 SLA)", closed, 1, "SLAs")
        evaluation = closed.results[0]
        if evaluation:
            row.note = (f"availability {evaluation['ruleResult'][0]['actualValue']} %, "
                        f"{evaluation['ruleResult'][0]['sampleCount']} samples, rebate "
                        f"{((evaluation.get('rebate') or {}).get('amount') or {}).get('value', 0)} EUR")
        results.closing.append(row)
    for row in results.closing[-3:]:
        print(f"  {row.name}: p50 {row.run.row.percentile(0.5):.0f} ms", flush=True)


async def operator_token(mongo: AsyncMongoClient[dict[str, Any]], suite_url: str) -> str:
    """An operator's access token, signed with the key the suite (its own issuer, at its public
    URL) made in its database when it started: the token a client would get from /oauth2/token."""
    issuer = TokenIssuer(AuthSettings(issuer=suite_url, token_lifetime_seconds=TOKEN_LIFETIME_SECONDS))
    issuer.connect(mongo[DATABASE])
    token, _ = await issuer.issue({"_id": "bench-operator", "party_id": PROVIDER, "role": OPERATOR},
                                  DEFAULT_SCOPES[OPERATOR])
    return token


async def measure(suite_url: str, uri: str, options: Options, pids: dict[str, int], stats: Path) -> Results:
    results = Results()
    cpu = Cpu(pids, stats)
    limits = httpx.Limits(max_connections=options.concurrency, max_keepalive_connections=options.concurrency)
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri, serverSelectionTimeoutMS=5000)
    headers = {"Authorization": f"Bearer {await operator_token(mongo, suite_url)}"}
    # trust_env=False: no proxy from the environment ever sees these loopback requests.
    async with httpx.AsyncClient(base_url=suite_url, limits=limits, timeout=600.0, trust_env=False,
                                 headers=headers) as suite:
        try:
            # The closing month is written first, into an empty collection: bulk writes are
            # faster without the index, which is then built once.
            closing = await seed_closing(suite, mongo, options, results, cpu)
            if options.intake:
                await measure_ingestion(suite, mongo, options, results, cpu)
            if options.compact:
                await compact_closing(mongo, options, results, cpu)
            await measure_closing(suite, mongo, closing, options, results, cpu)
            if options.full_resolution:
                await measure_full_resolution(suite, options, results, cpu)
        finally:
            await mongo.close()
    return results


# ---------------------------------------------------------------- the report


def merged_baseline(runs: Sequence[Measured]) -> Measured:
    latencies = [x for m in runs for x in m.run.row.latencies]
    errors: Counter[str] = Counter()
    cpu: dict[str, float] = {}
    for m in runs:
        errors.update(m.run.row.errors)
        for name, seconds in m.cpu.items():
            cpu[name] = cpu.get(name, 0.0) + seconds
    row = Row(runs[0].name, len(latencies), sum(m.run.row.seconds for m in runs), latencies, errors,
              stopped_early=any(m.run.row.stopped_early for m in runs))
    merged = Measured(runs[0].name, Run(row, [], {}, runs[0].run.clients), sum(m.items for m in runs), "samples",
                      cpu=cpu)
    merged.note = "measured before and after the other intake rows: " + ", ".join(
        f"{m.items_per_second:,.0f} samples/s" for m in runs)
    return merged


def ratio(m: Measured, base: Measured) -> str:
    """Throughput relative to the baseline, for rows driven by as many clients as it was."""
    if not base.items_per_second or m.run.clients != base.run.clients or m.run.row.requests < 2:
        return "-"
    r = (m.items_per_second if m.unit == base.unit else m.run.row.throughput) / (
        base.items_per_second if m.unit == base.unit else base.run.row.throughput)
    return f"{r:.2f}" if r >= 0.1 or r == 0 else f"{r:.3f}"


def ingestion_table(rows: Sequence[Measured], baseline: Measured) -> str:
    lines = ["| intake | clients | batches | samples | samples/s | batches/s | p50 ms | p99 ms | vs baseline |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for m in [baseline, *rows]:
        r = m.run.row
        lines.append(f"| {m.name} | {m.run.clients} | {r.requests} | {m.items:,} | {m.items_per_second:,.0f} "
                     f"| {r.throughput:,.1f} | {r.percentile(0.5):,.0f} | {r.percentile(0.99):,.0f} "
                     f"| {ratio(m, baseline)} |")
    return "\n".join(lines)


def closing_table(rows: Sequence[Measured]) -> str:
    lines = ["| period close | clients | SLAs | total s | SLAs/s | p50 ms | p99 ms | vs baseline |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for m in rows:
        r = m.run.row
        lines.append(f"| {m.name} | {m.run.clients} | {r.requests} | {r.seconds:,.2f} | {r.throughput:,.1f} "
                     f"| {r.percentile(0.5):,.0f} | {r.percentile(0.99):,.0f} | {ratio(m, rows[0])} |")
    return "\n".join(lines)


def report(results: Results, options: Options, started: datetime, elapsed: float,
           load_before: tuple[float, float, float]) -> str:
    # Without the intake rows (--no-intake) there is no intake baseline: the closing tables stand alone.
    baseline = merged_baseline(results.baselines) if results.baselines else None
    intake_rows = [baseline, *results.ingestion] if baseline is not None else list(results.ingestion)
    lines = [
        "# SLA benchmark",
        "",
        "`" + " ".join(["python -m bench.sla", *sys.argv[1:]]) + "`",
        "",
        f"{started:%Y-%m-%d %H:%M} UTC; {platform.python_implementation()} {platform.python_version()} on "
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs; embedded database "
        f"(SecantusDB, fresh temporary storage dir); "
        + (f"the suite's index on {BUCKETS} kept while seeding (--as-shipped); " if options.as_shipped else
           f"the suite's index on {BUCKETS} dropped for the bulk seeding and built again before anything is "
           "measured; ")
        + f"suite clock fixed at {stamp(NOW)}; "
        f"{options.concurrency} concurrent clients; batches of {options.batch} samples; intake rows at most "
        f"{options.batches} batches or {options.max_seconds:.0f} s; whole run {elapsed:.0f} s; load average "
        f"{load_before[0]:.2f} at the start, {os.getloadavg()[0]:.2f} at the end"
        + ("; the suite ran under cProfile (slower)" if options.profile else "") + ".",
        "",
        *([ingestion_table(results.ingestion, baseline), ""] if baseline is not None else []),
        closing_table(results.closing),
        "",
        *(f"- {note}" for note in results.notes),
        f"- closing: {options.slas} SLAs, each covering one service, monthly period, availability >= 99.9 % with "
        f"tiers 10/25/50 % below 99.9/99.5/99.0, charge {CHARGE} EUR, provider '{PROVIDER}', {CUSTOMERS} customers; "
        f"the odd-numbered half was down 1, 4 or 8 hours in October; a probe every {options.probe_minutes} minutes "
        f"({OCTOBER_MINUTES // options.probe_minutes} samples per service, interval {options.probe_minutes * 60} s) "
        f"instead of every minute ({OCTOBER_MINUTES:,}): 1,000 services at one-minute resolution would be "
        "44.6 million samples",
    ]
    for m in [*intake_rows, *results.closing]:
        if m.note:
            lines.append(f"- {m.name}: {m.note}")
        if m.run.row.stopped_early:
            lines.append(f"- {m.name}: stopped at the {options.max_seconds:.0f} s limit")
        if m.run.row.errors:
            example, _ = m.run.row.errors.most_common(1)[0]
            lines.append(f"- {m.name}: {sum(m.run.row.errors.values())} unexpected answers, e.g. {example}")
    for m in [*intake_rows, *results.closing]:
        if m.cpu:
            used = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in m.cpu.items())
            lines.append(f"- CPU time during '{m.name}' ({m.run.row.seconds:.1f} s): {used}")
    for m in [*results.ingestion, *results.closing]:
        if m.commands and m.run.row.seconds >= 1:
            top = sorted(m.commands.items(), key=lambda item: -item[1][1])[:COMMANDS_SHOWN]
            shown = "; ".join(f"{name} {collection}" + (f" {{{fields}}}" if fields else "")
                              + f" {count:,} x {seconds / count * 1000:,.1f} ms = {seconds:,.1f} s"
                              for (name, collection, fields), (count, seconds) in top)
            count = sum(c for c, _ in m.commands.values())
            seconds = sum(t for _, t in m.commands.values())
            lines.append(f"- the suite's database commands during '{m.name}' ({count:,} commands, {seconds:,.1f} s of "
                         f"round trips in all), the most costly: {shown}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- processes


def parse_args(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m bench.sla", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 50 SLAs to close, 20 intake services, 20 batches and 3 s per intake row")
    parser.add_argument("--services", type=int, default=None, help="services in the intake stream (default 100)")
    parser.add_argument("--batches", type=int, default=None, help="measured batches per intake row (default 200)")
    parser.add_argument("--batch", type=int, default=1000, help="samples per batch (default 1000, at most 5000)")
    parser.add_argument("--max-seconds", type=float, default=None,
                        help="time limit per intake row; a row stops early when reached (default 25)")
    parser.add_argument("--concurrency", type=int, default=4, help="concurrent clients (default 4)")
    parser.add_argument("--slas", type=int, default=None, help="SLAs to close (default 1000)")
    parser.add_argument("--probe-minutes", type=int, default=60,
                        help="minutes between the probes of the closing SLAs' month (default 60: 744 samples per "
                             "service; 1 is full resolution, 44,640); must divide 1440")
    parser.add_argument("--no-full-resolution", dest="full_resolution", action="store_false",
                        help="skip the SLA with a full month of one-minute samples")
    parser.add_argument("--no-intake", dest="intake", action="store_false",
                        help="skip the intake rows: seed the closing month and measure the close only")
    parser.add_argument("--as-shipped", action="store_true",
                        help="keep the bucket index the suite makes at start-up while the closing month is "
                             "written, instead of dropping it and building it again after (slower seeding, the "
                             "same measurements)")
    parser.add_argument("--no-compaction", dest="compact", action="store_false",
                        help="close the month as its hour buckets were written, without the day buckets the "
                             "period scheduler makes of ended days")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--profile", type=Path, default=None,
                        help="run the suite under cProfile and write its statistics to this file")
    parser.add_argument("--output", type=Path, default=RESULTS, help=f"markdown result file (default {RESULTS})")
    args = parser.parse_args(argv)
    defaults = (20, 20, 3.0, 50) if args.quick else (100, 200, 25.0, 1000)
    options = Options(
        services=args.services if args.services is not None else defaults[0],
        batches=args.batches if args.batches is not None else defaults[1],
        batch=args.batch, concurrency=args.concurrency,
        max_seconds=args.max_seconds if args.max_seconds is not None else defaults[2],
        slas=args.slas if args.slas is not None else defaults[3],
        probe_minutes=args.probe_minutes, full_resolution=args.full_resolution, intake=args.intake,
        as_shipped=args.as_shipped, compact=args.compact,
        seed=args.seed,
        profile=args.profile, output=args.output, quick=args.quick,
    )
    if (options.services < 1 or options.batches < 1 or not 1 <= options.batch <= 5000 or options.concurrency < 1
            or options.max_seconds <= 0 or options.slas < 2 or options.probe_minutes < 1
            or 1440 % options.probe_minutes):
        parser.error("--services, --batches, --concurrency and --max-seconds must be positive; --batch between 1 "
                     "and 5000; --slas at least 2; --probe-minutes must divide 1440 (a day)")
    return options


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    started = datetime.now(UTC)
    load_before = os.getloadavg()
    clock = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="sqm-bench-sla-"))
    suite = None
    try:
        with EmbeddedDatabase(str(workdir / "db"), log_path=workdir / "database.log") as database:
            port = free_port(HOST)
            url = f"http://{HOST}:{port}"
            stats = workdir / "commands.json"
            args = ["bench.sla_server", "--host", HOST, "--port", str(port), "--mongodb-uri", database.uri,
                    "--database", DATABASE, "--now", stamp(NOW), "--command-stats", str(stats)]
            if options.profile is not None:
                args += ["--profile", str(options.profile.resolve())]
            suite = start_process(args, workdir / "suite.log",
                                  {"SQM_SLA_CLOSE_INTERVAL_SECONDS": CLOSE_INTERVAL_SECONDS})
            wait_ready(suite, url, workdir / "suite.log")
            assert database.process is not None
            pids = {"suite": suite.pid, "database": database.process.pid, "load generator": os.getpid()}
            results = asyncio.run(measure(url, database.uri, options, pids, stats))
            stop(suite)
    except BaseException:
        if suite is not None:
            stop(suite)
        print(f"the server and database logs are kept in {workdir}", file=sys.stderr)
        raise
    shutil.rmtree(workdir, ignore_errors=True)
    text = report(results, options, started, time.perf_counter() - clock, load_before)
    print()
    print(text)
    options.output.parent.mkdir(parents=True, exist_ok=True)
    options.output.write_text(text)
    print(f"written to {options.output}")
    if options.profile is not None:
        print(f"suite profile written to {options.profile} (python -m pstats {options.profile})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
