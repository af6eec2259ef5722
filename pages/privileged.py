"""Privileged distillation: a teacher passes on what only it could see (Lopez-Paz et al. 2016)."""
import functools

import streamlit as st

from kdviz import catalog, models, privileged, views
from kdviz.viz import beyond as viz
from pages import common, job_view

st.title("Privileged distillation")
st.caption("Lopez-Paz, Bottou, Schölkopf & Vapnik 2016, *Unifying distillation and privileged information* (ICLR).")
st.markdown(
    "Can a teacher pass on what **only it could see**? Here the teacher learned from clean, full-resolution "
    "digits. The student never sees one: it gets only a **degraded view** (7×7 pixels, the left half, or heavy "
    "noise). During training the teacher looks at the *clean* version of each training image and gives its "
    "soft targets; the student, looking at the degraded version of the same image, learns to match them: "
    "loss = (1 − λ)·CE + λ·T²·KL(teacher(clean) ‖ student(degraded)). The paper's MNIST student saw 7×7 "
    "digits and learned from a few hundred examples: privileged information helps most when examples are few.")

ds = common.dataset("mnist")
if ds is None:
    st.stop()
mgr = common.manager()
teachers = catalog.teachers(common.finished_runs("mnist"))

with st.expander("Train both students", expanded=False):
    if not teachers:
        common.to_the_lab("No MNIST teacher yet: train one (e.g. cnn_l) in the Training lab, then come back.")
    else:
        d = privileged.PrivilegedConfig(teacher="")
        teacher = common.pick_run("Teacher (trained on clean images)", teachers, key="pi_teacher")
        c1, c2, c3 = st.columns(3)
        view = c1.selectbox("What the student sees", list(views.VIEWS), format_func=lambda v: views.VIEWS[v].label,
                            key="pi_view")
        student = c2.selectbox("Student", ["cnn_s", "cnn_xs", "mlp800"], key="pi_student")
        subset = c3.number_input("Training examples", 100, 60000, d.train_subset, step=100, key="pi_subset")
        alpha = c1.number_input("λ (weight of the teacher's soft targets)", 0.0, 1.0, d.alpha, step=0.1, key="pi_alpha")
        T = c2.number_input("Temperature T", 0.5, 50.0, d.T, step=0.5, key="pi_T")
        epochs = c3.number_input("Epochs", 1, 200, d.epochs, key="pi_epochs")
        if common.action_button("Start", "submit", type="primary", key="pi_start"):
            cfg = privileged.PrivilegedConfig(teacher=teacher.id, view=view, student=student, train_subset=int(subset),
                                              alpha=float(alpha), T=float(T), epochs=int(epochs),
                                              group=privileged.new_group_id())
            job_view.start_experiment(functools.partial(privileged.configs, cfg),
                                      functools.partial(privileged.run, cfg=cfg), "Privileged: two students",
                                      cfg.group, "pi_pick")

groups = privileged.experiments(common.store().list())
group, job = job_view.pick_experiment(groups, privileged.GROUP_PREFIX, "pi_pick",
                                      "No experiment yet: start one above (two small students, a few minutes "
                                      "on a laptop CPU).")


@st.fragment(run_every=2.0 if job and job.active else None)
def progress(polling: bool) -> None:
    if job:
        view = mgr.get(job.id)
        if polling and not view.active:
            st.rerun()
        if view.active:
            job_view.job_progress(view)
        elif view.status == "failed":
            st.error(f"The experiment failed: {view.reason}")


progress(bool(job and job.active))
runs = {role: r for role, r in groups.get(group, {}).items() if r.status == "done" and "test_acc" in r.summary}
if not runs:
    st.stop()
any_run = next(iter(runs.values()))
teacher_id, view = any_run.config["teacher"], any_run.config["view"]
teacher = privileged.teacher_accuracy(runs)  # measured by the privileged run at its end: nothing to compute here
students = {role: r.summary["test_acc"] for role, r in runs.items()}
st.plotly_chart(viz.privileged_bars(teacher, students, views.VIEWS[view].label), key="pi_bars")
c, p = any_run.config, runs.get("privileged", any_run).config
st.caption(f"Teacher {teacher_id}. Students {models.with_view(c['model'], view)}: {any_run.summary['train_images']:,} "
           f"training examples, {c['epochs']} epochs; the privileged one with λ = {p['alpha']:g}, T = {p['T']:g}.")
if {"labels", "privileged"} <= set(runs) and teacher:
    gain = 100 * (students["privileged"] - students["labels"])
    drop = f"{100 * teacher['clean']:.1f} % to {100 * teacher['degraded']:.1f} %"
    if gain > 0:
        st.markdown(
            f"**The privileged teacher adds {gain:.1f} points** on the degraded view. The teacher itself drops from "
            f"{drop} when it must look at degraded images it never trained on, so what helps the student is not "
            "the teacher's eyes but its *knowledge*: soft targets computed from the clean image tell the student "
            "which digits a blurry or partial example resembles, which a label alone cannot.")
    else:
        st.markdown(
            f"**Here the privileged teacher did not help ({gain:+.1f} points).** (The teacher drops from {drop} on "
            "the degraded view.) Privileged information helps most when examples are few: try fewer training "
            "examples, or another λ or T.")
