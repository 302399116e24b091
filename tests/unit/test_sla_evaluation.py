"""SLA evaluation math (services/sla/evaluation.py). Every expectation is worked out by hand in
the comment next to it; none is copied from the code's own output."""

from __future__ import annotations

import random
from datetime import UTC, datetime, time, timedelta, timezone
from decimal import Decimal
from functools import cache

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.sla.evaluation import (
    METRICS,
    BusinessHours,
    Period,
    Rule,
    RuleResult,
    Sample,
    Tier,
    Window,
    applicable_tier,
    can_still_be_met,
    check_rule,
    check_tiers,
    compute_rebate,
    evaluate_rule,
    next_period,
    period_containing,
    rule_met,
)

D = Decimal
MINUTE = timedelta(minutes=1)
STOCKHOLM = "Europe/Stockholm"
OCTOBER = Period(datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC))
OCT_1 = Period(datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 10, 2, tzinfo=UTC))
SEPTEMBER = Period(datetime(2026, 9, 1, tzinfo=UTC), datetime(2026, 10, 1, tzinfo=UTC))
AVAILABILITY_TIERS = (Tier(D("99.9"), D(10)), Tier(D("99.5"), D(25)), Tier(D("99.0"), D(50)))
AVAILABILITY = Rule("avail", "availability", ".ge", D("99.9"), tiers=AVAILABILITY_TIERS)
LATENCY = Rule("p95", "latency.p95", ".le", D(30), tiers=(Tier(D(30), D(5)),))


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def minutes(start: datetime, count: int, down: range | set[int] = range(0), skip: range = range(0)) -> list[Sample]:
    """One-minute availability samples from ``start``: minute i is down when i is in ``down``."""
    return [Sample(start + i * MINUTE, 0.0 if i in down else 1.0) for i in range(count) if i not in skip]


@cache
def october_100_down() -> tuple[Sample, ...]:
    # 44,640 one-minute samples (31 days x 1,440); minutes 1,000..1,099 (16:40-18:20 on 1 Oct) down.
    return tuple(minutes(OCTOBER.start, 44_640, down=range(1000, 1100)))


def split_period(up_seconds: int, down_seconds: int) -> tuple[Period, list[Sample]]:
    """A period of exactly up + down seconds: one up sample, then one down sample."""
    start = utc(2026, 1, 1)
    period = Period(start, start + timedelta(seconds=up_seconds + down_seconds))
    return period, [Sample(start, 1.0, up_seconds), Sample(start + timedelta(seconds=up_seconds), 0.0, down_seconds)]


def availability_result(up_seconds: int, down_seconds: int, rule: Rule = AVAILABILITY) -> RuleResult:
    period, samples = split_period(up_seconds, down_seconds)
    return evaluate_rule(rule, period, samples)


def valued(start: datetime, values: list[float]) -> list[Sample]:
    return [Sample(start + i * MINUTE, value) for i, value in enumerate(values)]


# --- catalogue and periods ------------------------------------------------------------------


def test_metric_catalogue() -> None:
    assert set(METRICS) == {"availability", "latency.p50", "latency.p95", "latency.p99", "packetLoss", "errorRate"}
    assert (METRICS["availability"].unit, METRICS["availability"].aggregation) == ("%", "availability")
    assert METRICS["availability"].higher_is_better is True
    assert [METRICS[f"latency.p{p}"].percentile for p in (50, 95, 99)] == [50, 95, 99]
    assert {METRICS[f"latency.p{p}"].unit for p in (50, 95, 99)} == {"ms"}
    assert (METRICS["packetLoss"].aggregation, METRICS["errorRate"].aggregation) == ("mean", "mean")
    assert not any(METRICS[name].higher_is_better for name in METRICS if name != "availability")


def test_utc_month() -> None:
    period = period_containing(utc(2026, 10, 15, 12), "month", "UTC")
    assert period == OCTOBER
    # 31 days x 1,440 minutes = 44,640 minutes.
    assert period.seconds == 44_640 * 60


def test_stockholm_october_has_44700_minutes() -> None:
    period = period_containing(utc(2026, 10, 15), "month", STOCKHOLM)
    # 1 Oct 00:00 CEST (+02:00) = 30 Sep 22:00Z; 1 Nov 00:00 CET (+01:00) = 31 Oct 23:00Z.
    assert period == Period(utc(2026, 9, 30, 22), utc(2026, 10, 31, 23))
    # 31 days + the hour repeated on 25 Oct: 744 h + 1 h = 745 h = 44,700 minutes.
    assert period.seconds == 44_700 * 60


def test_stockholm_march_has_44580_minutes() -> None:
    period = period_containing(utc(2026, 3, 10), "month", STOCKHOLM)
    # 1 Mar 00:00 CET = 28 Feb 23:00Z; 1 Apr 00:00 CEST = 31 Mar 22:00Z.
    assert period == Period(utc(2026, 2, 28, 23), utc(2026, 3, 31, 22))
    # 744 h - the hour skipped on 29 Mar = 743 h = 44,580 minutes.
    assert period.seconds == 44_580 * 60


def test_iso_week_in_a_zone_across_dst() -> None:
    # 25 Oct 2026 is a Sunday (DST ends); its ISO week runs Mon 19 Oct 00:00 CEST = 18 Oct 22:00Z
    # to Mon 26 Oct 00:00 CET = 25 Oct 23:00Z: 7 x 24 h + 1 h = 169 h.
    week = period_containing(utc(2026, 10, 25, 12), "week", STOCKHOLM)
    assert week == Period(utc(2026, 10, 18, 22), utc(2026, 10, 25, 23))
    assert week.seconds == 169 * 3600
    # The boundary instant belongs to the week that starts there; a microsecond earlier does not.
    assert period_containing(utc(2026, 10, 18, 22), "week", STOCKHOLM) == week
    previous = period_containing(utc(2026, 10, 18, 22) - timedelta(microseconds=1), "week", STOCKHOLM)
    assert previous == Period(utc(2026, 10, 11, 22), utc(2026, 10, 18, 22))
    # The following week has no change: Mon 26 Oct 00:00 CET .. Mon 2 Nov 00:00 CET, 168 h.
    following = next_period(week, "week", STOCKHOLM)
    assert following == Period(utc(2026, 10, 25, 23), utc(2026, 11, 1, 23))


