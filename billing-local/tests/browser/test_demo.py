"""The demo driven in headless Chromium, as a newcomer would click through it.

Starts the billing-local binary (BILLING_LOCAL_BIN, default target/debug/billing-local) on free
ports, then: a declined card shows Stripe's error and buys nothing; 4242 4242 4242 4242 lands on
the confirmation with the subscription active on the page and in the service's database; the
portal cancels at the period's end and the demo shows it. A screenshot of each step goes to
BROWSER_SCREENSHOTS (default target/browser-screenshots), which CI keeps.

Chromium is Debian's (`chromium`, `chromium-driver`); nothing downloads a browser.
"""

import os
import pathlib
import re
import socket
import sqlite3
import subprocess
import tempfile
import time

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ready
from selenium.webdriver.support.ui import WebDriverWait

ROOT = pathlib.Path(__file__).resolve().parents[3]
BIN = os.environ.get("BILLING_LOCAL_BIN", str(ROOT / "target/debug/billing-local"))
SHOTS = pathlib.Path(os.environ.get("BROWSER_SCREENSHOTS", ROOT / "target/browser-screenshots"))
USER = "demo-user-1"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def demo():
    ports = [free_port() for _ in range(3)]
    process = subprocess.Popen(
        [BIN, "--port", str(ports[0]), "--service-port", str(ports[1]), "--stripe-port", str(ports[2])],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "RUST_LOG": "warn"},
    )
    url = database = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (url and database):
        line = process.stdout.readline()
        if not line and process.poll() is not None:
            pytest.fail(f"billing-local exited with {process.returncode}")
        if m := re.search(r"open (http://\S+)", line):
            url = m.group(1)
        if m := re.search(r"^\s+database\s+(/\S+)", line):
            database = m.group(1)
    assert url and database, "billing-local did not say where the demo is"
    yield url, database
    process.terminate()
    process.wait(timeout=20)


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    profile = tempfile.mkdtemp(prefix="billing-chromium-")
    for flag in [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1000,1100",
        f"--user-data-dir={profile}",
    ]:
        options.add_argument(flag)
    driver = webdriver.Chrome(
        options=options,
        service=Service(os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")),
    )
    SHOTS.mkdir(parents=True, exist_ok=True)
    yield driver
    driver.quit()


def wait(browser, condition, seconds=15):
    return WebDriverWait(browser, seconds).until(condition)


def text_of(browser, element_id):
    return wait(browser, ready.visibility_of_element_located((By.ID, element_id))).text


def shot(browser, name):
    browser.save_screenshot(str(SHOTS / f"{name}.png"))


def query(database, sql):
    with sqlite3.connect(database) as db:
        return db.execute(sql).fetchall()


def test_subscribe_decline_pay_and_cancel_in_the_portal(demo, browser):
    url, database = demo
    browser.get(url)
    subscribe = wait(browser, ready.element_to_be_clickable((By.ID, "subscribe-billing_monthly")))
    wait(browser, ready.text_to_be_present_in_element((By.ID, "subscription"), "No subscription yet."))
    shot(browser, "01-demo")

    subscribe.click()
    wait(browser, ready.url_contains("/checkout/cs_"))
    assert "CAD 54.99" in text_of(browser, "amount")
    shot(browser, "02-checkout")

    browser.find_element(By.ID, "card").send_keys("4000 0000 0000 0002")
    browser.find_element(By.ID, "pay").click()
    assert text_of(browser, "error") == "Your card was declined."
    shot(browser, "03-declined")
    assert query(database, "SELECT COUNT(*) FROM subscriptions") == [(0,)]

    card = browser.find_element(By.ID, "card")
    card.clear()
    card.send_keys("4242 4242 4242 4242")
    browser.find_element(By.ID, "pay").click()
    wait(browser, ready.url_contains("/billing/confirmation?payment_status=paid"))
    wait(browser, ready.text_to_be_present_in_element((By.ID, "subscription-status"), "active"))
    assert "Payment paid: CAD 54.99." in text_of(browser, "confirmation-text")
    wait(browser, lambda b: len(b.find_elements(By.CSS_SELECTOR, "#events tr.event")) >= 4)
    shot(browser, "04-confirmation")
    assert query(database, f"SELECT status FROM subscriptions WHERE user_id = '{USER}'") == [("active",)]

    browser.find_element(By.ID, "portal").click()
    wait(browser, ready.url_contains("/portal/bps_"))
    cancel = wait(browser, ready.element_to_be_clickable((By.CSS_SELECTOR, "button[id^='cancel-sub_']")))
    shot(browser, "05-portal")
    cancel.click()
    assert "canceled" in text_of(browser, "done")
    assert "cancels at the end of the period" in browser.page_source
    shot(browser, "06-portal-canceled")

    browser.find_element(By.ID, "return").click()
    wait(
        browser,
        ready.text_to_be_present_in_element((By.ID, "cancel-at-period-end"), "cancels at the end of the period"),
        seconds=20,
    )
    shot(browser, "07-demo-canceled")
    assert query(
        database,
        f"SELECT CAST(cancel_at_period_end AS INTEGER) FROM subscriptions WHERE user_id = '{USER}'",
    ) == [(1,)]
