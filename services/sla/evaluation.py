"""SLA rule evaluation: pure, deterministic math over stored measurements.

Nothing here reads a clock, a file or a database: callers pass the period, the samples, the
maintenance windows and, for continuous evaluation, ``now``. The same inputs always give the same
result, so any evaluation can be recomputed later from the stored measurements.

Time
    All instants must be timezone-aware; naive datetimes are rejected with ``ValueError``. Time
    is handled internally as integer microseconds since the epoch (datetime's own resolution), so
    sums and comparisons are exact. A sample's ``interval`` (seconds, float) is rounded to the
    microsecond. Reported durations (``*_seconds``) are floats in seconds.

Periods
    Calendar periods (day, ISO week starting Monday, month, quarter) start and end at local
    midnight in the SLA's time zone and are returned in UTC, so a month in Europe/Stockholm that
    contains the autumn DST change lasts 745 hours, not 744. Local midnights that do not exist or
    occur twice resolve as zoneinfo does with ``fold=0`` (the offset in force before the change).
    A period is the half-open interval ``[start, end)``.

Sample coverage
    A sample covers ``[at, at + interval)``, clipped to the period: a sample exactly at
    ``period.start`` counts, one exactly at ``period.end`` belongs to the next period, and one
    straddling a boundary counts only for its part inside. When coverages overlap, the later
    sample wins: an earlier sample's coverage is cut where the next sample starts (and does not
    resume after it). Several samples at the same instant collapse into one, deterministically:
    the lowest value wins (for availability the down one, which is the conservative choice for
    the customer), and among equal values the longest interval. Input order never matters.

Exclusions
    Excluded time is the union of the maintenance windows and, when business hours are given,
    the time outside them, clipped to the period. ``RuleResult.exclusions`` itemises windows in
    order of (start, end), then "outside business hours" (whose start and end are the period's),
    each with the seconds it removed beyond the entries before it, so overlapping windows never
    count twice and the items add up to ``excluded_seconds``. A window that intersects the period
    but adds nothing is listed with 0 seconds. Excluded time is removed from up time, down time
    and the denominator alike. Business hours that end at or before they start run past midnight
    (``22:00``-``06:00``; ``08:00``-``08:00`` is a full day), and each day's hours are local time.

Availability
    A sample value is the up fraction of its coverage: 1 is up, 0 is down; a value in between
    (a probe reporting a ratio) counts proportionally, anything outside ``[0, 1]`` is rejected.
    Missing data policy: time in the period that is neither excluded nor covered by a sample
    counts neither as up nor as down. It is reported in ``missing_seconds`` and left out of the
    denominator, so ``evaluated + excluded + missing == period length`` always. The actual value
    is ``up / (up + down) * 100`` as an exact Fraction; when the denominator is zero (no data, or
    everything excluded) ``actual``, ``met`` and ``tier`` are None. ``sample_count`` counts the
    samples that contributed evaluated time.

Other metrics
    Percentiles use the nearest rank on the sorted values (the ceil(p/100 * n)-th smallest);
    means are arithmetic means. Values enter as ``Decimal(repr(value))``, the shortest decimal
    that round-trips the float, so 0.1 is 0.1 and not 0.1000000000000000055... Only samples whose
    ``at`` lies in the period and outside excluded time count (``sample_count``); with none,
    ``actual`` and ``met`` are None. ``evaluated_seconds``/``missing_seconds`` are reported from
    sample coverage as for availability, for information only.

Decisions and rounding
    Whether a rule is met and which tier applies are decided on the exact value; the reported
    ``actual`` is rounded to 4 decimal places with ROUND_HALF_UP (what people do by hand). So an
    availability of 99.89999 % reports as 99.9000 while a ``.ge 99.9`` rule is not met:
    ``RuleResult.met`` is authoritative, not a re-comparison of the rounded value.

Rules
    ``.ge``: actual >= reference - tolerance; ``.gt``: actual > reference - tolerance; ``.le``:
    actual <= reference + tolerance; ``.lt``: actual < reference + tolerance; ``.eq``:
    |actual - reference| <= tolerance. A rule with ``.ge``/``.gt`` is higher-is-better, with
    ``.le``/``.lt`` lower-is-better; an ``.eq`` rule takes the direction of its metric.
    ``check_rule`` (for writes) also requires a given ``unit`` to be the metric's; evaluation
    ignores the unit.

Tiers
    Only a rule that is not met has a tier. A tier applies when the exact actual is strictly on
    the wrong side of its threshold (below it when higher is better, above it when lower is
    better); among those, the highest percent counts. A violated rule that no tier reaches has
    no tier and a rebate percent of 0.

Rebates
    One line per violated rule with a non-zero tier percent: ``charge * percent / 100``
    quantized to the currency's minor unit (0.01 unless told) with ROUND_HALF_UP. The total is
    the sum of the lines. With a cap, when the total exceeds ``charge * cap / 100`` (quantized),
    a negative line without rule id brings the lines down to exactly the cap. All money is
    Decimal; floats are refused. One currency per call: the caller keeps it.

Continuous evaluation
    ``can_still_be_met`` answers whether any completion of the period could still meet the
    rule, assuming all time not yet known to be down could still turn out up (even past gaps,
    and even after the period has ended, since late measurements may fill them until the period
    is closed). Missing time never counts against the rule: for availability the rule is lost
    only once the observed downtime alone has spent the budget of the whole counted period, counted time *
    (1 - (reference - tolerance) / 100) for ``.ge`` (43.2 minutes for 99.9 % of a 30-day month),
    reached or exceeded for ``.gt`` (and, for ``.le``/``.lt``, once the observed uptime alone
    exceeds what the rule allows). So a backfill of a past period, posted in any order, never
    looks lost merely because most of it has not arrived yet. Means and percentiles can always
    be rescued by samples still to come as far as we can know, so they are reported as still
    possible: only the closing evaluation judges them.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import (
    ROUND_HALF_UP,
    Context,
    Decimal,
    DivisionByZero,
    Inexact,
    InvalidOperation,
    Overflow,
)
from fractions import Fraction
from itertools import pairwise
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = [
    "METRICS",
    "OPERATORS",
    "PERIOD_KINDS",
    "BusinessHours",
    "Exclusion",
    "MetricInfo",
    "Period",
    "RebateComputation",
    "RebateLine",
    "Rule",
    "RuleResult",
    "Sample",
    "Tier",
    "Window",
    "applicable_tier",
    "can_still_be_met",
    "check_rule",
    "check_tiers",
    "compute_rebate",
    "evaluate_rule",
    "next_period",
    "period_containing",
    "rule_met",
]


@dataclass(frozen=True)
class MetricInfo:
    """What a metric measures, in which unit, and how its samples are aggregated over a period."""

    name: str
    unit: str
    aggregation: str  # "availability" | "percentile" | "mean"
    higher_is_better: bool
    description: str
    percentile: int | None = None


METRICS: dict[str, MetricInfo] = {
    info.name: info
    for info in (
        MetricInfo("availability", "%", "availability", True,
                   "Share of the evaluated time the service was up, from probe samples "
                   "(1 up, 0 down), each covering its interval."),
        MetricInfo("latency.p50", "ms", "percentile", False,
                   "Median latency over the period's samples (nearest rank).", 50),
        MetricInfo("latency.p95", "ms", "percentile", False,
                   "95th percentile latency over the period's samples (nearest rank).", 95),
        MetricInfo("latency.p99", "ms", "percentile", False,
                   "99th percentile latency over the period's samples (nearest rank).", 99),
        MetricInfo("packetLoss", "%", "mean", False, "Mean packet loss over the period's samples."),
        MetricInfo("errorRate", "%", "mean", False, "Mean error rate over the period's samples."),
    )
}

OPERATORS = (".ge", ".gt", ".le", ".lt", ".eq")
PERIOD_KINDS = ("day", "week", "month", "quarter")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_US_PER_SECOND = 1_000_000
_REPORTED_PLACES = 4
_HUNDRED = Fraction(100)
# Exact arithmetic: enough digits for any sum of doubles' shortest reprs, and Inexact trapped so
# that a silent rounding can never creep into a sum or a money product.
_EXACT = Context(prec=1000, traps=[Inexact, InvalidOperation, DivisionByZero, Overflow])
_ROUNDING = Context(prec=1000, rounding=ROUND_HALF_UP, traps=[InvalidOperation, DivisionByZero, Overflow])


# --- time -----------------------------------------------------------------------------------


def _to_us(instant: datetime, what: str) -> int:
    try:
        return (instant - _EPOCH) // _MICROSECOND
    except TypeError as exc:
        # Naive datetimes mean "some local time": evaluating them would depend on the host.
        raise ValueError(f"{what} must be a timezone-aware datetime, got {instant!r}") from exc


def _from_us(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def _seconds(us: int) -> float:
    return us / _US_PER_SECOND


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError) as exc:
        raise ValueError(f"unknown time zone {name!r}: use an IANA name such as 'Europe/Stockholm'") from exc


@dataclass(frozen=True)
class Period:
    """A half-open interval ``[start, end)``; both ends are stored in UTC."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        start_us, end_us = _to_us(self.start, "period start"), _to_us(self.end, "period end")
        if end_us <= start_us:
            raise ValueError(f"period end {self.end.isoformat()} must be after its start {self.start.isoformat()}")
        object.__setattr__(self, "start", self.start.astimezone(UTC))
        object.__setattr__(self, "end", self.end.astimezone(UTC))

    @property
    def seconds(self) -> float:
        """Length of the period in seconds."""
        return (self.end - self.start).total_seconds()


