"""Attention: where teacher and students look, as attention-transfer maps and Captum attributions."""
import streamlit as st

from kdviz import data, explain, losses
from kdviz.viz import features as fviz
from pages import common

st.title("Attention")
st.markdown("""
**Attention transfer** (Zagoruyko & Komodakis 2017) summarises a stage's feature map as a spatial
**attention map**: the mean over channels of the squared activations, L2-normalised. An AT student
is trained to make its maps match the teacher's at every stage (the *AT distance* below is that
loss term). **Attributions** ask a different question: which input pixels raise the score of a class.
""")

name = common.pick_dataset("attention_dataset")
ds = common.dataset(name)
if ds is None:
    st.stop()
picked = common.pick_teacher_and_students(common.finished_runs(name), "attention",
                                          prefer=("at", "kd_at", "kd", "plain"), max_students=3)
if picked is None:
    common.to_the_lab(f"This page needs two finished {data.TITLES[name]} runs: a teacher and at least one "
                      "student (for example a plain, a KD and an attention-transfer CNN student). "
                      "Train them in the Training lab.")
    st.stop()
teacher_run, student_runs = picked
if not student_runs:
    st.info("Pick at least one student above.")
    st.stop()

labels, nets = {}, {}
for r in [teacher_run, *student_runs]:
    label = f"{'teacher' if r is teacher_run else r.config.get('method', 'plain')} · {r.config.get('model')}"
    labels[r.id] = label if label not in labels.values() else f"{label} ({r.id})"
    nets[r.id] = common.load_model_or_stop(r.id)[0]
teacher = nets[teacher_run.id]

idx = common.pick_test_image(ds, "attention_image")
image = ds.test_x[idx]
x = explain.normalize(image[None], name)

st.subheader("Attention maps per stage")
overlay = st.toggle("Overlay on the input image", value=True, key="attention_overlay")
convs = [rid for rid, net in nets.items() if net.kind == "conv"]
mlps = [labels[rid] for rid, net in nets.items() if net.kind == "mlp"]
if mlps:
    st.info(f"{', '.join(mlps)}: an MLP has no spatial feature maps. Each hidden unit sees the whole image "
            "at once, so there is no *where* to attend to, and attention transfer does not apply. Its "
            "input-gradient attributions (integrated gradients, saliency) are shown below.")
if convs:
    with st.spinner("Computing attention maps…"):
        maps = {labels[rid]: explain.attention_maps(nets[rid], x, nets[rid].spatial_layers,
                                                    size=tuple(x.shape[-2:]) if overlay else None)
                for rid in convs}
    st.plotly_chart(fviz.attention_grid(maps, image if overlay else None))
    students = [r for r in student_runs if r.id in convs]
    if teacher.kind == "conv" and students:
        distances = {labels[r.id]: explain.at_distances(nets[r.id], teacher, x, teacher.spatial_layers)
                     for r in students}
        st.plotly_chart(fviz.at_distance_bars(distances, {labels[r.id]: r.config.get("method", "plain")
                                                          for r in students}))
        st.caption("AT distance: mean over positions of the squared difference of the two normalised maps "
                   "(maps of different sizes are average-pooled to the smaller one), for this image.")

st.subheader("Gradient attention")
st.markdown("Zagoruyko & Komodakis (2017, §3.2) also define attention by the input gradient of the loss, "
            "J = ∂CE/∂x: the pixels where a small change would change the loss most. **Gradient attention "
            "transfer** (method *at_grad*) trains the student's J towards the teacher's, ½‖J_S − J_T‖², through "
            "double backpropagation. It needs no feature maps, so MLPs have it too.")
def input_gradients(run_ids: tuple[str, ...], dataset: str, idx: int) -> dict:
    """Each run's input gradient of its loss on one test image: shared by every session."""
    d = common.dataset(dataset)
    x = explain.normalize(d.test_x[idx][None], dataset)
    return {rid: explain.input_gradient(common.load_model(rid)[0], x, d.test_y[idx:idx + 1]) for rid in run_ids}


def attributions(run_ids: tuple[str, ...], dataset: str, idx: int, target: int, base: str, smooth: bool) -> dict:
    """Each run's Captum attributions for one test image and target: shared by every session."""
    image = common.dataset(dataset).test_x[idx][None]
    x, ref = explain.normalize(image, dataset), explain.baseline(image, dataset, base)
    return {rid: explain.attributions(common.load_model(rid)[0], x, target, ref, smooth) for rid in run_ids}


with st.spinner("Differentiating each model's loss w.r.t. the image…"):
    grads = common.shared(input_gradients, tuple(nets), name, idx)
st.plotly_chart(fviz.attention_grid({labels[rid]: {"|∂CE/∂x|, true label": g[0].abs().sum(0) / g.abs().sum(1).max()}
                                     for rid, g in grads.items()}, image if overlay else None,
                                    "Gradient attention: |∂CE/∂x| summed over channels, each map scaled to its maximum"))
st.caption("½‖J_S − J_T‖² for this image (the term gradient AT minimises): " + ", ".join(
    f"{labels[r.id]}: {float(losses.grad_at_loss(grads[r.id], grads[teacher_run.id])):.3g}" for r in student_runs)
           + ". A confident model has a small gradient: the loss barely changes.")

st.subheader("Attributions (Captum)")
st.markdown("**Grad-CAM** weights the last conv stage's maps by their average gradient (Selvaraju et al. "
            "2017); **integrated gradients** add up gradients along a straight path from a baseline image "
            "(Sundararajan et al. 2017); **saliency** is the input gradient (Simonyan et al. 2014), "
            "optionally averaged over noisy copies (SmoothGrad, Smilkov et al. 2017). All are computed on a "
            "copy of each model, so a model that is training is never touched.")
c1, c2, c3, c4 = st.columns(4)
target = c1.selectbox("Target class", range(ds.num_classes), index=int(ds.test_y[idx]),
                      format_func=lambda c: ds.classes[c])
base = c2.radio("Integrated-gradients baseline", list(explain.BASELINES), format_func=explain.BASELINES.get,
                key="attention_baseline")
smooth = c3.toggle("SmoothGrad", key="attention_smoothgrad",
                   help="Saliency averaged over 16 noisy copies (noise std: 15 % of the input's value range)")
clip = c4.slider("Clip colours at percentile of |attribution|", 90.0, 100.0, 99.0, 0.5, key="attention_clip")
with st.spinner("Computing attributions on snapshots of the models…"):
    try:
        attrs = {labels[rid]: a for rid, a in common.shared(attributions, tuple(nets), name, idx, target, base,
                                                            smooth).items()}
    except RuntimeError as e:  # Captum missing
        st.error(str(e))
        st.stop()
st.plotly_chart(fviz.attribution_grid(attrs, image if overlay else None, clip))