def test_quarters_in_a_zone() -> None:
    # 31 Dec 23:30Z is already 1 Jan 2027 00:30 CET: Q1 2027, from 31 Dec 23:00Z to
    # 1 Apr 00:00 CEST = 31 Mar 22:00Z; 90 days x 24 h - 1 h (DST starts 28 Mar 2027) = 2,159 h.
    q1 = period_containing(utc(2026, 12, 31, 23, 30), "quarter", STOCKHOLM)
    assert q1 == Period(utc(2026, 12, 31, 23), utc(2027, 3, 31, 22))
    assert q1.seconds == 2159 * 3600
    # 31 Dec 22:59Z is 23:59 CET on 31 Dec: still Q4 2026, 1 Oct 00:00 CEST = 30 Sep 22:00Z to
    # 31 Dec 23:00Z; 92 days x 24 h + 1 h (DST ends 25 Oct) = 2,209 h.
    q4 = period_containing(utc(2026, 12, 31, 22, 59), "quarter", STOCKHOLM)
    assert q4 == Period(utc(2026, 9, 30, 22), utc(2026, 12, 31, 23))
    assert q4.seconds == 2209 * 3600
    assert next_period(q4, "quarter", STOCKHOLM) == q1


def test_days_in_zones() -> None:
    # 1 Oct 00:00Z is 05:30 IST on 1 Oct; that day starts at 00:00 IST = 30 Sep 18:30Z.
    day = period_containing(utc(2026, 10, 1), "day", "Asia/Kolkata")
    assert day == Period(utc(2026, 9, 30, 18, 30), utc(2026, 10, 1, 18, 30))
    # The day DST ends in Stockholm lasts 25 h: 24 Oct 22:00Z .. 25 Oct 23:00Z.
    assert period_containing(utc(2026, 10, 25, 12), "day", STOCKHOLM).seconds == 25 * 3600
    # November in Stockholm: 31 Oct 23:00Z .. 30 Nov 23:00Z, 30 x 24 h = 43,200 minutes.
    october = period_containing(utc(2026, 10, 15), "month", STOCKHOLM)
    november = next_period(october, "month", STOCKHOLM)
    assert november == Period(utc(2026, 10, 31, 23), utc(2026, 11, 30, 23))


def test_period_checks_and_normalises() -> None:
    cest = timezone(timedelta(hours=2))
    period = Period(datetime(2026, 10, 1, 2, tzinfo=cest), datetime(2026, 10, 1, 3, tzinfo=cest))
    assert period.start == utc(2026, 10, 1) and period.start.tzinfo is UTC
    with pytest.raises(ValueError, match="after its start"):
        Period(utc(2026, 10, 2), utc(2026, 10, 1))
    with pytest.raises(ValueError, match="timezone-aware"):
        Period(datetime(2026, 10, 1), datetime(2026, 10, 2))
    with pytest.raises(ValueError, match="period kind"):
        period_containing(utc(2026, 10, 1), "fortnight", "UTC")
    with pytest.raises(ValueError, match="time zone"):
        period_containing(utc(2026, 10, 1), "day", "Mars/Olympus_Mons")
    with pytest.raises(ValueError, match="timezone-aware"):
        period_containing(datetime(2026, 10, 1), "day", "UTC")


# --- availability ---------------------------------------------------------------------------


def test_utc_month_with_100_minutes_down() -> None:
    result = evaluate_rule(AVAILABILITY, OCTOBER, october_100_down())
    # up = 44,640 - 100 = 44,540 minutes; 44,540 / 44,640 = 0.997759856... -> 99.7760 %.
    assert result.actual == D("99.7760")
    assert result.met is False
    # 99.776 is below 99.9 (10 %) but not below 99.5: the 10 % tier.
    assert result.tier == Tier(D("99.9"), D(10))
    assert result.rebate_percent == D(10)
    assert result.sample_count == 44_640
    assert result.evaluated_seconds == 44_640 * 60
    assert (result.excluded_seconds, result.missing_seconds, result.exclusions) == (0, 0, [])


def test_maintenance_window_over_60_down_minutes_avoids_the_violation() -> None:
    window = Window(OCTOBER.start + 1000 * MINUTE, OCTOBER.start + 1060 * MINUTE, "planned work")
    result = evaluate_rule(AVAILABILITY, OCTOBER, october_100_down(), [window])
    # 60 of the 100 down minutes excluded: 40 down over 44,640 - 60 = 44,580 evaluated minutes;
    # 44,540 / 44,580 = 0.999102737... -> 99.9103 %, at least 99.9: met, no tier.
    assert result.actual == D("99.9103")
    assert result.met is True
    assert (result.tier, result.rebate_percent) == (None, D(0))
    assert result.evaluated_seconds == 44_580 * 60
    assert result.excluded_seconds == 3600
    assert [(e.reason, e.start, e.end, e.seconds) for e in result.exclusions] == [
        ("planned work", utc(2026, 10, 1, 16, 40), utc(2026, 10, 1, 17, 40), 3600)]


def test_window_over_up_and_down_time() -> None:
    # 1 Oct: 1,440 minutes, down 10:00-10:30 (minutes 600..629); window 10:20-11:00.
    samples = minutes(OCT_1.start, 1440, down=range(600, 630))
    window = Window(utc(2026, 10, 1, 10, 20), utc(2026, 10, 1, 11))
    result = evaluate_rule(AVAILABILITY, OCT_1, samples, [window])
    # The window removes 10 down minutes (10:20-10:30) and 30 up minutes (10:30-11:00):
    # down 20, up 1,410 - 30 = 1,380, denominator 1,400; 1,380 / 1,400 = 0.98571428... -> 98.5714.
    assert result.actual == D("98.5714")
    assert result.evaluated_seconds == 1400 * 60
    assert result.excluded_seconds == 40 * 60
    # Below 99.0: the 50 % tier.
    assert result.rebate_percent == D(50)


