"""SLA reports as documents: CSV, PDF and an HTML page (or fragment) with inline SVG charts.

Every document is written from the report dict of :mod:`services.sla.reports` and copies its
numbers as they are: seconds as the JSON numbers, money as its exact cents.

CSV layout
    Several tables, one after the other. Each starts with a row holding only ``# <table>``,
    then a header row, then its rows, and ends with an empty row. The tables of an SLA report
    are ``sla`` (one row: the period, state and rebate total), ``ruleResult``, ``chart`` (one
    row per rule and bar), ``exclusion``, ``violation``, ``rebate``, ``rebateLine`` and
    ``statementLine``; each row starts with the SLA's id, so a party report holds the same
    tables with the rows of all its SLAs, followed by ``statement`` (the party's settlement
    statements with their totals) and ``statementEntry`` (their lines). Empty cells are absent
    values; booleans are ``true``/``false``; money is written with its cents (``100.00``) next
    to its currency. Text that a spreadsheet would take for a formula is prefixed with ``'``.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from typing import Any
from xml.sax.saxutils import escape

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

from .reports import local_period, money_text

Table = tuple[str, list[str], list[list[Any]]]

_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _text(value: Any) -> str:
    """Free text, safe to open in a spreadsheet."""
    if value is None:
        return ""
    written = str(value)
    return "'" + written if written.startswith(_FORMULA_STARTS) else written


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _amount(money: dict[str, Any] | None) -> tuple[str, str]:
    if not money:
        return "", ""
    return money["unit"], money_text(money)


def _party(party: dict[str, Any] | None) -> str:
    return _text((party or {}).get("name") or (party or {}).get("id"))


def sla_tables(report: dict[str, Any]) -> list[Table]:
    """The tables of one SLA report (see the module docstring)."""
    sla_id = report["sla"]["id"]
    period = report["period"]
    currency, total = _amount(report.get("rebateTotal"))
    tables: list[Table] = [
        ("sla", ["sla", "name", "kind", "timeZone", "startDateTime", "endDateTime", "seconds", "state", "evaluation",
                 "currency", "rebateTotal"],
         [[sla_id, _text(report["sla"].get("name")), period["kind"], period["timeZone"], period["startDateTime"],
           period["endDateTime"], period["seconds"], report["state"], (report.get("evaluation") or {}).get("id"),
           currency, total]]),
        ("ruleResult", ["sla", "rule", "metric", "unit", "operator", "referenceValue", "tolerance", "actualValue",
                        "met", "sampleCount", "evaluatedSeconds", "excludedSeconds", "missingSeconds",
                        "rebatePercent"],
         [[sla_id, _text(r.get("rule")), r.get("metric"), r.get("unit"), r.get("operator"), r.get("referenceValue"),
           r.get("tolerance"), r.get("actualValue"), r.get("met"), r.get("sampleCount"), r.get("evaluatedSeconds"),
           r.get("excludedSeconds"), r.get("missingSeconds"), r.get("rebatePercent")]
          for r in report["ruleResult"]]),
        ("chart", ["sla", "rule", "metric", "unit", "label", "start", "end", "actualValue", "met"],
         [[sla_id, _text(c["rule"]), c["metric"], c["unit"], b["label"], b["start"], b["end"], b["actualValue"],
           b["met"]] for c in report["chart"] for b in c["bar"]]),
        ("exclusion", ["sla", "reason", "start", "end", "seconds"],
         [[sla_id, _text(e.get("reason")), e["start"], e["end"], e["seconds"]] for e in report["exclusion"]]),
        ("violation", ["sla", "id", "rule", "metric", "status", "periodStart", "periodEnd", "actualValue",
                       "statusChangeReason"],
         [[sla_id, v["id"], _text(v.get("rule")), v.get("metric"), v.get("status"), v["period"]["startDateTime"],
           v["period"]["endDateTime"], v.get("actualValue"), _text(v.get("statusChangeReason"))]
          for v in report["violation"]]),
        ("rebate", ["sla", "id", "periodStart", "periodEnd", "payer", "payee", "currency", "charge", "amount",
                    "capped"],
         [[sla_id, r["id"], r["period"]["startDateTime"], r["period"]["endDateTime"], _party(r.get("payer")),
           _party(r.get("payee")), r["amount"]["unit"], _amount(r.get("charge"))[1], money_text(r["amount"]),
           r["capped"]] for r in report["rebate"]]),
        ("rebateLine", ["sla", "rebate", "rule", "percent", "currency", "amount", "description"],
         [[sla_id, r["id"], _text(line.get("rule")), line.get("percent"), *_amount(line.get("amount")),
           _text(line.get("description"))] for r in report["rebate"] for line in r["line"]]),
        ("statementLine", ["sla", "statement", "party", "periodStart", "periodEnd", "direction", "counterparty",
                           "currency", "amount", "description"],
         [[sla_id, line["statement"]["id"], _party(line.get("party")), line["period"]["startDateTime"],
           line["period"]["endDateTime"], line.get("direction"), _party(line.get("counterparty")),
           *_amount(line.get("amount")), _text(line.get("description"))] for line in report["statementLine"]]),
    ]
    return tables


def statement_tables(report: dict[str, Any]) -> list[Table]:
    """The settlement statement tables of a party report."""
    party = report["party"]["id"]
    return [
        ("statement", ["party", "id", "periodStart", "periodEnd", "currency", "owed", "owedTo", "net"],
         [[_text(party), s["id"], s["period"]["startDateTime"], s["period"]["endDateTime"], s["currency"],
           money_text(s["owed"]), money_text(s["owedTo"]), money_text(s["net"])] for s in report["statement"]]),
        ("statementEntry", ["statement", "sla", "rebate", "direction", "counterparty", "currency", "amount",
                            "description"],
         [[s["id"], (line.get("sla") or {}).get("id"), (line.get("rebate") or {}).get("id"), line.get("direction"),
           _party(line.get("counterparty")), *_amount(line.get("amount")), _text(line.get("description"))]
          for s in report["statement"] for line in s["line"]]),
    ]


def report_tables(report: dict[str, Any]) -> list[Table]:
    """All tables of an SLA or party report, those of a party's SLAs merged table by table."""
    if report["@type"] == "SLAReport":
        return sla_tables(report)
    merged: dict[str, Table] = {}
    for sla_report in report["slaReport"]:
        for name, header, rows in sla_tables(sla_report):
            merged.setdefault(name, (name, header, []))[2].extend(rows)
    if not merged:
        merged = {name: (name, header, []) for name, header, _ in sla_tables(_EMPTY_SLA_REPORT)}
    return [*merged.values(), *statement_tables(report)]


