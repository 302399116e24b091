"""The throughput cost of tracing: GET by id and POST against the suite with tracing off and with
tracing on (every request sampled, spans exported over OTLP/HTTP to a sink on loopback that
accepts and discards them), two suite processes started the same way side by side, measured in
interleaved rounds of the same run.

    python -m bench.telemetry                 # full run: 3 rounds of 8 s per operation and mode
    python -m bench.telemetry --quick         # smoke run: 1 round of 3 s
    python -m bench.telemetry --rounds 3 --seconds 8 --concurrency 8 --services 500

See bench/README.md for what each column measures. Prints a markdown table and writes it to
bench/results/telemetry.md. Numbers only: nothing here passes or fails on timings.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import httpx

# The suite's imports reach connexion, which imports starlette's test client, which warns.
warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
from bench.events import cpu_seconds  # noqa: E402
from services.tmf.embedded import EmbeddedDatabase, free_port  # noqa: E402
from services.tmf.settings import Settings  # noqa: E402
from tests.support.auth import mint  # noqa: E402

HOST = "127.0.0.1"
INVENTORY = "/tmf-api/serviceInventory/v4"
ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results" / "telemetry.md"
MODES = ("off", "on")
OPERATIONS = ("GET /service/{id}", "POST /service")


@dataclass
class Row:
    operation: str
    mode: str
    requests: int = 0
    seconds: float = 0.0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)
    # CPU seconds the suite process used during the row.
    cpu: float = 0.0

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000 if ordered else float("nan")


# ---------------------------------------------------------------- the OTLP sink


def sink_main(port: int) -> int:
    """An OTLP/HTTP endpoint that accepts every export and counts what it got (GET /count)."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    received = {"exports": 0, "bytes": 0}

    async def traces(request: Request) -> Response:
        received["bytes"] += len(await request.body())
        received["exports"] += 1
        return Response(b"", media_type="application/x-protobuf")

    async def count(request: Request) -> Response:
        return JSONResponse(received)

    app = Starlette(routes=[Route("/v1/traces", traces, methods=["POST"]), Route("/count", count)])
    uvicorn.Server(uvicorn.Config(app, host=HOST, port=port, log_config=None, log_level="warning")).run()
    return 0


# ---------------------------------------------------------------- processes


