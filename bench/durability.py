"""What durability costs: ``POST /service`` throughput of ``sqm serve`` as a user runs it (the
embedded database, every change on disk before it is answered) against the same server with
``--unsafe-skip-fsync`` (the baseline), measured in the same run, rounds alternating; and the
same comparison for the database alone (what a create asks of it: one two-insert transaction).

    python -m bench.durability               # 3 rounds per mode, at most 1,000 creates or 30 s each
    python -m bench.durability --quick       # 1 round per mode, at most 200 creates or 10 s each
    python -m bench.durability --rounds 5 --requests 2000 --concurrency 8 --max-seconds 60

Prints a markdown table and writes it to bench/results/durability.md. Numbers only: nothing here
passes or fails on timings.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# The same filter `sqm serve` applies: connexion imports starlette's test client, which warns.
warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")

import httpx  # noqa: E402
from pymongo import AsyncMongoClient  # noqa: E402
from pymongo.asynchronous.client_session import AsyncClientSession  # noqa: E402
from pymongo.asynchronous.database import AsyncDatabase  # noqa: E402
from pymongo.errors import PyMongoError  # noqa: E402

from bench.events import percentile  # noqa: E402
from services.tmf.embedded import EmbeddedDatabase, free_port  # noqa: E402
from services.tmf.repository.events import in_transaction  # noqa: E402

HOST = "127.0.0.1"
SERVICE = "/tmf-api/serviceInventory/v4/service"
ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results" / "durability.md"
WARMUP = 16
READY_TIMEOUT = 120.0
MODES = {"durable (default)": [], "--unsafe-skip-fsync": ["--unsafe-skip-fsync"]}
BASELINE = "--unsafe-skip-fsync"


@dataclass
class Options:
    rounds: int
    requests: int
    concurrency: int
    max_seconds: float
    output: Path


@dataclass
class Row:
    mode: str
    creates: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    stopped_early: int = 0

    @property
    def per_second(self) -> float:
        return self.creates / self.seconds if self.seconds > 0 else 0.0




def filesystem(path: Path) -> str:
    """The type of the file system ``path`` is on (Linux), since what an fsync costs depends on it."""
    best, kind = "", "unknown"
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return kind
    for line in mounts:
        parts = line.split()
        if len(parts) > 2 and str(path).startswith(parts[1]) and len(parts[1]) > len(best):
            best, kind = parts[1], parts[2]
    return kind


def start_server(data_dir: Path, flags: list[str], log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """``sqm serve`` on a fresh data dir, as a user starts it (its own log level and defaults)."""
    port = free_port(HOST)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SQM_")}
    with open(log, "ab") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "serve", "--host", HOST, "--port", str(port),
             "--data-dir", str(data_dir), *flags],
            stdout=handle, stderr=handle, stdin=subprocess.DEVNULL, cwd=ROOT, env=env,
        )
    url = f"http://{HOST}:{port}"
    deadline = time.monotonic() + READY_TIMEOUT
    with httpx.Client(trust_env=False, timeout=2.0) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise SystemExit(f"sqm serve exited with {process.returncode}; see {log}:\n"
                                 + log.read_text(errors="replace")[-2000:])
            try:
                if client.get(f"{url}/health").status_code == 200:
                    return process, url
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
    process.kill()
    raise SystemExit(f"sqm serve did not answer within {READY_TIMEOUT:.0f} s; see {log}")


def stop_server(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


async def creates(url: str, count: int, concurrency: int, max_seconds: float, row: Row | None) -> None:
    """``count`` creates from ``concurrency`` clients, each sending its next one as soon as the
    last one is answered; measured into ``row`` (None: a warm-up)."""
    remaining = count
    deadline = time.monotonic() + max_seconds

    async def worker(client: httpx.AsyncClient, number: int) -> None:
        nonlocal remaining
        i = 0
        while remaining > 0 and time.monotonic() < deadline:
            remaining -= 1
            i += 1
            body = {"name": f"bench-{number}-{i}", "state": "inactive", "serviceSpecification": {"id": "bench"}}
            sent = time.perf_counter()
            try:
                response = await client.post(SERVICE, json=body)
                outcome = "" if response.status_code == 201 else f"{response.status_code} {response.text[:120]}"
            except httpx.HTTPError as exc:
                outcome = type(exc).__name__
            if row is None:
                continue
            if outcome:
                row.errors[outcome] += 1
            else:
                row.creates += 1
                row.latencies.append(time.perf_counter() - sent)

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=30.0, limits=limits, trust_env=False) as client:
        started = time.perf_counter()
        await asyncio.gather(*(worker(client, n) for n in range(concurrency)))
        if row is not None:
            row.seconds += time.perf_counter() - started
            row.stopped_early += remaining > 0


async def insert_both(database: AsyncDatabase[dict[str, Any]], key: str, session: AsyncClientSession) -> None:
    await database["service"].insert_one({"_id": key, "name": key}, session=session)
    await database["event"].insert_one({"_id": f"e-{key}", "resourceId": key}, session=session)


async def transactions(uri: str, unsafe: bool, count: int, concurrency: int, max_seconds: float,
                       row: Row | None) -> None:
    """The database alone: what a create costs it (the service and its event inserted in one
    transaction), with the client options and transactions the suite uses in that mode."""
    durability: dict[str, Any] = {"w": 1, "journal": False} if unsafe else {"w": "majority", "journal": True}
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri, **durability)
    database = client["bench"]
    remaining = count
    deadline = time.monotonic() + max_seconds

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0 and time.monotonic() < deadline:
            remaining -= 1
            sent = time.perf_counter()
            try:
                await in_transaction(database, functools.partial(insert_both, database, uuid.uuid4().hex))
            except PyMongoError as exc:
                if row is not None:
                    row.errors[type(exc).__name__] += 1
                continue
            if row is not None:
                row.creates += 1
                row.latencies.append(time.perf_counter() - sent)

    try:
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        if row is not None:
            row.seconds += time.perf_counter() - started
            row.stopped_early += remaining > 0
    finally:
        await client.close()


def measure(options: Options, workdir: Path) -> tuple[dict[str, Row], dict[str, Row]]:
    rows = {mode: Row(mode) for mode in MODES}
    database_rows = {mode: Row(mode) for mode in MODES}
    for round_number in range(options.rounds):
        # Alternating, so that a change in the machine's load falls on both modes alike.
        order = list(MODES) if round_number % 2 == 0 else list(reversed(MODES))
        for mode in order:
            unsafe = bool(MODES[mode])
            data_dir = workdir / f"round{round_number}-{'unsafe' if unsafe else 'durable'}"
            process, url = start_server(data_dir, MODES[mode], workdir / f"{data_dir.name}.log")
            try:
                asyncio.run(creates(url, WARMUP, options.concurrency, options.max_seconds, None))
                asyncio.run(creates(url, options.requests, options.concurrency, options.max_seconds, rows[mode]))
            finally:
                stop_server(process)
            with EmbeddedDatabase(str(data_dir / "alone"), log_path=data_dir / "alone.log",
                                  sync_on_commit=not unsafe) as database:
                asyncio.run(transactions(database.uri, unsafe, WARMUP, options.concurrency, options.max_seconds,
                                         None))
                asyncio.run(transactions(database.uri, unsafe, options.requests, options.concurrency,
                                         options.max_seconds, database_rows[mode]))
            print(f"round {round_number + 1}/{options.rounds} {mode}: {rows[mode].per_second:,.1f} creates/s, "
                  f"{database_rows[mode].per_second:,.1f} transactions/s so far", file=sys.stderr)
    return rows, database_rows


def table(rows: dict[str, Row], what: str) -> list[str]:
    baseline = rows[BASELINE]
    header = f"| {what} | count | per second | ratio to unsafe | p50 ms | p95 ms | p99 ms | errors |"
    lines = [header, "| " + " | ".join("---" for _ in range(header.count("|") - 1)) + " |"]
    for row in rows.values():
        ratio = row.per_second / baseline.per_second if baseline.per_second else float("nan")
        lines.append(
            f"| {row.mode} | {row.creates:,} | {row.per_second:,.1f} | {ratio:.2f} | "
            f"{percentile(row.latencies, 0.5):,.1f} | {percentile(row.latencies, 0.95):,.1f} | "
            f"{percentile(row.latencies, 0.99):,.1f} | {sum(row.errors.values())} |")
    return lines


def report(rows: dict[str, Row], database_rows: dict[str, Row], options: Options, started: datetime,
           elapsed: float, load_before: tuple[float, float, float], workdir: Path) -> str:
    lines = [
        "# Durability benchmark",
        "",
        "`" + " ".join(["python -m bench.durability", *sys.argv[1:]]) + "`",
        "",
        f"{started:%Y-%m-%d %H:%M} UTC; {platform.python_implementation()} {platform.python_version()} on "
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs; `sqm serve` with its embedded "
        f"database on a fresh data dir per round ({filesystem(workdir)}); {options.rounds} rounds per mode, "
        f"alternating; at most {options.requests} creates or {options.max_seconds:.0f} s per round, from "
        f"{options.concurrency} concurrent clients; whole run {elapsed:.0f} s; load average "
        f"{load_before[0]:.2f} at the start, {os.getloadavg()[0]:.2f} at the end.",
        "",
        *table(rows, "`POST /service`"),
        "",
        *table(database_rows, "database alone: 2-insert transaction"),
        "",
        "- `POST /service`: creates answered 201 (the service and its ServiceCreateEvent in one "
        "transaction; no subscription); per second: creates / time from the first request to the last "
        "answer, over all rounds. Latency: from sending a request to its full answer.",
        "- database alone: a fresh embedded database in the same mode, without the suite, and at most as many "
        "transactions, each inserting a service and an event, through `in_transaction` with the client "
        "options the suite uses in that mode, from as many concurrent tasks.",
        "- durable: the embedded database fsyncs its journal on every commit, writes ask for "
        "`w: majority, j: true`. `--unsafe-skip-fsync`: neither (the baseline).",
    ]
    for row in [*rows.values(), *database_rows.values()]:
        if row.stopped_early:
            lines.append(f"- {row.mode}: {row.stopped_early} rounds reached the time limit before "
                         f"{options.requests} creates")
        if row.errors:
            example, _ = row.errors.most_common(1)[0]
            lines.append(f"- {row.mode}: {sum(row.errors.values())} unexpected answers, e.g. {example}")
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m bench.durability", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 round, 200 creates, 10 s per round")
    parser.add_argument("--rounds", type=int, default=None, help="rounds per mode (default 3)")
    parser.add_argument("--requests", type=int, default=None, help="creates per round (default 1000)")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent clients (default 8)")
    parser.add_argument("--max-seconds", type=float, default=None, help="time limit per round (default 30)")
    parser.add_argument("--output", type=Path, default=RESULTS, help=f"markdown result file (default {RESULTS})")
    args = parser.parse_args(argv)
    defaults = (1, 200, 10.0) if args.quick else (3, 1000, 30.0)
    options = Options(
        rounds=args.rounds if args.rounds is not None else defaults[0],
        requests=args.requests if args.requests is not None else defaults[1],
        concurrency=args.concurrency,
        max_seconds=args.max_seconds if args.max_seconds is not None else defaults[2],
        output=args.output,
    )
    if options.rounds < 1 or options.requests < 1 or options.concurrency < 1 or options.max_seconds <= 0:
        parser.error("--rounds, --requests, --concurrency and --max-seconds must be positive")
    return options


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    started = datetime.now(UTC)
    load_before = os.getloadavg()
    clock = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="sqm-bench-durability-"))
    try:
        rows, database_rows = measure(options, workdir)
    except BaseException:
        print(f"the server and database logs are kept in {workdir}", file=sys.stderr)
        raise
    shutil.rmtree(workdir, ignore_errors=True)
    text = report(rows, database_rows, options, started, time.perf_counter() - clock, load_before, workdir)
    print()
    print(text)
    options.output.parent.mkdir(parents=True, exist_ok=True)
    options.output.write_text(text)
    print(f"written to {options.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
