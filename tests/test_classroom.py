"""Classroom mode (issue 21): viewers explore and follow the lecturer; only the presenter acts."""
import functools
import ipaddress
import re
import shutil

import pytest
import streamlit as st
from streamlit.runtime.pages_manager import PagesManager
from streamlit.testing.v1 import AppTest

from kdviz import classroom, jobs, train
from kdviz.store import RunStore

from .conftest import ROOT, needs_data

TOKEN = "test-presenter-token"


# ------------------------------------------------------------------ the engine: roles, guard, stage

def test_who_is_the_presenter(monkeypatch):
    monkeypatch.setenv(classroom.ENV_TOKEN, TOKEN)
    monkeypatch.delenv(classroom.ENV_CLASSROOM, raising=False)
    monkeypatch.delenv(classroom.ENV_LOOPBACK, raising=False)
    assert classroom.token() == TOKEN
    assert classroom.role(TOKEN, local=False) == classroom.PRESENTER
    assert classroom.role("wrong", local=False) == classroom.VIEWER
    assert classroom.role(None, local=False) == classroom.VIEWER
    assert classroom.role(None, local=True) == classroom.PRESENTER  # the lecturer's own browser
    monkeypatch.setenv(classroom.ENV_LOOPBACK, "0")
    assert classroom.role(None, local=True) == classroom.VIEWER
    assert classroom.role(TOKEN, local=True) == classroom.PRESENTER
    monkeypatch.setenv(classroom.ENV_CLASSROOM, "0")  # single-user: everyone acts
    assert classroom.role(None, local=False) == classroom.PRESENTER
    monkeypatch.delenv(classroom.ENV_TOKEN)
    random = classroom.token()
    assert len(random) >= 20 and classroom.token() == random  # one per process


@pytest.mark.parametrize("ip, loopback", [("127.0.0.1", True), ("127.8.0.1", True), ("::1", True),
                                          ("::ffff:127.0.0.1", True), ("192.168.1.20", False),
                                          ("fe80::1%eth0", False), ("", False), (None, False)])
def test_loopback(ip, loopback):
    assert classroom.is_loopback(ip) is loopback


def test_addresses():
    assert classroom.app_url("10.0.0.5", 8501) == "http://10.0.0.5:8501/"
    assert classroom.app_url("10.0.0.5", 8501, "/kd/", presenter_token="a b") == "http://10.0.0.5:8501/kd/?presenter=a+b"
    assert classroom.app_url("fe80::2", 443, https=True) == "https://[fe80::2]:443/"
    ipaddress.ip_address(classroom.lan_address())  # an address, whatever the network (127.0.0.1 without one)


def parked_manager(store: RunStore) -> jobs.JobManager:
    """A job manager that queues but never starts a job (no worker process in these tests)."""
    manager = jobs.JobManager(store)
    manager.max_concurrent = 0
    return manager


def test_a_viewers_guard_refuses_every_action_and_changes_nothing(store, monkeypatch):
    run = store.create({"dataset": "mnist", "model": "mlp30"})
    store.finish(run, "done", {"test_acc": 0.5})
    manager = parked_manager(store)
    job = manager.submit_task(functools.partial(jobs.train_one, cfg=train.TrainConfig()), "queued")
    monkeypatch.setattr(jobs.JobManager, "resume", lambda self, run_id: self.submit(train.TrainConfig()),
                        raising=False)  # an action another page adds later
    viewer = classroom.Guarded(manager)
    refused = {
        "start jobs": [lambda: viewer.submit(train.TrainConfig()), lambda: viewer.submit_task(print, "x")],
        "cancel jobs": [lambda: viewer.cancel(job)],
        "change how many jobs run at once": [lambda: setattr(viewer, "max_concurrent", 4)],
        "delete runs": [lambda: viewer.store.delete(run)],
        "change jobs or runs": [lambda: viewer.store.create({}), lambda: viewer.store.finish(run, "failed"),
                                lambda: viewer.store.set_status(run, "failed"), lambda: viewer.store.import_run({}),
                                lambda: viewer.resume(run), lambda: viewer._jobs.clear(), lambda: setattr(viewer.store, "root", "/tmp")],
    }
    for words, actions in refused.items():
        for act in actions:
            with pytest.raises(classroom.NotAllowed, match=f"^Only the lecturer can {words}: this browser is a viewer"):
                act()
    assert [v.status for v in manager.list()] == ["queued"] and manager.max_concurrent == 0
    assert [r.id for r in store.list()] == [run] and store.get(run).status == "done"
    # Reading passes through: jobs, runs, metrics, settings.
    assert viewer.get(job).label == "queued" and len(viewer.list()) == 1 and viewer.max_concurrent == 0
    assert viewer.store.get(run).summary == {"test_acc": 0.5} and viewer.store.metrics(run) == []
    manager.cancel(job)