def test_overlapping_windows_do_not_count_twice() -> None:
    samples = minutes(OCT_1.start, 1440, down=range(600, 630))  # down 10:00-10:30
    windows = [
        Window(utc(2026, 10, 1, 10, 30), utc(2026, 10, 1, 12), "b"),
        Window(utc(2026, 10, 1, 10), utc(2026, 10, 1, 11), "a"),
        Window(utc(2026, 10, 1, 10, 10), utc(2026, 10, 1, 10, 20), "inside a"),
        Window(utc(2026, 9, 30, 23), utc(2026, 10, 1, 0, 30), "straddles the start"),
        Window(utc(2026, 9, 29), utc(2026, 9, 30), "before the period"),
    ]
    result = evaluate_rule(AVAILABILITY, OCT_1, samples, windows)
    # Itemised by start: the straddling window clipped to 00:00-00:30 (1,800 s); a 10:00-11:00
    # (3,600 s); "inside a" adds nothing (0 s); b 10:30-12:00 adds only 11:00-12:00 (3,600 s).
    # The window before the period is not listed.
    assert [(e.reason, e.start, e.seconds) for e in result.exclusions] == [
        ("straddles the start", utc(2026, 10, 1), 1800),
        ("a", utc(2026, 10, 1, 10), 3600),
        ("inside a", utc(2026, 10, 1, 10, 10), 0),
        ("b", utc(2026, 10, 1, 10, 30), 3600),
    ]
    # Union: 00:00-00:30 and 10:00-12:00 = 30 + 120 = 150 minutes = 9,000 s, not 10,800.
    assert result.excluded_seconds == 9000
    # All downtime is excluded: 1,290 up minutes of 1,290 -> 100 %.
    assert result.actual == D("100.0000")
    assert result.met is True
    assert result.evaluated_seconds == 1290 * 60


def test_samples_exactly_on_period_boundaries() -> None:
    period = Period(utc(2026, 10, 1), utc(2026, 10, 1, 0, 10))
    # Samples at 00:00 (down), 00:01..00:09 (up), 00:10 (down, the next period's).
    samples = minutes(period.start, 11, down={0, 10})
    result = evaluate_rule(AVAILABILITY, period, samples)
    # Down 60 s, up 540 s: 540 / 600 = 90 %. The 00:10 sample does not count.
    assert result.actual == D("90.0000")
    assert result.sample_count == 10
    following = evaluate_rule(AVAILABILITY, Period(period.end, period.end + 10 * MINUTE), samples)
    # The next period sees only the 00:10 sample: 60 s down, 540 s missing -> 0 %.
    assert following.actual == D("0.0000")
    assert (following.sample_count, following.evaluated_seconds, following.missing_seconds) == (1, 60, 540)


def test_samples_straddling_the_period_ends_are_clipped() -> None:
    period = Period(utc(2026, 10, 1), utc(2026, 10, 1, 0, 10))
    # 23:59:30 (down) covers 00:00:00-00:00:30 inside; 00:00:30 .. 00:09:30 (up) cover 60 s each,
    # the last only 00:09:30-00:10:00 inside.
    samples = [Sample(utc(2026, 9, 30, 23, 59, 30), 0.0)]
    samples += [Sample(utc(2026, 10, 1, 0, i, 30), 1.0) for i in range(10)]
    result = evaluate_rule(AVAILABILITY, period, samples)
    # up = 9 x 60 + 30 = 570 s, down = 30 s: 570 / 600 = 95 %.
    assert result.actual == D("95.0000")
    assert (result.sample_count, result.evaluated_seconds, result.missing_seconds) == (11, 600, 0)


def test_later_sample_cuts_an_earlier_one_and_down_wins_at_the_same_instant() -> None:
    period = Period(utc(2026, 10, 1), utc(2026, 10, 1, 0, 10))
    long_up = Sample(utc(2026, 10, 1), 1.0, 600)
    short_down = Sample(utc(2026, 10, 1, 0, 5), 0.0, 60)
    result = evaluate_rule(AVAILABILITY, period, [short_down, long_up])
    # The 10-minute up sample is cut at 00:05 (300 s up); the down sample covers 60 s; the
    # remaining 240 s are missing, not up again. 300 / 360 = 0.833333... -> 83.3333 %.
    assert result.actual == D("83.3333")
    assert (result.evaluated_seconds, result.missing_seconds) == (360, 240)
    twins = [Sample(utc(2026, 10, 1), 1.0), Sample(utc(2026, 10, 1), 0.0)]
    for order in (twins, twins[::-1]):
        # Same instant: the down one wins whatever the order: 0 s up of 60 -> 0 %.
        assert evaluate_rule(AVAILABILITY, period, order).actual == D("0.0000")


def test_missing_data_shrinks_the_denominator() -> None:
    # 1 Oct: minutes 300..419 have no sample (2 h gap), minutes 1,000..1,011 are down.
    samples = minutes(OCT_1.start, 1440, down=range(1000, 1012), skip=range(300, 420))
    result = evaluate_rule(AVAILABILITY, OCT_1, samples)
    # up = 1,440 - 120 - 12 = 1,308 of 1,320 with data: 0.990909... -> 99.0909 %.
    assert result.actual == D("99.0909")
    assert result.missing_seconds == 7200
    assert result.evaluated_seconds == 1320 * 60
    assert result.sample_count == 1320
    # Below 99.9 and below 99.5, not below 99.0: 25 %.
    assert result.rebate_percent == D(25)


def test_no_data_and_everything_excluded_give_no_result() -> None:
    empty = evaluate_rule(AVAILABILITY, OCT_1, [])
    assert (empty.actual, empty.met, empty.tier, empty.rebate_percent) == (None, None, None, D(0))
    # The whole day (86,400 s) is missing.
    assert (empty.sample_count, empty.evaluated_seconds, empty.missing_seconds) == (0, 0, 86_400)
    excluded = evaluate_rule(AVAILABILITY, OCT_1, minutes(OCT_1.start, 1440, down=range(5)),
                             [Window(utc(2026, 9, 30), utc(2026, 10, 3))])
    assert (excluded.actual, excluded.met, excluded.tier) == (None, None, None)
    assert (excluded.excluded_seconds, excluded.missing_seconds, excluded.sample_count) == (86_400, 0, 0)


def test_fractional_availability_values_count_proportionally() -> None:
    period = Period(utc(2026, 10, 1), utc(2026, 10, 1, 0, 2))
    # 60 s at 0.5 (30 s up) + 60 s at 1 (60 s up): 90 / 120 = 75 %.
    result = evaluate_rule(AVAILABILITY, period, [Sample(period.start, 0.5), Sample(period.start + MINUTE, 1.0)])
    assert result.actual == D("75.0000")


# --- tiers, tolerance and operators ---------------------------------------------------------


def test_exactly_99_9_is_met() -> None:
    # 999 s up, 1 s down: 999 / 1,000 = 99.9 % exactly; ">= 99.9" is met, no tier.
    result = availability_result(999, 1)
    assert (result.actual, result.met, result.tier, result.rebate_percent) == (D("99.9000"), True, None, D(0))


