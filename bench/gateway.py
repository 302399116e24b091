"""What the front door costs: token validation in the service, and the hop through the gateway,
on ``GET /service/{id}`` and on a filtered list, as ratios against the same request without them.

Four servers, each its own process, on one embedded database:

- ``unchecked``: the inventory app built with a validator that returns a fixed operator caller
  (bench only: the product never builds this), the baseline for token validation;
- ``service``: the inventory app as ``sqm serve --api serviceInventory`` runs it, validating
  each token against the gateway's key set (``SQM_OAUTH_ISSUER`` = the gateway);
- ``gateway``: ``sqm gateway`` in front of ``service``, hosting the issuer, with a per-client
  rate limit high enough never to refuse (each request is still counted, and the counts added
  to MongoDB in batches);
- ``gateway-unlimited``: the same gateway without rate limits.

Requests are sequential (one client, keep-alive), interleaved in rounds so that load on the
machine falls on every configuration alike. Besides latencies, it reports the CPU time the
servers on the way spend per request (read from /proc), which waiting on a loaded machine
does not inflate.

    python -m bench.gateway [--requests 300] [--rounds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")

import httpx  # noqa: E402

INVENTORY = "/tmf-api/serviceInventory/v4"
READY_TIMEOUT = 120.0


def _unchecked_app(uri: str, database: str, public_url: str) -> Any:
    import services.tmf.api as api
    from services.app import create_app
    from services.tmf.auth.identity import OPERATOR, SCOPES, Caller
    from services.tmf.auth.validator import TokenValidator
    from services.tmf.settings import Settings

    class FixedCaller(TokenValidator):
        async def authenticate(self, authorization: str | None) -> Caller:
            return Caller(party_id="operator", role=OPERATOR, client_id="bench", scopes=frozenset(SCOPES))

    api.TokenValidator = FixedCaller  # type: ignore[misc]
    return create_app(Settings.from_env(mongodb_uri=uri, database=database, public_url=public_url),
                      apis=["serviceInventory"])


def _serve_unchecked(port: int, uri: str, database: str) -> None:
    import uvicorn

    app = _unchecked_app(uri, database, f"http://127.0.0.1:{port}")
    uvicorn.run(app, host="127.0.0.1", port=port, log_config=None, log_level="warning")


def _start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("w") as stderr:
        return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr, env=env)


def _wait(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"a server exited:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/health/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} was not ready within {READY_TIMEOUT:.0f} s:\n{log.read_text()[-3000:]}")


async def _register_operator(uri: str, database: str) -> tuple[str, str]:
    from pymongo import AsyncMongoClient

    from services.tmf.auth import AuthSettings, TokenIssuer

    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri, tz_aware=True)
    try:
        issuer = TokenIssuer(AuthSettings())
        issuer.connect(client[database])
        await issuer.clients.ensure_indexes()
        created = await issuer.register("bench-operator", "operator", "operator")
        return created.client_id, created.client_secret
    finally:
        await client.close()


def _cpu_seconds(pids: list[int]) -> float:
    """CPU time (user + system) the processes have used so far, from /proc."""
    total = 0.0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _measure(client: httpx.Client, url: str, requests: int) -> list[float]:
    took = []
    for _ in range(requests):
        started = time.perf_counter()
        answer = client.get(url)
        took.append(time.perf_counter() - started)
        if answer.status_code not in (200, 206):
            raise SystemExit(f"GET {url} answered {answer.status_code}: {answer.text[:300]}")
    return took


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=300, help="requests per configuration and round")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--serve-unchecked", nargs=3, metavar=("PORT", "URI", "DATABASE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_unchecked:
        port, uri, database = args.serve_unchecked
        _serve_unchecked(int(port), uri, database)
        return 0

    from services.tmf.embedded import EmbeddedDatabase, free_port

    load_before = os.getloadavg()
    sqm = str(Path(sys.executable).parent / "sqm")
    database = "bench_gateway"
    processes: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory() as scratch, EmbeddedDatabase(
            str(Path(scratch) / "db"), log_path=Path(scratch) / "database.log") as db:
        uri = db.uri
        client_id, secret = asyncio.run(_register_operator(uri, database))
        ports = {name: free_port() for name in ("unchecked", "service", "gateway", "gateway-unlimited")}
        urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
        base = {k: v for k, v in os.environ.items() if not k.startswith("SQM_")}
        # Tokens outlive the run, however slowly a loaded machine gets through it.
        common = {**base, "SQM_DATABASE": database, "SQM_LOG_LEVEL": "WARNING", "SQM_TOKEN_LIFETIME_SECONDS": "86400"}
        try:
            for name, limit in (("gateway", "100000/second"), ("gateway-unlimited", "")):
                # One public URL for both: it is the built-in issuer's name, which the token must
                # carry to be valid at either gateway (a token refused as another issuer's would
                # cost a signature check on every call, and name no client to audit).
                env = {**common, "SQM_PUBLIC_URL": urls["gateway"], "SQM_GATEWAY_RATE_LIMIT": limit,
                       "SQM_GATEWAY_ANONYMOUS_RATE_LIMIT": limit,
                       "SQM_GATEWAY_UPSTREAMS": f"serviceInventory={urls['service']}"}
                log = Path(scratch) / f"{name}.log"
                processes.append(_start([sqm, "gateway", "--port", str(ports[name]), "--mongodb-uri", uri], env, log))
                _wait(urls[name], processes[-1], log)
            # Both gateways share the issuer's keys (same database); the service trusts the first.
            env = {**common, "SQM_PUBLIC_URL": urls["gateway"], "SQM_OAUTH_ISSUER": urls["gateway"]}
            log = Path(scratch) / "service.log"
            processes.append(_start([sqm, "serve", "--api", "serviceInventory", "--port", str(ports["service"]),
                                     "--mongodb-uri", uri], env, log))
            _wait(urls["service"], processes[-1], log)
            log = Path(scratch) / "unchecked.log"
            processes.append(_start([sys.executable, "-m", "bench.gateway", "--serve-unchecked",
                                     str(ports["unchecked"]), uri, database], common, log))
            _wait(urls["unchecked"], processes[-1], log)

            token = httpx.post(f"{urls['gateway']}/oauth2/token", data={"grant_type": "client_credentials"},
                               auth=(client_id, secret), timeout=30).json()["access_token"]
            headers = {"Authorization": f"Bearer {token}"}
            with httpx.Client(headers=headers, timeout=30) as http:
                ids = []
                for i in range(200):
                    created = http.post(f"{urls['service']}{INVENTORY}/service", json={
                        "name": f"svc-{i}", "state": "active" if i % 2 else "inactive",
                        "serviceSpecification": {"id": "bench"}})
                    ids.append(created.json()["id"])
                paths = {"GET by id": f"{INVENTORY}/service/{ids[100]}",
                         "filtered list (20)": f"{INVENTORY}/service?state=active&fields=name,state&limit=20"}
                samples: dict[tuple[str, str], list[float]] = {(p, n): [] for p in paths for n in urls}
                # CPU time of the servers a configuration's requests pass through: robust to the
                # waiting a loaded machine adds to every latency.
                pid = dict(zip(("gateway", "gateway-unlimited", "service", "unchecked"),
                               (process.pid for process in processes), strict=True))
                through = {"unchecked": [pid["unchecked"]], "service": [pid["service"]],
                           "gateway": [pid["gateway"], pid["service"]],
                           "gateway-unlimited": [pid["gateway-unlimited"], pid["service"]]}
                cpu: dict[tuple[str, str], float] = dict.fromkeys(samples, 0.0)
                for url in urls.values():  # warm up connections, caches and the key set
                    for path in paths.values():
                        _measure(http, url + path, 20)
                for _ in range(args.rounds):
                    for label, path in paths.items():
                        for name, url in urls.items():
                            before = _cpu_seconds(through[name])
                            samples[(label, name)] += _measure(http, url + path, args.requests)
                            cpu[(label, name)] += (_cpu_seconds(through[name]) - before) / args.requests
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                process.wait(timeout=30)
    print(report(samples, {key: value / args.rounds for key, value in cpu.items()}, args, load_before))
    return 0


def report(samples: dict[tuple[str, str], list[float]], cpu: dict[tuple[str, str], float],
           args: argparse.Namespace, load_before: tuple[float, float, float]) -> str:
    def ms(values: list[float]) -> float:
        return statistics.median(values) * 1000

    lines = [
        "| request | unchecked (ms) | service: token validated (ms) | validation cost | via gateway (ms) "
        "| gateway hop | via gateway, no rate limit (ms) | hop without rate limit |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for label in dict.fromkeys(label for label, _ in samples):
        unchecked, service = ms(samples[(label, "unchecked")]), ms(samples[(label, "service")])
        gateway, unlimited = ms(samples[(label, "gateway")]), ms(samples[(label, "gateway-unlimited")])
        lines.append(f"| {label} | {unchecked:.2f} | {service:.2f} | {service / unchecked - 1:+.1%} | {gateway:.2f} "
                     f"| {gateway / service - 1:+.1%} | {unlimited:.2f} | {unlimited / service - 1:+.1%} |")
    lines += ["", "CPU time of the servers on the way, per request (ms):", "",
              "| request | unchecked | service | validation cost | via gateway | gateway hop "
              "| via gateway, no rate limit | hop without rate limit |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for label in dict.fromkeys(label for label, _ in samples):
        unchecked, service = cpu[(label, "unchecked")] * 1000, cpu[(label, "service")] * 1000
        gateway, unlimited = cpu[(label, "gateway")] * 1000, cpu[(label, "gateway-unlimited")] * 1000
        lines.append(f"| {label} | {unchecked:.2f} | {service:.2f} | {service / unchecked - 1:+.1%} | {gateway:.2f} "
                     f"| {gateway / service - 1:+.1%} | {unlimited:.2f} | {unlimited / service - 1:+.1%} |")
    lines.append("")
    lines.append(f"Median of {args.rounds} x {args.requests} sequential requests per cell; load average "
                 f"{load_before[0]:.2f} at the start, {os.getloadavg()[0]:.2f} at the end, on {os.cpu_count()} cores.")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
