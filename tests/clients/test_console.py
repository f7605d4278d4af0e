"""The web console in a real headless Chromium (Debian's chromium and chromedriver, driven
by Selenium; nothing is downloaded): log in, browse the catalog, run a query and see its
grid (checked against DuckDB) and chart, find it in the history, cancel a long query, and
see a script-injection string stored in the data shown as text. Screenshots go to
target/screenshots/console/ for a person to look at."""

import datetime as dt
import os
import shutil
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import PASSWORDS, Server, hash_password, tarn
from test_http_api import ENDLESS_SUM
from test_operations import http_base

selenium = pytest.importorskip("selenium")
from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "target" / "screenshots" / "console"
CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
INJECTIONS = ["<script>window.pwned = 1</script>", '<img src=x onerror="window.pwned = 2">',
              "plain"]


@pytest.fixture(scope="module")
def console(tmp_path_factory):
    if not (os.path.exists(CHROMIUM) and os.path.exists(DRIVER)):
        pytest.skip("Debian's chromium and chromium-driver are not installed (scripts/venv "
                    "installs them when run as root with apt)")
    root = tmp_path_factory.mktemp("console")
    folder = root / "lake" / "visits"
    for day in (1, 2, 3):
        part = folder / f"day={day}"
        part.mkdir(parents=True)
        n = 10 * day
        pq.write_table(pa.table({
            "at": pa.array([dt.datetime(2024, 5, day, h % 24, tzinfo=dt.timezone.utc)
                            for h in range(n)], pa.timestamp("us", tz="UTC")),
            "page": pa.array([INJECTIONS[i % 3] for i in range(n)]),
            "ms": pa.array([i * day for i in range(n)], pa.int64()),
        }), part / "part-0.parquet")
    data = root / "tarn"
    crawled = tarn(data, "crawl", str(root / "lake"))
    assert crawled.returncode == 0, crawled.stderr
    config = root / "tarn.toml"
    config.write_text(f'[[users]]\nname = "alice"\npassword_hash = '
                      f'"{hash_password(PASSWORDS["alice"])}"\nrole = "admin"\n')
    server = Server(data, command=("serve", "--config", str(config), "--http-listen",
                                   "127.0.0.1:0", "--result-cache-mb", "0"))
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = root / "chromium-profile"
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--no-first-run", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync", "--window-size=1400,1000",
                     f"--user-data-dir={profile}"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    shutil.rmtree(SHOTS, ignore_errors=True)
    SHOTS.mkdir(parents=True, exist_ok=True)
    try:
        yield {"driver": driver, "base": http_base(server), "file": folder, "server": server}
    finally:
        driver.quit()
        server.stop()


def wait(driver, condition, timeout=30):
    return WebDriverWait(driver, timeout).until(condition)


def status_ended(driver):
    text = driver.find_element(By.ID, "status").text
    return text if text.split(":")[0] in ("SUCCEEDED", "FAILED", "CANCELLED") else False


def run(driver, sql: str) -> str:
    editor = driver.find_element(By.ID, "sql")
    editor.clear()
    editor.send_keys(sql)
    editor.send_keys(Keys.CONTROL, Keys.ENTER)
    return wait(driver, status_ended)


def grid(driver, target="grid"):
    """The shown table: (header names, rows of cell texts)."""
    holder = driver.find_element(By.ID, target)
    names = [th.text.split("\n")[0] for th in holder.find_elements(By.CSS_SELECTOR, "thead th")]
    rows = [[td.text for td in tr.find_elements(By.TAG_NAME, "td")]
            for tr in holder.find_elements(By.CSS_SELECTOR, "tbody tr")]
    return names, rows


