"""``POST /measurement``: the high-volume path. A batch is checked whole (bad samples reported
by index, nothing stored), written in one bulk operation, and then checked against the SLAs it
concerns: as soon as a rule can no longer be met in its period, a provisional violation is
raised, to be confirmed at close."""

from __future__ import annotations

import math
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
    if not isinstance(body, list) or not body:
        raise BadRequest("the body must be a non-empty JSON array of samples")
    samples: list[StoredSample] = []
    problems: list[str] = []
    # A collector's batch holds many samples of one instant: each distinct text is parsed once.
    instants: dict[str, int | None] = {}
    for i, raw in enumerate(body):
        problem = None
        if not isinstance(raw, dict):
            problem = "is not an object"
        elif raw.get("metric") not in METRICS:
            problem = f"metric '{str(raw.get('metric'))[:64]}' is unknown (GET /metric lists them)"
        elif isinstance(raw.get("value"), bool) or not isinstance(raw.get("value"), int | float) \
                or not math.isfinite(raw["value"]):
            problem = "value must be a finite number"
        elif not isinstance(raw.get("service"), dict) or not raw["service"].get("id"):
            problem = "service.id is required"
        else:
            interval = raw.get("interval", 60)
            observed = str(raw.get("observedAt", ""))
            if observed in instants:
                at_ms = instants[observed]
            else:
                try:
                    at_ms = int(parse_time(observed).timestamp() * 1000)
                except BadRequest:
                    at_ms = None
                if len(instants) < MAX_CACHED_INSTANTS:
                    instants[observed] = at_ms
            if at_ms is None:
                problem = f"observedAt '{observed[:40]}' is not a date-time"
            else:
                if at_ms > now_ms + skew_seconds * 1000:
                    problem = "observedAt is in the future"
                elif isinstance(interval, bool) or not isinstance(interval, int | float) \
                        or not 0 < interval <= 86_400:
                    problem = "interval must be a number of seconds between 0 and 86400"
                elif raw["metric"] == "availability" and raw["value"] not in (0, 1):
                    problem = "availability samples are 1 (up) or 0 (down)"
                else:
                    samples.append(StoredSample(str(raw["service"]["id"]), raw["metric"], at_ms,
                                                float(raw["value"]), float(interval)))
        if problem:
            problems.append(f"[{i}] {problem}")
    if problems:
        more = f" (and {len(problems) - MAX_REPORTED} more)" if len(problems) > MAX_REPORTED else ""
        raise BadRequest(f"{len(problems)} samples are invalid, nothing was stored: "
                         + "; ".join(problems[:MAX_REPORTED]) + more)
    return samples


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