def test_tier_edges() -> None:
    # 998,999 / 1,000,000 = 99.8999 %: below 99.9 -> 10 %.
    assert availability_result(998_999, 1_001).rebate_percent == D(10)
    # 9,949 / 10,000 = 99.49 %: below 99.5 -> 25 %.
    result = availability_result(9_949, 51)
    assert (result.actual, result.rebate_percent) == (D("99.4900"), D(25))
    # 995 / 1,000 = 99.5 % exactly: not strictly below 99.5, so still 10 %.
    assert availability_result(995, 5).rebate_percent == D(10)
    # 990 / 1,000 = 99.0 % exactly: 25 %, not 50 %.
    assert availability_result(990, 10).rebate_percent == D(25)
    # 9,899 / 10,000 = 98.99 %: below 99.0 -> 50 %.
    assert availability_result(9_899, 101).rebate_percent == D(50)


def test_decisions_use_the_exact_value_not_the_rounded_one() -> None:
    # 9,989,999 / 10,000,000 = 99.89999 %: reported rounded to 99.9000, yet below 99.9.
    result = availability_result(9_989_999, 10_001)
    assert result.actual == D("99.9000")
    assert result.met is False
    assert result.rebate_percent == D(10)


def test_reported_value_rounds_half_up() -> None:
    # 9,912,345 / 10,000,000 = 99.12345 % exactly: half up -> 99.1235 (half even would give 99.1234).
    assert availability_result(9_912_345, 87_655).actual == D("99.1235")


def test_tolerance_and_strict_operators() -> None:
    samples = october_100_down()  # 99.77598... %
    lenient = Rule("avail", "availability", ".ge", D("99.9"), tolerance=D("0.2"), tiers=AVAILABILITY_TIERS)
    # Threshold 99.9 - 0.2 = 99.7 <= 99.776: met, so no tier even though 99.776 < 99.9.
    result = evaluate_rule(lenient, OCTOBER, samples)
    assert (result.met, result.tier, result.rebate_percent) == (True, None, D(0))
    # Exactly 99.9 %:
    gt = Rule("gt", "availability", ".gt", D("99.9"), tiers=AVAILABILITY_TIERS)
    result = availability_result(999, 1, gt)
    # 99.9 > 99.9 is false: violated, but no tier is strictly above 99.9 -> 0 %.
    assert (result.met, result.tier, result.rebate_percent) == (False, None, D(0))
    # .gt 99.95 with tolerance 0.05: 99.9 > 99.9 is false; .ge with the same: 99.9 >= 99.9 is true.
    assert availability_result(999, 1, Rule("g", "availability", ".gt", D("99.95"), D("0.05"))).met is False
    assert availability_result(999, 1, Rule("g", "availability", ".ge", D("99.95"), D("0.05"))).met is True


def test_rule_met_operators() -> None:
    def rule(operator: str, reference: str, tolerance: str = "0") -> Rule:
        return Rule("r", "latency.p95", operator, D(reference), D(tolerance))

    # .le: 31 <= 30 + 1; .lt: 31 < 30 + 1 is false.
    assert rule_met(rule(".le", "30", "1"), D(31)) is True
    assert rule_met(rule(".lt", "30", "1"), D(31)) is False
    assert rule_met(rule(".lt", "30", "1"), D("30.999")) is True
    # .le without tolerance: 30.0001 > 30.
    assert rule_met(rule(".le", "30"), D("30.0001")) is False
    # .eq: |0.15 - 0.1| = 0.05 <= 0.05 met; <= 0.04 not.
    assert rule_met(rule(".eq", "0.1", "0.05"), D("0.15")) is True
    assert rule_met(rule(".eq", "0.1", "0.04"), D("0.15")) is False
    assert rule_met(rule(".eq", "0.1", "0.05"), D("0.05")) is True
    # .ge / .gt with tolerance: 99.7 >= 99.9 - 0.2; 99.7 > 99.9 - 0.2 is false.
    assert rule_met(Rule("a", "availability", ".ge", D("99.9"), D("0.2")), D("99.7")) is True
    assert rule_met(Rule("a", "availability", ".gt", D("99.9"), D("0.2")), D("99.7")) is False


def test_applicable_tier() -> None:
    assert applicable_tier(AVAILABILITY, D("99.95")) is None  # met
    assert applicable_tier(AVAILABILITY, D("99.7")) == Tier(D("99.9"), D(10))
    assert applicable_tier(AVAILABILITY, D("98")) == Tier(D("99.0"), D(50))
    assert applicable_tier(LATENCY, D("30.5")) == Tier(D(30), D(5))
    # An .eq rule takes its metric's direction: errorRate is lower-is-better, so "above 0.12".
    eq = Rule("e", "errorRate", ".eq", D("0.1"), D("0.01"), tiers=(Tier(D("0.12"), D(5)),))
    assert applicable_tier(eq, D("0.15")) == Tier(D("0.12"), D(5))
    # 0.115 is off by 0.015 > 0.01 (violated) but not above 0.12: no tier.
    assert applicable_tier(eq, D("0.115")) is None


# --- percentiles and means ------------------------------------------------------------------

LATENCIES = [12, 15, 11, 30, 31, 14, 13, 18, 22, 25, 10, 16, 17, 19, 21, 23, 24, 28, 29, 45]
# Sorted by hand: 10 11 12 13 14 15 16 17 18 19 | 21 22 23 24 25 28 29 30 31 45 (n = 20).


def test_latency_percentiles_by_nearest_rank() -> None:
    samples = valued(OCT_1.start, [float(v) for v in LATENCIES])
    # p95: rank ceil(0.95 x 20) = 19 -> 31, above 30: violated, 5 %.
    p95 = evaluate_rule(LATENCY, OCT_1, samples)
    assert (p95.actual, p95.met, p95.rebate_percent, p95.sample_count) == (D("31.0000"), False, D(5), 20)
    # p50: rank ceil(0.5 x 20) = 10 -> 19.
    assert evaluate_rule(Rule("m", "latency.p50", ".le", D(30)), OCT_1, samples).actual == D(19)
    # p99: rank ceil(0.99 x 20) = ceil(19.8) = 20 -> 45.
    assert evaluate_rule(Rule("t", "latency.p99", ".le", D(50)), OCT_1, samples).actual == D(45)
    # 21 values (add 26): p95 rank ceil(19.95) = 20; sorted ... 29 30 31 45 with 26 inserted -> 31.
    more = valued(OCT_1.start, [float(v) for v in [*LATENCIES, 26]])
    assert evaluate_rule(LATENCY, OCT_1, more).actual == D(31)
    # One value: every percentile is that value.
    assert evaluate_rule(LATENCY, OCT_1, [Sample(OCT_1.start, 12.5)]).actual == D("12.5")


