"""``POST /measurement``: the high-volume path. A batch is checked whole (bad samples reported
by index, nothing stored), written in one bulk operation, and then checked against the SLAs it
concerns: as soon as a rule can no longer be met in its period, a provisional violation is
raised, to be confirmed at close."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from services.inventory.client import Suppliers
from services.tmf.call import SYSTEM, Call
from services.tmf.errors import BadRequest, Forbidden
from services.tmf.repository import META

from .coverage import coverage
from .evaluate import (
    Closer,
    business_hours_of,
    evaluate_rules,
    load_samples,
    parse_time,
    period_kind,
    violation_id,
    windows_of,
)
from .evaluation import METRICS, can_still_be_met, period_containing
from .metrics import MEASUREMENTS_INGESTED
from .repository import StoredSample
from .rules import rules_of

if TYPE_CHECKING:
    from services.tmf.api import ApiContext

MAX_REPORTED = 20
MAX_CACHED_INSTANTS = 10_000


def check_batch(body: Any, now_ms: int, skew_seconds: int) -> list[StoredSample]:
    """The samples of a batch, checked against what the API document cannot say: a known
    metric, a service id that is not empty, an instant not in the future, availability 0 or 1.
    Types, bounds and formats are the document's: its schema checked them before the handler
    ran; what is read here is only what a sample must hold to be stored."""
    if not isinstance(body, list) or not body:
        raise BadRequest("the body must be a non-empty JSON array of samples")
    samples: list[StoredSample] = []
    problems: list[str] = []
    latest_ms = now_ms + skew_seconds * 1000
    # A collector's batch holds many samples of one instant: each distinct text is parsed once.
    instants: dict[str, int | None] = {}
    for i, raw in enumerate(body):
        try:
            problem = _problem(raw, instants, latest_ms, samples)
        except (KeyError, TypeError, ValueError):
            problem = "is not a sample: metric, value (a number), observedAt and service.id are required"
        if problem:
            problems.append(f"[{i}] {problem}")
    if problems:
        more = f" (and {len(problems) - MAX_REPORTED} more)" if len(problems) > MAX_REPORTED else ""
        raise BadRequest(f"{len(problems)} samples are invalid, nothing was stored: "
                         + "; ".join(problems[:MAX_REPORTED]) + more)
    return samples


def _problem(raw: Any, instants: dict[str, int | None], latest_ms: int, samples: list[StoredSample]) -> str | None:
    """What is wrong with one sample, or None once it is added to ``samples``."""
    metric, observed, service = raw["metric"], raw["observedAt"], raw["service"]["id"]
    if metric not in METRICS:
        return f"metric '{str(metric)[:64]}' is unknown (GET /metric lists them)"
    if not service:
        return "service.id is required"
    text = observed if isinstance(observed, str) else ""
    if text in instants:
        at_ms = instants[text]
    else:
        try:
            at_ms = int(parse_time(text).timestamp() * 1000)
        except (BadRequest, ValueError):
            at_ms = None
        if len(instants) < MAX_CACHED_INSTANTS:
            instants[text] = at_ms
    if at_ms is None:
        return f"observedAt '{str(observed)[:40]}' is not a date-time"
    if at_ms > latest_ms:
        return "observedAt is in the future"
    value = raw["value"]
    if metric == "availability" and value not in (0, 1):
        return "availability samples are 1 (up) or 0 (down)"
    samples.append(StoredSample(str(service), metric, at_ms, float(value), float(raw.get("interval", 60))))
    return None


class Intake:
    def __init__(self, context: ApiContext) -> None:
        self.context = context
        self.closer = Closer(context)

    async def take(self, body: Any, call: Call) -> dict[str, Any]:
        if call.read_only:
            raise Forbidden(f"a {call.role} may only read")
        now = self.context.clock()
        skew = self.context.settings.sla.measurement_future_skew_seconds
        samples = check_batch(body, int(now.timestamp() * 1000), skew)
        services = sorted({s.service for s in samples})
        # A partner reports only about what it supplies: down samples could otherwise raise a
        # violation on another party's SLA.
        await Suppliers(self.context).check_services(call, set(services))
        slas = await coverage(self.context).slas(self.context, services)
        covered = {s for sla in slas for s in sla[META].get("services", [])}
        await self.closer.measurements.add(samples)
        MEASUREMENTS_INGESTED.inc(len(samples))  # telemetry
        raised = await self.raise_early(slas, samples, now)
        return {"accepted": len(samples), "unmatched": sum(1 for s in samples if s.service not in covered),
                "violationsRaised": raised}

    async def raise_early(self, slas: list[dict[str, Any]], samples: list[StoredSample], now: datetime) -> int:
        """Raise a provisional violation for each availability rule that new down samples made
        impossible to meet in its period (only down samples can do that): when the downtime
        observed so far alone has spent the period's budget, whether or not the period has ended
        and however much of it is still to arrive. Closed periods are left alone."""
        downs: dict[str, list[int]] = defaultdict(list)
        for sample in samples:
            if sample.metric == "availability" and sample.value == 0:
                downs[sample.service].append(sample.at_ms)
        raised = 0
        violations = self.context.resource_apis["slaViolation"]
        for stored in slas:
            services = stored[META].get("services", [])
            sla = {k: v for k, v in stored.items() if k != META}
            rules = [r for r in rules_of(sla) if r.metric == "availability"]
            if not rules or not any(s in downs for s in services):
                continue
            kind, zone = period_kind(sla)
            periods = {period_containing(datetime.fromtimestamp(at / 1000, UTC), kind, zone)
                       for s in services for at in downs.get(s, [])}
            windows, hours = windows_of(sla), business_hours_of(sla)
            for period in sorted(periods, key=lambda p: p.start):
                # Once every rule's violation of the period is raised, more downtime changes
                # nothing until the close: the month is not loaded again for each batch.
                ids = {rule.id: violation_id(sla["id"], rule.id, period) for rule in rules}
                raised_before = await violations.store.exists(ids.values(), SYSTEM)
                pending = [rule for rule in rules if ids[rule.id] not in raised_before]
                if not pending or await self.closer.closed(sla, period):
                    continue  # settled: late samples change nothing any more
                loaded = await load_samples(self.closer.measurements, services, ["availability"], period)
                results = {r.rule.id: r for r in evaluate_rules(sla, period, loaded)}
                for rule in pending:
                    if any(not can_still_be_met(rule, period, loaded.get((s, "availability"), []), windows, hours,
                                                now=now) for s in services):
                        await self.closer.record_violation(sla, period, results[rule.id], final=False)
                        raised += 1
        return raised