def test_stage_counts_changes_only():
    stage = classroom.Stage()
    assert stage.snapshot() == (0, None, {}, None)
    assert stage.publish("temperature", {"temperature_T": 4.0}, "page")
    assert not stage.publish("temperature", {"temperature_T": 4.0}, "page")  # the same again: no new version
    assert stage.publish("temperature", {"temperature_T": 8.0})
    assert stage.snapshot()[:3] == (2, "temperature", {"temperature_T": 8.0})


def test_no_button_is_ever_copied_to_followers():
    """Followers copy widget values by key (pages/lecture.py FOLLOWED): never a button's."""
    from pages.lecture import FOLLOWED
    keys = []
    for path in (ROOT / "pages").glob("*.py"):
        for call in re.finditer(r"[\w\]]\.(?:button|action_button)\((.*?)\)(?::|$)", path.read_text(), re.S | re.M):
            if "**kwargs" in call.group(1):
                continue  # action_button itself
            key = re.search(r"""key=f?["']([^"'{]*)""", call.group(1))
            assert key, f"{path.name}: a button without a key: {call.group(0)[:80]}"
            keys.append(key.group(1))
    assert len(keys) >= 15
    assert not [k for k in keys if FOLLOWED.fullmatch(k) or FOLLOWED.fullmatch(k + "x")]
    assert FOLLOWED.fullmatch("temperature_T") and FOLLOWED.fullmatch("hinton_shift_omit3")


# ------------------------------------------------------------------ the app, through AppTest