def start(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, *args], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def wait_ready(url: str, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


def suite_env(mode: str, sink: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["SQM_LOG_LEVEL"] = "WARNING"  # access lines cost the same in both modes; keep them out of the way
    if mode == "on":
        env.update({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": sink,
                    "OTEL_TRACES_SAMPLER": "always_on", "OTEL_SERVICE_NAME": "tmf-sqm-bench"})
    return env


# ---------------------------------------------------------------- load


def service_body(i: int) -> dict[str, object]:
    return {"name": f"svc-{i}-{uuid.uuid4().hex[:6]}", "state": "active", "category": "RFS",
            "serviceSpecification": {"id": "access"}, "supportingResource": [{"id": f"link-{i % 97}"}]}


async def seed(base: str, count: int, headers: dict[str, str]) -> list[str]:
    async with httpx.AsyncClient(base_url=base, timeout=30, headers=headers, trust_env=False) as client:
        ids = []
        for i in range(count):
            answer = await client.post(f"{INVENTORY}/service", json=service_body(i))
            answer.raise_for_status()
            ids.append(answer.json()["id"])
        return ids


async def drive(base: str, operation: str, ids: list[str], seconds: float, concurrency: int, row: Row,
                headers: dict[str, str], pid: int | None = None) -> None:
    stop = time.perf_counter() + seconds
    rng = random.Random(7)

    async def worker(client: httpx.AsyncClient) -> None:
        while time.perf_counter() < stop:
            started = time.perf_counter()
            if operation.startswith("GET"):
                answer = await client.get(f"{INVENTORY}/service/{rng.choice(ids)}")
                ok = answer.status_code == 200
            else:
                answer = await client.post(f"{INVENTORY}/service", json=service_body(rng.randrange(10**6)))
                ok = answer.status_code == 201
            row.latencies.append(time.perf_counter() - started)
            row.requests += ok
            row.errors += not ok

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits, headers=headers,
                                 trust_env=False) as client:
        began = time.perf_counter()
        cpu_before = cpu_seconds(pid) if pid is not None else 0.0
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        row.seconds += time.perf_counter() - began
        row.cpu += (cpu_seconds(pid) - cpu_before) if pid is not None else 0.0


# ---------------------------------------------------------------- main


def run(args: argparse.Namespace) -> str:
    load_before = os.getloadavg()
    storage = tempfile.mkdtemp(prefix="sqm-bench-telemetry-")
    processes: list[subprocess.Popen[bytes]] = []
    database = EmbeddedDatabase(storage)
    uri = database.start()
    try:
        sink_port = free_port()
        sink = f"http://{HOST}:{sink_port}"
        processes.append(start(["-m", "bench.telemetry", "sink", "--port", str(sink_port)], dict(os.environ)))
        wait_ready(f"{sink}/count")
        bases: dict[str, str] = {}
        pids: dict[str, int] = {}
        for mode in MODES:
            port = free_port()
            bases[mode] = f"http://{HOST}:{port}"
            process = start(["-m", "bench.servers", "suite", "--port", str(port), "--mongodb-uri", uri,
                             "--database", f"bench_telemetry_{mode}"], suite_env(mode, sink))
            processes.append(process)
            pids[mode] = process.pid
        for base in bases.values():
            wait_ready(f"{base}/health")
        # Each suite made its signing key in its own database when it started: the benchmark
        # calls each as the operator.
        headers = {mode: {"Authorization": "Bearer " + mint(uri, f"bench_telemetry_{mode}", base,
                                                               party_id=Settings.operator_party_id)}
                   for mode, base in bases.items()}
        ids = {mode: asyncio.run(seed(base, args.services, headers[mode])) for mode, base in bases.items()}
        rows = {(op, mode): Row(op, mode) for op in OPERATIONS for mode in MODES}
        # Warm both servers up, then alternate which mode goes first in each round.
        for mode in MODES:
            asyncio.run(drive(bases[mode], OPERATIONS[0], ids[mode], 1.0, args.concurrency, Row("", ""),
                              headers[mode]))
        for round_number in range(args.rounds):
            order = MODES if round_number % 2 == 0 else MODES[::-1]
            for operation in OPERATIONS:
                for mode in order:
                    asyncio.run(drive(bases[mode], operation, ids[mode], args.seconds, args.concurrency,
                                      rows[(operation, mode)], headers[mode], pids[mode]))
        exported = httpx.get(f"{sink}/count", timeout=5).json()
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=15)
        database.stop()
        shutil.rmtree(storage, ignore_errors=True)
    load_after = os.getloadavg()

    lines = [
        f"tracing cost, {args.rounds} round(s) of {args.seconds:g} s per operation and mode, "
        f"{args.concurrency} clients, {args.services} services seeded per suite",
        f"{platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} cores, "
        f"load average before {load_before[0]:.2f} / after {load_after[0]:.2f} (1 min)",
        "",
        "| operation | tracing | requests | req/s | p50 ms | p99 ms | errors | req/s on / off | cost "
        "| suite CPU ms/request | CPU cost |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for operation in OPERATIONS:
        off = rows[(operation, "off")]
        off_cpu = 1000 * off.cpu / off.requests if off.requests else float("nan")
        for mode in MODES:
            row = rows[(operation, mode)]
            ratio = row.rate / off.rate if off.rate else float("nan")
            cost = f"{(1 - ratio) * 100:.1f} %" if mode == "on" else ""
            cpu = 1000 * row.cpu / row.requests if row.requests else float("nan")
            # The throughput the suite's own CPU per request allows, lost to tracing: what the
            # cost would be with the cores to itself, whatever else the machine runs.
            cpu_cost = f"{(1 - off_cpu / cpu) * 100:.1f} %" if mode == "on" and cpu > 0 else ""
            lines.append(f"| {operation} | {mode} | {row.requests} | {row.rate:.0f} | {row.percentile(0.5):.1f} | "
                         f"{row.percentile(0.99):.1f} | {row.errors} | {ratio:.2f} | {cost} | {cpu:.2f} | {cpu_cost} |")
    lines += ["", f"spans exported by the traced suite: {exported['exports']} OTLP requests, "
                  f"{exported['bytes'] / 1e6:.1f} MB (the sink accepts and discards them)"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.telemetry")
    parser.add_argument("command", nargs="?", default="run", choices=["run", "sink"])
    parser.add_argument("--port", type=int, default=0, help="(sink) port to listen on")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--services", type=int, default=300)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.command == "sink":
        return sink_main(args.port)
    if args.quick:
        args.rounds, args.seconds, args.services = 1, 3.0, 50
    table = run(args)
    print(table)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