_EMPTY_SLA_REPORT: dict[str, Any] = {
    "sla": {"id": ""}, "period": {"kind": "", "timeZone": "", "startDateTime": "", "endDateTime": "", "seconds": 0},
    "state": "", "ruleResult": [], "chart": [], "exclusion": [], "violation": [], "rebate": [],
    "statementLine": [],
}


def report_csv(report: dict[str, Any]) -> str:
    """The report as CSV (layout in the module docstring)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    for name, header, rows in report_tables(report):
        writer.writerow([f"# {name}"])
        writer.writerow(header)
        writer.writerows([_cell(v) for v in row] for row in rows)
        writer.writerow([])
    return out.getvalue()


def parse_report_csv(content: str) -> dict[str, list[dict[str, str]]]:
    """The tables of a report CSV by name, each a list of rows keyed by the header (for readers
    of the layout, and for checking it)."""
    tables: dict[str, list[dict[str, str]]] = {}
    reader = csv.reader(io.StringIO(content))
    name: str | None = None
    header: list[str] | None = None
    for row in reader:
        if not row:
            name, header = None, None
        elif name is None and len(row) == 1 and row[0].startswith("# "):
            name = row[0][2:]
            tables[name] = []
        elif name is not None and header is None:
            header = row
        elif name is not None and header is not None:
            tables[name].append(dict(zip(header, row, strict=True)))
    return tables


# --- PDF ------------------------------------------------------------------------------------


def _number(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _met(value: Any) -> str:
    return {True: "met", False: "missed", None: "no data"}[value]


def _scale(values: list[float], reference: float | None, unit: str) -> tuple[float, float]:
    """The value axis of a chart: the values and the reference with a margin, so that 99.2 and
    99.9 look different; never below 0 for values that are not, never above 100 %."""
    every = [*values, *([float(reference)] if reference is not None else [])]
    low, high = min(every), max(every)
    pad = (high - low) * 0.1 or 1.0
    bottom = max(0.0, low - pad) if low >= 0 else low - pad
    top = min(100.0, high + pad) if unit == "%" and high <= 100 and high > bottom else high + pad
    return bottom, top


def _pdf_chart(chart: dict[str, Any], reference: float | None) -> Any:
    from reportlab.graphics.charts.barcharts import VerticalBarChart
    from reportlab.graphics.shapes import Drawing, Line, String
    from reportlab.lib import colors

    values = [b["actualValue"] for b in chart["bar"]]
    known = [v for v in values if v is not None]
    drawing = Drawing(480, 150)
    drawing.add(String(0, 138, f"{chart['metric']} per {chart['interval']} ({chart['unit']}), rule {chart['rule']}",
                       fontName="Helvetica", fontSize=8))
    if not known:
        drawing.add(String(40, 60, "no data in this period", fontName="Helvetica", fontSize=8))
        return drawing
    bottom, top = _scale(known, reference, chart["unit"])
    bars = VerticalBarChart()
    bars.x, bars.y, bars.width, bars.height = 40, 25, 430, 105
    bars.data = [[bottom if v is None else v for v in values]]
    bars.valueAxis.valueMin, bars.valueAxis.valueMax = bottom, top
    bars.valueAxis.labels.fontName = bars.categoryAxis.labels.fontName = "Helvetica"
    bars.valueAxis.labels.fontSize = bars.categoryAxis.labels.fontSize = 6
    # Day of the month or hour of the day: short enough for 31 or 25 bars.
    bars.categoryAxis.categoryNames = [b["label"][8:10] if chart["interval"] == "day" else b["label"][:2]
                                       for b in chart["bar"]]
    bars.bars[0].fillColor = colors.HexColor("#4a7bb7")
    for i, bar in enumerate(chart["bar"]):
        if bar["met"] is False:
            bars.bars[(0, i)].fillColor = colors.HexColor("#c0392b")
    drawing.add(bars)
    if reference is not None:
        y = bars.y + (reference - bottom) / (top - bottom) * bars.height
        drawing.add(Line(bars.x, y, bars.x + bars.width, y, strokeColor=colors.black, strokeDashArray=[3, 2],
                         strokeWidth=0.5))
    return drawing


def report_pdf(report: dict[str, Any]) -> bytes:
    """The report as a PDF document (A4, Helvetica), with one bar chart per rule."""
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import getSampleStyleSheet
    from reportlab.lib.units import mm
    from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer, TableStyle
    from reportlab.platypus import Table as PdfTable

    styles = getSampleStyleSheet()
    small = styles["BodyText"].clone("small", fontSize=7, leading=8.5)
    story: list[Any] = []

    def para(value: Any, style: Any = small) -> Any:
        return Paragraph(escape(str(value)), style)

    def table(header: list[str], rows: Iterable[list[Any]], widths: list[float] | None = None) -> None:
        data = [[para(h) for h in header], *[[para(c) for c in row] for row in rows]]
        if len(data) == 1:
            story.append(para("none"))
            return
        pdf_table = PdfTable(data, colWidths=widths, repeatRows=1)
        pdf_table.setStyle(TableStyle([("GRID", (0, 0), (-1, -1), 0.25, colors.grey),
                                       ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#e8e8e8")),
                                       ("VALIGN", (0, 0), (-1, -1), "TOP")]))
        story.append(pdf_table)

    def heading(title: str) -> None:
        story.append(Spacer(1, 3 * mm))
        story.append(para(title, styles["Heading3"]))

    def sla_section(sla_report: dict[str, Any], level: str) -> None:
        sla = sla_report["sla"]
        story.append(para(f"SLA report: {sla.get('name') or sla['id']}", styles[level]))
        story.append(para(f"SLA {sla['id']}, {sla_report['period']['kind']} {local_period(sla_report)}; "
                          f"state {sla_report['state']}", styles["BodyText"]))
        heading("Rules")
        table(["Rule", "Metric", "Target", "Actual", "Result", "Samples", "Evaluated s", "Excluded s", "Missing s",
               "Rebate %"],
              [[r.get("rule"), r.get("metric"),
                f"{r.get('operator')} {_number(r.get('referenceValue'))} {r.get('unit')}",
                _number(r.get("actualValue")), _met(r.get("met")), r.get("sampleCount"),
                _number(r.get("evaluatedSeconds")), _number(r.get("excludedSeconds")),
                _number(r.get("missingSeconds")), _number(r.get("rebatePercent"))]
               for r in sla_report["ruleResult"]])
        references = {r.get("rule"): r.get("referenceValue") for r in sla_report["ruleResult"]}
        for chart in sla_report["chart"]:
            story.append(Spacer(1, 2 * mm))
            story.append(_pdf_chart(chart, references.get(chart["rule"])))
        heading("Exclusions (maintenance windows, outside business hours)")
        table(["Reason", "Start", "End", "Seconds"],
              [[e.get("reason") or "", e["start"], e["end"], _number(e["seconds"])] for e in sla_report["exclusion"]])
        heading("Violations")
        table(["Violation", "Rule", "Status", "Period", "Actual"],
              [[v["id"], v.get("rule"), v.get("status"),
                f"{v['period']['startDateTime']} to {v['period']['endDateTime']}", _number(v.get("actualValue"))]
               for v in sla_report["violation"]])
        heading("Rebates")
        table(["Rebate", "Period", "Payer", "Payee", "Line", "Percent", "Amount"],
              [[r["id"], f"{r['period']['startDateTime']} to {r['period']['endDateTime']}",
                _party(r.get("payer")), _party(r.get("payee")), line.get("description"), _number(line.get("percent")),
                " ".join(_amount(line.get("amount")))]
               for r in sla_report["rebate"] for line in r["line"]])
        rebate_total = sla_report.get("rebateTotal")
        if rebate_total is not None:
            story.append(para(f"Rebate total: {rebate_total['unit']} {money_text(rebate_total)}", styles["BodyText"]))
        heading("Settlement statement lines")
        table(["Party", "Direction", "Counterparty", "Amount", "Description"],
              [[_party(line.get("party")), line.get("direction"), _party(line.get("counterparty")),
                " ".join(_amount(line.get("amount"))), line.get("description")]
               for line in sla_report["statementLine"]])

    if report["@type"] == "SLAReport":
        sla_section(report, "Title")
    else:
        story.append(para(f"Party report: {report['party']['id']}", styles["Title"]))
        story.append(para(f"{report['period']['kind']} of {report['period']['date']}, each SLA in its own time zone",
                          styles["BodyText"]))
        heading("Settlement statements")
        table(["Statement", "Period", "Currency", "Owed", "Owed to", "Net"],
              [[s["id"], f"{s['period']['startDateTime']} to {s['period']['endDateTime']}", s["currency"],
                money_text(s["owed"]), money_text(s["owedTo"]), money_text(s["net"])] for s in report["statement"]])
        for statement in report["statement"]:
            story.append(para(f"Statement {statement['id']}: owed {statement['currency']} "
                              f"{money_text(statement['owed'])}, owed to {money_text(statement['owedTo'])}, "
                              f"net {money_text(statement['net'])}", styles["BodyText"]))
        for sla_report in report["slaReport"]:
            story.append(Spacer(1, 6 * mm))
            sla_section(sla_report, "Heading2")
    story.append(Spacer(1, 4 * mm))
    story.append(para(f"Generated {report['generatedAt']}", small))
    out = io.BytesIO()
    SimpleDocTemplate(out, pagesize=A4, leftMargin=15 * mm, rightMargin=15 * mm, topMargin=15 * mm,
                      bottomMargin=15 * mm, title="SLA report", author="tmf-sqm",
                      invariant=True).build(story)
    return out.getvalue()


# --- HTML -----------------------------------------------------------------------------------

_CHART_WIDTH, _CHART_HEIGHT, _AXIS = 640, 160, 36


def svg_chart(chart: dict[str, Any], reference: float | None = None) -> Markup:
    """One rule's bars as an inline SVG: missed bars red, the rule's reference dashed, a tooltip
    (``<title>``) per bar; bars without data are left empty."""
    bars = chart["bar"]
    known: list[float] = [float(b["actualValue"]) for b in bars if b["actualValue"] is not None]
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="sqm-chart" role="img" width="{_CHART_WIDTH}" '
             f'height="{_CHART_HEIGHT}" viewBox="0 0 {_CHART_WIDTH} {_CHART_HEIGHT}">',
             f"<title>{escape(str(chart['metric']))} per {escape(str(chart['interval']))}</title>"]
    if known and bars:
        bottom, top = _scale(known, reference, chart["unit"])
        plot_height = _CHART_HEIGHT - 20
        step = (_CHART_WIDTH - _AXIS) / len(bars)

        def y_of(value: float) -> float:
            return 5 + plot_height * (1 - (value - bottom) / (top - bottom))

        parts.append(f'<text x="0" y="{y_of(top) + 8:.1f}" font-size="9">{top:.4g}</text>')
        parts.append(f'<text x="0" y="{y_of(bottom):.1f}" font-size="9">{bottom:.4g}</text>')
        for i, bar in enumerate(bars):
            x = _AXIS + i * step
            label = escape(f"{bar['label']}: {_number(bar['actualValue'])} {chart['unit']} ({_met(bar['met'])})")
            if bar["actualValue"] is not None:
                y = y_of(bar["actualValue"])
                fill = "#c0392b" if bar["met"] is False else "#4a7bb7"
                parts.append(f'<rect x="{x + 1:.1f}" y="{y:.1f}" width="{max(step - 2, 1):.1f}" '
                             f'height="{y_of(bottom) - y:.1f}" fill="{fill}"><title>{label}</title></rect>')
            if len(bars) <= 31:
                tick = bar["label"][8:10] if chart["interval"] == "day" else bar["label"][:2]
                parts.append(f'<text x="{x + step / 2:.1f}" y="{_CHART_HEIGHT - 3}" font-size="8" '
                             f'text-anchor="middle">{escape(tick)}</text>')
        if reference is not None:
            y = y_of(reference)
            parts.append(f'<line x1="{_AXIS}" y1="{y:.1f}" x2="{_CHART_WIDTH}" y2="{y:.1f}" stroke="#000" '
                         f'stroke-dasharray="4 3" stroke-width="1"><title>rule: {reference}</title></line>')
    else:
        parts.append(f'<text x="{_AXIS}" y="{_CHART_HEIGHT / 2:.0f}" font-size="11">no data in this period</text>')
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every value in it is escaped above


_environment = Environment(loader=PackageLoader("services.sla", "templates"),
                           autoescape=select_autoescape(default=True, default_for_string=True))
_environment.globals.update(svg_chart=svg_chart, money_text=money_text, local_period=local_period,
                            number=_number, met=_met, party_name=_party)


def render_report_html(report: dict[str, Any], *, standalone: bool = True) -> str:
    """The report (SLA or party) as HTML: a whole page, or with ``standalone=False`` a fragment
    (one ``<section class="sqm-report">``) for a page that brings its own layout and styles.
    Charts are inline SVG; the page needs no script and no other request."""
    template = _environment.get_template("report.html")
    return template.render(report=report, standalone=standalone)
