"""Helpers for the real-browser tests: start the app, drive Debian's Chromium.

Chromium is launched from /usr/bin/chromium (no browser download) with the
flags a closed network needs; tests skip cleanly where it is not installed.
"""
from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-quic", "--no-first-run", "--disable-sync"]
# url path of every page, as app.py's st.navigation derives it from the file name
PAGES = ["", "map", "temperature", "dark_knowledge", "train", "compare", "sweep", "hints", "attention", "fsp", "hinton",
         "datafree", "privileged", "transfer"]


def browser_available() -> bool:
    if not Path(CHROMIUM).exists():
        return False
    return importlib.util.find_spec("playwright") is not None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class AppServer:
    """``streamlit run app.py`` on a free loopback port, stopped on close."""

    def __init__(self, env: dict, timeout: float = 60):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        ARTIFACTS.mkdir(exist_ok=True)
        self.log = open(ARTIFACTS / f"streamlit-{self.port}.log", "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
             "--server.port", str(self.port), "--server.address", "127.0.0.1",
             "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
            cwd=ROOT, env={**os.environ, **env}, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                if urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=2).read() == b"ok":
                    return
            except OSError:
                time.sleep(0.3)
            if self.proc.poll() is not None:
                break
        self.close()
        raise RuntimeError(f"streamlit did not become healthy; see {self.log.name}")

    def close(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def wait_for_run(page, timeout_ms: int = 60000) -> None:
    """Wait until Streamlit is connected, app.py's shell is drawn and the script has
    finished running; on a timeout, leave a screenshot of what the page showed in the
    artifacts folder.

    The shell matters on a fresh server: its first run is restarted by pages/common.py
    (out of legacy multipage mode), and between the two runs the page briefly reads
    "not running" while its sidebar still lists the pages/ folder's files."""
    from playwright.sync_api import TimeoutError, expect
    page.wait_for_timeout(200)
    try:
        page.locator("[data-testid='stApp'][data-test-connection-state='CONNECTED']").wait_for(
            timeout=timeout_ms, state="attached")
        page.get_by_test_id("stSidebar").get_by_text("Device:").first.wait_for(timeout=timeout_ms)
        page.locator("[data-testid='stApp'][data-test-script-state='notRunning']").wait_for(
            timeout=timeout_ms, state="attached")
        expect(page.get_by_test_id("stSkeleton")).to_have_count(0, timeout=timeout_ms)
    except (AssertionError, TimeoutError):
        page.screenshot(path=str(ARTIFACTS / f"timeout-{time.strftime('%H%M%S')}.png"), full_page=True)
        raise


def assert_no_errors(page) -> None:
    exceptions = page.get_by_test_id("stException")
    assert exceptions.count() == 0, exceptions.first.inner_text()
    toasts = page.get_by_test_id("stToast")
    for i in range(toasts.count()):
        text = toasts.nth(i).inner_text()
        assert "error" not in text.lower(), text


def new_tab(browser):
    """A browser context as one student's tab: downloads allowed, and no native save
    dialog, so the dataframe's "Download as CSV" falls back to a plain download."""
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    ctx.add_init_script("delete Window.prototype.showSaveFilePicker; delete window.showSaveFilePicker;")
    return ctx


def job_lines_when_idle(page, timeout_ms: int) -> list[str]:
    """The sidebar's job monitor as text, one line per job (material icon names included),
    once no job runs and the page has finished redrawing: during the redraw the running
    job's link can still stand below the new lines."""
    from playwright.sync_api import expect
    sidebar = page.get_by_test_id("stSidebar")
    expect(sidebar).to_contain_text("No training job is running.", timeout=timeout_ms)
    wait_for_run(page)
    text = sidebar.inner_text().split("Training jobs", 1)[1]
    return [line.strip() for line in text.splitlines() if line.strip()]


def download_table(page) -> list[dict]:
    """The rows of the page's (first) dataframe, as a user gets them with "Download as CSV"."""
    import csv
    frame = page.get_by_test_id("stDataFrame").first
    frame.hover()
    with page.expect_download(timeout=30000) as download:
        frame.get_by_role("button", name="Download as CSV").click()
    with open(download.value.path(), encoding="utf-8-sig") as f:
        return list(csv.DictReader(f))
