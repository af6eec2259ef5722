"""Training lab: pick a teacher, a student and a method; train in the background and watch it learn."""
import streamlit as st

from kdviz import data, jobs, methods, models, train
from kdviz.viz import training as viz
from pages import common

if st.query_params.get("method") in methods.METHODS:  # a link from the Map preselects a method (issue 20)
    st.session_state["train_method"] = st.query_params.pop("method")

# Live-demo defaults per dataset (CPU friendly): a big teacher, a small student, a subset.
# BatchNorm CNNs need ~200 steps to get going, hence small batches on small subsets.
PRESETS = {
    "mnist": dict(teacher="mlp1200", student="mlp800", epochs=3, batch_size=64, lr=0.05, subset=10000),
    "fashion_mnist": dict(teacher="cnn_l", student="cnn_s", epochs=2, batch_size=32, lr=0.05, subset=5000),
    "cifar10": dict(teacher="resnet20", student="resnet8", epochs=3, batch_size=32, lr=0.05, subset=None),
}
ATTENTION = ("pages/attention.py", "Attention", ":material/visibility:")
RUN_PAGES = {"fitnet": [("pages/hints.py", "Hints (FitNets)", ":material/explore:")], "at": [ATTENTION],
             "kd_at": [ATTENTION], "fsp": [("pages/fsp.py", "FSP matrices", ":material/grid_on:")]}
METHOD_HELP = "  \n".join(f"**{m.label}**" + (f" ({m.paper})" if m.paper else "") for m in methods.METHODS.values())
# Settings only some methods have: config field -> (label, default, step).
METHOD_FIELDS = {"dml": {"cohort": ("Students in the cohort", 2, 1)},
                 "bornagain": {"generations": ("Generations after generation 0", 2, 1)}}

st.title("Training lab")
st.caption("Jobs train in the background: the curves update live and every other page stays usable meanwhile.")
mgr = common.manager()
left, right = st.columns([2, 3], gap="large")

