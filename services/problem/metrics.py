"""Metrics of the problem service: open problems (read at scrape time) and the correlation lag,
from an alarm's acceptance (its event's ``eventTime``) to its problem being updated."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prometheus_client import Gauge, Histogram

from services.tmf.call import SYSTEM
from services.tmf.metrics import REGISTRY, sampled_for, seconds_since

from .lifecycle import OPEN

if TYPE_CHECKING:
    from services.tmf.api import ApiContext

PROBLEMS_OPEN = Gauge("sqm_problems_open", "Service problems in an open status (pending, acknowledged, "
                      "inProgress, held), read from the database at scrape time.", registry=REGISTRY)
CORRELATION_LAG = Histogram(
    "sqm_correlation_lag_seconds", "Time from an alarm being accepted to the problem it opened or joined "
    "being stored.", buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0),
    registry=REGISTRY)


@sampled_for("serviceProblemManagement")
async def count_open_problems(context: ApiContext) -> None:
    PROBLEMS_OPEN.set(await context.store("serviceProblem").count({"status": {"$in": list(OPEN)}}, SYSTEM))


def problem_updated(accepted_at: Any) -> None:
    """An alarm accepted at ``accepted_at`` (an event's eventTime) has opened or joined its problem."""
    lag = seconds_since(accepted_at)
    if lag is not None:
        CORRELATION_LAG.observe(lag)