def test_packet_loss_mean() -> None:
    rule = Rule("loss", "packetLoss", ".le", D("0.25"))
    window = Window(utc(2026, 10, 1, 12), utc(2026, 10, 1, 13), "maintenance")
    samples = [
        Sample(utc(2026, 10, 1, 1), 0.1),
        Sample(utc(2026, 10, 1, 2), 0.2),
        Sample(utc(2026, 10, 1, 12, 30), 50.0),  # inside the window: ignored
        Sample(utc(2026, 10, 1, 23, 59), 0.4),
        Sample(utc(2026, 10, 2), 90.0),  # at period end: next period
        Sample(utc(2026, 9, 30, 23, 59), 90.0),  # before the period
    ]
    result = evaluate_rule(rule, OCT_1, samples, [window])
    # (0.1 + 0.2 + 0.4) / 3 = 0.7 / 3 = 0.23333... -> 0.2333; <= 0.25: met.
    assert (result.actual, result.met, result.sample_count) == (D("0.2333"), True, 3)
    # .le 0.2 with tolerance 0.03: 0.2333 > 0.23, violated; tolerance 0.04: 0.2333 <= 0.24, met.
    assert evaluate_rule(Rule("l", "packetLoss", ".le", D("0.2"), D("0.03")), OCT_1, samples, [window]).met is False
    assert evaluate_rule(Rule("l", "packetLoss", ".le", D("0.2"), D("0.04")), OCT_1, samples, [window]).met is True


def test_means_use_the_decimal_repr_of_floats() -> None:
    # In binary floats 0.1 + 0.2 = 0.30000000000000004; as decimals (0.1 + 0.2) / 2 = 0.15 exactly.
    samples = valued(OCT_1.start, [0.1, 0.2])
    assert evaluate_rule(Rule("e", "errorRate", ".eq", D("0.15")), OCT_1, samples).met is True
    assert evaluate_rule(Rule("e", "errorRate", ".le", D("0.15")), OCT_1, samples).actual == D("0.1500")
    assert evaluate_rule(Rule("e", "errorRate", ".le", D(1)), OCT_1, []).actual is None


# --- business hours -------------------------------------------------------------------------

OFFICE = BusinessHours(frozenset({1, 2, 3, 4, 5}), time(8), time(18), STOCKHOLM)


def test_business_hours_only() -> None:
    week = period_containing(utc(2026, 10, 7), "week", STOCKHOLM)
    # Mon 5 Oct 00:00 CEST = 4 Oct 22:00Z .. Mon 12 Oct 00:00 CEST = 11 Oct 22:00Z: 10,080 minutes.
    assert week == Period(utc(2026, 10, 4, 22), utc(2026, 10, 11, 22))
    # Minute i starts at 4 Oct 22:00Z + i. Down: Tue 6 Oct 09:00-09:30 CEST = 07:00-07:30Z
    # (minutes 1,980..2,009, inside hours) and Sat 10 Oct 12:00-14:00 CEST (outside hours).
    # No clock change this week, so local time = minutes since Monday 00:00 CEST:
    # Tuesday 09:00 = (24 + 9) x 60 = 1,980; Saturday 12:00 = (5 x 24 + 12) x 60 = 7,920.
    down = set(range(1980, 2010)) | set(range(7920, 8040))
    samples = minutes(week.start, 10_080, down=down)
    result = evaluate_rule(AVAILABILITY, week, samples, business_hours=OFFICE)
    # Counted: 5 days x 600 minutes = 3,000; outside hours: 10,080 - 3,000 = 7,080 minutes.
    assert result.evaluated_seconds == 3000 * 60
    assert result.excluded_seconds == 7080 * 60
    assert [(e.reason, e.seconds) for e in result.exclusions] == [("outside business hours", 7080 * 60)]
    # Only the Tuesday half hour counts: 2,970 / 3,000 = 99 % exactly; below 99.5 but not
    # strictly below 99.0 -> 25 %.
    assert (result.actual, result.rebate_percent) == (D("99.0000"), D(25))


def test_business_hours_with_a_window_and_across_dst() -> None:
    week = period_containing(utc(2026, 10, 7), "week", STOCKHOLM)
    samples = minutes(week.start, 10_080, down=range(1980, 2010))  # Tue 09:00-09:30 CEST down
    # Window Tue 6 Oct 17:00-19:00 CEST = 15:00-17:00Z: 60 minutes inside hours, 60 outside.
    window = Window(utc(2026, 10, 6, 15), utc(2026, 10, 6, 17), "upgrade")
    result = evaluate_rule(AVAILABILITY, week, samples, [window], OFFICE)
    # The window comes first (7,200 s); outside hours then adds 7,080 - 60 = 7,020 minutes.
    assert [(e.reason, e.seconds) for e in result.exclusions] == [
        ("upgrade", 7200), ("outside business hours", 7020 * 60)]
    # Excluded 7,080 + 60 = 7,140 minutes; counted 3,000 - 60 = 2,940, of which 30 down:
    # 2,910 / 2,940 = 0.98979591... -> 98.9796 %, below 99.0 -> 50 %.
    assert result.excluded_seconds == 7140 * 60
    assert (result.actual, result.rebate_percent) == (D("98.9796"), D(50))
    # The DST week (169 h = 10,140 minutes) still has 5 x 10 local hours of business time.
    dst_week = period_containing(utc(2026, 10, 21), "week", STOCKHOLM)
    dst = evaluate_rule(AVAILABILITY, dst_week, minutes(dst_week.start, 10_140), business_hours=OFFICE)
    assert (dst.evaluated_seconds, dst.excluded_seconds) == (3000 * 60, 7140 * 60)


def test_overnight_business_hours() -> None:
    nights = BusinessHours(frozenset(range(1, 8)), time(22), time(6), "UTC")
    result = evaluate_rule(AVAILABILITY, OCT_1, minutes(OCT_1.start, 1440), business_hours=nights)
    # 1 Oct counts 00:00-06:00 (the night begun on 30 Sep) and 22:00-24:00: 8 h; 16 h excluded.
    assert (result.evaluated_seconds, result.excluded_seconds) == (8 * 3600, 16 * 3600)


