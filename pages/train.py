"""Training lab: pick a teacher, a student and a method; train in the background and watch it learn."""
import functools

import streamlit as st

from kdviz import catalog, data, jobs, methods, models, train
from kdviz.viz import training as viz
from pages import common, job_view

# Methods with a page of their own (data-free, privileged) run there, not here.
LAB_METHODS = [name for name, m in methods.METHODS.items() if not m.page]
if st.query_params.get("method") in LAB_METHODS:  # a link from the Map preselects a method (issue 20)
    st.session_state["train_method"] = st.query_params.pop("method")

# Live-demo defaults per dataset, for a 2-core laptop: a teacher that is quick to run, a small
# student, a subset, no augmentation (so the teacher's soft targets are computed once), and a
# plain twin trained the same way, so the result has something to be compared with.
# BatchNorm CNNs need ~200 steps to get going, hence small batches on small subsets.
PRESETS = {
    "mnist": dict(teacher="mlp1200", student="mlp800", epochs=3, batch_size=64, lr=0.05, subset=10000, beta=100.0),
    "fashion_mnist": dict(teacher="cnn_l", student="cnn_s", epochs=2, batch_size=32, lr=0.05, subset=5000, beta=100.0),
    "cifar10": dict(teacher="resnet20", student="resnet8", epochs=3, batch_size=32, lr=0.05, subset=None, beta=1000.0),
}
BETA_HELP = ("Applied to each layer pair's mean squared difference of normalised attention maps. Zagoruyko & "
             "Komodakis 2017 use β = 1000 for CIFAR ResNets; on MNIST-sized CNNs the attention term is then "
             "about 3 times the label loss and the student learns worse than a plain one, so 100 here.")
METHOD_HELP = "  \n".join(f"**{m.label}**" + (f" ({m.paper})" if m.paper else "")
                          for m in map(methods.get, LAB_METHODS))
LIM = train.LIMITS  # every number field is bounded: what it shows is what the job uses

st.title("Training lab")
st.caption("Jobs train in the background, in their own process: the curves update live and every other page "
           "stays usable meanwhile.")
mgr = common.manager()
left, right = st.columns([2, 3], gap="large")

