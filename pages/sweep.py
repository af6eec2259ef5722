"""Sweeps: many small runs over T, student, alpha, method, fraction and seed, read as one picture."""
import functools
import os

import streamlit as st

from kdviz import data, methods, models, sweep, train
from kdviz.viz import sweep as viz
from pages import common, job_view

TEMPERATURES = [1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 12.0, 15.0, 20.0]
ALPHAS = [0.1, 0.3, 0.5, 0.7, 0.9, 0.95, 0.99]
FRACTIONS = [0.05, 0.1, 0.25, 0.5, 1.0]
OUTCOME = {"agrees": st.success, "partly": st.warning, "disagrees": st.error, "cannot tell": st.info}

st.title("Sweeps: which T, which student?")
st.caption("A grid of small distillation runs from one teacher (every point an ordinary run, all in one group) "
           "drawn as one picture: the lecture's answer to “which temperature and weight should I use?”.")
store, mgr = common.store(), common.manager()
all_runs = store.list()
sweep_ids = sweep.sweeps(store, all_runs)


def where_to_run(key: str) -> dict | None:
    """Executor settings as keyword arguments of ``sweep.run``; None (after saying why) when unusable."""
    on_ray = st.radio("Train the points", ["on this machine", "on Ray"], horizontal=True, key=f"{key}_executor",
                      help="Ray: each point is a Ray task; a local Ray on this machine, or a cluster's address.")
    if on_ray == "on this machine":
        workers = st.number_input("Points at a time", 1, 16, sweep.default_workers(), key=f"{key}_workers",
                                  help="Each point is a job of the job manager; this sets how many jobs it runs at "
                                       "once, for every page. One per two CPU cores is a good start.")
        return dict(workers=int(workers))
    if not sweep.ray_available():
        st.error(sweep.RAY_MISSING)
        return None
    c1, c2, c3 = st.columns([2, 1, 1])
    address = c1.text_input("Ray address", os.environ.get(sweep.RAY_ENV, ""), key=f"{key}_address",
                            help="Empty: start a local Ray here. 'auto': the cluster this machine belongs to. "
                                 "ray://HOST:10001: a remote cluster.")
    cpus = c2.number_input("CPUs per point", 0.5, 64.0, 1.0, step=0.5, key=f"{key}_cpus")
    gpus = c3.number_input("GPUs per point", 0.0, 8.0, 0.0, step=0.25, key=f"{key}_gpus")
    return dict(ray_address=address.strip(), cpus_per_point=cpus, gpus_per_point=gpus)


def start(plan: sweep.Plan, executor: dict) -> None:
    """Its missing points as jobs of the sweep's group, or one job that sends them to Ray."""
    if "workers" in executor:
        mgr.max_concurrent = executor["workers"]
        sweep.submit(mgr, plan)
    else:
        mgr.submit_task(functools.partial(sweep.run_on_ray, group=plan.group, **executor),
                        f"sweep on Ray · {len(plan.points())} points", plan.group)
    st.session_state["sweep_pick"] = plan.group
    st.rerun()


def start_form() -> None:
    dataset = common.pick_dataset("sweep_dataset")
    if common.dataset(dataset) is None:
        return
    # Runs trained from labels alone first, MLPs (Hinton's §3 setting) before the others.
    teachers = sorted(common.finished_runs(dataset),
                      key=lambda r: (bool(r.config.get("teacher")), not r.config.get("model", "").startswith("mlp")))
    if not teachers:
        common.to_the_lab(f"A sweep needs a finished teacher run on {data.TITLES[dataset]}: train one first.")
        return
    teacher = common.pick_run("Teacher run", teachers, key=f"sweep_teacher_{dataset}")
    arch, c1, c2 = list(models.MODELS), *st.columns(2)
    mlp = teacher.config.get("model", "").startswith("mlp")
    students = c1.multiselect("Students", arch, ["mlp30", "mlp800"] if mlp else [teacher.config.get("model")],
                              key=f"sweep_students_{teacher.id}", help="Hinton 2015 §3 compares 30 and 300+ units.")
    temps = c2.multiselect("Temperatures T", TEMPERATURES, [1.0, 2.5, 4.0, 8.0, 20.0], key="sweep_T")
    alphas = c1.multiselect("alpha (weight of the soft term)", ALPHAS, [0.9], key="sweep_alpha")
    kinds = [m for m in methods.METHODS if m not in ("ensemble", "bornagain", "dml") and not methods.get(m).page]
    chosen = c2.multiselect("Methods", kinds, ["kd"], key="sweep_methods", format_func=lambda m: methods.get(m).label)
    fractions = c1.multiselect("Fraction of the transfer set", FRACTIONS, [1.0], key="sweep_fraction")
    seeds = c2.number_input("Seeds per point", 1, 10, 2, key="sweep_seeds", help="Two or more give error bars.")
    epochs = c1.number_input("Epochs per point", 1, 200, 2, key="sweep_epochs")
    subset = c2.number_input("Training images (0 = all)", 0, None, 5000, step=1000, key=f"sweep_subset_{dataset}")
    executor = where_to_run("sweep_new")
    given = {"model": students, "method": chosen, "T": temps, "alpha": alphas, "fraction": fractions,
             "seed": list(range(int(seeds)))}
    try:
        if not all(given.values()):
            raise ValueError("pick at least one value of every setting")
        base = dict(dataset=dataset, teacher=teacher.id, epochs=int(epochs), train_subset=int(subset) or None,
                    augment=False, **{a: v[0] for a, v in given.items()})  # no augmentation: teacher logits cached
        n = len(sweep.Plan("", {}, given).points())
    except ValueError as e:
        st.error(f"Cannot start: {e}")
        return
    st.caption(f"{n} points: " + " × ".join(f"{len(v)} {sweep.AXIS_TITLES[a]}" for a, v in given.items() if len(v) > 1)
               + ". Each is an ordinary run in one group: an interrupted sweep resumes where it stopped.")
    if common.action_button(f"Start {n} runs", "submit", type="primary", key="sweep_start", disabled=executor is None):
        try:
            plan = sweep.create(store, train.TrainConfig(**base),
                                {a: v for a, v in given.items() if len(v) > 1})
        except ValueError as e:
            st.error(f"Cannot start: {e}")
            return
        start(plan, executor)