@pytest.fixture
def app(tiny_store, tmp_path, monkeypatch):
    """A fresh run store (copies of the tiny runs), fresh caches, a fixed presenter token, no
    presenter by loopback (AppTest has no browser: only the token makes a presenter), and a job
    manager that queues but starts nothing. AppTest reruns only the page after its first run
    (it resets Streamlit to the pages/ folder mode); here app.py runs every time, as on a server."""
    shutil.copytree(tiny_store.root, tmp_path / "runs")
    monkeypatch.setenv("KDVIZ_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv(classroom.ENV_TOKEN, TOKEN)
    monkeypatch.setenv(classroom.ENV_LOOPBACK, "0")
    monkeypatch.delenv(classroom.ENV_CLASSROOM, raising=False)
    init = PagesManager.__init__

    def navigation_mode(self, *args, **kwargs):
        init(self, *args, **kwargs)
        PagesManager.uses_pages_directory = False
    monkeypatch.setattr(PagesManager, "__init__", navigation_mode)
    st.cache_resource.clear()
    st.cache_data.clear()
    from pages import common
    common._manager().max_concurrent = 0
    yield RunStore(tmp_path / "runs", readonly={})
    for job in common._manager().list():
        common._manager().cancel(job.id)


def session(page: str = "", token: str | None = None) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    if token:
        at.query_params[classroom.TOKEN_PARAM] = token
    at.run()
    if page:
        at.switch_page(page).run()
    assert not at.exception, at.exception
    return at


def queued_jobs() -> list:
    from pages import common
    return [v for v in common._manager().list() if v.status == "queued"]


ACTION_BUTTONS = {"pages/train.py": ["train_start", "delete_ask"], "pages/compare.py": ["cmp_start"],
                  "pages/hinton.py": ["hinton_start"], "pages/sweep.py": ["sweep_start"]}


@pytest.mark.parametrize("page", ACTION_BUTTONS)
@pytest.mark.usefixtures("app")
@needs_data
def test_a_viewer_sees_the_action_buttons_disabled_and_why(page):
    at = session(page)
    assert "**Viewer**" in at.sidebar.caption[0].value
    for key in ACTION_BUTTONS[page]:
        assert at.button(key=key).disabled
    locks = [c.value for c in at.caption if c.value.startswith(":material/lock:")]
    assert ":material/lock: Only the lecturer can start jobs." in locks or ":material/lock: Only the lecturer can delete runs." in locks


@pytest.fixture
def buttons_left_enabled(monkeypatch):
    """Every page's action buttons enabled for everyone, as if a page forgot to disable them:
    the guard behind common.manager() and common.store() must still refuse."""
    from pages import common
    monkeypatch.setattr(common, "action_button", lambda label, action, container=st, disabled=False, **kw:
                        container.button(label, **kw))


def refused(at: AppTest, words: str) -> None:
    assert not at.exception, at.exception
    assert f"Only the lecturer can {words}: this browser is a viewer." in [w.value for w in at.warning]


@needs_data
def test_each_action_of_a_viewer_is_refused_and_changes_nothing(app, buttons_left_enabled):
    from pages import common
    runs_before = sorted(r.id for r in app.list())
    lab = session("pages/train.py")
    lab.button(key="train_start").click().run()
    refused(lab, "start jobs")
    lab.run()  # a refusal ends the page where the action was: draw it all again
    lab.button(key="delete_ask").click().run()
    lab.button(key="delete_yes").click().run()
    refused(lab, "delete runs")
    for page, key in [("pages/compare.py", "cmp_start"), ("pages/hinton.py", "hinton_start"),
                      ("pages/sweep.py", "sweep_start")]:
        at = session(page)
        at.button(key=key).click().run()
        refused(at, "change how many jobs run at once" if page == "pages/sweep.py" else "start jobs")
    assert not common._manager().list() and common._manager().max_concurrent == 0
    # Cancelling the lecturer's jobs: one from the Training lab, one replay.
    lab_job = common._manager().submit_task(functools.partial(jobs.train_one, cfg=train.TrainConfig()), "lecture")
    replay = common._manager().submit_task(functools.partial(jobs.train_one, cfg=train.TrainConfig()), "replay",
                                           "hinton-lecture")
    lab.run()
    lab.selectbox(key="train_job_pick").set_value(lab_job).run()
    lab.button(key=f"cancel_{lab_job}").click().run()
    refused(lab, "cancel jobs")
    at = session("pages/hinton.py")
    at.button(key="hinton_cancel").click().run()
    refused(at, "cancel jobs")
    assert [v.id for v in queued_jobs()] == [replay, lab_job]
    assert sorted(r.id for r in app.list()) == runs_before  # nothing deleted, nothing created (no sweep plan)


@needs_data
def test_the_presenter_token_acts_and_leaves_the_address_bar(app):
    at = session("pages/train.py", token=TOKEN)
    assert "**Presenter**" in at.sidebar.caption[0].value
    assert classroom.TOKEN_PARAM not in at.query_params  # not shown on a projected screen
    assert not at.button(key="train_start").disabled
    at.button(key="train_start").click().run()
    assert not at.exception and len(queued_jobs()) == 1
    assert session("pages/train.py", token="a guess").button(key="train_start").disabled


@needs_data
def test_classroom_off_lets_everyone_act(app, monkeypatch):
    monkeypatch.setenv(classroom.ENV_CLASSROOM, "0")
    at = session("pages/train.py")
    assert not [c for c in at.sidebar.caption if "Viewer" in c.value or "Presenter" in c.value]
    assert not at.sidebar.toggle and [e.label for e in at.sidebar.expander] == ["Data sources"]
    at.button(key="train_start").click().run()
    assert not at.exception and len(queued_jobs()) == 1


@needs_data
def test_the_share_panel_is_the_presenters(app):
    presenter = session(token=TOKEN)
    panel = presenter.sidebar.expander[0]
    assert panel.label == "Share with the class"
    url = panel.code[0].value
    assert re.fullmatch(r"http://[\d.]+:8501/", url) and TOKEN not in url
    assert len(panel.get("image")) == 1  # the QR code
    viewer = session()
    assert [e.label for e in viewer.sidebar.expander] == ["Data sources"]
    assert viewer.sidebar.toggle[0].label == "Follow the lecturer"


@needs_data
def test_a_follower_gets_the_lecturers_page_and_choices(app):
    lecturer = session("pages/temperature.py", token=TOKEN)
    lecturer.select_slider(key="temperature_T").set_value(4.0).run()
    lecturer.radio(key="temperature_image").set_value(3).run()
    student = session()
    assert [t.value for t in student.title] != ["Temperature"]
    student.toggle(key="classroom_follow").set_value(True).run()
    assert [t.value for t in student.title] == ["Temperature"]
    assert student.select_slider(key="temperature_T").value == 4.0
    assert student.radio(key="temperature_image").value == 3
    lecturer.select_slider(key="temperature_T").set_value(10.0).run()
    student.run()
    assert student.select_slider(key="temperature_T").value == 10.0
    lecturer.switch_page("pages/dark_knowledge.py").run()
    lecturer.select_slider(key="dark_T").set_value(2.0).run()
    student.run()
    assert [t.value for t in student.title] == ["Dark knowledge"] and student.select_slider(key="dark_T").value == 2.0
    assert student.toggle(key="classroom_follow").value  # still following after the page switch
    # Switched off, the student explores on their own.
    student.toggle(key="classroom_follow").set_value(False).run()
    student.select_slider(key="dark_T").set_value(5.0).run()
    lecturer.select_slider(key="dark_T").set_value(3.0).run()
    student.run()
    assert student.select_slider(key="dark_T").value == 5.0 and not student.exception
