"""Temperature: how T softens a teacher's prediction, and why the soft term is multiplied by T²."""
import random

import streamlit as st

from kdviz import analysis, data
from kdviz.viz import METHOD_COLORS, method_color
from kdviz.viz import temperature as viz
from pages import common

TEACHER = METHOD_COLORS["teacher"]

st.title("Temperature")
st.markdown(
    "A teacher's **soft targets** are its softmax at temperature *T*: "
    "$p_i = e^{v_i/T} / \\sum_j e^{v_j/T}$ for its logits $v$; the student's probabilities at the same *T* are "
    "$q_i = e^{z_i/T} / \\sum_j e^{z_j/T}$ for its logits $z$ (Hinton, Vinyals & Dean 2015, eq. 1 and §2.1). "
    "At *T* = 1 this is the "
    "usual prediction; a higher *T* moves probability onto the wrong classes, and how it spreads there "
    "says what the teacher thinks the image resembles.")

pickers = st.columns([1, 2])
with pickers[0]:
    name = common.pick_dataset("temperature_dataset")
ds = common.dataset(name)
runs = common.finished_runs(name) if ds is not None else []
with pickers[1]:
    picked = common.pick_teacher_and_students(runs, "temperature", prefer=("kd",))
    teacher, students = picked or (common.pick_run("Teacher", runs, key="temperature_teacher"), [None])
student = students[0]

if teacher is None:
    example = analysis.EXAMPLE
    where = f"for {data.TITLES[name]} " if ds is not None else ""
    common.to_the_lab(f"No finished teacher run {where}yet, so this page shows a **stored example**: the logits of "
                      f"MNIST test image #{example['image']} (a {example['label']}) from an mlp1200 teacher, and of an "
                      "mlp30 student distilled from it. Train a teacher in the Training lab to explore your own "
                      "images.")
    classes = data.CLASSES[example["dataset"]]
    t_logits, s_logits = example["teacher"], example["student"]
    s_name, s_color = "example mlp30 KD student", METHOD_COLORS["kd"]
else:
    classes = ds.classes
    common.load_model_or_stop(teacher.id)
    logits = common.test_logits(teacher.id, name)
    filters = st.columns([2, 1])
    only_wrong = filters[0].toggle("Only test images the teacher misclassifies", key="temperature_wrong")
    if filters[1].button("Random images", icon=":material/casino:", key="temperature_random"):
        st.session_state.temperature_seed = random.randrange(1_000_000)
    seed = st.session_state.get("temperature_seed", 0)
    gallery = analysis.gallery_indices(logits, ds.test_y, only_wrong, seed)
    if only_wrong and not len(gallery):
        st.info("The teacher classifies every test image correctly, so the gallery shows all images.")
        gallery = analysis.gallery_indices(logits, ds.test_y, False, seed)
    captions = viz.image_captions(gallery, ds.test_y[gallery], analysis.predictions(logits[gallery]), classes)
    pos = st.radio("Test image (true class → teacher's wrong guess)", range(len(gallery)), horizontal=True,
                   format_func=lambda k: captions[k], key="temperature_image")
    st.plotly_chart(common.shared(viz.image_strip, ds.test_x[gallery], captions, pos), key="temperature_gallery")
    t_logits = logits[gallery[pos]]
    if student is None:
        common.to_the_lab(f"No student run for {data.TITLES[name]} yet, so the teacher is compared with an untrained "
                          "student (all logits 0). Distil one in the Training lab (method KD).")
        s_logits, s_name, s_color = [0.0] * len(classes), "untrained student", method_color("plain")
    else:
        common.load_model_or_stop(student.id)
        s_logits = common.test_logits(student.id, name)[gallery[pos]]
        s_name, s_color = student.id, method_color(student.config.get("method", "plain"))


log_y = st.toggle("Log-scale probability axes", key="temperature_log")
small = analysis.SMALL_MULTIPLE_TEMPERATURES
left, right = st.columns([1, 2])
left.plotly_chart(common.shared(viz.logit_bars, t_logits, classes), key="temperature_logits")
right.plotly_chart(common.shared(viz.small_multiples, analysis.softmax_over_temperatures(t_logits, small), small,
                                 classes, log_y), key="temperature_multiples")


