"""The app in a real headless Chromium: every page renders, widgets react, jobs run."""
import json
import re
import shutil

import pytest
from playwright.sync_api import expect

from .browser import (ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, PAGES, AppServer, assert_no_errors, browser_available,
                      download_table, job_lines_when_idle, new_tab, wait_for_run)

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
def tab(browser):
    ctx = new_tab(browser)
    yield ctx.new_page()
    ctx.close()


@pytest.mark.parametrize("path", PAGES)
def test_page_renders_without_error(server, tab, path):
    tab.goto(f"{server.url}/{path}")
    wait_for_run(tab)
    assert_no_errors(tab)
    assert tab.get_by_test_id("stSidebar").inner_text().count("Device") == 1
    tab.screenshot(path=str(ARTIFACTS / f"page-{path or 'home'}.png"), full_page=True)


def test_first_request_to_a_page_url_still_runs_the_app_shell(tiny_store, browser, tmp_path):
    """A fresh server whose first visitor opens /train (a reconnecting tab) gets the full app."""
    shutil.copytree(tiny_store.root, tmp_path / "runs")
    srv = AppServer({"KDVIZ_RUNS": str(tmp_path / "runs")})
    ctx = new_tab(browser)
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


def drawn(key: str) -> str:
    """The selector of a keyed element as the user sees it. While a fragment reruns, Streamlit may
    keep the element's previous copy mounted beside it, hidden (display: none, data-retained)."""
    return f".st-key-{key}:not([data-retained='true'])"


def chart_values(page, key: str) -> str:
    """The y values of every trace of a keyed plotly chart, as plotly.js holds them after drawing."""
    return page.locator(f"{drawn(key)} .js-plotly-plot").evaluate(
        "el => JSON.stringify(el._fullData.map(t => Array.from(t.y)))")


def test_moving_the_temperature_slider_redraws_the_soft_targets(server, tab):
    tab.goto(f"{server.url}/temperature")
    wait_for_run(tab)
    before, kl = chart_values(tab, "temperature_bars"), tab.get_by_test_id("stMetric").first.inner_text()
    assert "T = 1\n" in kl
    tab.locator(".st-key-temperature_T input[type=range]").focus()
    tab.keyboard.press("End")  # the keyboard's way to drag the thumb to the right end, T = 100
    expect(tab.locator(f"{drawn('temperature_bars')}[data-stale='false']")).to_contain_text(
        "Soft targets at T = 100", timeout=30000)
    wait_for_run(tab)
    expect(tab.locator(drawn("temperature_bars"))).to_have_count(1)  # the T = 1 chart is gone, not kept stale
    assert tab.locator(".st-key-temperature_bars[data-retained='true']").evaluate_all(
        "els => els.every(e => getComputedStyle(e).display === 'none')")  # a retained copy is never shown
    expect(tab.get_by_test_id("stMetric").first).to_contain_text("at T = 100")
    after = chart_values(tab, "temperature_bars")
    assert after != before
    # T = 100 flattens the teacher's distribution to nearly uniform over the 10 classes
    assert max(json.loads(after)[0]) < 0.2 < max(json.loads(before)[0])
    tab.screenshot(path=str(ARTIFACTS / "temperature-after-slider.png"), full_page=True)


def start_job(page, epochs: int, subset: int) -> None:
    """On the Training lab: the MNIST KD preset with fewer epochs and images, then Start."""
    for key, value in (("epochs_mnist", epochs), ("subset_mnist", subset)):
        field = page.locator(f".st-key-{key} input")
        field.fill(str(value))
        field.press("Enter")
        wait_for_run(page)
    page.locator(".st-key-train_start button").click()
    expect(page.get_by_test_id("stSidebar").get_by_test_id("stProgress")).to_have_count(1, timeout=60000)