with left:
    st.subheader("Settings")
    ds = common.pick_dataset("train_dataset")
    p = PRESETS[ds]
    method = st.selectbox("Method", list(methods.METHODS), index=list(methods.METHODS).index("kd"),
                          key="train_method", help=METHOD_HELP, format_func=lambda m: methods.METHODS[m].label)
    m = methods.METHODS[method]
    st.caption(f"{m.about}" + (f" :material/description: {m.paper}" if m.paper else ""))
    terms = {t for stage in m.stages(train.TrainConfig()) for t in stage.weights}
    arch = list(models.MODELS)
    role = "student" if method != "plain" else "teacher"  # a plain run is usually a teacher
    student = st.selectbox("Student architecture" if method != "plain" else "Architecture", arch,
                           index=arch.index(p[role]), key=f"{role}_{ds}",
                           help="mlp* are fully connected (no feature maps: no attention or FSP); "
                                "cnn_* and resnet* are convolutional.")
    teacher_run, new_teacher, teacher_epochs, kw = None, None, 1, {}
    if m.needs_teacher:
        runs = common.finished_runs(ds)
        choices = ["an existing run"] if runs else []
        if method != "ensemble":  # an ensemble is made of existing runs
            choices.append("train a new teacher first")
        source = choices and st.radio("Teacher", choices, horizontal=True, key=f"teacher_source_{ds}",
                                      help="A new teacher is trained in the same job, then the student learns from it.")
        if source == "an existing run":
            teacher_run = common.pick_run("Teacher run", runs, key=f"teacher_run_{ds}",
                                          help="Finished runs on this dataset, newest first.")
            if method == "ensemble":
                others = {r.id: r.label for r in runs if r.id != teacher_run.id}
                kw["teachers"] = st.multiselect("More teachers in the ensemble", list(others), key=f"teachers_{ds}",
                                                format_func=others.get)
        elif source:
            if not runs:
                st.caption(f"No finished run on {ds} yet, so the job trains a teacher first.")
            new_teacher = st.selectbox("New teacher architecture", arch, index=arch.index(p["teacher"]),
                                       key=f"new_teacher_{ds}")
            teacher_epochs = st.number_input("Teacher epochs", value=p["epochs"], step=1, key=f"teacher_epochs_{ds}")

    c1, c2 = st.columns(2)
    epochs = c1.number_input("Epochs", value=p["epochs"], step=1, key=f"epochs_{ds}",
                             help="Passes over the training images (of the student's stage, for two-stage methods).")
    batch_size = c2.number_input("Batch size (images)", value=p["batch_size"], step=16, key=f"batch_{ds}")
    lr = c1.number_input("Learning rate", value=p["lr"], step=0.01, format="%.3f", key=f"lr_{ds}",
                         help="SGD with Nesterov momentum 0.9 and a cosine schedule.")
    if "kd" in terms:
        kw["T"] = c2.number_input("Temperature T", value=4.0, step=0.5, key="train_T",
                                  help="Softens both softmaxes: q = softmax(z / T) (Hinton 2015, eq. 1). Must be > 0.")
        kw["alpha"] = c1.number_input("alpha (weight of the soft term)", value=0.9, step=0.05, key="train_alpha",
                                      help="loss = (1 − alpha)·CE + alpha·T²·KL. Between 0 and 1.")
    if "at" in terms:
        kw["beta"] = c2.number_input("beta (attention-transfer weight)", value=1000.0, step=100.0, key="train_beta",
                                     help="Zagoruyko & Komodakis 2017 use 1000 (β/2 per layer pair).")
    if len(m.stages(train.TrainConfig())) > 1:
        kw["hint_epochs"] = c1.number_input("First-stage epochs (hint / FSP)", value=1, step=1, key="train_hint_epochs")
    for name, (label, default, step) in METHOD_FIELDS.get(method, {}).items():
        kw[name] = c1.number_input(label, value=default, step=step, key=f"train_{name}")
    quick = st.checkbox("Quick demo: train on a subset", value=p["subset"] is not None, key=f"quick_{ds}",
                        help="Trains in seconds on a CPU; accuracy is lower than with all images.")
    subset = quick and st.number_input("Training images", value=p["subset"] or 2000, min_value=64, step=1000,
                                       key=f"subset_{ds}")

    shared = dict(dataset=ds, batch_size=int(batch_size), lr=float(lr), train_subset=int(subset) if subset else None)
    student_cfg = train.TrainConfig(model=student, method=method, epochs=int(epochs),
                                    teacher=teacher_run.id if teacher_run else None, **shared, **kw)
    try:
        if new_teacher:
            task = jobs.teacher_then_student(train.TrainConfig(model=new_teacher, epochs=int(teacher_epochs), **shared),
                                             student_cfg)
        else:
            train.validate(student_cfg)
        problem = None
    except ValueError as e:
        problem = str(e)
    if common.dataset(ds) is None:
        problem = f"dataset: {data.TITLES[ds]} is not available here (see the note above)"
    if method == "ensemble" and not kw.get("teachers"):
        problem = f"teachers: an ensemble needs two or more finished teacher runs on {ds} (train them as Plain)"
    if problem:
        st.error(f"Cannot start: {problem}")
    if st.button("Start training", type="primary", disabled=bool(problem), key="train_start"):
        try:
            if new_teacher:
                job_id = mgr.submit_task(task, f"{new_teacher} → {jobs.describe(student_cfg)}")
            else:
                job_id = mgr.submit(student_cfg)
        except ValueError as e:
            st.error(f"Cannot start: {e}")
        else:
            st.session_state["train_job"] = job_id
            st.rerun()  # so the sidebar's monitor starts polling too