# --- continuous evaluation ------------------------------------------------------------------


def test_downtime_budget_of_a_30_day_month() -> None:
    now = utc(2026, 9, 2)  # one day in: minutes 0..1,439 known
    # September: 43,200 minutes; >= 99.9 allows 43,200 x 0.001 = 43.2 minutes down.
    # 43 minutes down: (43,200 - 43) / 43,200 = 99.90046... >= 99.9 is still reachable.
    assert can_still_be_met(AVAILABILITY, SEPTEMBER, minutes(SEPTEMBER.start, 1440, down=range(43)), now=now)
    # 44 minutes down: at best 99.89814... < 99.9: lost.
    assert not can_still_be_met(AVAILABILITY, SEPTEMBER, minutes(SEPTEMBER.start, 1440, down=range(44)), now=now)


def test_downtime_budget_edges() -> None:
    # Exactly 43.2 minutes = 2,592 s down: at best exactly 99.9 %, fine for .ge, lost for .gt.
    samples = [Sample(SEPTEMBER.start, 0.0, 2592), Sample(SEPTEMBER.start + timedelta(seconds=2592), 1.0, 3600)]
    now = SEPTEMBER.start + timedelta(hours=2)
    assert can_still_be_met(AVAILABILITY, SEPTEMBER, samples, now=now) is True
    gt = Rule("gt", "availability", ".gt", D("99.9"))
    assert can_still_be_met(gt, SEPTEMBER, samples, now=now) is False
    # A tolerance of 0.01 widens the budget to 43,200 x 0.0011 = 47.52 minutes: 47 fine, 48 not.
    tolerant = Rule("t", "availability", ".ge", D("99.9"), D("0.01"))
    assert can_still_be_met(tolerant, SEPTEMBER, minutes(SEPTEMBER.start, 60, down=range(47)), now=now)
    assert not can_still_be_met(tolerant, SEPTEMBER, minutes(SEPTEMBER.start, 60, down=range(48)), now=now)


def test_downtime_budget_shrinks_with_exclusions_and_ignores_the_future() -> None:
    now = utc(2026, 9, 3)
    day_off = Window(utc(2026, 9, 10), utc(2026, 9, 11))
    # Counted time 43,200 - 1,440 = 41,760 minutes; budget 41.76 minutes: 41 fine, 42 not.
    assert can_still_be_met(AVAILABILITY, SEPTEMBER, minutes(SEPTEMBER.start, 60, down=range(41)), [day_off], now=now)
    assert not can_still_be_met(AVAILABILITY, SEPTEMBER, minutes(SEPTEMBER.start, 60, down=range(42)), [day_off],
                                now=now)
    # Downtime inside an excluded window does not spend the budget: 60 minutes down on 10 Sep.
    assert can_still_be_met(AVAILABILITY, SEPTEMBER, minutes(utc(2026, 9, 10), 60, down=range(60)), [day_off],
                            now=utc(2026, 9, 12))
    # A sample after now (2 h down from 4 Sep) is not known yet at 3 Sep.
    assert can_still_be_met(AVAILABILITY, SEPTEMBER, [Sample(utc(2026, 9, 4), 0.0, 7200)], now=now)
    # Nothing can be evaluated when the whole period is excluded: no violation.
    assert can_still_be_met(AVAILABILITY, SEPTEMBER, minutes(SEPTEMBER.start, 60, down=range(60)),
                            [Window(utc(2026, 8, 1), utc(2026, 10, 2))], now=now)


def test_other_metrics_wait_for_the_close() -> None:
    samples = valued(OCT_1.start, [float(v) for v in LATENCIES])  # p95 = 31 > 30
    assert can_still_be_met(LATENCY, OCT_1, samples, now=utc(2026, 10, 1, 12)) is True
    # Even after the period's end late samples may still move a percentile: only the close judges.
    assert evaluate_rule(LATENCY, OCT_1, samples).met is False
    assert can_still_be_met(LATENCY, OCT_1, samples, now=OCT_1.end) is True


def test_missing_time_never_counts_as_down_even_after_the_period() -> None:
    after = utc(2026, 10, 20)
    # 1 Oct has 1,440 minutes; >= 99.9 allows 1.44 minutes down. One down minute and no other
    # data: judged as complete that is 0 %, but the other 1,439 minutes may still arrive up.
    one_down = [Sample(OCT_1.start, 0.0)]
    assert evaluate_rule(AVAILABILITY, OCT_1, one_down).met is False
    assert can_still_be_met(AVAILABILITY, OCT_1, one_down, now=after) is True
    # Two down minutes alone spend more than the 1.44-minute budget: lost whatever arrives.
    assert can_still_be_met(AVAILABILITY, OCT_1, [*one_down, Sample(OCT_1.start + MINUTE, 0.0)], now=after) is False
    assert can_still_be_met(AVAILABILITY, OCT_1, [], now=after) is True  # no data: no violation


def test_backfill_of_a_past_month_is_judged_on_its_downtime_alone() -> None:
    after = utc(2026, 10, 15)  # September is over; its probes arrive now, in time order
    # The first 5,000 minutes with 40 down: judged as complete, (5,000 - 40) / 5,000 = 99.2 %,
    # below 99.9. But 40 minutes is within September's 43.2-minute budget: not lost.
    first = minutes(SEPTEMBER.start, 5000, down=range(100, 140))
    assert evaluate_rule(AVAILABILITY, SEPTEMBER, first).met is False
    assert can_still_be_met(AVAILABILITY, SEPTEMBER, first, now=after) is True
    # 44 minutes down spend more than the budget: lost, however the month continues.
    assert can_still_be_met(AVAILABILITY, SEPTEMBER, minutes(SEPTEMBER.start, 5000, down=range(100, 144)),
                            now=after) is False
    # The same 40 minutes arriving last (reverse order) or alone give the same answer.
    assert can_still_be_met(AVAILABILITY, SEPTEMBER, minutes(SEPTEMBER.start, 140, skip=range(100)),
                            now=after) is True


