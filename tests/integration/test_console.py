"""The console over real HTTP: login and sessions, CSRF refusal, each page for each role with the
APIs' scoping, the problem actions, and the live-update signal."""

from __future__ import annotations

import io
import re
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from pypdf import PdfReader

from console.settings import SESSION_COOKIE
from services.sla.evaluation import period_containing
from services.sla.reports import money_text
from tests.support.console import (
    PARTNER_A_NAMES,
    PARTNER_B_NAMES,
    PASSWORD,
    PROBLEMS,
    SLA,
    Seeded,
    console_suite,
    names_shown,
    raise_alarm,
    seed,
    visible_text,
)

PAGES = ("/console/graph", "/console/sla", "/console/problems", "/console/settlement")


BROWSERS: list[httpx.Client] = []


@pytest.fixture(scope="module")
def suite(mongo_uri: str) -> Iterator[Seeded]:
    with console_suite(mongo_uri) as seeded:
        seed(seeded)
        try:
            yield seeded
        finally:
            for browser in BROWSERS:
                browser.close()


def login(suite: Seeded, name: str, password: str = PASSWORD) -> httpx.Client:
    browser = httpx.Client(base_url=suite.url, timeout=30, follow_redirects=True)
    BROWSERS.append(browser)
    form = browser.get("/console/login")
    token = re.search(r'name="login_token" value="([^"]+)"', form.text)
    assert token is not None
    answer = browser.post("/console/login", data={"username": name, "password": password,
                                                  "login_token": token.group(1), "next": "/console/sla"})
    if answer.status_code == 200:
        assert str(answer.url).endswith("/console/sla")
    return browser


def csrf(html: str) -> str:
    found = re.search(r'name="csrf-token" content="([^"]+)"', html)
    assert found is not None
    return found.group(1)


def test_pages_need_a_session_and_login_refuses_a_wrong_password(suite: Seeded) -> None:
    with httpx.Client(base_url=suite.url) as anonymous:
        answer = anonymous.get("/console/problems")
        assert answer.status_code == 303 and answer.headers["location"].startswith("/console/login")
        assert anonymous.get("/console/events").status_code == 401
    wrong = login(suite, "olga", "not the password")
    assert SESSION_COOKIE not in wrong.cookies
    token = re.search(r'name="login_token" value="([^"]+)"', wrong.get("/console/login").text)
    assert token is not None
    refused = wrong.post("/console/login", data={"username": "olga", "password": "nope", "login_token": token.group(1)})
    assert refused.status_code == 401 and "Wrong user name or password" in refused.text
    page = wrong.get("/console/sla")
    assert "/console/login" in str(page.url)


def test_session_cookie_is_httponly_and_samesite_lax_and_logout_ends_it(suite: Seeded) -> None:
    browser = httpx.Client(base_url=suite.url, timeout=30)
    BROWSERS.append(browser)
    form = browser.get("/console/login")
    token = re.search(r'name="login_token" value="([^"]+)"', form.text)
    assert token is not None
    answer = browser.post("/console/login", data={"username": "olga", "password": PASSWORD,
                                                  "login_token": token.group(1)})
    assert answer.status_code == 303
    cookie = next(h for h in answer.headers.get_list("set-cookie") if h.startswith(f"{SESSION_COOKIE}="))
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/console" in cookie
    assert "Secure" not in cookie  # the public URL is http here
    page = browser.get("/console/problems")
    assert page.status_code == 200
    session_id = browser.cookies[SESSION_COOKIE]
    refused = browser.post("/console/logout", data={"csrf": "forged"})
    assert refused.status_code == 403
    assert browser.post("/console/logout", data={"csrf": csrf(page.text)}).status_code == 303
    with httpx.Client(base_url=suite.url, cookies={SESSION_COOKIE: session_id}) as replay:
        assert replay.get("/console/problems").status_code == 303


def test_login_without_the_form_token_is_refused(suite: Seeded) -> None:
    with httpx.Client(base_url=suite.url) as browser:
        answer = browser.post("/console/login", data={"username": "olga", "password": PASSWORD})
        assert answer.status_code == 403
        assert SESSION_COOKIE not in browser.cookies


@pytest.mark.parametrize("name", ["olga", "pia", "pablo", "carl", "bea"])
def test_every_page_renders_for_every_role(suite: Seeded, name: str) -> None:
    browser = login(suite, name)
    for path in (*PAGES, "/console/reports"):
        page = browser.get(path)
        assert page.status_code == 200, (path, page.text[:500])
        assert "<main" in page.text


