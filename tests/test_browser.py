"""The app in a real headless Chromium: every page renders, widgets react, jobs run."""
import shutil

import pytest

from .browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, PAGES, AppServer, assert_no_errors, browser_available, wait_for_run

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not browser_available(), reason="Debian chromium or playwright not installed")]


@pytest.fixture(scope="module")
def server(tiny_store, tmp_path_factory):
    runs = tmp_path_factory.mktemp("browser") / "runs"
    shutil.copytree(tiny_store.root, runs)
    srv = AppServer({"KDVIZ_RUNS": str(runs)})
    yield srv
    srv.close()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = ctx.new_page()
    yield pg
    ctx.close()


@pytest.mark.parametrize("path", PAGES)
def test_page_renders_without_error(server, page, path):
    page.goto(f"{server.url}/{path}")
    wait_for_run(page)
    assert_no_errors(page)
    assert page.get_by_test_id("stSidebar").inner_text().count("Device") == 1
    page.screenshot(path=str(ARTIFACTS / f"page-{path or 'home'}.png"), full_page=True)


def test_first_request_to_a_page_url_still_runs_the_app_shell(tiny_store, browser, tmp_path):
    """A fresh server whose first visitor opens /train (a reconnecting tab) gets the full app."""
    shutil.copytree(tiny_store.root, tmp_path / "runs")
    srv = AppServer({"KDVIZ_RUNS": str(tmp_path / "runs")})
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        page = ctx.new_page()
        page.goto(f"{srv.url}/train")
        wait_for_run(page)
        assert_no_errors(page)
        sidebar = page.get_by_test_id("stSidebar").inner_text()
        assert "Device" in sidebar and "Inside the student" in sidebar and "common" not in sidebar
        page.screenshot(path=str(ARTIFACTS / "first-request-train.png"), full_page=True)
    finally:
        ctx.close()
        srv.close()