def test_lower_is_better_availability_is_lost_on_observed_uptime_alone() -> None:
    at_most_half = Rule("half", "availability", ".le", D(50))
    after = utc(2026, 10, 2)
    # 1,440 counted minutes; .le 50 allows 720 minutes up. 720 up minutes: still possible.
    assert can_still_be_met(at_most_half, OCT_1, minutes(OCT_1.start, 720), now=after) is True
    assert can_still_be_met(at_most_half, OCT_1, minutes(OCT_1.start, 721), now=after) is False
    # 720 up minutes and nothing else is 100 % judged as complete, yet still possible.
    assert evaluate_rule(at_most_half, OCT_1, minutes(OCT_1.start, 720)).met is False


# --- rebates --------------------------------------------------------------------------------


def latency_result() -> RuleResult:
    return evaluate_rule(LATENCY, OCT_1, valued(OCT_1.start, [float(v) for v in LATENCIES]))  # p95 31: 5 %


def test_multi_rule_rebate() -> None:
    availability = evaluate_rule(AVAILABILITY, OCTOBER, october_100_down())  # 99.776 %: 10 %
    rebate = compute_rebate(D("1000.00"), [availability, latency_result()], D(40))
    # 10 % of 1,000.00 = 100.00; 5 % = 50.00; total 150.00, under the 400.00 cap.
    assert [(line.rule_id, line.percent, line.amount) for line in rebate.lines] == [
        ("avail", D(10), D("100.00")), ("p95", D(5), D("50.00"))]
    assert (rebate.amount, rebate.capped) == (D("150.00"), False)
    assert "99.7760 % is below 99.9 %" in rebate.lines[0].description
    assert "10 % of 1000.00 = 100.00" in rebate.lines[0].description
    assert "31.0000 ms is above 30 ms" in rebate.lines[1].description


def test_rebate_cap() -> None:
    worst = availability_result(9_899, 101)  # 98.99 %: 50 %
    rebate = compute_rebate(D("1000.00"), [worst, latency_result()], D(40))
    # 500.00 + 50.00 = 550.00 > 40 % of 1,000.00 = 400.00: a -150.00 line (-15 %) caps it.
    assert [(line.rule_id, line.percent, line.amount) for line in rebate.lines] == [
        ("avail", D(50), D("500.00")), ("p95", D(5), D("50.00")), (None, D(-15), D("-150.00"))]
    assert "capped at 40 % of the charge" in rebate.lines[-1].description
    assert sum(line.amount for line in rebate.lines) == rebate.amount == D("400.00")
    assert rebate.capped is True
    # A total exactly at the cap is not capped: 10 % + 5 % with a 15 % cap.
    exact = compute_rebate(D("1000.00"), [availability_result(998_999, 1_001), latency_result()], D(15))
    assert (exact.amount, exact.capped, len(exact.lines)) == (D("150.00"), False, 2)
    # No cap at all: 550.00.
    assert compute_rebate(D("1000.00"), [worst, latency_result()], None).amount == D("550.00")


def test_rebate_rounding_of_odd_amounts() -> None:
    ten = availability_result(998_999, 1_001)  # 10 %
    rebate = compute_rebate(D("333.33"), [ten, latency_result()], None)
    # 10 % of 333.33 = 33.333 -> 33.33; 5 % = 16.6665 -> 16.67 (half up); total 50.00.
    assert [line.amount for line in rebate.lines] == [D("33.33"), D("16.67")]
    assert rebate.amount == D("50.00")
    # 25 % of 0.10 = 0.025 -> 0.03 (half up).
    assert compute_rebate(D("0.10"), [availability_result(9_949, 51)], None).amount == D("0.03")
    # A currency without minor unit: 10 % of 1,005 JPY = 100.5 -> 101.
    assert compute_rebate(D(1005), [ten], None, quantum=D(1)).amount == D(101)


def test_no_rebate_without_a_violated_tier() -> None:
    met = availability_result(999, 1)  # exactly 99.9 %: met
    violated_without_tier = availability_result(999, 1, Rule("gt", "availability", ".gt", D("99.9"),
                                                             tiers=AVAILABILITY_TIERS))
    no_data = evaluate_rule(AVAILABILITY, OCT_1, [])
    rebate = compute_rebate(D("1000.00"), [met, violated_without_tier, no_data], D(40))
    assert (rebate.lines, rebate.amount, rebate.capped) == ([], D("0.00"), False)


def test_rebate_refuses_floats_and_negative_charges() -> None:
    with pytest.raises(ValueError, match="Decimal"):
        compute_rebate(1000.0, [], None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="negative"):
        compute_rebate(D("-1"), [], None)
    with pytest.raises(ValueError, match="negative"):
        compute_rebate(D(1), [], D(-5))


# --- validation -----------------------------------------------------------------------------


def test_check_tiers() -> None:
    check_tiers(AVAILABILITY)
    check_tiers(LATENCY)
    with pytest.raises(ValueError, match="not monotonic"):
        # Further below (99.5) must cost more than 10 %, not 5 %.
        check_tiers(Rule("a", "availability", ".ge", D("99.9"), tiers=(Tier(D("99.9"), D(10)), Tier(D("99.5"), D(5)))))
    with pytest.raises(ValueError, match="not monotonic"):
        # Lower is better: above 50 must cost more than above 30.
        check_tiers(Rule("l", "latency.p95", ".le", D(30), tiers=(Tier(D(30), D(10)), Tier(D(50), D(5)))))
    check_tiers(Rule("l", "latency.p95", ".le", D(30), tiers=(Tier(D(50), D(10)), Tier(D(30), D(5)))))
    with pytest.raises(ValueError, match="share the threshold"):
        check_tiers(Rule("a", "availability", ".ge", D("99.9"), tiers=(Tier(D("99.9"), D(10)), Tier(D("99.9"), D(25)))))
    with pytest.raises(ValueError, match="between 0 and 100"):
        check_tiers(Rule("a", "availability", ".ge", D("99.9"), tiers=(Tier(D("99.9"), D(101)),)))
    with pytest.raises(ValueError, match="between 0 and 100"):
        check_tiers(Rule("a", "availability", ".ge", D("99.9"), tiers=(Tier(D("99.9"), D(-1)),)))
    with pytest.raises(ValueError, match="Decimal"):
        check_tiers(Rule("a", "availability", ".ge", D("99.9"), tiers=(Tier(99.9, D(10)),)))  # type: ignore[arg-type]


