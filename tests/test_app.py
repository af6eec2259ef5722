"""The app shell and the Training lab through Streamlit's AppTest (no browser)."""
import functools
import re
import shutil
import time
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from kdviz.store import RunStore

from .conftest import ROOT, needs_data, run_until, wait_until

pytestmark = needs_data
PAGES = sorted(re.findall(r'st\.Page\("(pages/\w+\.py)"', (ROOT / "app.py").read_text()))


@pytest.fixture
def runs(tiny_store, tmp_path, monkeypatch) -> RunStore:
    """A fresh run store holding copies of the tiny runs, and fresh Streamlit caches (a new job manager)."""
    root = tmp_path / "runs"
    for run_id in tiny_store.runs.values():  # not the runs other tests added to the shared store
        shutil.copytree(tiny_store.root / run_id, root / run_id)
    monkeypatch.setenv("KDVIZ_RUNS", str(root))
    st.cache_resource.clear()
    st.cache_data.clear()
    yield RunStore(root, readonly={})
    from pages import common
    for job in common.manager().list():  # leave no job running into the next test
        common.manager().cancel(job.id)


def lab() -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.run()
    at.switch_page("pages/train.py").run()
    assert not at.exception, at.exception
    return at


def table(at: AppTest):
    return at.dataframe[0].value.set_index("run")


def test_navigation_lists_every_page_file():
    glue = {"pages/common.py", "pages/job_view.py", "pages/lecture.py", "pages/__init__.py"}  # imported by pages, not pages
    files = {f"pages/{p.name}" for p in (ROOT / "pages").glob("*.py")} - glue
    assert set(PAGES) == files


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders(runs, page):
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.run()
    at.switch_page(page).run()
    assert not at.exception, at.exception


def sidebar_of_a_fresh_session() -> AppTest:
    """The sidebar as a new browser tab sees it (AppTest runs app.py itself only on its first run)."""
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    return at.sidebar


def half_a_stage(ctx, gate: str) -> None:
    """A job half-way through the second of two stages, until ``gate`` exists."""
    ctx.set_stage("student: KD", 1, 2)
    ctx.on_row({"kind": "step", "step": 1, "loss": 1.0}, 0.25)
    time.sleep(0.2)
    ctx.on_row({"kind": "step", "step": 2, "loss": 1.0}, 0.5)
    while not Path(gate).exists():
        time.sleep(0.01)


def test_sidebar_shows_device_data_and_live_jobs(runs, tmp_path):
    from pages import common
    sidebar = sidebar_of_a_fresh_session()
    captions = [c.value for c in sidebar.caption]
    assert any(c.startswith("**Device:** CPU, training on ") for c in captions)
    assert any(c.startswith("MNIST: data folder") for c in captions)
    assert "No training job is running." in captions and not sidebar.get("progress")
    gate = tmp_path / "gate"
    job = common.manager().submit_task(functools.partial(half_a_stage, gate=str(gate)), "demo job")  # shared by every tab
    try:
        wait_until(lambda: len(common.manager().get(job).history) >= 2)
        bars = sidebar_of_a_fresh_session().get("progress")
        assert len(bars) == 1 and bars[0].proto.value == 75  # (1 + 0.5) / 2 of the job
        assert bars[0].proto.text.startswith("**demo job**: student: KD · 75% · about")
    finally:
        gate.touch()
    assert common.manager().wait(job, 30).status == "done"
    sidebar = sidebar_of_a_fresh_session()
    assert not sidebar.get("progress")
    assert ":material/check_circle: **demo job**: done" in [c.value for c in sidebar.caption]  # newest ended job


