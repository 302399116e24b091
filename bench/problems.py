"""Alarm storm benchmark: 10,000 alarms on 100 root causes over a 10,000-service inventory,
correlated by the problem service (through the alarm hub and the inventory's impact API) into
one service problem per root cause, against the same alarm intake with no problem service
subscribed, measured in the same run.

    python -m bench.problems                # full run: 10,000 services, 10,000 alarms on 100 roots
    python -m bench.problems --quick        # smoke run: 1,000 services, 1,000 alarms on 10 roots
    python -m bench.problems --alarms 10000 --roots 100 --concurrency 8 --profile /tmp/storm-profile

See bench/README.md for what each column measures. Prints a markdown table and writes it to
bench/results/problems.md. Numbers only: nothing here passes or fails on timings.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from pymongo import monitoring

from bench import inventory
from bench.events import bearer, cpu_seconds, percentile, start_process, stop, wait_ready
from bench.servers import main as serve
from services.tmf.embedded import EmbeddedDatabase, free_port

HOST = "127.0.0.1"
SUITE_PROCESS = "--suite-process"  # internal: run the suite (bench/servers.py) counting its database commands
COMMAND_STATS = "SQM_BENCH_COMMAND_STATS"
INVENTORY = inventory.INVENTORY
ALARMS = "/tmf-api/alarmManagement/v4"
PROBLEMS = "/tmf-api/serviceProblemManagement/v4"
SLA = "/tmf-api/slaManagement/v4"
RESULTS = Path(__file__).resolve().parent / "results" / "problems.md"
PAGE = 1000  # the suite's default SQM_PAGE_MAX_LIMIT
STALL_SECONDS = 60.0  # after the last alarm was sent, no newly correlated alarm for this long ends the wait
SUBSCRIBE_SECONDS = 90.0
MAX_POLL_FAILURES = 5
PROGRESS_SECONDS = 30.0
IMPACT_SAMPLE = 10  # roots whose impact graph size is reported


# ---------------------------------------------------------------- results


@dataclass
class Scenario:
    name: str
    correlated_by_problems: bool
    sent: int = 0
    accepted: int = 0
    send_seconds: float = 0.0  # first alarm sent to the last answer
    errors: Counter[str] = field(default_factory=Counter)
    cpu: dict[str, float] = field(default_factory=dict)
    # Correlation (the storm only).
    correlated: int = 0  # distinct accepted alarms found in some problem's underlyingAlarm
    correlation_seconds: float = 0.0  # first alarm sent to the poll that saw the last one correlated
    problems: int = 0
    roots_with_problem: int = 0
    extra_problems: int = 0  # problems beyond one per root cause
    misplaced: int = 0  # alarms listed in a problem of another root
    duplicated: int = 0  # alarms listed in more than one problem
    delays: list[float] = field(default_factory=list)  # POST answered -> first poll that saw it (upper bound)
    delays_low: list[float] = field(default_factory=list)  # POST answered -> the poll before it was sent
    timeline: list[tuple[float, int]] = field(default_factory=list)  # (seconds since first send, correlated)
    polls: int = 0
    poll_seconds: list[float] = field(default_factory=list)
    incomplete: str = ""
    deliveries: dict[str, Any] = field(default_factory=dict)
    impact_nodes: list[int] = field(default_factory=list)
    profile: list[str] = field(default_factory=list)
    commands: dict[str, list[float]] = field(default_factory=dict)  # "command collection" -> [count, seconds]

    @property
    def accepted_per_second(self) -> float:
        return self.accepted / self.send_seconds if self.send_seconds > 0 else 0.0

    @property
    def correlated_per_second(self) -> float:
        return self.correlated / self.correlation_seconds if self.correlation_seconds > 0 else 0.0

    def reached(self, share: float) -> float | None:
        """Seconds from the first alarm sent to the first poll that saw ``share`` of the accepted
        alarms correlated."""
        goal = share * self.accepted
        return next((t for t, n in self.timeline if n >= goal and n > 0), None)


def merge_baselines(runs: Sequence[Scenario]) -> Scenario:
    merged = Scenario("baseline: no problem service subscribed", False)
    for run in runs:
        merged.sent += run.sent
        merged.accepted += run.accepted
        merged.send_seconds += run.send_seconds
        merged.errors.update(run.errors)
        for name, seconds in run.cpu.items():
            merged.cpu[name] = merged.cpu.get(name, 0.0) + seconds
        merged.incomplete = merged.incomplete or run.incomplete
    return merged


# ---------------------------------------------------------------- processes


def start_suite(uri: str, database: str, workdir: Path, correlate: bool) -> tuple[subprocess.Popen[bytes], str, Path]:
    """The suite as ``sqm serve`` runs it (bench/servers.py). ``sqm serve`` points the problem
    service at its own alarm and SLA hubs and inventory; bench/servers.py does not, so the
    storm's suite gets those variables here, and the baseline's gets them empty (whatever the
    environment says) so that nothing subscribes to its alarms. Returns the process, its URL and
    the file its database command counts are written to (see ``suite_process``)."""
    port = free_port(HOST)
    url = f"http://{HOST}:{port}"
    stats = workdir / f"commands-{database}.json"
    env = {"SQM_PUBLIC_URL": url, "SQM_ALLOW_PRIVATE_CALLBACKS": "true", COMMAND_STATS: str(stats)}
    if correlate:
        env.update(SQM_INVENTORY_URL=f"{url}{INVENTORY}", SQM_ALARM_HUB_URL=f"{url}{ALARMS}",
                   SQM_SLA_HUB_URL=f"{url}{SLA}")
    else:
        env.update(SQM_INVENTORY_URL="", SQM_ALARM_HUB_URL="", SQM_SLA_HUB_URL="")
    process = start_process(["bench.problems", SUITE_PROCESS, "suite", "--host", HOST, "--port", str(port),
                             "--mongodb-uri", uri, "--database", database], workdir / f"suite-{database}.log", env)
    return process, url, stats


class CommandStats(monitoring.CommandListener):
    """Counts the suite's database commands and their round-trip times per command and
    collection. SIGUSR1 writes the counts since the last SIGUSR1 to the file named by
    ``SQM_BENCH_COMMAND_STATS`` and starts counting afresh."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.pending: dict[tuple[int, int], str] = {}
        self.counts: Counter[str] = Counter()
        self.seconds: defaultdict[str, float] = defaultdict(float)

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        name = event.command_name
        target = event.command.get("collection") if name == "getMore" else event.command.get(name)
        self.pending[(event.request_id, event.operation_id or 0)] = (
            f"{name} {target}" if isinstance(target, str) else name)

    def _finished(self, event: monitoring.CommandSucceededEvent | monitoring.CommandFailedEvent) -> None:
        key = self.pending.pop((event.request_id, event.operation_id or 0), event.command_name)
        self.counts[key] += 1
        self.seconds[key] += event.duration_micros / 1e6

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        self._finished(event)

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        self._finished(event)

    def dump(self, *_: Any) -> None:
        counts, seconds = self.counts, self.seconds
        self.counts, self.seconds = Counter(), defaultdict(float)
        Path(self.path).write_text(json.dumps({k: [n, seconds[k]] for k, n in counts.items()}))


