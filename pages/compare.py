"""Compare methods: one student per method and seed, one teacher, side by side."""
import streamlit as st

from kdviz import catalog, compare, data, jobs, methods, models, train
from kdviz.store import RunError
from kdviz.viz import compare as viz
from pages import common

# Default student per teacher: FSP needs equal channel widths (Yim et al. 2017).
STUDENT_FOR = {"cnn_l": "cnn_s", "cnn_s": "cnn_s", "resnet56": "resnet8", "resnet20": "resnet8",
               "resnet32x4": "resnet8x4", "wrn40_2": "wrn16_2", "wrn40_1": "wrn16_1", "mlp1200": "mlp800"}
PNG = {"toImageButtonOptions": {"format": "png", "scale": 2}}

st.title("Compare distillation methods")
st.caption("One student per method and seed (a plain student, KD, FitNets, attention transfer, FSP, ... in groups "
           "that each ask one question), all with the same teacher, student architecture, data, epochs and seeds: "
           "which helps, by how much, and at what cost.")
store = common.store()
all_runs = store.list()
# Newest first, but groups whose dataset is missing here (e.g. CIFAR-10 offline) last.
group_ids = sorted(compare.groups(all_runs), key=lambda g: not common.has_dataset(
    next(r.config.get("dataset", "mnist") for r in all_runs if r.config.get("group") == g)))


@st.cache_data(show_spinner="Timing forward passes (batch 1 and 64)…")
def latency(arch: str, dataset: str, device: str, asked: int) -> dict[int, float]:
    """Cached until the lecturer asks for a new measurement (``asked`` counts the requests)."""
    return compare.measure_latency(arch, dataset, device)


def start_form() -> None:
    """Pick teacher, student and budget; queue one job per method and seed as one group."""
    dataset = common.pick_dataset("cmp_dataset")
    if common.dataset(dataset) is None:  # says how to add it
        return
    teachers = catalog.teachers(common.finished_runs(dataset))
    if not teachers:
        common.to_the_lab(f"There is no finished run on {data.TITLES[dataset]} to act as the teacher. Train one first "
                          "(e.g. cnn_l for MNIST, resnet56 for CIFAR-10) in the Training lab, then come back.")
        return
    teacher = common.pick_run("Teacher run", teachers, key=f"cmp_teacher_{dataset}")
    arch = list(models.MODELS)
    default = STUDENT_FOR.get(teacher.config.get("model"), teacher.config.get("model", arch[0]))
    c1, c2, c3 = st.columns(3)
    student = c1.selectbox("Student architecture", arch, index=arch.index(default), key=f"cmp_student_{teacher.id}",
                           help="AT and FSP need a convolutional student; FSP also needs the teacher's channel "
                                "widths (cnn_l → cnn_s, resnet56/resnet20 → resnet8).")
    epochs = c2.number_input("Epochs per run", 1, 200, 3, key="cmp_epochs",
                             help="FitNets and FSP first fit features for one more epoch.")
    seeds = c3.number_input("Seeds per method", 1, 5, 1, key="cmp_seeds",
                            help="With 2 or more seeds the table shows mean ± standard deviation.")
    subset = c1.number_input("Training images (0 = all)", 0, None, 5000, step=1000, key=f"cmp_subset_{dataset}",
                             help="A subset keeps a comparison to minutes on a laptop CPU.")
    batch_size = c2.number_input("Batch size (images)", 8, 1024, 64, step=16, key="cmp_batch")
    compared = c3.selectbox("Methods", list(compare.SETS), key="cmp_set",
                            help="Each group answers one question; every group has a plain student as baseline.")
    base = train.TrainConfig(dataset=dataset, model=student, teacher=teacher.id, epochs=int(epochs),
                             batch_size=int(batch_size), train_subset=int(subset) or None)
    try:
        configs, notes = compare.plan(store, base, int(seeds), compare.SETS[compared])
    except ValueError as e:
        st.error(f"Cannot start: {e}")
        return
    for note in notes:
        st.warning(note)
    st.caption("Will queue: " + ", ".join(dict.fromkeys(methods.get(c.method).label for c in configs))
               + f" ({len(configs)} runs, one after another).")
    if common.action_button(f"Queue {len(configs)} runs", "submit", type="primary", key="cmp_start"):
        for cfg in configs:
            common.manager().submit(cfg, group=cfg.group,
                                    label=f"compare · {methods.get(cfg.method).label} · seed {cfg.seed}")
        st.rerun()  # the sidebar starts following the group


