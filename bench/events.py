"""Event delivery benchmark: changes to services (creates and PATCHes) delivered through the
transactional outbox and the dispatcher to 1 and to 20 real HTTP listeners on loopback, against
the same changes with no subscription at all, measured in the same run.

    python -m bench.events                # full run: at most 1,000 changes and 5,000 deliveries per scenario
    python -m bench.events --quick        # smoke run: at most 200 changes and 1,000 deliveries per scenario
    python -m bench.events --changes 1000 --max-deliveries 5000 --listeners 1,5,20 --concurrency 8

See bench/README.md for what each column measures. Prints a markdown table and writes it to
bench/results/events.md. Numbers only: nothing here passes or fails on timings.
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
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from pymongo import AsyncMongoClient

from services.tmf.auth import SCOPES, AuthSettings, TokenIssuer
from services.tmf.embedded import EmbeddedDatabase, free_port

HOST = "127.0.0.1"
INVENTORY = "/tmf-api/serviceInventory/v4"
ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results" / "events.md"
MERGE_PATCH = "application/merge-patch+json"
WARMUP = 16
STALL_SECONDS = 15.0  # no delivery at all for this long ends a scenario's wait early
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------- results


@dataclass
class Scenario:
    name: str
    listeners: int
    changes: int = 0
    change_seconds: float = 0.0
    expected: int = 0
    deliveries: int = 0  # distinct (listener, eventId)
    duplicates: int = 0
    delivery_seconds: float = 0.0  # first change sent to last delivery arrived
    delays: list[float] = field(default_factory=list)  # client got its answer -> listener got the event
    event_time_delays: list[float] = field(default_factory=list)  # eventTime -> listener got the event
    unmatched: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    incomplete: str = ""
    cpu: dict[str, float] = field(default_factory=dict)

    @property
    def changes_per_second(self) -> float:
        return self.changes / self.change_seconds if self.change_seconds > 0 else 0.0

    @property
    def deliveries_per_second(self) -> float:
        return self.deliveries / self.delivery_seconds if self.delivery_seconds > 0 else 0.0


def percentile(values: Sequence[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p * len(ordered)) - 1)] * 1000


def merge_baselines(runs: Sequence[Scenario]) -> Scenario:
    merged = Scenario("baseline: no subscriptions", 0)
    for run in runs:
        merged.changes += run.changes
        merged.change_seconds += run.change_seconds
        merged.errors.update(run.errors)
        for name, seconds in run.cpu.items():
            merged.cpu[name] = merged.cpu.get(name, 0.0) + seconds
    return merged


# ---------------------------------------------------------------- processes


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its waited-for children, from /proc (Linux)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return sum(int(v) for v in fields[11:15]) / CLOCK_TICKS


def start_process(args: list[str], log: Path, env: dict[str, str] | None = None,
                  stdout_pipe: bool = False) -> subprocess.Popen[bytes]:
    handle = open(log, "ab")  # handed to the child, closed here after
    process = subprocess.Popen(
        [sys.executable, "-m", *args], stdout=subprocess.PIPE if stdout_pipe else handle, stderr=handle,
        stdin=subprocess.DEVNULL, cwd=ROOT, env={**os.environ, **(env or {})},
    )
    handle.close()
    return process


def start_suite(uri: str, database: str, workdir: Path, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    """The suite as ``sqm serve`` runs it (bench/servers.py), configured through ``SQM_*``."""
    port = free_port(HOST)
    process = start_process(["bench.servers", "suite", "--host", HOST, "--port", str(port), "--mongodb-uri", uri,
                             "--database", database], workdir / f"suite-{database}.log", env)
    return process, f"http://{HOST}:{port}"


def bearer(uri: str, database: str, suite_url: str, lifetime_seconds: int = 4 * 3600) -> dict[str, str]:
    """An operator's Authorization header for the suite at ``suite_url``, minted with the signing
    key the suite's built-in issuer keeps in its database (so call it once the suite is ready).
    It lasts ``lifetime_seconds``: longer than any run, so the load never stops to renew it."""

    async def mint() -> str:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri)
        try:
            issuer = TokenIssuer(AuthSettings.from_env(issuer=suite_url, builtin_issuer=True,
                                                       token_lifetime_seconds=lifetime_seconds))
            issuer.connect(client[database])
            token, _ = await issuer.issue({"_id": "bench", "party_id": "operator", "role": "operator"}, SCOPES)
            return token
        finally:
            await client.close()

    return {"Authorization": f"Bearer {asyncio.run(mint())}"}


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


def start_listeners(count: int, workdir: Path) -> tuple[subprocess.Popen[bytes], str, list[str]]:
    log = workdir / "listeners.log"
    process = start_process(["bench.listeners", "--count", str(count)], log, stdout_pipe=True)
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        process.wait(timeout=10)
        raise SystemExit(f"the listeners exited with {process.returncode}; see {log}:\n"
                         + log.read_text(errors="replace")[-2000:])
    ports = json.loads(line)
    control, listeners = ports["control"], ports["listeners"]
    deadline = time.monotonic() + 30
    with httpx.Client(trust_env=False, timeout=2.0) as client:
        while True:
            try:
                client.get(f"{control}/_control/wait?count=0&timeout=0")
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise SystemExit(f"the listeners did not start; see {log}") from None
                time.sleep(0.05)
    return process, control, listeners


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# ---------------------------------------------------------------- load


def service_body(tag: str, rng: random.Random) -> dict[str, Any]:
    return {
        "name": f"bench {tag}",
        "description": tag,
        "category": "RFS",
        "serviceType": "Access",
        "state": "active",
        "serviceSpecification": {"id": "spec-access", "name": "Access spec"},
        "relatedParty": [{"id": f"partner-{rng.randrange(20)}", "role": "supplier",
                          "@referredType": "Organization"}],
        "serviceCharacteristic": [{"name": "bandwidthMbps", "valueType": "integer",
                                   "value": rng.choice((10, 100, 1000))}],
    }


class Pace:
    """Open-loop pacing: the n-th request taken is not sent before ``n / rate`` seconds after the
    first; without a rate, every request goes as soon as a worker is free."""

    def __init__(self, rate: float | None) -> None:
        self.rate = rate
        self.taken = 0
        self.start: float | None = None

    async def wait(self) -> None:
        n, self.taken = self.taken, self.taken + 1
        if not self.rate:
            return
        now = time.monotonic()
        if self.start is None:
            self.start = now
        delay = self.start + n / self.rate - now
        if delay > 0:
            await asyncio.sleep(delay)


async def drive(client: httpx.AsyncClient, requests: Sequence[tuple[str, str, str, Any]], concurrency: int,
                answered: dict[str, float], errors: Counter[str], pace: Pace | None = None) -> list[str]:
    """Send ``(tag, method, url, body)`` requests from ``concurrency`` workers, each sending its
    next one as soon as the last one answered (and ``pace`` allows); ``answered[tag]`` is when
    the answer came (``time.monotonic()``). Returns the ids of the services created, in request
    order."""
    created: list[str] = [""] * len(requests)
    next_index = 0

    async def worker() -> None:
        nonlocal next_index
        while next_index < len(requests):
            i = next_index
            next_index += 1
            if pace is not None:
                await pace.wait()
            tag, method, url, body = requests[i]
            headers = {"Content-Type": MERGE_PATCH if method == "PATCH" else "application/json"}
            try:
                response = await client.request(method, url, content=json.dumps(body), headers=headers)
            except httpx.HTTPError as exc:
                errors[f"{method} {type(exc).__name__}"] += 1
                continue
            if response.status_code not in (200, 201):
                errors[f"{method} {response.status_code} {response.text[:160]}"] += 1
                continue
            answered[tag] = time.monotonic()
            if method == "POST":
                created[i] = response.json()["id"]

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return [c for c in created if c]


async def run_scenario(scenario: Scenario, suite_url: str, control: str, callbacks: Sequence[str],
                       options: Options, rng: random.Random, pids: dict[str, int],
                       auth: dict[str, str]) -> Scenario:
    """Warm up, subscribe ``callbacks``, then half the changes create services and the other
    half PATCH their descriptions (one event per change, tagged with a unique description)."""
    limits = httpx.Limits(max_connections=options.concurrency, max_keepalive_connections=options.concurrency)
    async with httpx.AsyncClient(base_url=suite_url, trust_env=False, timeout=60.0, limits=limits,
                                 headers=auth) as client, \
            httpx.AsyncClient(base_url=control, trust_env=False, timeout=60.0) as listeners:
        unmeasured: Counter[str] = Counter()
        warm = [(f"warm-{i}", "POST", f"{INVENTORY}/service", service_body(f"warm-{i}", rng)) for i in range(WARMUP)]
        await drive(client, warm, options.concurrency, {}, unmeasured)
        for callback in callbacks:
            response = await client.post(f"{INVENTORY}/hub", json={"callback": callback})
            if response.status_code != 201:
                raise SystemExit(f"subscribing {callback} failed: {response.status_code} {response.text[:300]}")
        await listeners.post("/_control/reset")

        answered: dict[str, float] = {}
        changes = options.changes_for(scenario.listeners)
        creates = changes // 2
        cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        began = time.monotonic()
        pace = Pace(options.rate)
        created = await drive(client, [
            (f"c{i}", "POST", f"{INVENTORY}/service", service_body(f"c{i}", rng)) for i in range(creates)
        ], options.concurrency, answered, scenario.errors, pace)
        if not created:
            raise SystemExit(f"{scenario.name}: no service was created: {scenario.errors.most_common(3)}")
        targets = rng.sample(created, len(created))
        await drive(client, [
            (f"p{j}", "PATCH", f"{INVENTORY}/service/{targets[j % len(targets)]}", {"description": f"p{j}"})
            for j in range(changes - creates)
        ], options.concurrency, answered, scenario.errors, pace)
        scenario.change_seconds = time.monotonic() - began
        scenario.changes = len(answered)

        scenario.expected = len(answered) * len(callbacks)
        received = 0
        if callbacks:
            progress_at, deadline = time.monotonic(), began + options.max_seconds
            while received < scenario.expected:
                now = time.monotonic()
                if now >= deadline:
                    scenario.incomplete = f"stopped at the {options.max_seconds:.0f} s limit"
                    break
                if now - progress_at >= STALL_SECONDS:
                    scenario.incomplete = f"no delivery for {STALL_SECONDS:.0f} s"
                    break
                wait = min(2.0, deadline - now)
                answer = await listeners.get("/_control/wait",
                                             params={"count": scenario.expected, "timeout": f"{wait:.3f}"})
                count = answer.json()["received"]
                if count > received:
                    received, progress_at = count, time.monotonic()
        scenario.cpu = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in pids.items()}
        records = (await listeners.get("/_control/records")).json() if callbacks else []

    seen: set[tuple[int, str]] = set()
    last = began
    for listener, arrived, wall, event_id, _event_type, event_time, _resource, tag in records:
        if (listener, event_id) in seen:
            scenario.duplicates += 1
            continue
        seen.add((listener, event_id))
        last = max(last, arrived)
        if tag in answered:
            scenario.delays.append(arrived - answered[tag])
        else:
            scenario.unmatched += 1
        if event_time:
            stamped = datetime.fromisoformat(event_time.replace("Z", "+00:00")).timestamp()
            scenario.event_time_delays.append(wall - stamped)
    scenario.deliveries = len(seen)
    scenario.delivery_seconds = last - began if records else 0.0
    return scenario


# ---------------------------------------------------------------- the run


@dataclass
class Options:
    changes: int
    max_deliveries: int
    listeners: list[int]
    concurrency: int
    max_seconds: float
    poll_seconds: float | None
    rate: float | None
    seed: int
    output: Path
    quick: bool

    def changes_for(self, listeners: int) -> int:
        """Every change is delivered to every listener: the delivery budget bounds the changes."""
        return self.changes if not listeners else max(2, min(self.changes, self.max_deliveries // listeners))


def measure(database: EmbeddedDatabase, workdir: Path, options: Options) -> tuple[list[Scenario], list[Scenario]]:
    """Each scenario gets a fresh suite process on a fresh database of the same server."""
    env = {"SQM_ALLOW_PRIVATE_CALLBACKS": "true"}
    if options.poll_seconds is not None:
        env["SQM_DELIVERY_POLL_SECONDS"] = str(options.poll_seconds)
    rng = random.Random(options.seed)
    listeners, control, callbacks = start_listeners(max(options.listeners), workdir)
    assert database.process is not None
    # The baseline runs first and again last; its row merges both, so that drift over the run
    # (other load on the machine, the database server's caches) weighs on every row alike.
    plan = [Scenario("baseline: no subscriptions", 0)]
    plan += [Scenario(f"{n} listener{'s' if n > 1 else ''}, no query", n) for n in options.listeners]
    plan.append(Scenario("baseline: no subscriptions", 0))
    done: list[Scenario] = []
    try:
        for number, scenario in enumerate(plan):
            name = f"events{number}"
            print(f"measuring {scenario.name} ({options.changes_for(scenario.listeners)} changes, "
                  f"{options.concurrency} concurrent "
                  "clients) ...", flush=True)
            suite, url = start_suite(database.uri, name, workdir, env)
            try:
                wait_ready(suite, url, workdir / f"suite-{name}.log")
                pids = {"suite": suite.pid, "database": database.process.pid, "listeners": listeners.pid,
                        "load generator": os.getpid()}
                auth = bearer(database.uri, name, url)
                asyncio.run(run_scenario(scenario, url, control, callbacks[:scenario.listeners], options, rng, pids,
                                         auth))
            finally:
                stop(suite)
            done.append(scenario)
            line = f"  {scenario.changes_per_second:.1f} changes/s"
            if scenario.listeners:
                line += (f"; {scenario.deliveries} of {scenario.expected} deliveries, "
                         f"{scenario.deliveries_per_second:.1f}/s, p50 {percentile(scenario.delays, 0.5):.0f} ms, "
                         f"p99 {percentile(scenario.delays, 0.99):.0f} ms")
            print(line + (f" ({scenario.incomplete})" if scenario.incomplete else ""), flush=True)
    finally:
        stop(listeners)
    baselines = [s for s in done if not s.listeners]
    rows = [merge_baselines(baselines), *(s for s in done if s.listeners)]
    return rows, baselines


def table(rows: Sequence[Scenario]) -> str:
    lines = ["| scenario | listeners | changes | deliveries | changes/s | deliveries/s | p50 delay ms | p99 delay ms |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        if row.listeners:
            cells = [f"{row.deliveries}", f"{row.deliveries_per_second:,.1f}",
                     f"{percentile(row.delays, 0.5):,.0f}", f"{percentile(row.delays, 0.99):,.0f}"]
        else:
            cells = ["0", "-", "-", "-"]
        lines.append(f"| {row.name} | {row.listeners} | {row.changes} | {cells[0]} | {row.changes_per_second:,.1f} "
                     f"| {' | '.join(cells[1:])} |")
    return "\n".join(lines)


def report(rows: Sequence[Scenario], baselines: Sequence[Scenario], options: Options, started: datetime,
           elapsed: float, load_before: tuple[float, float, float]) -> str:
    baseline = rows[0]
    poll = options.poll_seconds if options.poll_seconds is not None else "default"
    lines = [
        "# Event delivery benchmark",
        "",
        "`" + " ".join(["python -m bench.events", *sys.argv[1:]]) + "`",
        "",
        f"{started:%Y-%m-%d %H:%M} UTC; {platform.python_implementation()} {platform.python_version()} on "
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs; embedded database "
        f"(SecantusDB, fresh temporary storage dir, a fresh database and suite process per scenario); "
        f"at most {options.changes} changes and {options.max_deliveries} deliveries per scenario, changes "
        f"made by {options.concurrency} concurrent clients"
        + (f", paced at {options.rate:g} changes/s; " if options.rate else "; ")
        + f"delivery poll {poll}; at most {options.max_seconds:.0f} s per scenario; whole run {elapsed:.0f} s; "
        f"load average {load_before[0]:.2f} at the start, {os.getloadavg()[0]:.2f} at the end.",
        "",
        table(rows),
        "",
        "- changes: half `POST /service`, then half merge-patch `PATCH /service/{id}` of the description "
        "(each of the created services once, in random order); one event per change "
        "(ServiceCreateEvent, ServiceAttributeValueChangeEvent); every listener subscribed with no query.",
        "- changes/s: changes / time from the first change sent to the last answer. deliveries: distinct "
        "(listener, eventId) that arrived; deliveries/s: deliveries / time from the first change sent to the "
        "last delivery arrived. Delay: from the moment the client got the 201/200 of a change to the arrival "
        "of its event at a listener (negative when the event arrives first).",
        "- baseline: measured before and after the other scenarios: "
        + ", ".join(f"{b.changes_per_second:,.1f} changes/s" for b in baselines) + ".",
    ]
    for row in rows[1:]:
        ratio = row.changes_per_second / baseline.changes_per_second if baseline.changes_per_second else float("nan")
        per_change = row.deliveries / row.changes if row.changes else 0
        lines.append(
            f"- {row.name}: changes/s {ratio:.2f} x the baseline; deliveries per change {per_change:.1f}; "
            f"delay from eventTime p50 {percentile(row.event_time_delays, 0.5):,.0f} ms, "
            f"p99 {percentile(row.event_time_delays, 0.99):,.0f} ms (eventTime has ms precision)"
        )
        if row.incomplete:
            lines.append(f"- {row.name}: {row.deliveries} of {row.expected} deliveries arrived: {row.incomplete}")
        if row.duplicates:
            lines.append(f"- {row.name}: {row.duplicates} duplicate deliveries (same listener and eventId)")
        if row.unmatched:
            lines.append(f"- {row.name}: {row.unmatched} deliveries of events no measured change made")
    for row in rows:
        if row.cpu:
            used = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in row.cpu.items())
            lines.append(f"- {row.name}: CPU time during the scenario: {used}")
        if row.errors:
            example, _ = row.errors.most_common(1)[0]
            lines.append(f"- {row.name}: {sum(row.errors.values())} unexpected answers, e.g. {example}")
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m bench.events", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: at most 200 changes, 1000 deliveries and 40 s per scenario")
    parser.add_argument("--changes", type=int, default=None, help="changes per scenario (default 1000)")
    parser.add_argument("--max-deliveries", type=int, default=None,
                        help="a scenario with L listeners makes at most this many / L changes (default 5000)")
    parser.add_argument("--listeners", default="1,20",
                        help="comma-separated listener counts, one scenario each (default 1,20)")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent clients making changes (default 8)")
    parser.add_argument("--max-seconds", type=float, default=None,
                        help="time limit per scenario, changes and deliveries; a scenario stops waiting "
                             "for deliveries when reached and says so (default 200)")
    parser.add_argument("--poll-seconds", type=float, default=None,
                        help="SQM_DELIVERY_POLL_SECONDS for the suite (default: the suite's default)")
    parser.add_argument("--rate", type=float, default=None,
                        help="changes per second, paced open-loop (default: as fast as the clients go)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--output", type=Path, default=RESULTS, help=f"markdown result file (default {RESULTS})")
    args = parser.parse_args(argv)
    try:
        listeners = sorted({int(n) for n in args.listeners.split(",") if n.strip()})
    except ValueError:
        parser.error("--listeners takes whole numbers separated by commas, e.g. 1,20")
    defaults = (200, 1000, 40.0) if args.quick else (1000, 5000, 200.0)
    options = Options(
        changes=args.changes if args.changes is not None else defaults[0],
        max_deliveries=args.max_deliveries if args.max_deliveries is not None else defaults[1],
        listeners=listeners,
        concurrency=args.concurrency,
        max_seconds=args.max_seconds if args.max_seconds is not None else defaults[2],
        poll_seconds=args.poll_seconds, rate=args.rate, seed=args.seed, output=args.output, quick=args.quick,
    )
    if (options.changes < 2 or options.max_deliveries < 1 or options.concurrency < 1 or options.max_seconds <= 0
            or not listeners or listeners[0] < 1 or listeners[-1] > 200 or (args.rate is not None and args.rate <= 0)):
        parser.error("--changes needs at least 2; --concurrency and --max-seconds must be positive; "
                     "listener counts between 1 and 200")
    return options


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    started = datetime.now(UTC)
    load_before = os.getloadavg()
    clock = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="sqm-bench-events-"))
    try:
        with EmbeddedDatabase(str(workdir / "db"), log_path=workdir / "database.log") as database:
            rows, baselines = measure(database, workdir, options)
    except BaseException:
        print(f"the server, listener and database logs are kept in {workdir}", file=sys.stderr)
        raise
    shutil.rmtree(workdir, ignore_errors=True)
    text = report(rows, baselines, options, started, time.perf_counter() - clock, load_before)
    print()
    print(text)
    options.output.parent.mkdir(parents=True, exist_ok=True)
    options.output.write_text(text)
    print(f"written to {options.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