def test_training_lab_trains_a_tiny_student_and_lists_it(runs):
    at = lab()
    assert at.selectbox(key="train_method").value == "kd"
    at.selectbox(key="teacher_run_mnist").set_value(
        next(r.id for r in runs.list() if r.config["model"] == "mlp1200"))
    at.selectbox(key="student_mnist").set_value("mlp30")
    at.number_input(key="epochs_mnist").set_value(1)
    at.number_input(key="subset_mnist").set_value(512)
    at.number_input(key="train_T").set_value(3.0)
    at.run()
    assert not at.error
    before = len(table(at))
    at.button(key="train_start").click().run()
    assert not at.exception, at.exception
    run_until(at, lambda at: at.success)
    assert at.success[0].value.startswith("Done in")
    # The lesson: the student beside its plain twin (trained in the same job) and the teacher.
    shown = {m.label: m.value for m in at.metric}
    assert list(shown) == ["Student: test accuracy", "Plain twin: test accuracy", "Teacher: test accuracy"]
    assert all(re.fullmatch(r"\d+\.\d\d %", v) for v in shown.values())
    assert any("than its plain twin" in m.value for m in at.markdown)
    assert len(at.get("plotly_chart")) == 2  # loss and accuracy curves
    links = {link.proto.page for link in at.get("page_link")}
    assert {"dark_knowledge", "compare"} <= links
    rows = table(at)
    assert len(rows) == before + 2
    new = rows[rows["method"] == "kd"].iloc[0]
    assert (new["status"], new["student / model"], new["teacher"], new["T"]) == ("done", "mlp30", "mlp1200", 3.0)
    assert new["train images"] == 512 and 0 <= new["test acc (%)"] <= 100
    twin = rows[(rows["method"] == "plain") & (rows["teacher"] == "mlp1200")].iloc[0]
    assert (twin["status"], twin["student / model"], twin["train images"]) == ("done", "mlp30", 512)
    assert f"{twin['test acc (%)']:.2f} %" == shown["Plain twin: test accuracy"]


def test_bounded_fields_and_a_bad_setting_start_nothing(runs):
    at = lab()
    before = len(table(at))
    # What a field shows is what the job uses: T = 0 or 10^20 epochs cannot be typed in (train.LIMITS).
    assert (at.number_input(key="train_T").min, at.number_input(key="epochs_mnist").max) == (0.1, 1000)
    at.selectbox(key="train_method").set_value("ensemble").run()
    assert [e.value for e in at.error] == ["Cannot start: teachers: an ensemble needs two or more finished "
                                           "teacher runs on mnist (train them as Plain)"]
    assert at.button(key="train_start").disabled  # AppTest, like a browser, cannot click it
    assert at.info[0].value.startswith("No job yet")  # nothing was queued
    assert len(table(at)) == before and len(runs.list()) == 3


def test_new_teacher_job_shows_progress_and_cancels(runs):
    at = lab()
    before = len(table(at))
    at.radio(key="teacher_source_mnist").set_value("train a new teacher first").run()
    at.number_input(key="subset_mnist").set_value(60000).run()  # long enough to cancel mid-run
    at.button(key="train_start").click().run()
    run_until(at, lambda at: any("teacher" in p.proto.text for p in at.get("progress")))
    cancel = next(b for b in at.button if b.key and b.key.startswith("cancel_"))
    cancel.click().run()
    run_until(at, lambda at: at.warning)
    assert at.warning[0].value.startswith("Cancelled")
    rows = table(at)
    assert rows["status"].value_counts().get("cancelled") == 1  # the partial teacher is kept
    assert len(rows) == before + 1  # and no student was started


@pytest.fixture
def busy_cpu():
    """Both cores kept busy by other processes, as on a lecturer's loaded laptop."""
    import subprocess
    import sys
    loops = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    yield
    for p in loops:
        p.kill()
        p.wait()


def test_under_load_the_panel_follows_the_picked_job_and_no_click_is_lost(runs, busy_cpu):
    """Issue 18: on a loaded CPU the panel once showed the previous job for 15 s after another was
    picked, and Cancel clicks were lost. Each click's effect must be there on the very next rerun."""
    at = lab()
    at.number_input(key="subset_mnist").set_value(60000).run()  # jobs long enough to be cancelled
    starts = []
    for _ in range(2):
        at.button(key="train_start").click().run()
        starts.append(at.selectbox(key="train_job_pick").value)  # the new job is shown at once
    assert len(set(starts)) == 2 and at.selectbox(key="train_job_pick").value == starts[1]
    at.selectbox(key="train_job_pick").set_value(starts[0]).run()
    assert [b.key for b in at.button if (b.key or "").startswith("cancel_")] == [f"cancel_{starts[0]}"]
    at.button(key=f"cancel_{starts[0]}").click().run()
    at.selectbox(key="train_job_pick").set_value(starts[1]).run()
    at.button(key=f"cancel_{starts[1]}").click().run()
    from pages import common
    wait_until(lambda: all(common.manager().get(j).status == "cancelled" for j in starts))


def test_delete_asks_for_confirmation(runs):
    at = lab()
    victim = at.selectbox(key="delete_pick").value
    at.button(key="delete_ask").click().run()
    assert "cannot be undone" in at.warning[0].value and Path(runs.path(victim)).exists()
    at.button(key="delete_yes").click().run()
    assert not at.exception
    assert not Path(runs.path(victim)).exists() and victim not in table(at).index