with st.expander("Start a comparison", expanded=not group_ids, icon=":material/play_arrow:"):
    start_form()

cohorts, generations = compare.teacher_free(all_runs)
if len(cohorts) or len(generations):
    with st.expander("Without a fixed teacher: mutual learning and born-again networks", icon=":material/groups:"):
        if len(cohorts):
            st.markdown(f"**Deep mutual learning** ({methods.get('dml').paper}): students trained together, "
                        "each learning from the labels and from the others. One row per student of each cohort.")
            st.dataframe(cohorts, hide_index=True, key="cmp_cohorts", placeholder="—",
                         column_config={"test accuracy (%)": st.column_config.NumberColumn(format="%.2f")})
        if len(generations):
            st.markdown(f"**Born-again networks** ({methods.get('bornagain').paper}): each generation distils "
                        "from the previous one, with the same architecture.")
            st.plotly_chart(viz.generation_curves(generations), config=PNG, key="cmp_generations")

st.subheader("Results")
if not group_ids:
    common.to_the_lab("No comparison has been run yet. Start one above (it appears here when its first run starts), "
                      "or from a terminal: `python -m kdviz compare --teacher RUN_ID --student cnn_s --seeds 3`. "
                      "It needs a finished teacher run; train one in the Training lab.")
    st.stop()

in_group = {g: [r for r in all_runs if r.config.get("group") == g] for g in group_ids}
group = st.selectbox("Comparison group (newest first)", group_ids, format_func=lambda g: (
    f"{g} · {data.TITLES.get(in_group[g][0].config.get('dataset'), '?')} · "
    f"student {in_group[g][0].config.get('model', '?')} · {len(in_group[g])} runs"))
dataset = in_group[group][0].config.get("dataset", "mnist")
active = [j for j in common.manager().list() if j.group == group and j.active]
if active:
    st.info(f"{len(active)} run(s) of this group are still queued or training (see the sidebar); "
            "the table shows the finished ones.")
    st.button("↻ Add the runs finished since", key="cmp_refresh")  # a click reruns the page
for r in in_group[group]:
    if r.status in ("failed", "damaged"):
        st.warning(f"Run {r.id} {r.status}: {r.reason or r.error}")

finished = {r.id: r for r in common.finished_runs(dataset) if r.config.get("teacher")}
chosen = st.multiselect("Runs to compare", list(finished),
                        default=[r.id for r in in_group[group] if r.id in finished],
                        format_func=lambda i: f"{catalog.label(finished[i])} · seed {finished[i].config.get('seed')}",
                        help="Defaults to the finished runs of the group; add others that used the same teacher.")
runs = [finished[i] for i in chosen]
if not runs:
    st.warning("No finished run is selected yet: pick at least one, or wait for the group's first run to finish.")
    st.stop()
try:
    teacher = store.get(compare.teacher_of(runs))
except (ValueError, RunError) as e:
    st.warning(f"Cannot compare these runs: {e}")
    st.stop()
ds = common.dataset(dataset)
if ds is None:
    st.stop()

with st.spinner("Evaluating every run on the test set…"):
    try:
        t_member = compare.Member(teacher, common.test_logits(teacher.id, dataset))
        students = [compare.Member(r, common.test_logits(r.id, dataset)) for r in runs]
    except RunError as e:
        st.error(str(e))
        st.stop()
    device = str(train.resolve_device())
    archs = {m.run.config.get("model") for m in [t_member, *students]} - {None}
    asked = st.session_state.get("cmp_latency_asked", 0)
    result = compare.evaluate(t_member, students, ds.test_y.numpy(), ds.classes,
                              {a: latency(a, dataset, device, asked) for a in archs})
