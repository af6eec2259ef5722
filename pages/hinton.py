"""Hinton 2015 §3 replayed on MNIST: the distillation table and the omitted-digit experiments."""
import functools

import streamlit as st

from kdviz import replay
from kdviz.viz import replay as viz
from pages import common, job_view

WHY = """
**Why a student can recognise a digit it never saw.** The teacher's soft targets at
T = 20 say, for every training image, how much it looks like *each* digit. A 5 or an 8
with a hint of a 3 in it gets a small but visible probability for "3", so the student
learns what a 3 looks like from the *other* digits: 2s, 5s and 8s that look a bit like a 3.
What it lacks is only the prior: with no 3 in its training set, its output bias for 3 is
too low. Raising that one number repairs most of the errors.
"""

st.title("Hinton's omitted 3")
st.caption("Hinton, Vinyals & Dean 2015, *Distilling the Knowledge in a Neural Network*, §3, replayed on MNIST: "
           "the paper's numbers next to this run's.")
st.markdown(WHY)
ds = common.dataset("mnist")
if ds is None:
    st.stop()
y = ds.test_y.numpy()
if ds.is_sample:
    st.warning(f"**Sample data: {ds.source}.** The replay runs on it and reports its own numbers, out of "
               f"{len(y):,} test digits; the paper's are out of the full 10,000: compare the pattern, not the counts.")
else:
    st.caption(f"Test set: the full MNIST test set, 10,000 digits ({ds.source}). The shipped replay trained on "
               "55,000 training images (the 5,000 of the offline sample are held out, so it can test them too); "
               "the paper used all 60,000.")
mgr = common.manager()


def is_replay(view) -> bool:
    return bool(view.group) and view.group.startswith(replay.GROUP_PREFIX)


jobs = [v for v in mgr.list() if is_replay(v)]
groups = replay.replays(common.store().list())
choices = list(dict.fromkeys([v.group for v in jobs if v.active] + list(groups)))

with st.expander("Start a new replay", expanded=not choices):
    d = replay.ReplayConfig()
    c1, c2 = st.columns(2)
    teacher_epochs = c1.number_input("Teacher epochs", min_value=1, value=d.teacher_epochs, key="hinton_t_epochs",
                                     help="Passes over the training images, each randomly shifted by up to 2 px.")
    student_epochs = c2.number_input("Epochs of each student", min_value=1, value=d.student_epochs,
                                     key="hinton_s_epochs")
    sweep_30 = st.checkbox("Also train 30-unit students at T = 1, 2.5, 4, 8 and 20 (optional stage 6)",
                           key="hinton_sweep_30")
    quick = st.checkbox("Quick demo: 10,000 training images (fewer than the paper's 60,000; errors are higher)",
                        key="hinton_quick")
    st.caption(f"Stages run one after another as one background job; the teacher is the slow one. "
               f"Learning rates: teacher {d.teacher_lr}, students {d.student_lr}; soft targets at T = {d.T:g}, "
               f"loss = {1 - d.alpha:.1f}·CE + {d.alpha:.1f}·T²·KL.")
    if common.action_button("Start the replay", "submit", type="primary", key="hinton_start"):
        cfg = replay.ReplayConfig(group=replay.new_group_id(), teacher_epochs=int(teacher_epochs),
                                  student_epochs=int(student_epochs), sweep_30=sweep_30,
                                  train_subset=10_000 if quick else None)
        mgr.submit_task(functools.partial(replay.run, cfg=cfg), "Hinton 2015 replay", cfg.group)
        st.session_state["hinton_group"] = cfg.group
        st.rerun()

if not choices:
    st.info("No replay yet: press **Start the replay** above. It trains the teacher and four students "
            "(about 15–25 minutes on a laptop CPU, a few on a GPU); this page fills in as each stage finishes.")
    st.page_link("pages/train.py", label="Training lab: watch the job's curves while it trains",
                 icon=":material/science:")
    st.stop()

if st.session_state.get("hinton_group") in choices:
    st.session_state["hinton_pick"] = st.session_state.pop("hinton_group")


def describe(group: str) -> str:
    done = sum(r.status == "done" for r in groups.get(group, {}).values())
    running = any(v.group == group and v.active for v in jobs)
    return f"{group} · {done} stages done" + (" · running" if running else "")


group = st.selectbox("Replay", choices, key="hinton_pick", format_func=describe,
                     help="Every replay you started, newest first; a running one fills in live.")
job = next((v for v in jobs if v.group == group), None)  # this process's newest job for the group


STATUS_ICONS = {"done": ":material/check_circle:", "running": ":material/hourglass_top:",
                "cancelled": ":material/stop_circle:", "failed": ":material/error:", "interrupted": ":material/error:"}