def test_a_job_runs_to_done_in_the_sidebar_and_lands_in_the_runs_table(server, tab):
    tab.goto(f"{server.url}/train")
    wait_for_run(tab)
    before = download_table(tab)
    start_job(tab, epochs=2, subset=6000)
    tab.screenshot(path=str(ARTIFACTS / "train-job-running.png"), full_page=True)
    lines = job_lines_when_idle(tab, timeout_ms=300000)
    assert lines[1] == "check_circle mlp800 · KD (soft targets) + plain twin: done", lines  # the newest ended job
    expect(tab.get_by_test_id("stMainBlockContainer").get_by_test_id("stAlertContentSuccess")).to_contain_text(
        "Done in", timeout=30000)
    wait_for_run(tab)
    tab.screenshot(path=str(ARTIFACTS / "train-job-done.png"), full_page=True)
    rows = download_table(tab)
    added = [r for r in rows if r["run"] not in {b["run"] for b in before}]
    assert len(added) == 2, added  # the KD student and its plain twin (on by default)
    assert sorted((r["status"], r["student / model"], r["method"]) for r in added) == [
        ("done", "mlp800", "kd"), ("done", "mlp800", "plain")]
    assert all(r["train images"] == "6000" and 0 < float(r["test acc (%)"]) <= 100 for r in added)


def test_cancelling_a_job_shows_cancelled_and_keeps_the_partial_run(server, tab):
    tab.goto(f"{server.url}/train")
    wait_for_run(tab)
    start_job(tab, epochs=50, subset=10000)
    tab.get_by_role("button", name="Cancel job").click()
    lines = job_lines_when_idle(tab, timeout_ms=120000)
    assert lines[1] == "cancel mlp800 · KD (soft targets) + plain twin: cancelled by the user", lines
    expect(tab.get_by_test_id("stMainBlockContainer").get_by_test_id("stAlertContentWarning")).to_contain_text(
        "Cancelled by the user. A partial run is kept", timeout=30000)  # the page's, not the sidebar's
    wait_for_run(tab)
    tab.screenshot(path=str(ARTIFACTS / "train-job-cancelled.png"), full_page=True)
    assert "cancelled" in [r["status"] for r in download_table(tab)]


def test_two_tabs_see_the_same_jobs(server, browser):
    """A job started in one student's tab shows up in another tab that does nothing, and
    its end does too (the job is long and cancelled, so this does not depend on machine speed)."""
    a_ctx, b_ctx = new_tab(browser), new_tab(browser)
    try:
        a, b = a_ctx.new_page(), b_ctx.new_page()
        b.goto(server.url)
        wait_for_run(b)
        a.goto(f"{server.url}/train")
        wait_for_run(a)
        start_job(a, epochs=50, subset=10000)
        expect(b.get_by_test_id("stSidebar").get_by_test_id("stProgress")).to_have_count(1, timeout=30000)
        b.screenshot(path=str(ARTIFACTS / "second-tab-sees-job.png"), full_page=True)
        a.get_by_role("button", name="Cancel job").click()
        lines_a, lines_b = (job_lines_when_idle(tab, timeout_ms=120000) for tab in (a, b))
        assert lines_a == lines_b
        assert lines_a[1] == "cancel mlp800 · KD (soft targets) + plain twin: cancelled by the user", lines_a
    finally:
        a_ctx.close()
        b_ctx.close()


