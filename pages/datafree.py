"""Data-free distillation: what the teacher dreams (DeepInversion), and a student taught on the dreams alone."""
import functools
import uuid

import streamlit as st

from kdviz import catalog, datafree, train
from kdviz.store import RunError
from kdviz.viz import beyond as viz
from pages import common, job_view

st.title("Data-free distillation")
st.caption("DeepInversion: Yin et al. 2020, *Dreaming to Distill: Data-free Knowledge Transfer via DeepInversion* (CVPR).")
st.markdown(
    "Can a student learn with **no training data at all**? A trained teacher still remembers its data in two "
    "places: its **predictions**, and the **BatchNorm statistics** (mean and variance of every channel) it kept "
    "while training. DeepInversion starts from noise and changes the *pixels* until the teacher says “this is a "
    "3” *and* every BatchNorm layer sees the statistics it saw on real digits, with smoothness priors (total "
    "variation, l2) on top. The student then learns only from the teacher's soft targets on these images, "
    "and is tested on the real MNIST test set.")

ds = common.dataset("mnist")
if ds is None:
    st.stop()
mgr = common.manager()
teachers = catalog.teachers(common.finished_runs("mnist", kinds=("conv",)))
d, s = datafree.SynthesisConfig(), datafree.STUDENT

with st.expander("Dream up images and distil a student", expanded=False):
    if not teachers:
        common.to_the_lab("No convolutional MNIST teacher yet (DeepInversion needs BatchNorm layers): train a "
                          "cnn_l on MNIST in the Training lab, then come back.")
    else:
        teacher = common.pick_run("Teacher (a CNN with BatchNorm)", teachers, key="df_teacher")
        c1, c2, c3 = st.columns(3)
        per_class = c1.number_input("Images per class", 1, 500, d.per_class, key="df_per_class")
        steps = c2.number_input("Optimisation steps per batch", 1, 2000, d.steps, key="df_steps",
                                help=f"Adam on the pixels; {d.batch_size} images are optimised together.")
        epochs = c3.number_input("Student epochs", 1, 200, s["epochs"], key="df_epochs")
        student = c1.selectbox("Student", ["cnn_s", "cnn_xs", "mlp800"], key="df_student")
        T = c2.number_input("Temperature T", 0.5, 50.0, s["T"], step=0.5, key="df_T")
        st.caption(f"Weights: BatchNorm statistics {d.bn_weight:g} (first layer ×{d.first_bn_multiplier:g}), "
                   f"total variation {d.tv_weight:g}, l2 {d.l2_weight:g}; jitter ±{d.jitter} px. The student "
                   f"learns from soft targets only (no labels exist), alpha = 1.")
        if common.action_button("Start", "submit", type="primary", key="df_start"):
            group = f"datafree-{uuid.uuid4().hex[:6]}"
            synthesis = datafree.SynthesisConfig(per_class=int(per_class), steps=int(steps))
            cfg = datafree.student_config(teacher=teacher.id, model=student, epochs=int(epochs), T=float(T), group=group)
            try:
                train.validate(cfg)
                datafree.validate(synthesis)
            except ValueError as e:
                st.error(f"Cannot start: {e}")
            else:
                mgr.submit_task(functools.partial(datafree.run, synthesis=synthesis, student=cfg),
                                "Data-free: DeepInversion + student", group)
                st.session_state["df_group"] = group
                st.rerun()

jobs = [v for v in mgr.list() if (v.group or "").startswith("datafree-")]
runs = [r for r in common.store().list() if r.config.get("method") == "datafree"]
starting = [v.id for v in jobs if v.active and not v.run_ids]


@st.fragment(run_every=1.0 if starting else None)
def wait_for_runs(job_ids: list[str]) -> None:
    """A job that has not made its run yet (queued, loading): its progress, then the page once the run exists."""
    for view in map(mgr.get, job_ids):
        if view.run_ids or not view.active:
            st.rerun()
        job_view.job_progress(view)


wait_for_runs(starting)
if not runs:
    if not starting:
        st.info("No data-free run yet: start one above (about 10 minutes on a laptop CPU with the defaults). "
                "The images appear here while they form.")
    st.stop()
if fresh := [r for r in runs if r.config.get("group") == st.session_state.get("df_group")]:
    st.session_state["df_run"] = fresh[0].id  # the run just started
    del st.session_state["df_group"]
run = common.pick_run("Data-free run", runs, key="df_run", help="Newest first; a running one fills in live.")
job = next((v for v in jobs if run.id in v.run_ids), None)


@st.fragment(run_every=2.0 if job and job.active else None)
def live(run_id: str, polling: bool) -> None:
    """The images as they form and the losses; polls the run store every 2 s while the job runs."""
    if job:
        view = mgr.get(job.id)
        if polling and not view.active:
            st.rerun()
        if view.active:
            job_view.job_progress(view)
            if common.action_button("Cancel", "cancel", key="df_cancel"):
                mgr.cancel(job.id)
        elif view.status == "failed":
            st.error(f"The job failed: {view.reason}")
    try:
        images = common.store().images(run_id)
    except RunError:
        st.caption("The first images appear after a few optimisation steps.")
        return
    st.caption(f"{len(images['targets']):,} images. Under each image: the teacher's confidence that it shows the "
               "class it was made for.")
    for c, pictures, conf in datafree.gallery(images, per_class=10):
        st.image(pictures, width=56, caption=[f"{ds.classes[c]}: {100 * p:.0f} %" for p in conf])
    rows = common.store().metrics(run_id)
    if any(r.get("kind") == "synthesis" for r in rows):
        st.plotly_chart(viz.synthesis_curves(rows), key=f"df_curves_{run_id}")


st.subheader("What the teacher dreams")
live(run.id, bool(job and job.active))

info, summary = datafree.synthesis_info(common.store(), run.id), run.summary
if info and "test_acc" in summary:
    st.subheader("The student taught on dreams alone")
    c1, c2, c3 = st.columns(3)
    c1.metric("Student accuracy on real MNIST test", f"{100 * summary['test_acc']:.2f} %",
              help=f"{summary['test_errors']} errors of {len(ds.test_y):,}; it never saw a real digit.")
    c2.metric("Synthesis", job_view.duration(info["time_s"]), help=f"{info['images']} images")
    c3.metric("Student training", job_view.duration(summary["train_time_s"]),
              help="KD at T on the synthetic images, per-epoch test evaluations included.")
    st.caption(f"Teacher: {run.config.get('teacher')}; device {summary.get('device')}. For comparison, DAFL "
               "(Chen et al. 2019) reports 98.2 % on MNIST with a generator trained on a GPU; this run has a "
               f"CPU budget of minutes and {info['images']:,} images, so expect less. The teacher is "
               f"{100 * info.get('mean_confidence', float('nan')):.1f} % sure of them on average: targets that "
               "near one-hot carry little dark knowledge, even at T. Compare a plain student trained on real "
               "digits on the Transfer sets page.")