def finished_stages(show: bool = False) -> dict:
    """This replay's stages that are done, read fresh from the run store; with ``show``,
    a line of every stage's state and the reason of any that failed."""
    runs = replay.replays(common.store().list()).get(group, {})
    if show:
        keys = [k for k in [s.key for s in replay.STAGES] if k in runs or not k.startswith("t30_")]
        st.caption(" · ".join(f"{STATUS_ICONS.get(runs[k].status, ':material/help:') if k in runs else '○'} "
                              f"{replay.STAGE_BY_KEY[k].title}" for k in keys))
        for key, run in runs.items():
            if run.status in ("failed", "interrupted"):
                st.error(f"Stage “{replay.STAGE_BY_KEY[key].title}” {run.status}: "
                         f"{run.reason or 'no reason recorded'}")
    return {k: r for k, r in runs.items() if r.status == "done"}


@st.fragment(run_every=2.0 if job and job.active else None)
def live_table(polling: bool) -> None:
    """Progress and the paper-vs-run table, refreshed every 2 s while the replay trains."""
    if job:
        view = mgr.get(job.id)
        if polling and not view.active:
            st.rerun()  # finished: the full rerun draws the bias sections
        if view.active:
            job_view.job_progress(view)
            if common.action_button("Cancel the replay", "cancel", key="hinton_cancel",
                                    help="Stops within one step; finished stages stay."):
                mgr.cancel(job.id)
        elif view.status == "failed":
            st.error(f"The replay failed: {view.reason}")
    with st.spinner("Computing test-set logits…"):
        logits = {k: common.test_logits(r.id, "mnist") for k, r in finished_stages(show=True).items()}
    st.dataframe(replay.table_frame(common.shared(replay.table, logits, y)), hide_index=True, placeholder="—")
    st.caption("“…”: stage not finished yet. Paper numbers: Hinton et al. 2015, §3, out of 10,000 test digits "
               "(1,010 of them 3s); this run's are out of its own test set.")


st.subheader("Paper vs this run")
live_table(bool(job and job.active))
done = finished_stages()


def bias_section(exp: replay.BiasExperiment, title: str, intro: str) -> None:
    st.subheader(title)
    st.markdown(intro)
    run = done.get(exp.stage)
    if run is None:
        st.info(f"Appears when the stage “{replay.STAGE_BY_KEY[exp.stage].title}” of this replay is done.")
        return
    logits = common.test_logits(run.id, "mnist")
    sweep = common.shared(replay.sweep, logits, y, exp.classes, exp.grid)
    shift = st.slider(f"Shift of the output bias of {exp.digits} (logit units)", *exp.shift_range, value=0.0,
                      step=0.1, key=f"hinton_shift_{exp.stage}",
                      help=f"Added to the bias of {exp.digits}; the paper used {exp.paper_shift:+.1f}.")
    errors, class_errors = replay.errors_at(logits, y, exp.classes, shift)
    base_errors, base_class = replay.errors_at(logits, y, exp.classes, 0.0)
    c1, c2, c3 = st.columns(3)
    c1.metric("Test errors", f"{errors:,} / {sweep.n_test:,}", delta=errors - base_errors, delta_color="inverse",
              help="Change against no shift.")
    c2.metric(f"{exp.plural} wrong", f"{class_errors:,} / {sweep.n_class:,}", delta=class_errors - base_class,
              delta_color="inverse")
    c3.metric("Best shift found", f"{sweep.best:+.1f}",
              help=f"The shift with the fewest test errors; the paper used {exp.paper_shift:+.1f}.")
    st.plotly_chart(common.shared(viz.shift_curve, sweep.shifts, sweep.errors, sweep.class_errors, exp.digits,
                                  exp.plural, sweep.n_test, sweep.n_class, exp.paper_shift, sweep.best, shift),
                    key=f"curve_{exp.stage}")
    st.plotly_chart(common.shared(viz.confusion_rows, replay.before_after(logits, y, exp, shift), ds.classes,
                                  f"What the {exp.plural} were predicted as"), key=f"confusion_{exp.stage}")


bias_section(replay.OMIT3, "The omitted 3",
             "The distilled student's transfer set had **no 3 at all**. Paper: 206 test errors, 133 of them "
             "on the 1,010 threes; raising the bias of 3 by 3.5 leaves 109 errors, 14 on threes.")
bias_section(replay.ONLY78, "Only 7s and 8s",
             "A transfer set of **only 7s and 8s**. Paper: 47.3 % test error; lowering the biases of 7 and 8 "
             "by 7.6 (one shift for both) gives 13.2 %.")

temperatures, t30_errors = replay.temperature_sweep(
    replay.run_numbers({k: common.test_logits(r.id, "mnist") for k, r in done.items() if k.startswith("t30_")}, y))
if temperatures:
    st.subheader("30 units per layer: which temperature?")
    st.markdown("With 300 or more units all T above 8 did about equally well; with 30 units the paper found "
                "**T between 2.5 and 4** clearly best: a tiny net cannot match every detail of very soft targets.")
    st.plotly_chart(viz.temperature_curve(temperatures, t30_errors, len(y)), key="t30_curve")
    verdict = replay.t30_verdict(temperatures, t30_errors)
    st.markdown(f"**This run {verdict.says} with the paper:** {verdict.why}. The Sweeps page repeats this with "
                "several seeds and 800-unit students.")