def test_check_rule() -> None:
    check_rule(Rule("a", "availability", ".ge", D("99.9"), unit="%"))
    for bad, message in [
        (Rule("a", "jitter", ".ge", D(1)), "unknown metric"),
        (Rule("a", "availability", ">=", D(1)), "unknown operator"),
        (Rule("a", "availability", ".ge", D(1), unit="ms"), "unit"),
        (Rule("a", "availability", ".ge", D(1), D(-1)), "tolerance"),
        (Rule("a", "availability", ".ge", 99.9), "Decimal"),  # type: ignore[arg-type]
        (Rule("a", "availability", ".ge", D("NaN")), "finite"),
    ]:
        with pytest.raises(ValueError, match=message):
            check_rule(bad)
    # Evaluation does not use the unit, so a stored free-text unit still evaluates.
    assert availability_result(999, 1, Rule("a", "availability", ".ge", D("99.9"), unit="percent")).met is True
    with pytest.raises(ValueError, match="unknown operator"):
        evaluate_rule(Rule("a", "availability", "ge", D(1)), OCT_1, [])


def test_invalid_inputs() -> None:
    with pytest.raises(ValueError, match="between 0"):
        evaluate_rule(AVAILABILITY, OCT_1, [Sample(OCT_1.start, 100.0)])
    with pytest.raises(ValueError, match="finite"):
        evaluate_rule(LATENCY, OCT_1, [Sample(OCT_1.start, float("nan"))])
    with pytest.raises(ValueError, match="interval"):
        evaluate_rule(AVAILABILITY, OCT_1, [Sample(OCT_1.start, 1.0, -60)])
    with pytest.raises(ValueError, match="timezone-aware"):
        evaluate_rule(AVAILABILITY, OCT_1, [Sample(datetime(2026, 10, 1), 1.0)])
    with pytest.raises(ValueError, match="before it starts"):
        evaluate_rule(AVAILABILITY, OCT_1, [], [Window(utc(2026, 10, 1, 2), utc(2026, 10, 1, 1))])
    with pytest.raises(ValueError, match="ISO weekdays"):
        evaluate_rule(AVAILABILITY, OCT_1, [], business_hours=BusinessHours(frozenset({0}), time(8), time(18), "UTC"))
    with pytest.raises(ValueError, match="time zone"):
        evaluate_rule(AVAILABILITY, OCT_1, [],
                      business_hours=BusinessHours(frozenset({1}), time(8), time(18), "Nowhere"))


# --- properties -----------------------------------------------------------------------------

HOUR = Period(utc(2026, 10, 1, 12), utc(2026, 10, 1, 13))

availability_samples = st.lists(
    st.builds(
        lambda offset, value, interval: Sample(HOUR.start + timedelta(seconds=offset), value, interval),
        st.integers(-900, 4000), st.sampled_from([0.0, 1.0, 0.5]), st.sampled_from([0.0, 1.0, 30.0, 60.0, 600.0])),
    max_size=40)
windows = st.lists(
    st.builds(lambda start, length: Window(HOUR.start + timedelta(seconds=start),
                                           HOUR.start + timedelta(seconds=start + length)),
              st.integers(-600, 3900), st.integers(0, 1800)),
    max_size=4)
quick = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@quick
@given(availability_samples, windows, st.randoms(use_true_random=False))
def test_availability_is_order_invariant_and_accounts_for_every_second(
        samples: list[Sample], chosen: list[Window], shuffler: random.Random) -> None:
    result = evaluate_rule(AVAILABILITY, HOUR, samples, chosen)
    shuffled = samples[:]
    shuffler.shuffle(shuffled)
    again = evaluate_rule(AVAILABILITY, HOUR, shuffled, chosen[::-1])
    assert (again.actual, again.met, again.sample_count, again.evaluated_seconds, again.missing_seconds) == (
        result.actual, result.met, result.sample_count, result.evaluated_seconds, result.missing_seconds)
    assert again.excluded_seconds == result.excluded_seconds
    # Every second of the hour is evaluated, excluded or missing, exactly once.
    assert result.evaluated_seconds + result.excluded_seconds + result.missing_seconds == 3600
    assert sum(exclusion.seconds for exclusion in result.exclusions) == result.excluded_seconds
    if result.actual is not None:
        assert D(0) <= result.actual <= D(100)
    else:
        assert result.evaluated_seconds == 0


@st.composite
def timelines(draw: st.DrawFn) -> list[Sample]:
    """Back-to-back samples over most of the hour (gaps and overlaps from the extra ones)."""
    at = HOUR.start + timedelta(seconds=draw(st.integers(-300, 300)))
    samples = []
    for value, length in draw(st.lists(st.tuples(st.sampled_from([0.0, 1.0, 1.0, 1.0]), st.integers(1, 900)),
                                       min_size=1, max_size=12)):
        samples.append(Sample(at, value, length))
        at += timedelta(seconds=length)
    return samples + draw(availability_samples)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(timelines(), windows, st.integers(0, 3599), st.sampled_from([".ge", ".gt", ".le", ".lt", ".eq"]),
       st.sampled_from([D(1), D(50), D(99)]))
def test_a_lost_rule_stays_lost_at_the_close(samples: list[Sample], chosen: list[Window], now_offset: int,
                                             operator: str, reference: Decimal) -> None:
    rule = Rule("r", "availability", operator, reference, D("0.5"))
    now = HOUR.start + timedelta(seconds=now_offset)
    if not can_still_be_met(rule, HOUR, samples, chosen, now=now):
        # Whatever the samples after now are, the closing evaluation agrees.
        assert evaluate_rule(rule, HOUR, samples, chosen).met is False
        later = now + timedelta(seconds=(3600 - now_offset) // 2)
        assert not can_still_be_met(rule, HOUR, samples, chosen, now=later)


@quick
@given(st.sets(st.integers(0, 59), max_size=8), st.sets(st.integers(0, 59)), st.sampled_from([D(90), D(95), D(99)]))
def test_no_false_violation_whatever_part_of_a_past_period_has_arrived(
        down: set[int], arrived: set[int], reference: Decimal) -> None:
    # A past hour of one-minute probes arriving in any order: whatever subset has arrived so
    # far, a rule judged lost is also missed by the complete hour (90 % allows 6 down minutes,
    # 95 % 3, 99 % none).
    rule = Rule("r", "availability", ".ge", reference)
    complete = minutes(HOUR.start, 60, down=down)
    so_far = [complete[i] for i in sorted(arrived)]
    if not can_still_be_met(rule, HOUR, so_far, now=HOUR.end + timedelta(days=3)):
        assert evaluate_rule(rule, HOUR, complete).met is False
