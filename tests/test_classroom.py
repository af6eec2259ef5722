"""Classroom mode (issue 21): viewers explore and follow the lecturer; only the presenter acts."""
import functools
import ipaddress
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import streamlit as st
from streamlit.runtime.pages_manager import PagesManager
from streamlit.testing.v1 import AppTest

from kdviz import classroom, jobs, sweep, train
from kdviz.store import RunStore

from .browser import free_port
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


@pytest.mark.parametrize("on", [True, False])
def test_the_lecture_command_prints_the_presenter_url_before_it_serves(on, tmp_path):
    """``python -m kdviz lecture``: the presenter's URL with a fresh random token and the class's
    URL, and the server that follows holds that token; with classroom mode off, neither."""
    port = free_port()
    env = {**os.environ, classroom.ENV_CLASSROOM: "1" if on else "0", "KDVIZ_RUNS": str(tmp_path)}
    env.pop(classroom.ENV_TOKEN, None)
    proc = subprocess.Popen([sys.executable, "-m", "kdviz", "lecture", "--port", str(port), "--",
                             "--server.headless", "true"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        printed = ""
        while "URL:" not in printed:  # Streamlit's own lines, once it serves
            line = proc.stdout.readline()
            assert line, printed
            printed += line
        given = re.search(rf"Presenter URL, keep it private: http://[\d.]+:{port}/\?presenter=([\w-]+)\n"
                          rf"\s+The class opens: +http://[\d.]+:{port}/\n", printed)
        assert bool(given) == on, printed
        if on:  # the server (the same process: the command becomes Streamlit) holds the printed token
            environ = Path(f"/proc/{proc.pid}/environ").read_bytes().split(b"\0")
            assert f"{classroom.ENV_TOKEN}={given.group(1)}".encode() in environ and len(given.group(1)) >= 20
    finally:
        proc.terminate()
        proc.wait(30)


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
    def refuse(action):
        raise PermissionError(classroom.refusal(action))
    viewer = classroom.Guarded(manager, refuse)
    refused = {
        "start jobs": [lambda: viewer.submit(train.TrainConfig()), lambda: viewer.submit_task(print, "x")],
        "cancel jobs": [lambda: viewer.cancel(job)],
        "change how many jobs run at once": [lambda: setattr(viewer, "max_concurrent", 4)],
        "delete runs": [lambda: viewer.store.delete(run)],
        "change jobs or runs": [lambda: viewer.store.create({}), lambda: viewer.store.finish(run, "failed"),
                                lambda: viewer.store.set_status(run, "failed"), lambda: viewer.store.import_run({}),
                                lambda: viewer.store.save_json(store.root / "plan.json", {}),
                                lambda: viewer.resume(run), lambda: viewer._jobs.clear(), lambda: setattr(viewer.store, "root", "/tmp")],
    }
    for words, actions in refused.items():
        for act in actions:
            with pytest.raises(PermissionError, match=f"^Only the lecturer can {words}: this browser is a viewer"):
                act()
    assert [v.status for v in manager.list()] == ["queued"] and manager.max_concurrent == 0
    assert [r.id for r in store.list()] == [run] and store.get(run).status == "done"
    # Reading passes through: jobs, runs, metrics, settings.
    assert viewer.get(job).label == "queued" and len(viewer.list()) == 1 and viewer.max_concurrent == 0
    assert viewer.store.get(run).summary == {"test_acc": 0.5} and viewer.store.metrics(run) == []
    manager.cancel(job)


# What a viewer's guarded store and manager refuse besides what READS lets through: every public
# method is one or the other, so a method added later is classified here on purpose.
WRITES = {RunStore: {"check_writable", "create", "import_run", "write_config", "set_status", "append_metric",
                     "rewrite_metrics", "save_model", "save_blob", "save_json", "finish", "delete", "save_images"},
          jobs.JobManager: {"submit", "submit_task", "cancel"}}


@pytest.mark.parametrize("kind", WRITES)
def test_every_method_of_the_store_and_the_manager_is_a_read_or_an_action(kind):
    public = {n for n, v in vars(kind).items() if callable(v) and not n.startswith("_")}
    assert public == classroom.READS[kind] | WRITES[kind]
    assert not classroom.READS[kind] & WRITES[kind]


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


def forged_click(button):
    """A click even on a disabled button, as a message sent past the browser would be (AppTest's
    own click refuses a disabled widget)."""
    button._value = True
    return button


def refused(at: AppTest, words: str) -> None:
    assert not at.exception, at.exception
    assert f"Only the lecturer can {words}: this browser is a viewer." in [w.value for w in at.warning]


def shared_state(store: RunStore) -> tuple:
    """Everything a viewer must not change: runs and their status, jobs and their status, the
    sweeps' plan files, how many jobs run at once."""
    from pages import common
    plans = sorted(p.name for p in (store.root / sweep.PLANS).glob("*")) if (store.root / sweep.PLANS).is_dir() else []
    return (sorted((r.id, r.status) for r in store.list()), [(v.id, v.status) for v in common._manager().list()],
            plans, common._manager().max_concurrent)


def lecture_in_progress(store: RunStore) -> dict:
    """What a lecture leaves for a viewer to act on: a cancelled run that can resume, a queued
    Training-lab job, a queued replay and a sweep with two queued points (nothing ever starts)."""
    from pages import common
    manager = common._manager()
    victim = store.runs["cnn_kd"]
    (store.path(victim) / train.RESUME_FILE).write_bytes(b"a resume state")
    store.set_status(victim, "cancelled")
    plan = sweep.create(store, train.TrainConfig(teacher=store.runs["mlp_teacher"], method="kd", model="mlp30"),
                        {"T": [2.0, 4.0]}, "lecture")
    queued = functools.partial(jobs.train_one, cfg=train.TrainConfig())
    return {"victim": victim, "plan": plan, "points": sweep.submit(manager, plan),
            "lab": manager.submit_task(queued, "lecture"), "replay": manager.submit_task(queued, "replay", "hinton-lecture")}


@pytest.fixture
def lecture(app, tiny_store):
    app.runs = tiny_store.runs
    return lecture_in_progress(app)


# Every action a page offers: (page, button, what the refusal says); the Training lab's first.
ACTIONS = [("pages/train.py", "train_start", "start jobs"), ("pages/train.py", "resume_start", "start jobs"),
           ("pages/train.py", "cancel_{lab}", "cancel jobs"), ("pages/train.py", "delete_yes", "delete runs"),
           ("pages/compare.py", "cmp_start", "start jobs"), ("pages/hinton.py", "hinton_start", "start jobs"),
           ("pages/hinton.py", "hinton_cancel", "cancel jobs"), ("pages/sweep.py", "sweep_start", "start jobs"),
           ("pages/sweep.py", "sweep_cancel", "cancel jobs"), ("pages/sweep.py", "sweep_resume", "start jobs"),
           ("pages/datafree.py", "df_start", "start jobs"), ("pages/privileged.py", "pi_start", "start jobs"),
           ("pages/transfer.py", "tr_start", "start jobs")]
# Not driven: "Delete…" only asks to confirm (delete_yes deletes); the Data-free page's Cancel shows
# only beside a running data-free job's run, and calls the same manager.cancel as the Training lab's.
NOT_DRIVEN = {"delete_ask", "df_cancel"}


# Where the check stops an action before the manager's submit: a sweep saves its plan, then sets
# how many jobs run at once.
FIRST_REACHED = {"sweep_start": "change jobs or runs", "sweep_resume": "change how many jobs run at once"}


def test_the_list_of_actions_is_every_action_button():
    keys = {key for path in (ROOT / "pages").glob("*.py")
            for key in re.findall(r"""common\.action_button\(.*?key=f?["']([^"']+)["']""", path.read_text(), re.S)}
    assert keys == {k.replace("{lab}", "{job_id}") for _, k, _ in ACTIONS} | NOT_DRIVEN


def each_action(lecture: dict):
    """(AppTest on the page, with the button drawn, key, words) for each of ACTIONS as a viewer."""
    from pages import common
    lab = session("pages/train.py")
    lab.selectbox(key="train_job_pick").set_value(lecture["lab"]).run()
    lab.selectbox(key="delete_pick").set_value(lecture["victim"]).run()
    assert lab.selectbox(key="resume_pick").value == lecture["victim"]
    for page, key, words in ACTIONS:
        if key == "sweep_resume":
            for job in lecture["points"]:  # the lecturer cancels the sweep: now it can resume
                common._manager().cancel(job)
        at = lab if page == "pages/train.py" else session(page)
        if key == "delete_yes":
            at.session_state["delete_confirm"] = lecture["victim"]  # as if "Delete…" had been pressed
        at.run()  # a refusal ends the page where the action was: draw it all again
        yield at, key.format(lab=lecture["lab"]), words


@needs_data
def test_a_viewers_action_buttons_are_disabled_and_a_forged_click_changes_nothing(app, lecture):
    assert "**Viewer**" in session().sidebar.caption[0].value
    for at, key, words in each_action(lecture):
        assert at.button(key=key).disabled, key
        assert f":material/lock: Only the lecturer can {words}." in [c.value for c in at.caption], key
        before = shared_state(app)
        forged_click(at.button(key=key)).run()  # Streamlit discards it
        assert not at.exception and shared_state(app) == before, key


@needs_data
def test_each_action_of_a_viewer_is_refused_by_the_one_check(app, lecture, monkeypatch):
    """Not only the buttons: with every action button left enabled (as a page that forgot
    ``action_button`` would), each action still reaches ``common.permit`` through the viewer's
    guarded job manager and run store, is refused in words, and nothing shared changes."""
    from pages import common
    monkeypatch.setattr(common, "action_button", lambda label, action, container=st, disabled=False, **kw:
                        container.button(label, **kw))
    for at, key, words in each_action(lecture):
        before = shared_state(app)
        at.button(key=key).click().run()
        refused(at, FIRST_REACHED.get(key, words))
        assert shared_state(app) == before, key


@pytest.mark.parametrize("page", sorted(re.findall(r'st\.Page\("(pages/\w+\.py)"', (ROOT / "app.py").read_text())))
@pytest.mark.usefixtures("app")
@needs_data
def test_a_viewer_can_open_every_page(page):
    """Exploring is every viewer's: no page refuses or fails for one (each read is one READS lets through)."""
    at = session(page)
    assert not at.exception and not [w.value for w in at.warning if "Only the lecturer" in w.value]


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


def test_shared_work_is_computed_once_for_every_session_and_bounded():
    """``common.shared``: the same pure call from any session is computed once; the cache keeps only
    the most recent 256 results, so a long lecture cannot grow it without bound."""
    import numpy as np
    import torch

    from pages import common
    st.cache_resource.clear()
    calls = []

    def figure(logits, images, T):
        calls.append(T)
        return {"T": T}
    logits, images = np.arange(1000.0).reshape(100, 10), torch.zeros(4, 1, 28, 28)
    first = common.shared(figure, logits, images, 2.0)
    assert common.shared(figure, logits.copy(), images.clone(), 2.0) is first and calls == [2.0]
    common.shared(figure, logits + 1, images, 2.0)  # other arrays: another result
    assert len(calls) == 2
    for T in range(300):
        common.shared(figure, logits, images, float(T) + 0.5)
    common.shared(figure, logits, images, 2.0)  # evicted by the 300 newer ones: computed again
    assert len(calls) == 303 and calls[-1] == 2.0
