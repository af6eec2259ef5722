"""kdviz: an interactive lab for teaching knowledge distillation. Run: streamlit run app.py"""
import streamlit as st

from kdviz import data, jobs
from pages import common, job_view, lecture


# How often each tab's sidebar looks at the job list: often while a job runs, and
# slower when idle, so that a job started in another tab still shows up here.
POLL_S = {True: 1.0, False: 2.0}
RECENT_JOBS = 3
OUTCOME_ICONS = {"done": ":material/check_circle:", "cancelled": ":material/cancel:", "failed": ":material/error:"}


def job_outcome(view: jobs.JobView) -> str:
    """One line for an ended job: how it ended and, if it did not finish, why."""
    how = {"failed": f"failed: {view.reason}", "cancelled": view.reason or "cancelled"}.get(view.status, view.status)
    return f"{OUTCOME_ICONS[view.status]} **{view.label}**: {how}"


def _job_list_state(views: list[jobs.JobView]) -> tuple:
    return tuple((v.id, v.active) for v in views)


def _job_monitor(seen: tuple) -> None:
    views = common.manager().list()
    if _job_list_state(views) != seen:
        st.rerun()  # a job started (perhaps in another tab) or ended: refresh the page's job lists and tables
    active = [v for v in views if v.active]
    for view in reversed(active):  # oldest first: the running one, then the queue
        job_view.job_progress(view)
    if active:
        st.page_link("pages/train.py", label="Watch in the Training lab", icon=":material/science:")
    else:
        st.caption("No training job is running.")
    for view in [v for v in views if not v.active][:RECENT_JOBS]:
        st.caption(job_outcome(view))


def sidebar() -> None:
    """Device, data sources and live jobs, on every page."""
    with st.sidebar:
        st.caption(f"**Device:** {jobs.device_label()}")
        with st.expander("Data sources", expanded=False):
            for name in data.DATASETS:
                st.caption(data.source_of(name))
        st.caption("**Training jobs**")
        views = common.manager().list()
        polling = any(v.active for v in views)
        st.fragment(_job_monitor, run_every=POLL_S[polling])(_job_list_state(views))


st.set_page_config(page_title="kdviz: knowledge distillation lab", page_icon=":material/school:", layout="wide")

nav = st.navigation({
    "Start": [st.Page("pages/home.py", title="Home", icon=":material/home:", default=True),
              st.Page("pages/map.py", title="Map of distillation", icon=":material/map:")],
    "Learn": [st.Page("pages/temperature.py", title="Temperature", icon=":material/device_thermostat:"),
              st.Page("pages/dark_knowledge.py", title="Dark knowledge", icon=":material/dark_mode:")],
    "Lab": [st.Page("pages/train.py", title="Training lab", icon=":material/science:"),
            st.Page("pages/compare.py", title="Compare methods", icon=":material/leaderboard:"),
            st.Page("pages/sweep.py", title="Sweeps", icon=":material/grid_view:")],
    "Inside the student": [st.Page("pages/hints.py", title="Hints (FitNets)", icon=":material/explore:"),
                           st.Page("pages/attention.py", title="Attention", icon=":material/visibility:"),
                           st.Page("pages/fsp.py", title="FSP matrices", icon=":material/grid_on:")],
    "Replay": [st.Page("pages/hinton.py", title="Hinton's omitted 3", icon=":material/replay:")],
    "Beyond the data": [st.Page("pages/datafree.py", title="Data-free", icon=":material/cloud:"),
                        st.Page("pages/privileged.py", title="Privileged", icon=":material/visibility_off:"),
                        st.Page("pages/transfer.py", title="Transfer sets", icon=":material/swap_horiz:")],
})
with lecture.session(nav):  # classroom mode: the share panel, or following the lecturer
    sidebar()
    nav.run()