def suite_process(argv: list[str]) -> int:
    """bench/servers.py with a PyMongo command listener registered before the suite creates
    its client (a registered listener applies to every client created after)."""
    path = os.environ.get(COMMAND_STATS)
    if path:
        stats = CommandStats(path)
        monitoring.register(stats)
        signal.signal(signal.SIGUSR1, stats.dump)
    return serve(argv)


def read_commands(process: subprocess.Popen[bytes], path: Path) -> dict[str, list[float]]:
    """Ask the suite for its command counts since the last call (SIGUSR1) and read them."""
    path.unlink(missing_ok=True)
    if process.poll() is not None:
        return {}
    process.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            found: dict[str, list[float]] = json.loads(path.read_text())
            return found
        except (OSError, ValueError):
            time.sleep(0.05)
    return {}


def code_version() -> str:
    """The commit the suite runs, and whether the work tree differs from it."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git work tree)"
    return f"{commit}" + (" with uncommitted changes" if dirty else "")


def cpu_of(pid: int) -> float:
    if pid == os.getpid():
        # This process only, not its children: py-spy's CPU is its own.
        times = os.times()
        return times.user + times.system
    return cpu_seconds(pid)


def wait_subscribed(process: subprocess.Popen[bytes], url: str, log: Path) -> str:
    """Wait until /health shows every consumption of the suite subscribed; returns the id of the
    problem service's subscription on the alarm hub."""
    deadline = time.monotonic() + SUBSCRIBE_SECONDS
    last: Any = None
    with httpx.Client(trust_env=False, timeout=5.0) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise SystemExit(f"{url}: the suite exited with {process.returncode}; see {log}")
            try:
                last = client.get(f"{url}/health").json().get("subscriptions") or []
            except (httpx.HTTPError, ValueError):
                last = None
            if last and all(s.get("subscription") for s in last):
                alarm = [s for s in last if "AlarmCreateEvent" in (s.get("events") or [])]
                if alarm:
                    return str(alarm[0]["subscription"])
            time.sleep(0.2)
    raise SystemExit(f"{url}: the problem service did not subscribe within {SUBSCRIBE_SECONDS:.0f} s "
                     f"(/health subscriptions: {last}); see {log}")


