"""The web viewer in a real browser: Debian's Chromium (``chromium``, ``chromium-driver``)
driven by Selenium, and a static file server (``python -m http.server``) to load it from.
Used by tests/unit/test_viewer.py and benchmarks/bench_viewer.py."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path


def chrome():
    """Debian's Chromium, headless, through its WebDriver (chromedriver); fails the test
    (never skips) when either is missing."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        raise RuntimeError(
            "the viewer test needs Debian's Chromium and its WebDriver: apt-get install "
            "chromium chromium-driver (scripts/install-system-deps.sh installs them when run "
            "as root, as `make install` and .ci/run do)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1200,800", "--disable-extensions", "--no-first-run"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)


def serve(directory: Path) -> tuple[subprocess.Popen, str]:
    """``python -m http.server`` on a free port of 127.0.0.1 in ``directory``."""
    server = subprocess.Popen(
        [sys.executable, "-u", "-m", "http.server", "0", "--bind", "127.0.0.1",
         "--directory", str(directory)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = server.stdout.readline()  # Serving HTTP on 127.0.0.1 port N (http://...)
    port = int(line.split(" port ")[1].split()[0])
    return server, f"http://127.0.0.1:{port}"


def wait_for(driver, script: str, timeout: float = 20.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = driver.execute_script(script)
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for: {script}")