with st.expander("Start a sweep", expanded=not sweep_ids, icon=":material/play_arrow:"):
    start_form()

st.subheader("Results")
if not sweep_ids:
    common.to_the_lab("No sweep yet: start one above, or from a terminal: `python -m kdviz sweep --teacher RUN_ID "
                      "--student mlp30 mlp800 --T 1 2.5 4 8 20 --seeds 2`.")
    st.stop()
if st.session_state.get("sweep_pick") not in sweep_ids:
    st.session_state.pop("sweep_pick", None)
group = st.selectbox("Sweep (newest first)", sweep_ids, key="sweep_pick")
plan = sweep.load(store, group, all_runs)
training = sweep.live(store, group, mgr.list(), mgr.max_concurrent)


@st.fragment(run_every=2.0 if training else None)
def live(polling: bool) -> None:
    """Progress, cancel or resume, and the figures, redrawn every 2 s while the sweep trains."""
    views = [v for v in mgr.list() if v.group == group]
    now = sweep.live(store, group, views, mgr.max_concurrent)
    if polling and not now:
        st.rerun()  # it ended: redraw the page without polling
    runs = common.store().list()
    n = sweep.counts(plan, runs)
    c = st.columns(4)
    c[0].metric("Points done", f"{n.done} / {n.total}")
    if now:  # training now, in this app or elsewhere (a Ray sweep started from a terminal)
        c[1].metric("Running", now.running)
        c[2].metric("Queued", now.queued)
        c[3].metric("Time left", "…" if now.eta_s is None else job_view.duration(now.eta_s),
                    help="Estimated from the points finished so far.")
        for view in [v for v in views if v.status == "running"]:
            job_view.job_progress(view)
        active = [v for v in views if v.active]
        if active and common.action_button("Cancel the sweep", "cancel", key="sweep_cancel",
                                help="Running points stop, queued ones never start (Ray tasks are cancelled); "
                                     "finished points stay, and the sweep can resume."):
            for view in active:
                mgr.cancel(view.id)
    else:
        c[1].metric("Missing", n.missing, help="Not trained yet, or not finished: resuming trains them.")
        c[2].metric("Failed or stopped", n.failed)
    if not now and n.missing and sweep.resumable(store, group):
        executor = where_to_run("sweep_resume")
        if common.action_button(f"Resume: train the {n.missing} missing points", "submit", key="sweep_resume",
                                disabled=executor is None):
            start(plan, executor)
    for r in sweep.point_runs(plan, runs).values():
        if r.status in ("failed", "damaged"):
            st.warning(f"Point {r.config.get('label', r.id)} {r.status}: {r.reason or r.error}")
    figures(sweep.frame(plan, runs))


def figures(points) -> None:
    if points.empty:
        st.info("The figures appear when the first point is done.")
        return
    swept = [a for a in plan.axes if a != "seed"] or ["T"]
    c1, c2, c3 = st.columns(3)
    metric = c1.radio("Measure", list(sweep.METRICS), key="sweep_metric", horizontal=True)
    numeric = [a for a in swept if a not in ("model", "method")]
    x = c2.selectbox("Across", swept, index=swept.index(numeric[0]) if numeric else 0, key="sweep_x",
                     format_func=sweep.AXIS_TITLES.get)
    rows = [a for a in swept if a != x]
    y = c3.selectbox("Rows / lines", rows or [None], key="sweep_y",
                     format_func=lambda a: sweep.AXIS_TITLES.get(a, "—"))
    for axis in [a for a in swept if a not in (x, y)]:  # every other swept axis: one value at a time
        value = st.select_slider(sweep.AXIS_TITLES[axis], sorted(points[axis].unique()), key=f"sweep_fix_{axis}")
        points = points[points[axis] == value]
    cells = sweep.cells(points, [x] + ([y] if y else []), metric)
    left, right = st.columns([3, 2], gap="large")
    tabs = left.tabs(["Heatmap", "Lines with error bars"])
    lower = sweep.METRICS[metric]
    if y:
        tabs[0].plotly_chart(viz.heatmap(cells, x, y, metric, lower, sweep.AXIS_TITLES), key="sweep_heat")
    else:
        tabs[0].info("A heatmap needs two swept axes; see the lines.")
    tabs[1].plotly_chart(viz.lines(cells, x, y, metric, lower, sweep.AXIS_TITLES), key="sweep_lines")
    with right:
        st.markdown("**Hinton et al. 2015, §3, and this sweep**")
        for v in sweep.hinton_check(points):
            OUTCOME[v.outcome](f"{v.claim}\n\nThis sweep **{v.says}** with the paper: {v.why}.")
        images = store.get(points.run.iloc[0]).summary.get("train_images")
        st.caption(f"Each point: {plan.base.get('epochs')} epochs on {f'{images:,}' if images else 'the'} "
                   f"{data.TITLES.get(plan.base.get('dataset'), '')} training images, one fixed teacher. The paper "
                   "trained longer, on 60,000: compare the pattern across T and width, not the error counts "
                   "(test errors, on the test set).")
    with st.expander(f"The {len(points)} points"):
        st.dataframe(points, hide_index=True, key="sweep_points")


live(bool(training))