class Profiler:
    """py-spy sampling the suite and the database server while the storm runs, written as
    collapsed stacks. Only the thread holding the GIL is sampled (--gil): both are Python
    processes, so that is where their CPU goes; sampling every thread counts the database's
    threads waiting in recv as work. py-spy pauses the process for each sample (without that,
    --nonblocking, coroutine stacks come out garbled), which slows it a little."""

    def __init__(self, directory: Path, pids: dict[str, int], rate: int) -> None:
        self.directory = directory
        self.pids = pids
        self.rate = rate
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    @staticmethod
    def executable() -> str | None:
        beside = Path(sys.executable).parent / "py-spy"
        return str(beside) if beside.exists() else shutil.which("py-spy")

    def start(self) -> None:
        spy = self.executable()
        if spy is None:
            raise SystemExit("--profile needs py-spy (pip install py-spy)")
        self.directory.mkdir(parents=True, exist_ok=True)
        for name, pid in self.pids.items():
            log = open(self.directory / f"{name}.py-spy.log", "ab")  # handed to the child, closed here after
            self.processes[name] = subprocess.Popen(
                [spy, "record", "--pid", str(pid), "--rate", str(self.rate), "--gil", "--full-filenames",
                 "--format", "raw", "--output", str(self.directory / f"{name}.txt")],
                stdout=log, stderr=log, stdin=subprocess.DEVNULL)
            log.close()

    def stop(self) -> list[str]:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
        lines: list[str] = []
        for name, process in self.processes.items():
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            lines += summarize_profile(name, self.directory / f"{name}.txt")
        return lines


