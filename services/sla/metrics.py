"""Metrics of the SLA service: samples taken in, and evaluations with their duration."""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec

from prometheus_client import Counter, Histogram

from services.tmf.metrics import REGISTRY

MEASUREMENTS_INGESTED = Counter("sqm_measurements_ingested", "Measurement samples accepted and stored.",
                                registry=REGISTRY)
EVALUATIONS = Counter("sqm_sla_evaluations", "SLA evaluations, closing (close=true) or not.", ["close"],
                      registry=REGISTRY)
EVALUATION_DURATION = Histogram(
    "sqm_sla_evaluation_duration_seconds", "Time to evaluate an SLA over a period (with close: and settle it).",
    ["close"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0), registry=REGISTRY)

P = ParamSpec("P")


def timed_evaluation(evaluate: Callable[P, Awaitable[dict[str, Any]]]) -> Callable[P, Awaitable[dict[str, Any]]]:
    """Count and time ``Closer.evaluate(sla, period, close)``, failed ones included."""

    @functools.wraps(evaluate)
    async def timed(*args: P.args, **kwargs: P.kwargs) -> dict[str, Any]:
        close = kwargs["close"] if "close" in kwargs else args[3]
        label = "true" if close else "false"
        started = time.perf_counter()
        try:
            return await evaluate(*args, **kwargs)
        finally:
            EVALUATIONS.labels(label).inc()
            EVALUATION_DURATION.labels(label).observe(time.perf_counter() - started)

    return timed