names = dict(zip(result.per_class.index, result.table.method))

st.dataframe(result.table, hide_index=True, placeholder="—", column_config={
    c: st.column_config.NumberColumn(format="%.4f" if c.startswith("KL") else "%.3g" if c.startswith("latency")
                                     else "localized" if c in ("params", "seeds") else "%.2f")
    for c in result.table.columns[2:] if c not in ("epochs", "note")})
images = runs[0].summary.get("train_images")
trained = (f"Trained on {images:,} images" + (f"; full {data.TITLES[dataset]} is {data.TRAIN_SIZES[dataset]:,}"
                                               if images < data.TRAIN_SIZES[dataset] else "") + ". ") if images else ""
st.caption(f"{trained}Test set: {len(ds.test_y):,} images ({ds.source}): one point of accuracy is "
           f"{len(ds.test_y) / 100:,.0f} images. ± std: spread over the seeds (sample standard deviation). "
           "Epochs: two-stage methods list their first stage (hint or FSP) too. pp = percentage points. Agreement: "
           "same top-1 class as the teacher. KL(teacher‖student) at T = 1, in nats: 0 means identical predictions "
           f"(Stanton et al. 2021). ECE: expected calibration error over {compare.ECE_BINS} confidence bins "
           "(Guo et al. 2017). Train time only when every run was trained on the same machine. Latency per image "
           f"on this machine ({jobs.device_label()}), per architecture: median of up to 10 forward passes (fewer "
           "once they took half a second, never under 3) after 2 warm-ups. Click a column header to sort.")
if st.button("Measure latency again", key="cmp_latency", help="After training has ended, for figures not taken "
                                                             "under load."):
    st.session_state["cmp_latency_asked"] = asked + 1
    st.rerun()
left, right = st.columns(2)
left.download_button("⬇️ Table as CSV", result.table.to_csv(index=False, float_format="%.6g"),
                     file_name=f"{group}.csv", mime="text/csv", key="cmp_csv")
right.download_button("⬇️ Table as Markdown", compare.to_markdown(result.table), file_name=f"{group}.md",
                      mime="text/markdown", key="cmp_md")

epochs, steps = compare.curves(store, runs)
st.caption("Save any figure as a PNG with the camera icon in its toolbar.")
tabs = st.tabs(["Learning curves", "Loss terms", "Calibration", "Per-class accuracy"])
tabs[0].plotly_chart(viz.accuracy_curves(epochs, names), config=PNG, key="cmp_acc")
tabs[1].plotly_chart(viz.loss_curves(steps, names), config=PNG, key="cmp_loss")
tabs[1].caption("Each loss term unweighted, as logged during training (log scale).")
tabs[2].plotly_chart(viz.reliability_diagram(result.reliability, names), config=PNG, key="cmp_rel")
tabs[2].caption("Below the diagonal a model is over-confident, above it under-confident. Seeds are pooled.")
with tabs[3]:
    views = ["accuracy (%)"] + (["change vs plain student (pp)"] if "plain" in result.per_class.index else [])
    view = st.radio("Show", views, horizontal=True, key="cmp_class_view")
    st.plotly_chart(viz.per_class_heatmap(result.per_class, names, "plain" if view != views[0] else None),
                    config=PNG, key="cmp_class")

chains, inner = compare.takd_chains(store, runs), compare.inner_accuracies(runs)
if len(chains):
    st.plotly_chart(viz.takd_chain(chains), config=PNG, key="cmp_takd")
    st.caption(f"TAKD ({methods.get('takd').paper}): the assistant, between teacher and student in parameters, is "
               "distilled from the teacher and then teaches the student, bridging the capacity gap.")
if len(inner):
    st.plotly_chart(viz.inner_accuracy_bars(inner), config=PNG, key="cmp_inner")
    st.caption(f"BYOT ({methods.get('byot').paper}): each exit's accuracy rises with depth; only the deepest ships. "
               f"Mean teacher ({methods.get('meanteacher').paper}): the moving average of the student's weights "
               "(the Training lab plots both over the epochs).")
