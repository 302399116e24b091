"""What checking a request body against its schema costs: a 1,000-sample measurement batch
(``POST /measurement``) and a Service (``POST /service``), each checked the way connexion's
own body validator does it (a jsonschema validator made for every request), with a jsonschema
validator made once and reused, with fastjsonschema when it is installed, and with the
compiled check the suite uses (``services.tmf.validation``), in the same run.

    python -m bench.validation [--rounds 20]

Prints a table with the load average; the ratio column is the time of connexion's way over
the time of the row (higher is faster). Nothing here passes or fails on timings.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import warnings
from collections.abc import Callable
from typing import Any

warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")

from connexion.json_schema import Draft4RequestValidator, resolve_refs  # noqa: E402
from jsonschema import Draft4Validator  # noqa: E402

from services.tmf.spec import load_document  # noqa: E402
from services.tmf.validation import compile_check, json_schema  # noqa: E402


def body_schema(document: str, path: str) -> dict[str, Any]:
    """The request body schema of ``POST path``, resolved as connexion hands it to its validator."""
    resolved = resolve_refs(load_document(document))
    schema: dict[str, Any] = resolved["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
    return schema


def measurement_batch() -> list[dict[str, Any]]:
    return [{"metric": "availability" if i % 6 else "latency.p95", "value": 1 if i % 6 else 12.5,
             "observedAt": f"2026-10-01T{i // 360:02d}:{i // 6 % 60:02d}:00Z", "interval": 60,
             "service": {"id": f"svc-{i % 6}"}} for i in range(1000)]


SERVICE = {"name": "vpn", "category": "RFS", "state": "active", "serviceSpecification": {"id": "spec-1"},
           "startDate": "2025-03-01T00:00:00Z",
           "relatedParty": [{"id": "p1", "role": "supplier"}, {"id": "p2", "role": "customer"}],
           "serviceCharacteristic": [{"name": "bandwidthMbps", "value": 1000}],
           "supportingService": [{"id": "a"}, {"id": "b"}], "supportingResource": [{"id": "r1"}]}


def ways(schema: dict[str, Any]) -> list[tuple[str, Callable[[Any], Any] | None]]:
    checker = Draft4Validator.FORMAT_CHECKER
    reused = Draft4RequestValidator(schema, format_checker=checker)
    try:
        import fastjsonschema  # type: ignore[import-not-found]

        fast: Callable[[Any], Any] | None = fastjsonschema.compile(
            {**json_schema(schema), "$schema": "http://json-schema.org/draft-04/schema#"})
    except ImportError:
        fast = None
    return [
        ("jsonschema, a validator per request (connexion's body validator)",
         lambda body: Draft4RequestValidator(schema, format_checker=checker).validate(body)),
        ("jsonschema, one validator reused", reused.validate),
        ("fastjsonschema, compiled once", fast),
        ("compiled check (services.tmf.validation)", compile_check(schema)),
    ]


def timed(check: Callable[[Any], Any], body: Any, rounds: int) -> float:
    check(body)
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        check(body)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    options = parser.parse_args()
    load_before = os.getloadavg()
    cases = [("1,000-sample measurement batch", body_schema("slaManagement.yaml", "/measurement"),
              measurement_batch()),
             ("Service (POST /service)", body_schema("serviceInventory.yaml", "/service"), SERVICE)]
    lines = ["| body | check | median ms | vs connexion's |", "|---|---|---:|---:|"]
    for label, schema, body in cases:
        rounds = options.rounds if label.startswith("1,000") else options.rounds * 50
        baseline: float | None = None
        for name, check in ways(schema):
            if check is None:
                lines.append(f"| {label} | {name} | not installed | - |")
                continue
            median = timed(check, body, rounds)
            baseline = baseline or median
            lines.append(f"| {label} | {name} | {median * 1000:,.3f} | {baseline / median:,.1f} |")
        parse = timed(json.loads, json.dumps(body), rounds)
        lines.append(f"| {label} | (for scale: json.loads of the body) | {parse * 1000:,.3f} | - |")
    print(f"{os.cpu_count()} CPUs; load average {load_before[0]:.2f} at the start, "
          f"{os.getloadavg()[0]:.2f} at the end; median of {options.rounds} rounds (batch), "
          f"{options.rounds * 50} (Service)\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
