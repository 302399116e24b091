"""What the console adds for a person, measured in headless chromium: the first meaningful view of
the service graph (navigation to the moment the tree is in the page) against the API call that
gives the tree (``GET /service/{id}/dependency``), and the live-update delay (alarm raised to the
failing resource marked in an open page) against the same alarm seen as a problem by polling the
problem API. Both baselines are measured in the same run, on the same suite.

The suite runs in this process's threads on a fresh in-memory embedded database, with the value
chain of the console's tests plus ``--services`` more customer-facing services, each on an
access service on a link (seeding 10,000 takes too long on a shared 2-core machine; the graph
page shows one service's tree and lists 50 choices whatever the total, so its cost does not
grow with the count).

    python -m bench.console [--services 200] [--repetitions 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import time

import httpx

from services.tmf.embedded import EmbeddedDatabase
from tests.support.console import INVENTORY, PASSWORD, PROBLEMS, console_suite, raise_alarm, seed


def _service(api: httpx.Client, name: str, category: str, **refs: object) -> str:
    answer = api.post(f"{INVENTORY}/service", json={"name": name, "category": category, "state": "active",
                                                     "serviceSpecification": {"id": category}, **refs})
    answer.raise_for_status()
    return str(answer.json()["id"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--services", type=int, default=200)
    parser.add_argument("--repetitions", type=int, default=5)
    args = parser.parse_args()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    load_before = os.getloadavg()
    with EmbeddedDatabase(":memory:") as database, console_suite(database.uri) as suite:
        seed(suite, alarm_on_link_1=False)
        targets = []
        for n in range(args.services):
            access = _service(suite.api, f"bench-access-{n}", "RFS",
                              supportingResource=[{"id": f"bench-link-{n}", "name": f"bench-link-{n}"}])
            targets.append((_service(suite.api, f"bench-vpn-{n}", "CFS", supportingService=[{"id": access}]),
                            f"bench-link-{n}"))
        options = webdriver.ChromeOptions()
        options.binary_location = shutil.which("chromium") or "chromium"
        for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking"):
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service(shutil.which("chromedriver") or "chromedriver"), options=options)
        try:
            driver.get(f"{suite.url}/console/login")
            driver.find_element(By.ID, "username").send_keys("olga")
            driver.find_element(By.ID, "password").send_keys(PASSWORD)
            driver.find_element(By.CSS_SELECTOR, "form.login button").click()
            view, api_view, live, api_live = [], [], [], []
            for cfs, link in targets[: args.repetitions]:
                started = time.perf_counter()
                suite.api.get(f"{INVENTORY}/service/{cfs}/dependency", params={"depth": 32}).raise_for_status()
                api_view.append(time.perf_counter() - started)
                started = time.perf_counter()
                driver.get(f"{suite.url}/console/graph?cfs={cfs}")
                driver.find_element(By.CSS_SELECTOR, f'[data-node="Resource:{link}"]')
                view.append(time.perf_counter() - started)
                time.sleep(0.5)  # let the page's event stream connect
                started = time.perf_counter()
                raise_alarm(suite.api, link)
                seen_by_api = seen_by_page = None
                while seen_by_page is None or seen_by_api is None:
                    now = time.perf_counter() - started
                    if seen_by_api is None and suite.api.get(f"{PROBLEMS}/serviceProblem", params={
                            "rootCauseResource.id": link, "fields": "id"}).json():
                        seen_by_api = now
                    if seen_by_page is None and driver.execute_script(
                            f"const n = document.querySelector('[data-node=\"Resource:{link}\"]');"
                            "return n && n.dataset.tone !== 'ok';"):
                        seen_by_page = now
                    if now > 120:
                        raise SystemExit("no update within 120 s")
                    time.sleep(0.02)
                live.append(seen_by_page)
                api_live.append(seen_by_api)
        finally:
            driver.quit()

    def row(name: str, values: list[float], baseline: list[float]) -> str:
        med, base = statistics.median(values), statistics.median(baseline)
        return f"| {name} | {med * 1000:.0f} | {base * 1000:.0f} | {med / base:.1f} |"

    print(f"\n{args.services + 2} customer-facing services, {args.repetitions} repetitions\n")
    print("| measure | console median (ms) | baseline median (ms) | ratio |")
    print("| --- | --- | --- | --- |")
    print(row("first view of a service's graph (baseline: GET dependency)", view, api_view))
    print(row("alarm to the page marking the link (baseline: problem API polled)", live, api_live))
    print(f"\nload average {load_before[0]:.2f} at the start, {os.getloadavg()[0]:.2f} at the end, "
          f"on {os.cpu_count()} cores.")


if __name__ == "__main__":
    main()