with left:
    st.subheader("Settings")
    ds = common.pick_dataset("train_dataset")
    p = PRESETS[ds]
    method = st.selectbox("Method", LAB_METHODS, index=LAB_METHODS.index("kd"),
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
        teachers = catalog.teachers(common.finished_runs(ds))
        # The preset's teacher architecture first (quick to run), then the most accurate.
        teachers.sort(key=lambda r: r.config.get("model") != p["teacher"])  # stable: most accurate first within
        choices = ["an existing run"] if teachers else []
        if method != "ensemble":  # an ensemble is made of existing runs
            choices.append("train a new teacher first")
        source = choices and st.radio("Teacher", choices, horizontal=True, key=f"teacher_source_{ds}",
                                      help="A new teacher is trained in the same job, then the student learns from it.")
        if source == "an existing run":
            teacher_run = common.pick_run("Teacher run", teachers, key=f"teacher_run_{ds}",
                                          help=f"Finished runs trained without a teacher on {data.TITLES[ds]}: "
                                               f"{p['teacher']} runs first (quick to run), then by accuracy.")
            if method == "ensemble":
                others = {r.id: catalog.label(r) for r in teachers if r.id != teacher_run.id}
                kw["teachers"] = st.multiselect("More teachers in the ensemble", list(others), key=f"teachers_{ds}",
                                                format_func=others.get)
        elif source:
            if not teachers:
                st.caption(f"No finished teacher on {data.TITLES[ds]} yet, so the job trains one first.")
            new_teacher = st.selectbox("New teacher architecture", arch, index=arch.index(p["teacher"]),
                                       key=f"new_teacher_{ds}")
            teacher_epochs = st.number_input("Teacher epochs", *LIM["epochs"], p["epochs"], step=1,
                                             key=f"teacher_epochs_{ds}")

    c1, c2 = st.columns(2)
    epochs = c1.number_input("Epochs", *LIM["epochs"], p["epochs"], step=1, key=f"epochs_{ds}",
                             help="Passes over the training images (of the student's stage, for two-stage methods).")
    batch_size = c2.number_input("Batch size (images)", *LIM["batch_size"], p["batch_size"], step=16,
                                 key=f"batch_{ds}")
    lr = c1.number_input("Learning rate", *LIM["lr"], p["lr"], step=0.01, format="%.4g", key=f"lr_{ds}",
                         help="SGD with Nesterov momentum 0.9 and a cosine schedule.")
    if "kd" in terms:
        kw["T"] = c2.number_input("Temperature T", *LIM["T"], 4.0, step=0.5, key="train_T",
                                  help="Softens both softmaxes: q = softmax(z / T) (Hinton 2015, eq. 1).")
        kw["alpha"] = c1.number_input("alpha (weight of the soft term)", *LIM["alpha"], 0.9, step=0.05,
                                      key="train_alpha", help="loss = (1 − alpha)·CE + alpha·T²·KL.")
    if "at" in terms:
        kw["beta"] = c2.number_input("beta (attention-transfer weight)", *LIM["beta"], p["beta"], step=50.0,
                                     key=f"train_beta_{ds}", help=BETA_HELP)
    if len(m.stages(train.TrainConfig())) > 1:
        kw["hint_epochs"] = c1.number_input("First-stage epochs (hint / FSP)", *LIM["hint_epochs"], 1, step=1,
                                            key="train_hint_epochs")
    for name, (label, step) in m.settings.items():  # the settings only this method has
        default = getattr(train.TrainConfig(), name)
        kw[name] = (st.checkbox(label, value=default, key=f"train_{name}") if isinstance(default, bool) else
                    c1.number_input(label, *{**LIM, **m.limits}.get(name, (None, None)), default, step=step,
                                    format=None if step >= 0.01 else "%.4f", key=f"train_{name}"))
    quick = st.checkbox("Quick demo: train on a subset", value=p["subset"] is not None, key=f"quick_{ds}",
                        help="Trains in seconds on a CPU; accuracy is lower than with all images.")
    subset = quick and st.number_input("Training images", 64, data.TRAIN_SIZES[ds], p["subset"] or 2000, step=1000,
                                       key=f"subset_{ds}")
    augment = st.checkbox("Augment: shift (or crop and flip) every image", value=False, key=f"augment_{ds}",
                          help="Usually better accuracy, but slower: the teacher must then see every shifted "
                               "image, instead of giving its soft targets once.")
    twin = m.needs_teacher and st.checkbox("Also train a plain twin (same student, labels only)", value=True,
                                           key=f"twin_{ds}", help="The baseline the student is compared with "
                                                                  "when the job ends: did the teacher help?")

    shared = dict(dataset=ds, batch_size=int(batch_size), lr=float(lr), augment=augment,
                  train_subset=int(subset) if subset else None)
    student_cfg = train.TrainConfig(model=student, method=method, epochs=int(epochs),
                                    teacher=teacher_run.id if teacher_run else None, **shared, **kw)
    try:
        teacher_cfg = train.TrainConfig(model=new_teacher, epochs=int(teacher_epochs), **shared) if new_teacher else None
        task = jobs.lesson(student_cfg, teacher_cfg, twin) if (new_teacher or twin) else train.validate(student_cfg)
        problem = None
    except ValueError as e:
        problem = str(e)
    if common.dataset(ds) is None:
        problem = f"dataset: {data.TITLES[ds]} is not available here (see the note above)"
    if method == "ensemble" and not kw.get("teachers"):
        problem = f"teachers: an ensemble needs two or more finished teacher runs on {ds} (train them as Plain)"
    if problem:
        st.error(f"Cannot start: {problem}")
    if common.action_button("Start training", "submit", type="primary", disabled=bool(problem), key="train_start"):
        try:
            if new_teacher or twin:
                label = jobs.describe(student_cfg) + (" + plain twin" if twin else "")
                job_id = mgr.submit_task(task, f"{new_teacher} → {label}" if new_teacher else label)
            else:
                job_id = mgr.submit(student_cfg)
        except ValueError as e:
            st.error(f"Cannot start: {e}")
        else:
            st.session_state["train_job"] = job_id
            st.rerun()  # so the sidebar's monitor starts polling too

with right:
    st.subheader("Job")
    views = mgr.list()
    if not views:
        st.info("No job yet: choose the settings and press **Start training**.")
    else:
        labels = {v.id: f"{v.label} · job {v.id}" for v in views}
        if st.session_state.get("train_job") in labels:
            st.session_state["train_job_pick"] = st.session_state.pop("train_job")
        job_id = st.selectbox("Show job", list(labels), key="train_job_pick", format_func=labels.get)
        job_view.job_panel(job_id)

st.divider()
st.subheader("All runs")
runs = common.store().list()
if not runs:
    st.info("No runs yet. Train one above; it is saved in the run folder and survives a restart.")
else:
    st.dataframe(viz.runs_table(runs), hide_index=True, placeholder="—")
    deletable = [r.id for r in runs if not r.readonly and r.status != "running"]
    with st.expander("Delete a run"):
        victim = st.selectbox("Run (shipped and running runs cannot be deleted)", deletable, key="delete_pick")
        if common.action_button("Delete…", "delete", key="delete_ask", disabled=not victim):
            st.session_state["delete_confirm"] = victim
        if victim and st.session_state.get("delete_confirm") == victim:
            st.warning(f"Delete **{victim}**, its checkpoint and metrics? This cannot be undone.")
            yes, no = st.columns(2)
            if common.action_button("Yes, delete it", "delete", yes, type="primary", key="delete_yes"):
                common.store().delete(victim)
                del st.session_state["delete_confirm"]
                st.rerun()
            if no.button("Keep it", key="delete_no"):
                del st.session_state["delete_confirm"]
                st.rerun()
    with st.expander("Resume a run"):
        pick = st.selectbox("Interrupted or cancelled run", [r.id for r in runs if train.resumable(r)],
                            key="resume_pick")
        if common.action_button("Resume from its last epoch", "submit", key="resume_start", disabled=not pick):
            st.session_state["train_job"] = mgr.submit_task(functools.partial(train.resume_task, run_id=pick),
                                                             f"resume {pick}")
            st.rerun()