def frame_name(frame: str) -> tuple[str, str]:
    """("function", "short/path.py") of a py-spy frame ``function (path:line)``."""
    function, _, location = frame.rpartition(" (")
    path = location.rstrip(")").rpartition(":")[0] or location.rstrip(")")
    for marker in ("/site-packages/", "/lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    else:
        path = path.removeprefix(str(Path(__file__).resolve().parent.parent) + "/")
    return function or frame, path


def summarize_profile(name: str, path: Path, top: int = 12) -> list[str]:
    if not path.exists():
        return [f"{name}: no profile written (see {path.with_suffix('.py-spy.log')})"]
    inclusive: Counter[tuple[str, str]] = Counter()
    own: Counter[tuple[str, str]] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [frame_name(f) for f in stack.split(";")]
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    if not total:
        return [f"{name}: no CPU samples"]
    project = [(f, n) for f, n in inclusive.most_common() if f[1].startswith(("services/", "secantus"))]
    lines = [f"{name}: {total} CPU samples; inclusive, project code: " + "; ".join(
        f"`{fn}` ({where}) {100 * n / total:.0f} %" for (fn, where), n in project[:top])]
    lines.append(f"{name}: self time, top frames: " + "; ".join(
        f"`{fn}` ({where}) {100 * n / total:.0f} %" for (fn, where), n in own.most_common(top)))
    return lines


# ---------------------------------------------------------------- load


def alarm_body(n: int, root: str, rng: random.Random) -> dict[str, Any]:
    return {
        "alarmType": "communicationsAlarm",
        "perceivedSeverity": rng.choice(("critical", "major")),
        "probableCause": "lossOfSignal",
        "specificProblem": f"storm alarm {n}",
        "alarmedObject": {"id": root, "name": f"access link {root}", "@referredType": "Resource"},
        "alarmedObjectType": "AccessLink",
        "sourceSystemId": "bench-nms",
        "state": "raised",
        "alarmRaisedTime": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
    }


async def send_alarms(client: httpx.AsyncClient, bodies: Sequence[dict[str, Any]], concurrency: int,
                      deadline: float, scenario: Scenario, answered: dict[str, float],
                      root_of: dict[str, str]) -> None:
    """POST every alarm from ``concurrency`` workers, each sending its next alarm as soon as the
    last one answered; ``answered[alarm id]`` is when the 201 came (``time.monotonic()``)."""
    next_index = 0

    async def worker() -> None:
        nonlocal next_index
        while next_index < len(bodies):
            if time.monotonic() > deadline:
                scenario.incomplete = "alarm sending stopped at the time limit"
                return
            body = bodies[next_index]
            next_index += 1
            scenario.sent += 1
            try:
                response = await client.post(f"{ALARMS}/alarm", json=body)
            except httpx.HTTPError as exc:
                scenario.errors[type(exc).__name__] += 1
                continue
            if response.status_code != 201:
                scenario.errors[f"{response.status_code} {response.text[:160]}"] += 1
                continue
            alarm_id = response.json()["id"]
            answered[alarm_id] = time.monotonic()
            root_of[alarm_id] = body["alarmedObject"]["id"]

    began = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    scenario.send_seconds = time.monotonic() - began
    scenario.accepted = len(answered)


async def list_problems(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    """Every problem with its underlying alarms and root cause, page by page."""
    found: list[dict[str, Any]] = []
    while True:
        # A literal comma: an encoded one (%2C) would be part of one field name.
        response = await client.get(f"{PROBLEMS}/serviceProblem?fields=underlyingAlarm,rootCauseResource"
                                    f"&limit={PAGE}&offset={len(found)}")
        if response.status_code not in (200, 206):
            raise RuntimeError(f"GET /serviceProblem answered {response.status_code}: {response.text[:300]}")
        page = response.json()
        found += page
        if not page or len(found) >= int(response.headers.get("x-total-count", len(found))):
            return found


async def run_baseline(scenario: Scenario, url: str, bodies: Sequence[dict[str, Any]], options: Options,
                       pids: dict[str, int], auth: dict[str, str]) -> Scenario:
    limits = httpx.Limits(max_connections=options.concurrency, max_keepalive_connections=options.concurrency)
    async with httpx.AsyncClient(base_url=url, trust_env=False, timeout=60.0, limits=limits, headers=auth) as client:
        cpu_before = {name: cpu_of(pid) for name, pid in pids.items()}
        await send_alarms(client, bodies, options.concurrency, time.monotonic() + options.max_seconds, scenario,
                          {}, {})
        scenario.cpu = {name: cpu_of(pid) - cpu_before[name] for name, pid in pids.items()}
    return scenario


async def run_storm(scenario: Scenario, url: str, subscription: str, roots: Sequence[str],
                    bodies: Sequence[dict[str, Any]], options: Options, pids: dict[str, int],
                    profiler: Profiler | None, commands: Callable[[], dict[str, list[float]]],
                    auth: dict[str, str]) -> Scenario:
    """Send the alarms while polling the problems; stop when every accepted alarm is listed in a
    problem, at the time limit, or when correlation stalls after the last alarm was sent."""
    limits = httpx.Limits(max_connections=options.concurrency, max_keepalive_connections=options.concurrency)
    answered: dict[str, float] = {}
    root_of: dict[str, str] = {}
    seen: dict[str, tuple[float, float]] = {}  # alarm id -> (poll before sent at, first poll answered at)
    last_problems: list[dict[str, Any]] = []
    async with httpx.AsyncClient(base_url=url, trust_env=False, timeout=120.0, limits=limits, headers=auth) as client, \
            httpx.AsyncClient(base_url=url, trust_env=False, timeout=120.0, headers=auth) as poller:
        commands()  # counting starts here
        cpu_before = {name: cpu_of(pid) for name, pid in pids.items()}
        if profiler is not None:
            profiler.start()
        began = time.monotonic()
        deadline = began + options.max_seconds
        sending = asyncio.create_task(send_alarms(client, bodies, options.concurrency, deadline, scenario,
                                                  answered, root_of))
        previous_sent = began
        progress_at = began
        failures = 0
        reported_at = began
        try:
            while True:
                sent_at = time.monotonic()
                try:
                    last_problems = await list_problems(poller)
                    failures = 0
                except (httpx.HTTPError, RuntimeError) as exc:
                    scenario.errors[f"poll: {str(exc)[:160] or type(exc).__name__}"] += 1
                    failures += 1
                    if failures >= MAX_POLL_FAILURES:
                        scenario.incomplete = f"{failures} polls of the problems failed in a row"
                        break
                got_at = time.monotonic()
                scenario.polls += 1
                scenario.poll_seconds.append(got_at - sent_at)
                for problem in last_problems:
                    for alarm in problem.get("underlyingAlarm") or []:
                        if alarm.get("id") and alarm["id"] not in seen:
                            seen[alarm["id"]] = (previous_sent, got_at)
                            progress_at = got_at
                previous_sent = sent_at
                # A fresh database: every alarm in a problem is one of ours.
                scenario.timeline.append((got_at - began, len(seen)))
                if got_at - reported_at >= PROGRESS_SECONDS:
                    reported_at = got_at
                    print(f"  {got_at - began:.0f} s: {len(answered)} alarms accepted, {len(seen)} correlated "
                          f"in {len(last_problems)} problems", flush=True)
                if sending.done():
                    if not answered.keys() - seen.keys():
                        scenario.correlation_seconds = got_at - began
                        break
                    if got_at >= deadline:
                        scenario.incomplete = f"stopped at the {options.max_seconds:.0f} s limit"
                        break
                    if got_at - max(progress_at, began + scenario.send_seconds) >= STALL_SECONDS:
                        scenario.incomplete = f"no alarm newly correlated for {STALL_SECONDS:.0f} s"
                        break
                elif got_at >= deadline + 60:
                    scenario.incomplete = "alarm sending did not end at the time limit"
                    break
                await asyncio.sleep(max(0.0, options.poll_seconds - (time.monotonic() - sent_at)))
        finally:
            if not sending.done():
                sending.cancel()
            await asyncio.gather(sending, return_exceptions=True)
            scenario.cpu = {name: cpu_of(pid) - cpu_before[name] for name, pid in pids.items()}
            scenario.commands = commands()
            if profiler is not None:
                scenario.profile = profiler.stop()
        if not scenario.correlation_seconds:
            # Incomplete: the rate is over the time until the last poll that saw progress.
            scenario.correlation_seconds = progress_at - began

        ours = {a: t for a, t in seen.items() if a in answered}
        scenario.correlated = len(ours)
        for alarm_id, (low, high) in ours.items():
            scenario.delays.append(high - answered[alarm_id])
            scenario.delays_low.append(max(0.0, low - answered[alarm_id]))
        holders: defaultdict[str, int] = defaultdict(int)
        per_root: Counter[str] = Counter()
        for problem in last_problems:
            root = ((problem.get("rootCauseResource") or [{}])[0]).get("id")
            per_root[root] += 1
            for alarm in problem.get("underlyingAlarm") or []:
                holders[alarm.get("id")] += 1
                if alarm.get("id") in root_of and root_of[alarm["id"]] != root:
                    scenario.misplaced += 1
        scenario.problems = len(last_problems)
        scenario.roots_with_problem = len(set(per_root) & set(roots))
        scenario.extra_problems = sum(n - 1 for n in per_root.values() if n > 1)
        scenario.duplicated = sum(1 for n in holders.values() if n > 1)

        try:
            summary = await poller.get(f"{ALARMS}/hub/{subscription}/deliverySummary")
            if summary.status_code == 200:
                scenario.deliveries = summary.json()
        except httpx.HTTPError:
            pass
        for root in roots[:IMPACT_SAMPLE]:
            try:
                impact = await poller.get(f"{INVENTORY}/resourceImpact/{root}")
                if impact.status_code == 200:
                    scenario.impact_nodes.append(len(impact.json().get("node") or []))
            except httpx.HTTPError:
                pass
    return scenario


# ---------------------------------------------------------------- the run


@dataclass
class Options:
    services: int
    alarms: int
    roots: int
    baseline_alarms: int
    concurrency: int
    max_seconds: float
    poll_seconds: float
    seed: int
    output: Path
    quick: bool
    profile: Path | None
    profile_rate: int


def measure(database: EmbeddedDatabase, workdir: Path,
            options: Options) -> tuple[list[Scenario], list[Scenario], list[str]]:
    rng = random.Random(options.seed)
    assert database.process is not None
    database_pid = database.process.pid
    notes: list[str] = []
    baselines: list[Scenario] = []

    def baseline(number: int) -> None:
        name = f"problems-baseline{number}"
        print(f"measuring the baseline ({options.baseline_alarms} alarms, no problem service subscribed, "
              f"{options.concurrency} concurrent clients) ...", flush=True)
        suite, url, _ = start_suite(database.uri, name, workdir, correlate=False)
        try:
            wait_ready(suite, url, workdir / f"suite-{name}.log")
            pids = {"suite": suite.pid, "database": database_pid, "load generator": os.getpid()}
            bodies = [alarm_body(n, f"baseline-link-{n % options.roots}", rng) for n in range(options.baseline_alarms)]
            auth = bearer(database.uri, name, url)
            scenario = asyncio.run(run_baseline(Scenario("baseline", False), url, bodies, options, pids, auth))
        finally:
            stop(suite)
        baselines.append(scenario)
        print(f"  {scenario.accepted} alarms accepted, {scenario.accepted_per_second:.1f}/s", flush=True)

    baseline(1)
    name = "problems-storm"
    notes.append(f"code: commit {code_version()} when the storm's suite started")
    suite, url, stats = start_suite(database.uri, name, workdir, correlate=True)
    log = workdir / f"suite-{name}.log"
    try:
        wait_ready(suite, url, log)
        subscription = wait_subscribed(suite, url, log)
        print(f"the problem service is subscribed to the alarm hub ({subscription})", flush=True)
        auth = bearer(database.uri, name, url)
        graph = asyncio.run(seed(url, options, rng, auth))
        sizes = [len(level) for level in graph.levels]
        roots = rng.sample(graph.access_links, options.roots)
        notes.append(f"inventory: {options.services} services in {inventory.LEVELS} levels (bottom to top "
                     f"{', '.join(map(str, sizes))}), seeded as bench/inventory.py seeds it; level 1 rests on "
                     f"{len(graph.access_links)} access links and {len(graph.pe_routers)} PE routers; "
                     f"the {options.roots} root causes are access links drawn at random")
        per_root = options.alarms // options.roots
        order = [roots[n % options.roots] for n in range(options.alarms)]
        rng.shuffle(order)
        bodies = [alarm_body(n, root, rng) for n, root in enumerate(order)]
        print(f"measuring the storm: {options.alarms} alarms on {options.roots} root causes (about {per_root} "
              f"each, in random order), {options.concurrency} concurrent clients, problems polled every "
              f"{options.poll_seconds:g} s ...", flush=True)
        pids = {"suite": suite.pid, "database": database_pid, "load generator": os.getpid()}
        profiler = None
        if options.profile is not None:
            profiler = Profiler(options.profile, {"suite": suite.pid, "database": database_pid},
                                options.profile_rate)
        storm = asyncio.run(run_storm(Scenario("alarm storm, problem service subscribed", True), url, subscription,
                                      roots, bodies, options, pids, profiler, lambda: read_commands(suite, stats),
                                      auth))
    finally:
        stop(suite)
    print(f"  {storm.accepted} alarms accepted, {storm.accepted_per_second:.1f}/s; {storm.correlated} correlated, "
          f"{storm.correlated_per_second:.1f}/s; {storm.problems} problems"
          + (f" ({storm.incomplete})" if storm.incomplete else ""), flush=True)
    baseline(2)
    return [merge_baselines(baselines), storm], baselines, notes


async def seed(url: str, options: Options, rng: random.Random, auth: dict[str, str]) -> inventory.Graph:
    seeding = inventory.Options(services=options.services, requests=0, concurrency=options.concurrency,
                                max_seconds=options.max_seconds, seed=options.seed, output=options.output,
                                quick=options.quick)
    limits = httpx.Limits(max_connections=options.concurrency, max_keepalive_connections=options.concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120.0, trust_env=False,
                                 headers=auth) as client:
        print(f"seeding {options.services} services through POST /service ({options.concurrency} concurrent "
              "clients) ...", flush=True)
        graph, row = await inventory.seed_graph(client, seeding, rng)
        print(f"  seeded in {row.seconds:.0f} s ({row.throughput:.0f}/s)", flush=True)
    return graph


def table(rows: Sequence[Scenario], baseline: Scenario) -> str:
    lines = ["| scenario | alarms sent | accepted | accepted/s | vs baseline | correlated | correlated/s "
             "| problems | p50 delay ms | p99 delay ms |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        ratio = row.accepted_per_second / baseline.accepted_per_second if baseline.accepted_per_second else float("nan")
        if row.correlated_by_problems:
            cells = [f"{row.correlated}", f"{row.correlated_per_second:,.1f}", f"{row.problems}",
                     f"{percentile(row.delays, 0.5):,.0f}", f"{percentile(row.delays, 0.99):,.0f}"]
        else:
            cells = ["-"] * 5
        lines.append(f"| {row.name} | {row.sent} | {row.accepted} | {row.accepted_per_second:,.1f} | {ratio:.2f} "
                     f"| {' | '.join(cells)} |")
    return "\n".join(lines)


def report(rows: Sequence[Scenario], baselines: Sequence[Scenario], notes: Sequence[str], options: Options,
           started: datetime, elapsed: float, load_before: tuple[float, float, float]) -> str:
    baseline, storm = rows[0], rows[1]
    lines = [
        "# Alarm storm benchmark",
        "",
        "`" + " ".join(["python -m bench.problems", *sys.argv[1:]]) + "`",
        "",
        f"{started:%Y-%m-%d %H:%M} UTC; {platform.python_implementation()} {platform.python_version()} on "
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs; embedded database (SecantusDB, fresh "
        f"temporary storage dir, a fresh database and suite process per scenario); {options.alarms} alarms on "
        f"{options.roots} root causes over {options.services} services, {options.baseline_alarms} alarms per "
        f"baseline run, sent by {options.concurrency} concurrent clients; problems polled every "
        f"{options.poll_seconds:g} s; at most {options.max_seconds:.0f} s for the storm; whole run {elapsed:.0f} s; "
        f"load average {load_before[0]:.2f} at the start, {os.getloadavg()[0]:.2f} at the end.",
        "",
        table(rows, baseline),
        "",
        *(f"- {note}" for note in notes),
        "- alarms: `POST /alarm`, critical or major, state raised, `alarmedObject` one of the root causes with "
        "`@referredType` Resource; accepted/s: 201s / time from the first alarm sent to the last answer.",
        "- correlated: accepted alarms listed in the `underlyingAlarm` of some problem "
        "(`GET /serviceProblem?fields=underlyingAlarm,rootCauseResource`, every page, polled while the storm "
        "runs); correlated/s: correlated / time from the first alarm sent to the poll that saw the last one.",
        "- delay: from the 201 of an alarm to the answer of the first poll that listed it in a problem, for every "
        f"correlated alarm (an upper bound; the poll interval is {options.poll_seconds:g} s). Lower bound, from "
        "the 201 to the sending of the poll before: p50 "
        f"{percentile(storm.delays_low, 0.5):,.0f} ms, p99 {percentile(storm.delays_low, 0.99):,.0f} ms.",
        "- baseline: a suite process with no hub configured, so nothing subscribes to the alarm hub and no "
        "problem is opened; measured before and after the storm: "
        + ", ".join(f"{b.accepted_per_second:,.1f} alarms/s" for b in baselines) + ".",
    ]
    timeline = [f"{int(share * 100)} % at {t:,.0f} s" for share in (0.1, 0.25, 0.5, 0.75, 0.9, 1.0)
                if (t := storm.reached(share)) is not None]
    lines.append(f"- storm: the last alarm was answered {storm.send_seconds:,.0f} s after the first was sent; "
                 "correlated " + (", ".join(timeline) if timeline else "none") + ".")
    sent_end = next((n for t, n in storm.timeline if t >= storm.send_seconds), None)
    if sent_end is not None and storm.send_seconds > 0:
        after = storm.correlation_seconds - storm.send_seconds
        lines.append(f"- storm: {sent_end} alarms correlated by the time the last alarm was answered "
                     f"({sent_end / storm.send_seconds:,.1f}/s while sending)"
                     + (f"; the other {storm.correlated - sent_end} in the {after:,.0f} s after "
                        f"({(storm.correlated - sent_end) / after:,.1f}/s)" if after > 0 and storm.correlated > sent_end
                        else "") + ".")
    lines.append(f"- storm: {storm.problems} problems for {options.roots} root causes ({storm.roots_with_problem} "
                 f"roots with a problem, {storm.extra_problems} problems beyond one per root); {storm.misplaced} "
                 f"alarms listed in another root's problem; {storm.duplicated} alarms listed in more than one problem.")
    if storm.impact_nodes:
        nodes = storm.impact_nodes
        lines.append(f"- root causes: `GET /resourceImpact/{{id}}` of {len(nodes)} of them holds "
                     f"{sum(nodes) / len(nodes):,.0f} nodes on average (min {min(nodes)}, max {max(nodes)}).")
    if storm.deliveries:
        counts = ", ".join(f"{k} {storm.deliveries.get(k, 0)}" for k in
                           ("delivered", "pending", "retrying", "dead", "suspended"))
        lines.append(f"- storm: deliveries to the problem service's alarm listener at the end: {counts}"
                     + (f"; last error {storm.deliveries['lastError']}" if storm.deliveries.get("lastError") else "")
                     + ".")
    if storm.poll_seconds:
        polls = storm.poll_seconds
        lines.append(f"- storm: {storm.polls} polls of the problems, each {1000 * sum(polls) / len(polls):,.0f} ms "
                     f"on average (max {1000 * max(polls):,.0f} ms).")
    if storm.incomplete:
        lines.append(f"- storm: {storm.correlated} of {storm.accepted} alarms correlated: {storm.incomplete}.")
    for row in rows:
        if row.cpu:
            used = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in row.cpu.items())
            lines.append(f"- {row.name}: CPU time during the scenario: {used}")
        if row.errors:
            example, _ = row.errors.most_common(1)[0]
            lines.append(f"- {row.name}: {sum(row.errors.values())} unexpected answers, e.g. {example}")
    if storm.commands:
        total = sum(int(n) for n, _ in storm.commands.values())
        ranked = sorted(storm.commands.items(), key=lambda item: -item[1][1])
        lines.append(
            f"- storm: the suite's database commands while the storm ran (PyMongo command listener): {total:,} "
            f"for {storm.accepted} alarms accepted and {storm.correlated} correlated; by time waited "
            "(command collection: count, mean round trip, total): " + "; ".join(
                f"`{key}` {int(n):,}, {1000 * seconds / n:,.1f} ms, {seconds:,.0f} s"
                for key, (n, seconds) in ranked[:14]) + ".")
    if storm.profile:
        lines.append(f"- profile (py-spy --gil, {options.profile_rate} samples/s while the storm ran, collapsed "
                     f"stacks in {options.profile}):")
        lines += [f"  - {line}" for line in storm.profile]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m bench.problems", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 1,000 services, 1,000 alarms on 10 roots, 300 per baseline run, 100 s")
    parser.add_argument("--services", type=int, default=None, help="services in the inventory (default 10000)")
    parser.add_argument("--alarms", type=int, default=None, help="alarms in the storm (default 10000)")
    parser.add_argument("--roots", type=int, default=None, help="root causes (access links; default 100)")
    parser.add_argument("--baseline-alarms", type=int, default=None,
                        help="alarms per baseline run, one before and one after the storm (default 2000)")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent clients sending alarms (default 8)")
    parser.add_argument("--max-seconds", type=float, default=None,
                        help="time limit for the storm, sending and correlation, and for each baseline run; "
                             "the storm stops waiting when reached and says how far it got (default 900)")
    parser.add_argument("--poll-seconds", type=float, default=1.0,
                        help="how often the problems are read while the storm runs (default 1)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--output", type=Path, default=RESULTS, help=f"markdown result file (default {RESULTS})")
    parser.add_argument("--profile", type=Path, default=None,
                        help="directory: sample the suite and the database with py-spy during the storm, keep "
                             "the collapsed stacks there and summarize them in the result")
    parser.add_argument("--profile-rate", type=int, default=50, help="py-spy samples per second (default 50)")
    args = parser.parse_args(argv)
    defaults = (1000, 1000, 10, 300, 100.0) if args.quick else (10_000, 10_000, 100, 2000, 900.0)
    options = Options(
        services=args.services if args.services is not None else defaults[0],
        alarms=args.alarms if args.alarms is not None else defaults[1],
        roots=args.roots if args.roots is not None else defaults[2],
        baseline_alarms=args.baseline_alarms if args.baseline_alarms is not None else defaults[3],
        concurrency=args.concurrency,
        max_seconds=args.max_seconds if args.max_seconds is not None else defaults[4],
        poll_seconds=args.poll_seconds, seed=args.seed, output=args.output, quick=args.quick,
        profile=args.profile, profile_rate=args.profile_rate,
    )
    links = max(1, inventory.level_sizes(max(options.services, 1))[0] * 2 // 3)
    if options.services < 8 * inventory.LEVELS:
        parser.error(f"--services needs at least {8 * inventory.LEVELS}")
    if not 1 <= options.roots <= links:
        parser.error(f"--roots must be between 1 and the {links} access links of {options.services} services")
    if (options.alarms < options.roots or options.baseline_alarms < 1 or options.concurrency < 1
            or options.max_seconds <= 0 or options.poll_seconds <= 0 or options.profile_rate < 1):
        parser.error("--alarms needs at least one per root; --baseline-alarms, --concurrency, --max-seconds, "
                     "--poll-seconds and --profile-rate must be positive")
    if options.profile is not None and Profiler.executable() is None:
        parser.error("--profile needs py-spy (pip install py-spy)")
    return options


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == [SUITE_PROCESS]:
        return suite_process(argv[1:])
    options = parse_args(argv)
    started = datetime.now(UTC)
    load_before = os.getloadavg()
    clock = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="sqm-bench-problems-"))
    try:
        with EmbeddedDatabase(str(workdir / "db"), log_path=workdir / "database.log") as database:
            rows, baselines, notes = measure(database, workdir, options)
    except BaseException:
        print(f"the server and database logs are kept in {workdir}", file=sys.stderr)
        raise
    shutil.rmtree(workdir, ignore_errors=True)
    text = report(rows, baselines, notes, options, started, time.perf_counter() - clock, load_before)
    print()
    print(text)
    options.output.parent.mkdir(parents=True, exist_ok=True)
    options.output.write_text(text)
    print(f"written to {options.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
