"""The console in a real browser (headless chromium through its driver): logging in as each role,
live updates of the service graph after an alarm, the SLA board after down time, a partner
seeing none of the other partner's rows, an SLA's month report, a screenshot of every page, and axe-core's
accessibility rules in every page (no serious or critical violation)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from services.sla.evaluation import period_containing
from tests.support.console import (
    PARTNER_B_NAMES,
    PASSWORD,
    PROBLEMS,
    SLA,
    Seeded,
    at_risk_samples,
    console_suite,
    names_shown,
    raise_alarm,
    seed,
)

CHROMIUM = next((found for name in ("chromium", "chromium-browser", "google-chrome")
                 if (found := shutil.which(name))), None)
DRIVER = shutil.which("chromedriver")
if CHROMIUM is None or DRIVER is None:
    pytest.skip("no chromium binary (or no chromedriver) on this machine: the console's browser tests need "
                "Debian's chromium and chromium-driver packages", allow_module_level=True)

from selenium import webdriver  # noqa: E402
from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

HERE = Path(__file__).parent
ARTIFACTS = HERE / "artifacts"
AXE = (HERE / "assets" / "axe.min.js").read_text()
# Safety bound only: how long a page may take to show what the test waits for under heavy load.
WAIT_SECONDS = 90


@pytest.fixture(scope="module")
def suite(mongo_uri: str) -> Iterator[Seeded]:
    with console_suite(mongo_uri) as seeded:
        seed(seeded, alarm_on_link_1=False)
        yield seeded


@pytest.fixture(scope="module")
def browser(suite: Seeded) -> Iterator[Any]:
    # Asks for the suite so that the browser closes first: its open event stream would hold
    # the server's shutdown back.
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--window-size=1280,1000", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=str(DRIVER)), options=options)
    driver.set_page_load_timeout(WAIT_SECONDS)
    ARTIFACTS.mkdir(exist_ok=True)
    try:
        yield driver
    finally:
        driver.quit()


def log_in(driver: Any, suite: Seeded, name: str) -> None:
    driver.delete_all_cookies()
    driver.get(f"{suite.url}/console/login")
    driver.find_element(By.ID, "username").send_keys(name)
    driver.find_element(By.ID, "password").send_keys(PASSWORD)
    driver.find_element(By.CSS_SELECTOR, "form.login button[type=submit]").click()
    WebDriverWait(driver, WAIT_SECONDS).until(lambda d: "/console/graph" in d.current_url)
    assert name in driver.find_element(By.CSS_SELECTOR, ".who").text


def accessibility_problems(driver: Any) -> list[dict[str, Any]]:
    """axe-core's serious and critical violations in the page as it stands."""
    driver.execute_script(AXE)
    result = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "axe.run(document).then((r) => done(JSON.stringify(r.violations)), (e) => done(JSON.stringify("
        "[{id: 'axe-error', impact: 'critical', help: String(e)}])));")
    return [v for v in json.loads(result) if v.get("impact") in ("serious", "critical")]


def check_page(driver: Any, name: str) -> None:
    driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))
    problems = accessibility_problems(driver)
    assert not problems, [(p["id"], p.get("help"), [n.get("target") for n in p.get("nodes", [])][:3])
                          for p in problems]


def node_tone(driver: Any, node: str) -> str | None:
    try:
        found = driver.find_elements(By.CSS_SELECTOR, f'[data-node="{node}"]')
        return found[0].get_attribute("data-tone") if found else None
    except StaleElementReferenceException:
        return None  # the panel was just replaced by a live update


def text_of(driver: Any, selector: str) -> str | None:
    try:
        found = driver.find_elements(By.CSS_SELECTOR, selector)
        return str(found[0].text) if found else None
    except StaleElementReferenceException:
        return None


def click(driver: Any, selector: str) -> bool:
    try:
        driver.find_element(By.CSS_SELECTOR, selector).click()
        return True
    except StaleElementReferenceException:
        return False


def test_operator_sees_the_failing_resource_and_the_affected_service_live(browser: Any, suite: Seeded) -> None:
    log_in(browser, suite, "olga")
    browser.get(f"{suite.url}/console/graph?cfs={suite.ids['acme-vpn']}")
    assert node_tone(browser, "Resource:link-1") == "ok"
    assert node_tone(browser, f"Service:{suite.ids['acme-vpn']}") == "ok"
    # The panel is fetched again on the server's signal: no reload of the page.
    browser.execute_script("window.notReloaded = true;")
    raise_alarm(suite.api, "link-1")
    WebDriverWait(browser, WAIT_SECONDS).until(
        lambda d: node_tone(d, "Resource:link-1") in ("problem", "alarm")
        and node_tone(d, f"Service:{suite.ids['acme-vpn']}") == "problem")
    assert browser.execute_script("return window.notReloaded === true;")
    assert "supplied by partner-a" in browser.page_source
    WebDriverWait(browser, WAIT_SECONDS).until(lambda d: click(d, '[data-node="Resource:link-1"] > a'))
    WebDriverWait(browser, WAIT_SECONDS).until(lambda d: "lossOfSignal" in d.find_element(By.ID, "detail").text)
    check_page(browser, "graph")


