"""Report periods, their chart bars, format negotiation and the documents' escaping, without a
database."""

from __future__ import annotations

from datetime import UTC, date, datetime
from itertools import pairwise

import pytest

from services.sla import report_media_type
from services.sla.evaluation import period_containing
from services.sla.report_documents import parse_report_csv, report_csv, svg_chart
from services.sla.reports import chart_periods, parse_report_request, report_period
from services.tmf.errors import BadRequest, TmfError


@pytest.mark.parametrize(("day", "kind", "zone", "hours", "bars"), [
    (date(2026, 3, 8), "day", "America/New_York", 23, 23),     # clocks forward
    (date(2026, 11, 1), "day", "America/New_York", 25, 25),    # clocks back
    (date(2026, 10, 29), "week", "America/New_York", 7 * 24 + 1, 7),  # Monday 26 October on
    (date(2026, 10, 17), "month", "Europe/Stockholm", 31 * 24 + 1, 31),
    (date(2026, 2, 14), "month", "UTC", 28 * 24, 28),
])
def test_periods_and_bars_are_local_calendar_periods(day, kind, zone, hours, bars):
    period = report_period(day, kind, zone)
    assert period.seconds == hours * 3600
    # The very period the SLA evaluation makes for an instant inside it.
    assert period == period_containing(period.start, kind, zone)
    found = chart_periods(period, kind, zone)
    assert len(found) == bars
    assert found[0][1].start == period.start and found[-1][1].end == period.end
    assert all(a[1].end == b[1].start for a, b in pairwise(found))


def test_a_week_starts_on_monday_whatever_day_is_asked():
    assert report_period(date(2026, 10, 25), "week", "UTC").start == datetime(2026, 10, 19, tzinfo=UTC)
    assert report_period(date(2026, 10, 19), "week", "UTC").start == datetime(2026, 10, 19, tzinfo=UTC)


@pytest.mark.parametrize(("kind", "start", "fragment"), [
    ("year", "2026-10-01", "period must be one of day, week, month"),
    ("day", "2026-10-32", "YYYY-MM-DD"),
    ("day", None, "YYYY-MM-DD"),
    ("day", "1969-12-31", "between 1970-01-02"),
    ("month", "9999-12-01", "between 1970-01-02"),
])
def test_bad_requests_say_what_to_fix(kind, start, fragment):
    with pytest.raises(BadRequest, match=fragment):
        parse_report_request(kind, start)


@pytest.mark.parametrize(("format_", "accept", "expected"), [
    ("pdf", "application/json", "application/pdf"),
    (None, None, "application/json"),
    (None, "*/*", "application/json"),
    (None, "text/csv;q=0.5, application/pdf", "application/pdf"),
    (None, "image/png, text/*;q=0.2", "text/csv"),
    (None, "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", "application/json"),
    (None, "application/pdf;q=0, text/csv", "text/csv"),
])
def test_the_format_comes_from_the_parameter_then_the_accept_header(format_, accept, expected):
    assert report_media_type(format_, accept) == expected


def test_an_accept_header_naming_nothing_offered_is_a_406():
    with pytest.raises(TmfError) as raised:
        report_media_type(None, "image/png, text/html")
    assert raised.value.status == 406


def test_text_is_escaped_in_csv_and_svg():
    chart = {"rule": "r<1>", "metric": "availability", "unit": "%", "interval": "day",
             "bar": [{"label": "2026-10-01", "start": "2026-10-01T00:00:00.000Z", "end": "2026-10-02T00:00:00.000Z",
                      "actualValue": 99.5, "met": False},
                     {"label": "2026-10-02", "start": "2026-10-02T00:00:00.000Z", "end": "2026-10-03T00:00:00.000Z",
                      "actualValue": None, "met": None}]}
    svg = str(svg_chart(chart, 99.9))
    assert svg.count("<rect") == 1 and 'fill="#c0392b"' in svg  # the missed day; none for the empty one
    report = {"@type": "SLAReport", "sla": {"id": "s", "name": "@SUM(A1)"},
              "period": {"kind": "month", "timeZone": "UTC", "startDateTime": "2026-10-01T00:00:00.000Z",
                         "endDateTime": "2026-11-01T00:00:00.000Z", "seconds": 2678400.0},
              "state": "open", "ruleResult": [], "chart": [chart], "exclusion": [], "violation": [], "rebate": [],
              "rebateTotal": None, "statementLine": []}
    tables = parse_report_csv(report_csv(report))
    assert tables["sla"][0]["name"] == "'@SUM(A1)"
    assert tables["chart"][0]["rule"] == "r<1>"
    assert [row["met"] for row in tables["chart"]] == ["false", ""]