def hold_arrow_keys(page, slider_key: str, seconds: float = 3.0, every_ms: int = 50) -> None:
    """Hold an arrow key on a slider as a keyboard's auto-repeat does (every 50 ms): right
    for two thirds of the time, then left, so the thumb turns and ends away from its start."""
    page.locator(f".st-key-{slider_key} input[type=range]").focus()
    presses = int(seconds * 1000 / every_ms)
    for i in range(presses):
        page.keyboard.press("ArrowRight" if i < 2 * presses // 3 else "ArrowLeft")
        page.wait_for_timeout(every_ms)


def annotations(page, key: str) -> list[str]:
    return page.locator(f"{drawn(key)} .js-plotly-plot").evaluate(
        "el => (el._fullLayout.annotations || []).map(a => a.text).concat([el._fullLayout.title.text || ''])")


@pytest.mark.parametrize("path, slider, chart, shown", [
    ("temperature", "temperature_T", "temperature_bars", lambda v: f"T = {v}"),
    ("hinton", "hinton_shift_omit3", "curve_omit3", lambda v: f"slider {float(v):+.1f}"),
])
def test_a_held_arrow_key_on_a_slider_never_breaks_the_page(server, tab, path, slider, chart, shown):
    """Fast slider input once greyed the page with Streamlit's "Cached ForwardMsg MISS" error
    and left the figure showing another value than the slider (.streamlit/config.toml)."""
    tab.goto(f"{server.url}/{path}")
    wait_for_run(tab)
    thumb = tab.locator(f".st-key-{slider} [data-testid='stSliderThumbValue']")
    start = thumb.inner_text().strip()
    hold_arrow_keys(tab, slider)
    wait_for_run(tab)
    tab.wait_for_timeout(1000)  # a late error dialog would show up now
    wait_for_run(tab)
    assert tab.get_by_text("Connection error").count() == 0
    assert tab.get_by_text("Cached ForwardMsg MISS").count() == 0
    assert_no_errors(tab)
    value = thumb.inner_text().strip()
    assert value != start  # the keys moved it
    texts = annotations(tab, chart)
    assert any(re.search(re.escape(shown(value)) + r"(?![\d.])", text) for text in texts), (value, texts)
    tab.screenshot(path=str(ARTIFACTS / f"held-key-{path}.png"), full_page=True)


def test_a_second_browser_without_the_token_is_a_viewer_that_follows(tiny_store, browser, tmp_path):
    """Classroom mode as a class meets it: the lecturer's browser brings the token, a student's does
    not (both are on this machine, so loopback presenters are switched off). The student explores,
    cannot start a job, and follows the lecturer's page and T until they switch following off."""
    token = "browser-test-token"
    shutil.copytree(tiny_store.root, tmp_path / "runs")
    srv = AppServer({"KDVIZ_RUNS": str(tmp_path / "runs"), "KDVIZ_PRESENTER_TOKEN": token,
                     "KDVIZ_LOOPBACK_PRESENTER": "0", "KDVIZ_CLASSROOM": "1"})
    contexts = [new_tab(browser), new_tab(browser)]
    try:
        lecturer, student = (ctx.new_page() for ctx in contexts)
        lecturer.goto(f"{srv.url}/?presenter={token}")
        wait_for_run(lecturer)
        sidebar = lecturer.get_by_test_id("stSidebar")
        expect(sidebar).to_contain_text("Presenter")
        expect(lecturer).not_to_have_url(re.compile("presenter="))  # not shown on the projector
        sidebar.get_by_text("Share with the class").click()
        expect(sidebar.get_by_test_id("stImage")).to_have_count(1)  # the QR code
        expect(sidebar.get_by_test_id("stCode")).to_contain_text(f":{srv.port}/")
        assert token not in sidebar.inner_text()
        sidebar.get_by_text("Show it large").scroll_into_view_if_needed()
        sidebar.screenshot(path=str(ARTIFACTS / "classroom-presenter-share.png"))
        sidebar.get_by_text("Show it large").click()
        expect(lecturer.get_by_role("dialog").get_by_test_id("stImage")).to_have_count(1)  # for the projector
        lecturer.screenshot(path=str(ARTIFACTS / "classroom-presenter-qr-large.png"))
        lecturer.keyboard.press("Escape")

        student.goto(f"{srv.url}/train")
        wait_for_run(student)
        expect(student.get_by_test_id("stSidebar")).to_contain_text("Viewer")
        expect(student.locator(".st-key-train_start button")).to_be_disabled()
        expect(student.get_by_text("Only the lecturer can start jobs.").first).to_be_visible()
        assert_no_errors(student)
        student.screenshot(path=str(ARTIFACTS / "classroom-viewer-lab.png"), full_page=True)

        student.locator(".st-key-classroom_follow label").click()
        wait_for_run(student)
        lecturer.get_by_test_id("stSidebarNav").get_by_role("link", name="Temperature").click()
        wait_for_run(lecturer)
        lecturer.locator(".st-key-temperature_T input[type=range]").focus()
        lecturer.keyboard.press("End")  # T = 100
        expect(lecturer.get_by_test_id("stMetric").first).to_contain_text("at T = 100", timeout=30000)
        expect(student.get_by_test_id("stMetric").first).to_contain_text("at T = 100", timeout=15000)
        expect(student.get_by_role("heading", name="Temperature").first).to_be_visible()
        assert_no_errors(student)
        student.screenshot(path=str(ARTIFACTS / "classroom-viewer-following.png"), full_page=True)

        student.locator(".st-key-classroom_follow label").click()  # off: explore on their own
        wait_for_run(student)
        lecturer.locator(".st-key-temperature_T input[type=range]").focus()
        lecturer.keyboard.press("Home")
        expect(lecturer.get_by_test_id("stMetric").first).not_to_contain_text("at T = 100", timeout=30000)
        student.wait_for_timeout(3000)  # three of the follower's polls
        expect(student.get_by_test_id("stMetric").first).to_contain_text("at T = 100")
    finally:
        for ctx in contexts:
            ctx.close()
        srv.close()
