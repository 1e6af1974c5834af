"""Headless Chromium (Debian's `chromium` and `chromium-driver` packages) driven by Selenium, for the report tests.

`.ci/run` installs the two packages when they are missing. The browser starts with a fresh profile and with
everything that phones home turned off; its console and network (Chrome DevTools performance log) are recorded
so a test can assert that a page made no request outside the machine and logged no error.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ARGUMENTS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
             "--hide-scrollbars", "--mute-audio")
LOCAL_SCHEMES = ("file:", "data:", "blob:")


def start_browser(profile: Path, width: int = 1300, height: int = 900) -> WebDriver:
    """A headless Chromium with a fresh profile in `profile`, logging its console and network."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if shutil.which(p) is None]
    if missing:
        raise RuntimeError(f"the report tests need Debian's Chromium and its driver; missing {missing}: run .ci/run "
                           "or `apt-get install chromium chromium-driver`")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (*ARGUMENTS, f"--user-data-dir={profile}", f"--window-size={width},{height}"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def console_errors(driver: WebDriver) -> list[dict[str, Any]]:
    """Console entries of level SEVERE (errors, uncaught exceptions, failed loads) since the last call."""
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def requested_urls(driver: WebDriver, document: str | None = None) -> list[str]:
    """Every URL asked for (`Network.requestWillBeSent`) since the last call; with `document`, only those made
    by that page (not by Chromium's own start page, whose chrome:// resources load while a test runs)."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        params = message.get("params", {})
        if message.get("method") == "Network.requestWillBeSent" and document in (None, params.get("documentURL")):
            urls.append(params["request"]["url"])
    return urls


def non_local(urls: list[str]) -> list[str]:
    """The URLs that would leave the machine (anything but file:, data: and blob:)."""
    return [url for url in urls if not url.startswith(LOCAL_SCHEMES)]


def wait_until(driver: WebDriver, script: str, timeout: float = 10.0) -> Any:
    """Run `script` (JavaScript returning a value) until it returns something truthy; returns that."""
    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(lambda d: d.execute_script(script))
