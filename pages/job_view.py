"""The Training lab's job panel: progress and Cancel, live curves, and the lesson when it ends.

Not a page (app.py's navigation lists the pages). Watching must not slow the job: the
progress line refreshes every second, the curves only every few seconds and only while
the job runs; both read the job manager's snapshot, never the run store.
"""
from __future__ import annotations

import streamlit as st

from kdviz import compare, jobs
from kdviz.store import RunError
from kdviz.viz import training as viz
from pages import common

PROGRESS_EVERY_S = 1.0
CURVES_EVERY_S = 3.0
ATTENTION = ("pages/attention.py", "Attention", ":material/visibility:")
RUN_PAGES = {"fitnet": [("pages/hints.py", "Hints (FitNets)", ":material/explore:")], "at": [ATTENTION],
             "kd_at": [ATTENTION], "fsp": [("pages/fsp.py", "FSP matrices", ":material/grid_on:")],
             "at_grad": [ATTENTION], "byot": [ATTENTION]}


def duration(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


def job_progress(view: jobs.JobView) -> None:
    """An active job's progress bar with stage and time left, or its place in the queue."""
    if view.status == "queued":
        st.caption(f":material/hourglass_top: **{view.label}**: queued, number {view.queue_position} in line")
        return
    epoch = view.history[-1].get("epoch") if view.history else None
    where = " · ".join(part for part in (view.stage, epoch and f"epoch {epoch}") if part) or "starting"
    left = "" if view.eta_s is None else f" · about {duration(view.eta_s)} left"
    st.progress(view.progress, text=f"**{view.label}**: {where} · {view.progress:.0%}{left}")


def _method(view: jobs.JobView) -> str:
    """The method of the job's main run (its student; a plain twin comes after it)."""
    for run_id in view.run_ids:
        try:
            method = common.store().get(run_id).config.get("method", "plain")
        except RunError:  # deleted meanwhile (from another tab)
            continue
        if method != "plain":
            return method
    return "plain"


def _progress(job_id: str, was_active: bool) -> None:
    view = common.manager().get(job_id)
    if was_active and not view.active:
        st.rerun()  # ended: the full rerun stops the timers and refreshes the runs table
    if not view.active:
        return
    job_progress(view)
    if common.action_button("Cancel job", "cancel", key=f"cancel_{job_id}",
                            help="Stops within one step; the partial run is kept."):
        common.manager().cancel(job_id)
    if not view.history:
        st.caption("Curves appear after the first logged steps (data and models load first).")


def _curves(job_id: str) -> None:
    view = common.manager().get(job_id)
    if view.history:
        method = _method(view)
        st.plotly_chart(viz.loss_figure(view.history, method), key=f"loss_{job_id}")
        st.plotly_chart(viz.accuracy_figure(view.history, method), key=f"acc_{job_id}")


def _lesson(view: jobs.JobView) -> None:
    """The result beside what it should be compared with: the plain twin and the teacher."""
    result = view.result or {}
    parts = {"": result} if "test_acc" in result else {k: v for k, v in result.items()
                                                       if isinstance(v, dict) and "test_acc" in v}
    student = parts.get("student") or parts.get("")
    teacher = parts.get("teacher")
    if student and "teacher" not in parts:
        try:
            teacher_run = common.store().get(common.store().get(student["run_id"]).config.get("teacher") or "")
            teacher = {"run_id": teacher_run.id, **teacher_run.summary} if "test_acc" in teacher_run.summary else None
        except RunError:
            teacher = None
    shown = {"Student": student, "Plain twin": parts.get("plain twin"), "Teacher": teacher} if student else parts
    shown = {k.capitalize() or "Test accuracy": v for k, v in shown.items() if v}
    for col, (name, s) in zip(st.columns(len(shown)), shown.items()):
        col.metric(f"{name}: test accuracy", f"{100 * s['test_acc']:.2f} %",
                   help=f"run {s['run_id']}: {s.get('test_errors', '?')} test errors")
    if student and parts.get("plain twin"):
        try:
            config = common.store().get(student["run_id"]).config
        except RunError:  # deleted meanwhile (from another tab): the sentence needs only the method
            config = {}
        st.markdown(compare.lesson_sentence(student, parts["plain twin"], teacher, config))


def job_panel(job_id: str) -> None:
    """One job: live while it runs; when it has ended, its outcome and where to look next."""
    view = common.manager().get(job_id)
    st.fragment(_progress, run_every=PROGRESS_EVERY_S if view.active else None)(job_id, view.active)
    if view.status == "failed":
        st.error(f"Failed: {view.reason}")
        with st.expander("Details (traceback)"):
            st.code(view.traceback or "no traceback: the training process ended without one")
    elif view.status == "cancelled":
        kept = " A partial run is kept in the table below, marked cancelled." if view.run_ids else ""
        st.warning(f"{(view.reason or 'cancelled').capitalize()}.{kept}")
    elif view.status == "done":
        st.success(f"Done in {duration(view.finished - view.started)}.")
        _lesson(view)
        st.caption("Look inside this run:")
        links = [("pages/dark_knowledge.py", "Dark knowledge", ":material/dark_mode:"),
                 *RUN_PAGES.get(_method(view), []), ("pages/compare.py", "Compare methods", ":material/leaderboard:")]
        for page, label, icon in links:
            st.page_link(page, label=label, icon=icon)
    st.fragment(_curves, run_every=CURVES_EVERY_S if view.active else None)(job_id)


def start_experiment(check, task, label: str, group: str, pick_key: str) -> None:
    """Queue an experiment (a task training a group of runs) once ``check()`` accepts its config;
    show the picker on it. ``check`` raises ValueError naming the field."""
    try:
        check()
    except ValueError as e:
        st.error(f"Cannot start: {e}")
        return
    common.manager().submit_task(task, label, group)
    st.session_state[pick_key] = group
    st.rerun()


def pick_experiment(groups, prefix: str, key: str, empty: str):
    """The experiment to show (running ones first, then finished, newest first) and its job, if
    this server ran it; the page stops with ``empty`` when there is none."""
    mine = [v for v in common.manager().list() if (v.group or "").startswith(prefix)]
    choices = list(dict.fromkeys([v.group for v in mine if v.active] + list(groups)))
    if not choices:
        st.info(empty)
        st.stop()
    group = st.selectbox("Experiment", choices, key=key, help="Newest first; a running one fills in live.")
    return group, next((v for v in mine if v.group == group), None)
