"""The documentation site builds strict, and its benchmarks page shows the plot in a browser.

The site is built with ``mkdocs build --strict`` into a temporary directory, served from
127.0.0.1 by the standard library, and opened in headless Chromium through selenium and the
Debian ``chromedriver`` (never a driver download). Without mkdocs, selenium, Chromium or
chromedriver the tests are skipped with the reason, except under ``CI=true``, where their
absence fails them (``.ci/run`` installs ``chromium chromium-driver`` with apt-get).
"""

from __future__ import annotations

import functools
import html
import http.server
import importlib.util
import os
import re
import shutil
import struct
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Iterator, List, Tuple

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
MKDOCS_YML = REPO_ROOT / "mkdocs.yml"
RESULTS_MD = REPO_ROOT / "benchmarks" / "results" / "results.md"
PLOT = "latency.png"
BUILD_TIMEOUT = 120.0  # seconds for mkdocs build
PAGE_TIMEOUT = 30.0  # seconds for the browser to load the page and its image
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
WINDOW = (1280, 1600)  # the headless browser's window, in CSS pixels

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
CHROMEDRIVER_PATHS = ("/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver")

# In the page: whether the plot's <img> finished loading; then its decoded and rendered sizes.
PLOT_LOADED = """
const img = document.querySelector(`img[src$="${arguments[0]}"]`);
return img !== null && img.complete;
"""
PLOT_SHOWN = """
const img = document.querySelector(`img[src$="${arguments[0]}"]`);
img.scrollIntoView();
const box = img.getBoundingClientRect();
return {natural: [img.naturalWidth, img.naturalHeight], shown: [box.width, box.height],
        src: img.currentSrc};
"""


def _absent(reason: str) -> None:
    """Skip, or fail under CI=true, where the site must be checked (unless this environment
    says the site is checked elsewhere: tox's oldest, where requests 2.25 rules mkdocs out)."""
    if os.environ.get("CI") == "true" and not os.environ.get("NAVRO_DOCS_CHECKED_ELSEWHERE"):
        pytest.fail(reason + "; CI=true requires it", pytrace=False)
    pytest.skip(reason)


def _require_modules(*names: str) -> None:
    missing = [name for name in names if importlib.util.find_spec(name) is None]
    if missing:
        _absent(f"{', '.join(missing)} not installed (pip install -e '.[docs,test]')")


def _find_browser() -> Tuple[str, str]:
    """``(chromium, chromedriver)`` paths from the system, never downloaded."""
    browser = next(filter(None, map(shutil.which, CHROMIUM_NAMES)), None)
    driver = shutil.which("chromedriver") or next(
        (path for path in CHROMEDRIVER_PATHS if os.access(path, os.X_OK)), None
    )
    if browser is None or driver is None:
        _absent(
            "Chromium or chromedriver is not installed (apt-get install chromium chromium-driver)"
        )
    assert browser is not None and driver is not None
    return browser, driver


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site, built by ``mkdocs build --strict`` as tox's ``docs`` environment builds it."""
    _require_modules("mkdocs", "material")
    site_dir = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site_dir)],
        cwd=REPO_ROOT,  # the snippets' base path is relative to the working directory
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return site_dir


@pytest.fixture
def served(site: Path) -> Iterator[str]:
    """The site over HTTP on a free loopback port; stopped after the test."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def png_size(data: bytes) -> Tuple[int, int]:
    """Width and height from a PNG's IHDR chunk (which the format puts first)."""
    assert data[:8] == PNG_SIGNATURE, "not a PNG"
    assert data[12:16] == b"IHDR", "no IHDR chunk first"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def nav_pages(config: str) -> List[str]:
    """The Markdown files the nav of ``mkdocs.yml`` names, in order."""
    nav = config[config.index("\nnav:") :]
    return re.findall(r":\s*([\w./-]+\.md)\s*$", nav, re.M)


def test_every_nav_entry_but_the_pending_ones_is_a_page() -> None:
    pages = nav_pages(MKDOCS_YML.read_text(encoding="utf-8"))
    assert "benchmarks.md" in pages and "index.md" in pages
    missing = [p for p in pages if not (REPO_ROOT / "docs" / p).is_file()]
    assert missing == []


def test_the_benchmarks_page_has_every_table_of_the_full_report(site: Path) -> None:
    page = (site / "benchmarks" / "index.html").read_text(encoding="utf-8")
    report = RESULTS_MD.read_text(encoding="utf-8")
    tables_in_report = len(re.findall(r"^\|[-| ]+\|$", report, re.M))  # one delimiter row each
    assert tables_in_report >= 4
    assert page.count("<table>") == tables_in_report
    last_row = [line for line in report.splitlines() if line.startswith("|")][-1]
    first_cell = last_row.strip("|").split("|")[0].strip()
    assert html.escape(first_cell, quote=False) in page  # the include reached the report's end
    assert (site / "benchmarks" / "results" / PLOT).read_bytes()[:8] == PNG_SIGNATURE


def test_the_benchmarks_page_renders_the_plot(
    served: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _require_modules("selenium")
    browser, driver_path = _find_browser()
    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must never download anything
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for argument in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(driver_path))
    try:
        driver.get(f"{served}/benchmarks/")
        WebDriverWait(driver, PAGE_TIMEOUT).until(lambda d: d.execute_script(PLOT_LOADED, PLOT))
        plot = driver.execute_script(PLOT_SHOWN, PLOT)
        assert plot["src"].startswith(served), plot  # served by us, not fetched from elsewhere
        assert plot["natural"][0] > 0 and plot["natural"][1] > 0, plot  # the image decoded
        assert plot["shown"][0] > 0 and plot["shown"][1] > 0, plot  # and takes up room
        screenshot = driver.get_screenshot_as_png()
    finally:
        driver.quit()
    path = tmp_path / "benchmarks-page.png"
    path.write_bytes(screenshot)
    width, height = png_size(path.read_bytes())
    assert width > 0 and height > 0