def test_partner_a_sees_none_of_partner_b_rows_on_any_page(suite: Seeded) -> None:
    pia, pablo = login(suite, "pia"), login(suite, "pablo")
    seen_a = {path: visible_text(pia.get(path).text) for path in PAGES}
    seen_b = {path: visible_text(pablo.get(path).text) for path in PAGES}
    for path in PAGES:
        assert names_shown(seen_a[path], PARTNER_B_NAMES) == [], path
        assert names_shown(seen_b[path], PARTNER_A_NAMES) == [], path
    # ... and each sees its own rows: its SLA with the operator, its problem, its statement.
    assert "sla-a" in seen_a["/console/sla"] and "sla-b" in seen_b["/console/sla"]
    assert "link-1" in seen_a["/console/problems"] and "link-2" in seen_b["/console/problems"]
    assert 'data-party="partner-a"' in seen_a["/console/settlement"]
    assert 'data-party="partner-b"' in seen_b["/console/settlement"]
    graph = pia.get("/console/graph", params={"cfs": suite.ids["access-1"]}).text
    assert 'data-node="Resource:link-1"' in graph
    # Asking for partner B's service by id shows nothing of it.
    other = visible_text(pia.get("/console/graph", params={"cfs": suite.ids["access-2"]}).text)
    assert names_shown(other, ("link-2", "access-2")) == []


def test_customer_sees_its_services_and_slas_only(suite: Seeded) -> None:
    carl = login(suite, "carl")
    graph = visible_text(carl.get("/console/graph").text)
    assert "acme-vpn" in graph and "beta-vpn" not in graph
    board = visible_text(carl.get("/console/sla").text)
    assert "sla-acme" in board and "sla-a" not in board.replace("sla-acme", "")
    assert "Acknowledge" not in carl.get("/console/problems").text


def test_operator_graph_shows_the_failing_resource_and_the_affected_service(suite: Seeded) -> None:
    olga = login(suite, "olga")
    graph = olga.get("/console/graph", params={"cfs": suite.ids["beta-vpn"]}).text
    assert re.search(r'data-node="Resource:link-2" data-tone="(problem|alarm)"', graph)
    assert re.search(rf'data-node="Service:{suite.ids["beta-vpn"]}" data-tone="problem"', graph)
    assert "supplied by partner-b" in graph
    detail = olga.get("/console/graph/node", params={"kind": "Resource", "id": "link-2"}).text
    assert "lossOfSignal" in detail


def test_operator_settlement_shows_both_directions(suite: Seeded) -> None:
    page = login(suite, "olga").get("/console/settlement").text
    assert 'data-party="operator"' in page and 'data-party="partner-a"' in page
    assert "owedTo" in page or "is owed" in page


def alarm_problem(suite: Seeded, link: str) -> str:
    [problem] = suite.api.get(f"{PROBLEMS}/serviceProblem", params={"rootCauseResource.id": link}).json()
    return str(problem["id"])


def test_acknowledge_needs_the_csrf_token_and_calls_the_problem_api(suite: Seeded) -> None:
    pia = login(suite, "pia")
    page = pia.get("/console/problems").text
    problem = alarm_problem(suite, "link-1")
    assert f'data-problem="{problem}"' in page
    forged = pia.post("/console/problems/acknowledge", data={"problem": problem, "csrf": "guess"})
    assert forged.status_code == 403
    assert suite.api.get(f"{PROBLEMS}/serviceProblem/{problem}").json()["status"] == "pending"
    done = pia.post("/console/problems/acknowledge", data={"problem": problem}, headers={"X-CSRF-Token": csrf(page),
                                                                                          "HX-Request": "true"})
    assert done.status_code == 200 and "acknowledged" in done.text
    assert suite.api.get(f"{PROBLEMS}/serviceProblem/{problem}").json()["status"] == "acknowledged"


def test_a_partner_cannot_act_on_the_other_partners_problem(suite: Seeded) -> None:
    theirs = alarm_problem(suite, "link-2")
    assert f'data-problem="{theirs}"' in login(suite, "pablo").get("/console/problems").text
    pia = login(suite, "pia")
    token = csrf(pia.get("/console/problems").text)
    refused = pia.post("/console/problems/acknowledge", data={"problem": theirs, "csrf": token})
    assert refused.status_code == 400 and "404" in refused.text
    assert suite.api.get(f"{PROBLEMS}/serviceProblem/{theirs}").json()["status"] == "pending"


def test_operator_groups_problems(suite: Seeded) -> None:
    olga = login(suite, "olga")
    page = olga.get("/console/problems").text
    parent, child = re.findall(r'data-problem="([^"]+)"', page)[:2]
    done = olga.post("/console/problems/group", data={"parent": parent, "child": [child], "csrf": csrf(page)})
    assert done.status_code == 200
    grouped = suite.api.get(f"{PROBLEMS}/serviceProblem/{child}").json()
    assert grouped["parentProblem"][0]["id"] == parent


def test_an_event_signals_the_panel_without_data(suite: Seeded) -> None:
    olga = login(suite, "olga")
    lines: list[str] = []
    connected = threading.Event()

    def listen() -> None:
        with olga.stream("GET", "/console/events") as stream:
            for line in stream.iter_lines():
                connected.set()
                lines.append(line)
                if line.startswith("data: "):
                    return

    reader = threading.Thread(target=listen, daemon=True)
    reader.start()
    assert connected.wait(30)  # safety bound only
    raise_alarm(suite.api, "link-9")
    reader.join(60)  # safety bound only
    # An alarm changes what the graph shows; the signal names the panel and nothing else.
    assert "data: graph" in lines
    assert all(line in ("", ": connected", ": heartbeat", "event: changed") or re.fullmatch(r"data: \w+", line)
               for line in lines)