def test_sla_board_shows_at_risk_after_down_samples(browser: Any, suite: Seeded) -> None:
    log_in(browser, suite, "olga")
    browser.get(f"{suite.url}/console/sla")
    board = f'[data-sla="{suite.ids["sla-acme"]}"]'
    assert browser.find_element(By.CSS_SELECTOR, board).get_attribute("data-status") != "at risk"
    response = suite.api.post(f"{SLA}/measurement", json=at_risk_samples(suite.ids["acme-vpn"], datetime.now(UTC)))
    assert response.status_code in (200, 201), response.text

    def at_risk(driver: Any) -> bool:
        driver.refresh()
        return bool(driver.find_element(By.CSS_SELECTOR, board).get_attribute("data-status") == "at risk")

    WebDriverWait(browser, WAIT_SECONDS, poll_frequency=1).until(at_risk)
    check_page(browser, "sla")


def test_operator_problems_and_settlement_pages(browser: Any, suite: Seeded) -> None:
    log_in(browser, suite, "olga")
    browser.get(f"{suite.url}/console/problems")
    [problem] = suite.api.get(f"{PROBLEMS}/serviceProblem", params={"rootCauseResource.id": "link-1"}).json()
    assert problem["status"] == "pending"
    problem = problem["id"]
    assert browser.find_elements(By.CSS_SELECTOR, f'[data-problem="{problem}"]')
    check_page(browser, "problems")
    WebDriverWait(browser, WAIT_SECONDS).until(lambda d: click(d, f'[data-problem="{problem}"] form button'))
    row = f'#problems-panel [data-problem="{problem}"] td:nth-child(2)'
    WebDriverWait(browser, WAIT_SECONDS).until(lambda d: text_of(d, row) == "acknowledged")
    browser.get(f"{suite.url}/console/settlement")
    assert browser.find_elements(By.CSS_SELECTOR, '[data-party="partner-a"]')
    assert browser.find_elements(By.CSS_SELECTOR, '[data-party="partner-b"]')
    check_page(browser, "settlement")


def test_partner_sees_none_of_the_other_partners_rows(browser: Any, suite: Seeded) -> None:
    log_in(browser, suite, "pia")
    for page in ("graph", "sla", "problems", "settlement"):
        browser.get(f"{suite.url}/console/{page}")
        text = browser.page_source
        assert names_shown(text, PARTNER_B_NAMES) == [], page
        browser.save_screenshot(str(ARTIFACTS / f"partner-{page}.png"))
    assert browser.find_elements(By.CSS_SELECTOR, '[data-party="partner-a"]')
    check_page(browser, "partner-settlement")


def test_customer_sees_its_service_and_its_sla(browser: Any, suite: Seeded) -> None:
    log_in(browser, suite, "carl")
    assert "acme-vpn" in browser.page_source and "beta-vpn" not in browser.page_source
    check_page(browser, "customer-graph")
    browser.get(f"{suite.url}/console/sla")
    assert browser.find_elements(By.CSS_SELECTOR, f'[data-sla="{suite.ids["sla-acme"]}"]')
    assert names_shown(browser.page_source, ("sla-b",)) == []
    check_page(browser, "customer-sla")


def test_operator_opens_an_slas_month_report(browser: Any, suite: Seeded) -> None:
    log_in(browser, suite, "olga")
    browser.get(f"{suite.url}/console/reports")
    Select(browser.find_element(By.ID, "report")).select_by_visible_text("SLA sla-a")
    Select(browser.find_element(By.ID, "period")).select_by_value("month")
    # The month of the quarter the seed closed with a rebate. A date field's typed form depends
    # on the browser's locale, so its value is set directly.
    current = period_containing(datetime.now(UTC), "quarter", "UTC")
    month = period_containing(current.start - timedelta(days=1), "quarter", "UTC").start.date().isoformat()
    browser.execute_script("arguments[0].value = arguments[1];", browser.find_element(By.ID, "start"), month)
    browser.find_element(By.CSS_SELECTOR, ".report-form button[type=submit]").click()
    WebDriverWait(browser, WAIT_SECONDS).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".sqm-report"))
    report = browser.find_element(By.CSS_SELECTOR, ".sqm-report").text
    assert "SLA report: sla-a" in report and "Rebate total: EUR" in report
    assert browser.find_elements(By.CSS_SELECTOR, ".sqm-report svg.sqm-chart")
    assert browser.find_element(By.LINK_TEXT, "Download PDF").get_attribute("href").endswith(
        f"period=month&start={month}")
    check_page(browser, "report")