@st.fragment
def temperature_view(classes, t_logits, s_logits, s_name, s_color, log_y):
    """Everything that depends on T: a slider move reruns only this (bench/temperature_latency.py)."""
    st.subheader("Move the temperature")
    T = st.select_slider("Temperature T (log scale, no unit)", analysis.TEMPERATURES, value=1.0,
                         format_func=lambda t: f"{t:g}", key="temperature_T")
    p_teacher = analysis.softmax_at(t_logits, T)
    left, right = st.columns(2)
    left.plotly_chart(common.shared(viz.probability_bars, [("teacher p", p_teacher, TEACHER)], classes, T, log_y),
                      key="temperature_bars")
    right.plotly_chart(common.shared(viz.probability_bars, [("teacher p", p_teacher, TEACHER),
                                     (f"student q: {s_name}", analysis.softmax_at(s_logits, T), s_color)],
                                     classes, T, log_y, f"Student beside teacher at T = {T:g}"),
                       key="temperature_student_bars")
    right.metric(f"KL(p ‖ q), teacher ‖ student, at T = {T:g}", f"{analysis.kl_at(t_logits, s_logits, T):.3g} nats",
                 help="the soft term of the KD loss for this image, before it is multiplied by T²")

    st.subheader("The soft targets as T grows")
    fraction = st.slider("Mark where the second-best class reaches this fraction of the best", 0.05, 0.95, 0.5,
                         0.05, format="%.2f", key="temperature_fraction")
    t_ratio = analysis.temperature_for_ratio(t_logits, fraction)
    entropy, max_prob = analysis.temperature_curves(t_logits, analysis.TEMPERATURES)
    st.plotly_chart(common.shared(viz.temperature_curves, analysis.TEMPERATURES, entropy, max_prob, len(classes), T,
                                  t_ratio, f"second-best = {fraction:.0%} of best (T = {t_ratio:.3g})"),
                    key="temperature_curves")
    st.caption(f"The teacher's second-best class has {fraction:.0%} of its best class's probability at "
               f"T = {t_ratio:.3g}: p₂/p₁ = exp((v₂ − v₁)/T), so T = (v₁ − v₂) / ln(1/fraction).")


temperature_view(classes, t_logits, s_logits, s_name, s_color, log_y)

st.subheader("Why the soft term is multiplied by T²")
st.markdown("The gradient of the soft term C = KL(p ‖ q) w.r.t. the student's logits z is (q − p)/T, which "
            "shrinks as 1/T², so KD multiplies the soft term by T² to keep its pull comparable to the hard-label "
            "term when T changes (Hinton 2015 §2). For large T it approaches (z − v)/(N·T²) with zero-meaned "
            "logits: KD becomes logit matching (§2.1). Both plots are for this image and student.")
grads = analysis.soft_gradients(s_logits, t_logits, analysis.GRADIENT_TEMPERATURES)
left, right = st.columns(2)
left.plotly_chart(common.shared(viz.t_squared_rule, grads), key="temperature_t2")
right.plotly_chart(common.shared(viz.logit_matching_limit, grads), key="temperature_limit")


@st.fragment
def standardisation_view(classes, t_logits, s_logits, s_name, s_color, log_y):
    """Logit standardisation (issue 19): its own T and toggle, so the block stands apart from the rest."""
    st.subheader("Logit standardisation")
    st.markdown("Sun et al. (CVPR 2024) z-score each logit vector, (z − mean) ∕ std, before the softmax at *T*: "
                "the student then matches the *shape* of the teacher's logits, not their range. It is the "
                "**Standardise logits** switch of the KD methods in the Training lab (`--logit-standardize`).")
    left, right = st.columns([3, 1])
    T = left.select_slider("Temperature T", analysis.TEMPERATURES, value=2.0, format_func=lambda t: f"{t:g}",
                           key="temperature_std_T")
    on = right.toggle("Standardise logits", value=True, key="temperature_std")
    p_t, p_s = (analysis.softmax_at(analysis.standardized(z) if on else z, T) for z in (t_logits, s_logits))
    st.plotly_chart(common.shared(viz.probability_bars, [("teacher", p_t, TEACHER), (s_name, p_s, s_color)], classes,
                                  T, log_y, f"{'Standardised' if on else 'Raw'} logits, softmax at T = {T:g}"),
                    key="temperature_std_bars")


standardisation_view(classes, t_logits, s_logits, s_name, s_color, log_y)