def test_the_hook_takes_only_signed_deliveries(suite: Seeded) -> None:
    answer = httpx.post(f"{suite.url}/console/hook/serviceInventory/listener/serviceCreateEvent",
                        json={"eventId": "x", "eventType": "ServiceCreateEvent", "event": {}})
    assert answer.status_code == 401


def last_quarter_month() -> str:
    """The first month of the quarter the seed closed with a rebate for each partner's SLA."""
    current = period_containing(datetime.now(UTC), "quarter", "UTC")
    return period_containing(current.start - timedelta(days=1), "quarter", "UTC").start.date().isoformat()


def api_report(suite: Seeded, sla: str, start: str) -> dict:
    answer = suite.api.get(f"{SLA}/sla/{sla}/report", params={"period": "month", "start": start})
    assert answer.status_code == 200, answer.text
    report: dict = answer.json()
    return report


def test_operator_report_page_shows_the_slas_figures(suite: Seeded) -> None:
    start = last_quarter_month()
    expected = api_report(suite, suite.ids["sla-a"], start)
    olga = login(suite, "olga")
    form = olga.get("/console/reports").text
    assert f'value="sla:{suite.ids["sla-a"]}"' in form and f'value="sla:{suite.ids["sla-b"]}"' in form
    assert 'value="party"' not in form  # the operator reports per SLA
    page = olga.get("/console/reports", params={"report": f"sla:{suite.ids['sla-a']}", "period": "month",
                                                "start": start})
    assert page.status_code == 200, page.text[:500]
    assert 'class="sqm-report"' in page.text and "SLA report: sla-a" in page.text
    total = expected["rebateTotal"]
    assert money_text(total) != "0.00"  # the seeded quarter has a rebate
    assert f"Rebate total: {total['unit']} {money_text(total)}" in page.text
    [rule] = expected["ruleResult"]
    assert f"<td>{rule['sampleCount']}</td>" in page.text
    assert f"/console/reports/sla/{suite.ids['sla-a']}.pdf?period=month&amp;start={start}" in page.text


def test_report_page_says_what_is_wrong_with_its_parameters(suite: Seeded) -> None:
    olga = login(suite, "olga")
    chosen = f"sla:{suite.ids['sla-a']}"
    wrong_period = olga.get("/console/reports", params={"report": chosen, "period": "year", "start": "2026-10-01"})
    # The API's own message, naming the wrong value (the API's schema refuses it).
    assert wrong_period.status_code == 400 and 'class="error"' in wrong_period.text
    assert "period" in wrong_period.text and "&#39;year&#39;" in wrong_period.text
    wrong_date = olga.get("/console/reports", params={"report": chosen, "period": "day", "start": "2026-13-01"})
    assert wrong_date.status_code == 400 and "YYYY-MM-DD" in wrong_date.text
    not_offered = olga.get("/console/reports", params={"report": "sla:../../party"})
    assert not_offered.status_code == 400 and "sqm-report" not in not_offered.text
    assert olga.get("/console/reports/sla/x.exe").status_code == 404


def test_a_partner_gets_no_report_of_the_other_partners_sla(suite: Seeded) -> None:
    start = last_quarter_month()
    pia = login(suite, "pia")
    form = pia.get("/console/reports").text
    assert 'value="party"' in form and f'value="sla:{suite.ids["sla-a"]}"' in form
    page = pia.get("/console/reports", params={"report": f"sla:{suite.ids['sla-b']}", "period": "month",
                                               "start": start})
    assert page.status_code == 404 and 'class="error"' in page.text
    assert "sqm-report" not in page.text and "Rebate total" not in page.text
    assert names_shown(visible_text(page.text), PARTNER_B_NAMES) == []
    pdf = pia.get(f"/console/reports/sla/{suite.ids['sla-b']}.pdf", params={"period": "month", "start": start})
    assert 400 <= pdf.status_code < 500 and not pdf.content.startswith(b"%PDF")
    own = pia.get("/console/reports", params={"report": "party", "period": "month", "start": start})
    assert own.status_code == 200, own.text[-600:]
    assert "Party report: partner-a" in own.text and "SLA report: sla-a" in own.text
    assert names_shown(own.text, ("sla-b",)) == [] and suite.ids["sla-b"] not in own.text


def test_report_downloads_are_the_apis_files_for_the_person(suite: Seeded) -> None:
    start = last_quarter_month()
    sla = suite.ids["sla-a"]
    total = money_text(api_report(suite, sla, start)["rebateTotal"])
    olga = login(suite, "olga")
    pdf = olga.get(f"/console/reports/sla/{sla}.pdf", params={"period": "month", "start": start})
    assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
    assert pdf.headers["content-disposition"] == f'attachment; filename="report-{sla}-month-{start}.pdf"'
    assert pdf.content.startswith(b"%PDF")
    text = "".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf.content)).pages)
    assert total in text
    csv = login(suite, "pia").get("/console/reports/party.csv", params={"period": "month", "start": start})
    assert csv.status_code == 200 and csv.headers["content-disposition"].startswith("attachment;")
    assert "partner-a" in csv.text and "sla-b" not in csv.text
