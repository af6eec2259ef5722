"""Transfer-set mismatch: one teacher, one student, different transfer sets, all tested on MNIST."""
import functools

import streamlit as st

from kdviz import catalog, transfer
from kdviz.store import RunError
from kdviz.viz import beyond as viz
from pages import common, job_view

WHY = """
**Why the student fails on another domain.** Distillation copies the teacher's function only *where the
transfer set puts images*. On MNIST digits, the student copies the teacher where the test digits are. On
Fashion-MNIST clothes, or on noise, it copies the teacher's answers for inputs unlike any digit: the
teacher was never fitted there, so its outputs are arbitrary (often one confident class for everything)
and say little about how digits differ. The student then knows the teacher well in the wrong place and
not at all where it is tested. A few percent of real digits carry far more (Hinton et al. 2015 §4: soft
targets let a student learn from 3 % of the data), and the data-free images sit in between: made to look
like digits to the teacher, they cover the teacher's digit regions only partly.
"""

st.title("Transfer sets")
st.caption("What if the transfer set is not the teacher's data? One MNIST teacher, one student architecture, "
           "five transfer sets, every student tested on the real MNIST test set.")
st.markdown(WHY)
st.info("Only MNIST images come with labels. So that every bar is comparable, **every distilled student learns "
        "from the teacher's soft targets only** (alpha = 1, no label term), and foreign images are normalised "
        "like MNIST, as the teacher's own inputs were. Every transfer set gets the same number of training steps.")

ds = common.dataset("mnist")
if ds is None:
    st.stop()
mgr = common.manager()
teachers = catalog.teachers(common.finished_runs("mnist"))
synthetic = [r for r in common.store().list() if r.config.get("method") == "datafree" and r.status == "done"]

with st.expander("Run the experiment", expanded=False):
    if not teachers:
        common.to_the_lab("No MNIST teacher yet: train one (e.g. cnn_l) in the Training lab, then come back.")
    else:
        d = transfer.TransferConfig(teacher="")
        teacher = common.pick_run("Teacher", teachers, key="tr_teacher")
        c1, c2, c3 = st.columns(3)
        student = c1.selectbox("Student", ["cnn_s", "cnn_xs", "mlp800"], key="tr_student")
        images = c2.number_input("Images per transfer set", 500, 60000, d.images, step=500, key="tr_images")
        epochs = c3.number_input("Epochs (over that many images)", 1, 50, d.epochs, key="tr_epochs")
        fraction = c1.number_input("The few-% set: fraction of MNIST", 0.001, 0.5, d.fraction, step=0.01,
                                   format="%.3f", key="tr_fraction")
        synth = common.pick_run("Data-free images (optional)", synthetic, key="tr_synthetic",
                                help="The images a data-free run synthesised from its teacher.") if synthetic else None
        if not synthetic:
            st.caption("No data-free run yet: its bar is left out (make one on the Data-free page).")
        if common.action_button("Start", "submit", type="primary", key="tr_start"):
            cfg = transfer.TransferConfig(teacher=teacher.id, student=student, images=int(images), epochs=int(epochs),
                                          fraction=float(fraction), synthetic=synth.id if synth else "",
                                          group=transfer.new_group_id())
            job_view.start_experiment(lambda: transfer.configs(cfg, transfer.sizes(cfg, common.store())),
                                      functools.partial(transfer.run, cfg=cfg), "Transfer sets", cfg.group,
                                      "tr_pick")

groups = transfer.experiments(common.store().list())
group, job = job_view.pick_experiment(groups, transfer.GROUP_PREFIX, "tr_pick",
                                      "No experiment yet: start one above (six small students, about 15 "
                                      "minutes on a laptop CPU).")


@st.fragment(run_every=2.0 if job and job.active else None)
def chart(polling: bool) -> None:
    """The bars, refreshed as each student finishes."""
    if job:
        view = mgr.get(job.id)
        if polling and not view.active:
            st.rerun()
        if view.active:
            job_view.job_progress(view)
        elif view.status == "failed":
            st.error(f"The experiment failed: {view.reason}")
    runs = transfer.experiments(common.store().list()).get(group, {})
    rows = transfer.bars(runs)
    if not rows:
        st.caption("The bars appear as each student finishes.")
        return
    plain = runs.get("plain")
    plain_acc = plain.summary.get("test_acc") if plain and plain.status == "done" else None
    teacher_id = next(iter(runs.values())).config["teacher"]
    try:
        teacher_acc = common.store().get(teacher_id).summary.get("test_acc")
    except RunError:  # the teacher run was deleted since: the bars stand without its line
        teacher_acc = None
    st.plotly_chart(viz.transfer_bars(rows, plain_acc, teacher_acc), key=f"tr_bars_{len(rows)}")
    st.dataframe([{"transfer set": r["name"], "images": r["images"], "MNIST test accuracy (%)":
                   round(100 * r["test_acc"], 2), "run": r["run_id"]} for r in rows], hide_index=True)


chart(bool(job and job.active))