def _shift_months(day: date, months: int) -> date:
    index = day.year * 12 + day.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


def _first_day(day: date, kind: str) -> date:
    if kind == "day":
        return day
    if kind == "week":
        return day - timedelta(days=day.isoweekday() - 1)
    if kind == "month":
        return day.replace(day=1)
    return date(day.year, (day.month - 1) // 3 * 3 + 1, 1)


def _shift(first: date, kind: str, count: int) -> date:
    if kind == "day":
        return first + timedelta(days=count)
    if kind == "week":
        return first + timedelta(weeks=count)
    return _shift_months(first, count if kind == "month" else 3 * count)


def _local_midnight(day: date, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC)


def period_containing(instant: datetime, kind: str, time_zone: str) -> Period:
    """The calendar period of ``kind`` (day, week, month, quarter) that contains ``instant``.

    Boundaries are local midnights in ``time_zone`` (weeks start on Monday, ISO 8601; quarters
    in January, April, July, October); the period is returned in UTC. An instant exactly on a
    boundary belongs to the period that starts there.
    """
    if kind not in PERIOD_KINDS:
        raise ValueError(f"unknown period kind {kind!r}: use one of {', '.join(PERIOD_KINDS)}")
    zone = _zone(time_zone)
    _to_us(instant, "instant")
    first = _first_day(instant.astimezone(zone).date(), kind)
    start, end = _local_midnight(first, zone), _local_midnight(_shift(first, kind, 1), zone)
    # A zone whose clocks go back across midnight can put an instant outside the period of its
    # local date; step to the neighbour that really contains it.
    while instant >= end:
        first = _shift(first, kind, 1)
        start, end = end, _local_midnight(_shift(first, kind, 1), zone)
    while instant < start:
        first = _shift(first, kind, -1)
        start, end = _local_midnight(first, zone), start
    return Period(start, end)


def next_period(period: Period, kind: str, time_zone: str) -> Period:
    """The calendar period of ``kind`` in ``time_zone`` that starts where ``period`` ends."""
    return period_containing(period.end, kind, time_zone)


# --- inputs ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """One measurement: ``value`` observed at ``at``, covering ``interval`` seconds from ``at``."""

    at: datetime
    value: float
    interval: float = 60.0


@dataclass(frozen=True)
class Window:
    """A declared exclusion (maintenance window) ``[start, end)``."""

    start: datetime
    end: datetime
    reason: str | None = None


@dataclass(frozen=True)
class BusinessHours:
    """The hours that count: ``days`` are ISO weekdays (1 = Monday .. 7 = Sunday), local times."""

    days: frozenset[int]
    start: time
    end: time
    time_zone: str


@dataclass(frozen=True)
class Tier:
    """A rebate tier: ``rebate_percent`` of the charge when the actual is beyond ``threshold``."""

    threshold: Decimal
    rebate_percent: Decimal


@dataclass(frozen=True)
class Rule:
    """One SLA rule: ``metric`` ``operator`` ``reference`` within ``tolerance``, with rebate tiers."""

    id: str
    metric: str
    operator: str
    reference: Decimal
    tolerance: Decimal = Decimal(0)
    tiers: tuple[Tier, ...] = ()
    unit: str | None = None


@dataclass
class Exclusion:
    """What one window (or the time outside business hours) removed from the period."""

    reason: str | None
    start: datetime
    end: datetime
    seconds: float


@dataclass
class RuleResult:
    """The evaluation of one rule over one period."""

    rule: Rule
    actual: Decimal | None
    met: bool | None
    sample_count: int
    evaluated_seconds: float
    excluded_seconds: float
    missing_seconds: float
    exclusions: list[Exclusion]
    tier: Tier | None
    rebate_percent: Decimal


@dataclass
class RebateLine:
    """One amount of a rebate and why; ``rule_id`` is None for the cap adjustment."""

    rule_id: str | None
    description: str
    percent: Decimal
    amount: Decimal


@dataclass
class RebateComputation:
    """The lines of a rebate; ``amount`` is their sum."""

    lines: list[RebateLine]
    amount: Decimal
    capped: bool


# --- validation -----------------------------------------------------------------------------


def _decimal(value: object, what: str) -> Decimal:
    # Floats are refused rather than converted: the caller should not have a float here at all.
    if isinstance(value, bool) or not isinstance(value, Decimal | int):
        raise ValueError(f"{what} must be a Decimal, got {type(value).__name__} {value!r}")
    result = Decimal(value)
    if not result.is_finite():
        raise ValueError(f"{what} must be a finite number, got {value!r}")
    return result


def _higher_is_better(rule: Rule) -> bool:
    if rule.operator in (".ge", ".gt"):
        return True
    if rule.operator in (".le", ".lt"):
        return False
    return METRICS[rule.metric].higher_is_better


def check_tiers(rule: Rule) -> None:
    """Raise ValueError unless the rule's tiers are consistent.

    Percents must lie in 0..100, thresholds must be distinct, and the further a threshold lies on
    the wrong side, the higher its percent: for a higher-is-better rule (``.ge``/``.gt``) lower
    thresholds carry strictly higher percents; for a lower-is-better rule higher thresholds do.
    The direction needs a known operator (and, for ``.eq``, a known metric), so those are
    checked too; ``check_rule`` checks everything else.
    """
    if rule.operator not in OPERATORS:
        raise ValueError(f"rule {rule.id!r}: unknown operator {rule.operator!r}: use one of {', '.join(OPERATORS)}")
    if rule.operator == ".eq" and rule.metric not in METRICS:
        raise ValueError(f"rule {rule.id!r}: unknown metric {rule.metric!r}: use one of {', '.join(METRICS)}")
    for tier in rule.tiers:
        _decimal(tier.threshold, f"rule {rule.id!r}: tier threshold")
        percent = _decimal(tier.rebate_percent, f"rule {rule.id!r}: tier rebate percent")
        if not 0 <= percent <= 100:
            raise ValueError(f"rule {rule.id!r}: tier rebate percent {percent} must be between 0 and 100")
    ordered = sorted(rule.tiers, key=lambda tier: tier.threshold)
    for lower, upper in pairwise(ordered):
        if lower.threshold == upper.threshold:
            raise ValueError(f"rule {rule.id!r}: two tiers share the threshold {lower.threshold}")
    higher_is_better = _higher_is_better(rule)
    for lower, upper in pairwise(ordered):
        if higher_is_better and not lower.rebate_percent > upper.rebate_percent:
            raise ValueError(
                f"rule {rule.id!r}: tiers are not monotonic: below {lower.threshold} gives "
                f"{lower.rebate_percent} %, which must be more than the {upper.rebate_percent} % "
                f"below {upper.threshold} (a lower result must never earn a smaller rebate)")
        if not higher_is_better and not upper.rebate_percent > lower.rebate_percent:
            raise ValueError(
                f"rule {rule.id!r}: tiers are not monotonic: above {upper.threshold} gives "
                f"{upper.rebate_percent} %, which must be more than the {lower.rebate_percent} % "
                f"above {lower.threshold} (a higher result must never earn a smaller rebate)")


def _check_evaluable(rule: Rule) -> None:
    if rule.metric not in METRICS:
        raise ValueError(f"rule {rule.id!r}: unknown metric {rule.metric!r}: use one of {', '.join(METRICS)}")
    if rule.operator not in OPERATORS:
        raise ValueError(f"rule {rule.id!r}: unknown operator {rule.operator!r}: use one of {', '.join(OPERATORS)}")
    _decimal(rule.reference, f"rule {rule.id!r}: reference")
    if _decimal(rule.tolerance, f"rule {rule.id!r}: tolerance") < 0:
        raise ValueError(f"rule {rule.id!r}: tolerance {rule.tolerance} must not be negative")
    check_tiers(rule)


def check_rule(rule: Rule) -> None:
    """Raise ValueError unless the rule is valid: known metric and operator, finite Decimal
    reference, non-negative tolerance, consistent tiers, and a unit (when given) equal to the
    metric's. Meant for when a rule is written; evaluation checks all but the unit, which it does
    not use, so that a stored rule with a free-text unit still evaluates."""
    _check_evaluable(rule)
    unit = METRICS[rule.metric].unit
    if rule.unit is not None and rule.unit != unit:
        raise ValueError(f"rule {rule.id!r}: unit {rule.unit!r} does not match {rule.metric}, measured in {unit!r}")


# --- decisions ------------------------------------------------------------------------------


def _met(rule: Rule, actual: Fraction) -> bool:
    reference, tolerance = Fraction(rule.reference), Fraction(rule.tolerance)
    if rule.operator == ".ge":
        return actual >= reference - tolerance
    if rule.operator == ".gt":
        return actual > reference - tolerance
    if rule.operator == ".le":
        return actual <= reference + tolerance
    if rule.operator == ".lt":
        return actual < reference + tolerance
    return abs(actual - reference) <= tolerance


def _tier(rule: Rule, actual: Fraction) -> Tier | None:
    if _met(rule, actual):
        return None
    higher_is_better = _higher_is_better(rule)
    chosen: Tier | None = None
    for tier in rule.tiers:
        threshold = Fraction(tier.threshold)
        beyond = actual < threshold if higher_is_better else actual > threshold
        if beyond and (chosen is None or tier.rebate_percent > chosen.rebate_percent):
            chosen = tier
    return chosen


def rule_met(rule: Rule, actual: Decimal) -> bool:
    """Whether ``actual`` meets the rule (operator, reference and tolerance), compared exactly."""
    return _met(rule, Fraction(actual))


def applicable_tier(rule: Rule, actual: Decimal) -> Tier | None:
    """The tier that applies to ``actual``: None when the rule is met or no tier is reached."""
    return _tier(rule, Fraction(actual))


def _round(value: Fraction) -> Decimal:
    # Exact ROUND_HALF_UP on the Fraction itself: going through a float or a Decimal division
    # would round twice.
    scale = 10**_REPORTED_PLACES
    magnitude = abs(value) * scale
    whole, rest = divmod(magnitude.numerator, magnitude.denominator)
    if 2 * rest >= magnitude.denominator:
        whole += 1
    sign = "-" if value < 0 and whole else ""
    return Decimal(f"{sign}{whole}E-{_REPORTED_PLACES}")


def _float_decimal(value: float) -> Decimal:
    return Decimal(repr(float(value)))


# --- exclusions and coverage ----------------------------------------------------------------

_Interval = tuple[int, int]


def _merge(intervals: Iterable[_Interval]) -> list[_Interval]:
    merged: list[_Interval] = []
    for start, end in sorted(intervals):
        if end <= start:
            continue
        if merged and start <= merged[-1][1]:
            if end > merged[-1][1]:
                merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged


def _overlap(first: list[_Interval], second: list[_Interval]) -> int:
    """Length shared by two sorted lists of disjoint intervals."""
    total, i, j = 0, 0, 0
    while i < len(first) and j < len(second):
        start = max(first[i][0], second[j][0])
        end = min(first[i][1], second[j][1])
        if end > start:
            total += end - start
        if first[i][1] < second[j][1]:
            i += 1
        else:
            j += 1
    return total


def _business_intervals(hours: BusinessHours, start_us: int, end_us: int) -> list[_Interval]:
    if not hours.days <= frozenset(range(1, 8)):
        raise ValueError(f"business hours days {sorted(hours.days)} must be ISO weekdays 1 (Monday) .. 7 (Sunday)")
    if hours.start.tzinfo is not None or hours.end.tzinfo is not None:
        raise ValueError("business hours start and end are local times in time_zone and must not carry a tzinfo")
    zone = _zone(hours.time_zone)
    overnight = hours.end <= hours.start
    # Start a day early so that overnight hours begun the evening before the period are seen.
    day = _from_us(start_us).astimezone(zone).date() - timedelta(days=1)
    last = _from_us(end_us).astimezone(zone).date()
    intervals: list[_Interval] = []
    while day <= last:
        if day.isoweekday() in hours.days:
            opens = _to_us(datetime.combine(day, hours.start, tzinfo=zone), "business hours")
            closing_day = day + timedelta(days=1) if overnight else day
            closes = _to_us(datetime.combine(closing_day, hours.end, tzinfo=zone), "business hours")
            intervals.append((max(opens, start_us), min(closes, end_us)))
        day += timedelta(days=1)
    return _merge(intervals)


def _exclusions(
    start_us: int, end_us: int, windows: Sequence[Window], hours: BusinessHours | None,
) -> tuple[list[Exclusion], list[_Interval], int]:
    items: list[Exclusion] = []
    union: list[_Interval] = []
    clipped: list[tuple[int, int, Window]] = []
    for window in windows:
        window_start, window_end = _to_us(window.start, "window start"), _to_us(window.end, "window end")
        if window_end < window_start:
            raise ValueError(f"window {window.reason!r} ends ({window.end.isoformat()}) before it starts "
                             f"({window.start.isoformat()})")
        window_start, window_end = max(window_start, start_us), min(window_end, end_us)
        if window_end > window_start:
            clipped.append((window_start, window_end, window))
    clipped.sort(key=lambda item: (item[0], item[1]))
    for window_start, window_end, window in clipped:
        added = (window_end - window_start) - _overlap([(window_start, window_end)], union)
        union = _merge([*union, (window_start, window_end)])
        items.append(Exclusion(window.reason, _from_us(window_start), _from_us(window_end), _seconds(added)))
    if hours is not None:
        inside = _business_intervals(hours, start_us, end_us)
        outside: list[_Interval] = []
        cursor = start_us
        for open_us, close_us in inside:
            if open_us > cursor:
                outside.append((cursor, open_us))
            cursor = max(cursor, close_us)
        if cursor < end_us:
            outside.append((cursor, end_us))
        added = sum(end - start for start, end in outside) - _overlap(outside, union)
        union = _merge([*union, *outside])
        items.append(Exclusion("outside business hours", _from_us(start_us), _from_us(end_us), _seconds(added)))
    return items, union, sum(end - start for start, end in union)


# A prepared sample: (at in µs, value, minus the interval in µs). Sorting these tuples orders by
# instant, then lowest value, then longest interval: the first of each instant is the one that wins.
_Row = tuple[int, float, int]


def _rows(samples: Iterable[Sample], before_us: int, availability: bool) -> list[_Row]:
    rows: list[_Row] = []
    append = rows.append
    isfinite = math.isfinite
    for sample in samples:
        at = _to_us(sample.at, "sample time")
        if at >= before_us:
            continue  # belongs to a later period (or the future); it can only cut coverage there
        value = sample.value
        if not isfinite(value) or (availability and not 0 <= value <= 1):
            expected = "between 0 (down) and 1 (up)" if availability else "a finite number"
            raise ValueError(f"sample at {sample.at.isoformat()}: value {value!r} must be {expected}")
        interval = sample.interval
        if not isfinite(interval) or interval < 0:
            raise ValueError(f"sample at {sample.at.isoformat()}: interval {interval!r} must be >= 0 seconds")
        append((at, value, -round(interval * _US_PER_SECOND)))
    rows.sort()
    return rows


def _coverage(rows: list[_Row], start_us: int, end_us: int, excluded: list[_Interval]) -> tuple[dict[float, int], int]:
    """Evaluated (covered, not excluded) µs per sample value within ``[start_us, end_us)``, and
    the number of samples that contributed any."""
    per_value: dict[float, int] = {}
    contributing = 0
    count = len(rows)
    excluded_count = len(excluded)
    cursor = 0  # first exclusion that may still overlap the current or a later coverage
    i = 0
    while i < count:
        at, value, minus_interval = rows[i]
        following = i + 1
        while following < count and rows[following][0] == at:
            following += 1  # same instant: the first (lowest value) already won
        next_at = rows[following][0] if following < count else end_us
        i = following
        cover_start = at if at > start_us else start_us
        cover_end = min(at - minus_interval, next_at, end_us)
        if cover_end <= cover_start:
            continue
        while cursor < excluded_count and excluded[cursor][1] <= cover_start:
            cursor += 1
        removed = 0
        k = cursor
        while k < excluded_count and excluded[k][0] < cover_end:
            removed += min(excluded[k][1], cover_end) - max(excluded[k][0], cover_start)
            k += 1
        length = cover_end - cover_start - removed
        if length > 0:
            contributing += 1
            per_value[value] = per_value.get(value, 0) + length
    return per_value, contributing


def _up_down(per_value: dict[float, int]) -> tuple[Fraction, Fraction]:
    up, down = Fraction(0), Fraction(0)
    for value, length in per_value.items():
        share = Fraction(_float_decimal(value))
        up += share * length
        down += (1 - share) * length
    return up, down


def _statistic(info: MetricInfo, values: list[float]) -> Fraction:
    if info.aggregation == "percentile":
        assert info.percentile is not None
        # Sorting the floats orders their shortest reprs the same way; convert only the winner.
        ordered = sorted(values)
        rank = max(1, -(-info.percentile * len(ordered) // 100))  # ceil without float rounding
        return Fraction(_float_decimal(ordered[rank - 1]))
    total = _EXACT.create_decimal(0)
    for value in values:
        total = _EXACT.add(total, _float_decimal(value))
    return Fraction(total) / len(values)


# --- evaluation -----------------------------------------------------------------------------


def evaluate_rule(
    rule: Rule,
    period: Period,
    samples: Iterable[Sample],
    windows: Sequence[Window] = (),
    business_hours: BusinessHours | None = None,
) -> RuleResult:
    """Evaluate ``rule`` over ``period`` from ``samples``, minus ``windows`` and the time outside
    ``business_hours``. See the module docstring for coverage, missing data and rounding."""
    _check_evaluable(rule)
    info = METRICS[rule.metric]
    start_us, end_us = _to_us(period.start, "period start"), _to_us(period.end, "period end")
    exclusions, excluded, excluded_us = _exclusions(start_us, end_us, windows, business_hours)
    availability = info.aggregation == "availability"
    rows = _rows(samples, end_us, availability)
    per_value, contributing = _coverage(rows, start_us, end_us, excluded)
    covered_us = sum(per_value.values())
    exact: Fraction | None
    if availability:
        sample_count = contributing
        up, down = _up_down(per_value)
        exact = up / (up + down) * _HUNDRED if covered_us else None
    else:
        starts = [start for start, _ in excluded]
        values = []
        for at, value, _ in rows:
            if at < start_us:
                continue
            index = bisect_right(starts, at) - 1
            if index >= 0 and at < excluded[index][1]:
                continue
            values.append(value)
        sample_count = len(values)
        exact = _statistic(info, values) if values else None
    tier = _tier(rule, exact) if exact is not None else None
    return RuleResult(
        rule=rule,
        actual=_round(exact) if exact is not None else None,
        met=_met(rule, exact) if exact is not None else None,
        sample_count=sample_count,
        evaluated_seconds=_seconds(covered_us),
        excluded_seconds=_seconds(excluded_us),
        missing_seconds=_seconds(end_us - start_us - excluded_us - covered_us),
        exclusions=exclusions,
        tier=tier,
        rebate_percent=tier.rebate_percent if tier is not None else Decimal(0),
    )


def can_still_be_met(
    rule: Rule,
    period: Period,
    samples: Iterable[Sample],
    windows: Sequence[Window] = (),
    business_hours: BusinessHours | None = None,
    *,
    now: datetime,
) -> bool:
    """Whether the rule can still be met in ``period`` given the samples known at ``now``.

    Availability is lost once even an all-up completion (of the time still to come and of past
    gaps, which late samples may fill) cannot bring the result within the rule: for ``.ge`` when
    the observed downtime exceeds counted time * (1 - (reference - tolerance) / 100), where
    counted time is the whole period minus excluded time. Time without samples never counts
    against the rule, also after the period's end: only closing the period judges the data as
    complete.
    Means and percentiles are always reported as still possible, since later samples can move
    them. Samples at or after ``now`` are ignored, and coverage is cut at ``now``.
    """
    _check_evaluable(rule)
    now_us = _to_us(now, "now")
    if METRICS[rule.metric].aggregation != "availability":
        return True
    start_us, end_us = _to_us(period.start, "period start"), _to_us(period.end, "period end")
    _, excluded, excluded_us = _exclusions(start_us, end_us, windows, business_hours)
    counted = end_us - start_us - excluded_us
    if counted == 0:
        return True  # nothing will ever be evaluated: no result, so no violation either
    horizon = min(max(now_us, start_us), end_us)
    per_value, _ = _coverage(_rows(samples, horizon, True), start_us, horizon, excluded)
    up, down = _up_down(per_value)
    # The range the final result can still take: all unknown time down .. all unknown time up.
    lowest, highest = up / counted * _HUNDRED, (counted - down) / counted * _HUNDRED
    reference, tolerance = Fraction(rule.reference), Fraction(rule.tolerance)
    if rule.operator == ".ge":
        return highest >= reference - tolerance
    if rule.operator == ".gt":
        return highest > reference - tolerance
    if rule.operator == ".le":
        return lowest <= reference + tolerance
    if rule.operator == ".lt":
        return lowest < reference + tolerance
    return highest >= reference - tolerance and lowest <= reference + tolerance


# --- rebates --------------------------------------------------------------------------------


def _money(value: Decimal, quantum: Decimal) -> Decimal:
    return value.quantize(quantum, rounding=ROUND_HALF_UP, context=_ROUNDING)


def _describe(result: RuleResult, tier: Tier, charge: Decimal, amount: Decimal) -> str:
    rule = result.rule
    unit = METRICS[rule.metric].unit
    side = "below" if _higher_is_better(rule) else "above"
    tolerance = f" ± {rule.tolerance}" if rule.tolerance else ""
    return (f"{rule.metric} {result.actual} {unit} is {side} {tier.threshold} {unit} "
            f"(rule {rule.id}: {rule.metric} {rule.operator} {rule.reference}{tolerance} {unit}): "
            f"{tier.rebate_percent} % of {charge} = {amount}")


def compute_rebate(
    charge: Decimal,
    results: Sequence[RuleResult],
    cap_percent: Decimal | None,
    *,
    quantum: Decimal = Decimal("0.01"),
) -> RebateComputation:
    """The rebate on ``charge`` for one SLA and period, from the tiers of its violated rules.

    One line per violated rule whose tier gives a non-zero percent, each rounded to ``quantum``
    (the currency's minor unit) with ROUND_HALF_UP; with ``cap_percent``, a negative line brings
    a total above the cap down to it. The lines always sum to ``amount``.
    """
    charge = _decimal(charge, "charge")
    if charge < 0:
        raise ValueError(f"charge {charge} must not be negative")
    quantum = _decimal(quantum, "quantum")
    if quantum <= 0:
        raise ValueError(f"quantum {quantum} must be positive, e.g. 0.01")
    if cap_percent is not None:
        cap_percent = _decimal(cap_percent, "cap percent")
        if cap_percent < 0:
            raise ValueError(f"cap percent {cap_percent} must not be negative")
    lines: list[RebateLine] = []
    for result in results:
        tier = result.tier
        if result.met is not False or tier is None or tier.rebate_percent == 0:
            continue
        amount = _money(_EXACT.multiply(_EXACT.multiply(charge, tier.rebate_percent), Decimal("0.01")), quantum)
        lines.append(RebateLine(result.rule.id, _describe(result, tier, charge, amount), tier.rebate_percent, amount))
    total = sum((line.amount for line in lines), _money(Decimal(0), quantum))
    capped = False
    if cap_percent is not None:
        cap_amount = _money(_EXACT.multiply(_EXACT.multiply(charge, cap_percent), Decimal("0.01")), quantum)
        if total > cap_amount:
            percent = cap_percent - sum((line.percent for line in lines), Decimal(0))
            lines.append(RebateLine(
                None,
                f"capped at {cap_percent} % of the charge ({cap_amount}): {total} reduced by {total - cap_amount}",
                percent,
                cap_amount - total,
            ))
            total, capped = cap_amount, True
    return RebateComputation(lines, total, capped)