def job_panel(job_id: str, polling: bool) -> None:
    """One job, live: progress, cancel, curves; when it ends, the result and where to look at it."""
    view = mgr.get(job_id)
    if polling and not view.active:
        st.rerun()  # finished: the full rerun stops the timer and refreshes the runs table
    run_method = common.store().get(view.run_ids[-1]).config.get("method", "plain") if view.run_ids else "plain"
    if view.active:
        common.job_progress(view)
        if st.button("Cancel job", key=f"cancel_{job_id}", help="Stops within one step; the partial run is kept."):
            mgr.cancel(job_id)
            st.caption("Stopping after the current step…")
    elif view.status == "failed":
        st.error(f"Failed: {view.reason}")
        with st.expander("Details (traceback)"):
            st.code(view.traceback)
    elif view.status == "cancelled":
        kept = " A partial run is kept in the table below, marked cancelled." if view.run_ids else ""
        st.warning(f"{(view.reason or 'cancelled').capitalize()}.{kept}")
    else:
        result = view.result or {}  # one run's summary, or {"teacher": summary, "student": summary}
        parts = {"": result} if "test_acc" in result else {k: v for k, v in result.items()
                                                           if isinstance(v, dict) and "test_acc" in v}
        st.success(f"Done in {common.duration(view.finished - view.started)}.")
        for col, (name, s) in zip(st.columns(max(len(parts), 1)), parts.items()):
            col.metric(f"{name} test accuracy".strip().capitalize(), f"{100 * s['test_acc']:.2f} %",
                       help=f"run {s['run_id']}: {s['test_errors']} test errors, {s['train_time_s']:.0f} s of training")
        st.caption("Look inside this run:")
        links = [("pages/dark_knowledge.py", "Dark knowledge", ":material/dark_mode:"), *RUN_PAGES.get(run_method, []),
                 ("pages/compare.py", "Compare methods", ":material/leaderboard:")]
        for page, label, icon in links:
            st.page_link(page, label=label, icon=icon)
    if view.history:
        st.plotly_chart(viz.loss_figure(view.history, run_method), key=f"loss_{job_id}")
        st.plotly_chart(viz.accuracy_figure(view.history, run_method), key=f"acc_{job_id}")
    elif view.active:
        st.caption("Curves appear after the first logged steps (data and models load first).")


with right:
    st.subheader("Job")
    views = mgr.list()
    if not views:
        st.info("No job yet: choose the settings and press **Start training**.")
    else:
        ids = [v.id for v in views]
        if st.session_state.get("train_job") in ids:
            st.session_state["train_job_pick"] = st.session_state.pop("train_job")
        job_id = st.selectbox("Show job", ids, key="train_job_pick",
                              format_func=lambda i: next(f"{v.label} · job {i}" for v in views if v.id == i))
        active = mgr.get(job_id).active
        st.fragment(job_panel, run_every=1.0 if active else None)(job_id, active)

st.divider()
st.subheader("All runs")
runs = common.store().list()
if not runs:
    st.info("No runs yet. Train one above; it is saved in the run folder and survives a restart.")
else:
    st.dataframe(viz.runs_table(runs), hide_index=True, placeholder="—")
    deletable = [r.id for r in runs if not r.readonly and r.status != "running"]
    with st.expander("Delete a run"):
        if not deletable:
            st.caption("Nothing to delete: shipped pretrained runs and running runs cannot be deleted.")
        else:
            victim = st.selectbox("Run", deletable, key="delete_pick")
            if st.button("Delete…", key="delete_ask"):
                st.session_state["delete_confirm"] = victim
            if st.session_state.get("delete_confirm") == victim:
                st.warning(f"Delete **{victim}**, its checkpoint and metrics? This cannot be undone.")
                yes, no = st.columns(2)
                if yes.button("Yes, delete it", type="primary", key="delete_yes"):
                    common.store().delete(victim)
                    del st.session_state["delete_confirm"]
                    st.rerun()
                if no.button("Keep it", key="delete_no"):
                    del st.session_state["delete_confirm"]
                    st.rerun()