def test_log_in_browse_query_chart_history_and_cancel(console):
    d = console["driver"]
    d.get(console["base"] + "/")
    wait(d, lambda d: d.find_element(By.ID, "login").is_displayed())
    d.save_screenshot(str(SHOTS / "1-login.png"))
    # A wrong password is refused and said.
    d.find_element(By.ID, "user").send_keys("alice")
    d.find_element(By.ID, "password").send_keys("wrong")
    d.find_element(By.ID, "login-button").click()
    wait(d, lambda d: "wrong user name or password" in d.find_element(By.ID, "login-error").text)
    d.find_element(By.ID, "password").clear()
    d.find_element(By.ID, "password").send_keys(PASSWORDS["alice"])
    d.find_element(By.ID, "login-button").click()
    wait(d, lambda d: d.find_element(By.ID, "app").is_displayed())
    assert d.find_element(By.ID, "who").text == "alice (admin)"
    # The token lives in the tab's session storage, not in a cookie.
    assert d.get_cookies() == []
    assert d.execute_script("return sessionStorage.getItem('tarn-token')").startswith("tarn1.")

    # The catalog tree: database, table, columns with types, partitions.
    wait(d, lambda d: d.find_elements(By.CSS_SELECTOR, "[data-database=default]")).pop().click()
    wait(d, lambda d: d.find_elements(By.CSS_SELECTOR, "[data-table='default.visits']")).pop().click()
    wait(d, lambda d: "Partitions" in d.find_element(By.ID, "details").text)
    details = d.find_element(By.ID, "details").text
    assert "60 rows" in details and "3 partitions" in details
    assert "Timestamp(µs, \"UTC\")" in details or "Timestamp(Microsecond" in details, details
    assert "day=1" in details and "day=3" in details
    d.save_screenshot(str(SHOTS / "2-catalog.png"))

    # A query: the grid matches DuckDB, and the chart draws a bar per category.
    sql = "SELECT page, count(*) AS visits, sum(ms) AS total_ms FROM visits GROUP BY page ORDER BY page"
    status = run(d, sql)
    assert status.startswith("SUCCEEDED: 3 rows"), status
    names, rows = grid(d)
    oracle = duckdb.sql(
        f"SELECT page, count(*) AS visits, sum(ms) AS total_ms FROM read_parquet("
        f"'{console['file']}/*/*.parquet') GROUP BY page ORDER BY page").fetchall()
    assert names == ["page", "visits", "total_ms"]
    assert rows == [[p, str(v), str(t)] for p, v, t in oracle]
    d.save_screenshot(str(SHOTS / "3-grid.png"))
    d.find_element(By.ID, "show-chart").click()
    chart = wait(d, lambda d: d.find_element(By.CSS_SELECTOR, "#chart svg"))
    assert chart.get_attribute("data-kind") == "bar"
    assert len(chart.find_elements(By.CSS_SELECTOR, "rect.bar")) == 3 * 2
    d.save_screenshot(str(SHOTS / "4-chart-bar.png"))
    # Over time, it is a line; the switch makes it bars.
    run(d, "SELECT date_trunc('hour', at) AS hour, count(*) AS visits FROM visits GROUP BY 1 ORDER BY 1")
    chart = wait(d, lambda d: d.find_element(By.CSS_SELECTOR, "#chart svg[data-kind=line]"))
    assert len(chart.find_elements(By.CSS_SELECTOR, "path[data-series=visits]")) == 1
    d.save_screenshot(str(SHOTS / "5-chart-line.png"))
    d.find_element(By.CSS_SELECTOR, "#chart-kind option[value=bar]").click()
    wait(d, lambda d: d.find_elements(By.CSS_SELECTOR, "#chart svg[data-kind=bar] rect.bar"))
    d.find_element(By.ID, "show-grid").click()

    # Paging: 60 rows are a page of 100; 150 rows are two.
    run(d, "SELECT value FROM generate_series(1, 150) ORDER BY value")
    assert len(grid(d)[1]) == 100 and d.find_element(By.ID, "page-info").text == "rows 1–100"
    d.find_element(By.ID, "next").click()
    wait(d, lambda d: d.find_element(By.ID, "page-info").text == "rows 101–150")
    assert grid(d)[1][0] == ["101"] and grid(d)[1][-1] == ["150"]
    d.find_element(By.ID, "prev").click()
    wait(d, lambda d: d.find_element(By.ID, "page-info").text == "rows 1–100")

    # A long query is cancelled from the page.
    editor = d.find_element(By.ID, "sql")
    editor.clear()
    editor.send_keys(ENDLESS_SUM)
    d.find_element(By.ID, "run").click()
    wait(d, lambda d: d.find_element(By.ID, "status").text.startswith("RUNNING"))
    d.find_element(By.ID, "cancel").click()
    ended = wait(d, status_ended)
    assert ended.startswith("CANCELLED"), ended
    d.save_screenshot(str(SHOTS / "6-cancelled.png"))

    # The history shows them, with their states.
    d.find_element(By.CSS_SELECTOR, "[data-tab=history]").click()
    wait(d, lambda d: d.find_elements(By.CSS_SELECTOR, "#history tbody tr"))
    names, rows = grid(d, "history")
    by_sql = {row[names.index("query")]: row[names.index("state")] for row in rows}
    assert by_sql[sql] == "finished" and by_sql[ENDLESS_SUM] == "cancelled", by_sql
    d.save_screenshot(str(SHOTS / "7-history.png"))
    # Views and crawlers have their tabs.
    d.find_element(By.CSS_SELECTOR, "[data-tab=crawlers]").click()
    wait(d, lambda d: d.find_elements(By.CSS_SELECTOR, "#crawls tbody tr"))
    assert "visits" in d.find_element(By.ID, "crawls").text or "lake" in d.find_element(By.ID, "crawls").text
    d.find_element(By.CSS_SELECTOR, "[data-tab=views]").click()
    wait(d, lambda d: d.find_elements(By.CSS_SELECTOR, "#views thead th"))
    d.find_element(By.CSS_SELECTOR, "[data-tab=query]").click()


def test_data_that_looks_like_markup_is_shown_as_text(console):
    d = console["driver"]
    if not d.find_element(By.ID, "app").is_displayed():
        test_log_in_browse_query_chart_history_and_cancel(console)
    status = run(d, "SELECT DISTINCT page FROM visits ORDER BY page")
    assert status.startswith("SUCCEEDED"), status
    _, rows = grid(d)
    assert sorted(r[0] for r in rows) == sorted(INJECTIONS)
    # No script ran, and the data made no elements.
    assert d.execute_script("return window.pwned") is None
    assert d.find_elements(By.CSS_SELECTOR, "#grid img, #grid script") == []
    d.save_screenshot(str(SHOTS / "8-markup-as-text.png"))
    # The page keeps to its Content-Security-Policy: the browser reported no violation.
    errors = [e["message"] for e in d.get_log("browser") if e["level"] == "SEVERE"]
    assert not [e for e in errors if "Content Security Policy" in e], errors
