"""FSP matrices: how the teacher's features flow from one stage to the next, and how well a student copies it."""
import streamlit as st

from kdviz import data, explain
from kdviz.viz import features as fviz
from kdviz.viz import training as tviz
from pages import common

st.title("FSP matrices")
st.markdown("""
The **flow of solution procedure** (Yim et al. 2017) between two feature maps F₁ (h×w×C₁) and
F₂ (h×w×C₂) is the C₁×C₂ matrix G = F₁ᵀF₂ / (h·w): how strongly each channel of the first map
co-occurs with each channel of the second, averaged over positions. An **FSP student** first learns
to reproduce the teacher's matrices between consecutive stages (stage 1), then trains on labels
(stage 2). The matrices are compared entry by entry, so teacher and student need the same channel
counts at every compared map.
""")

name = common.pick_dataset("fsp_dataset")
ds = common.dataset(name)
if ds is None:
    st.stop()
picked = common.pick_teacher_and_students(common.finished_runs(name, kinds=("conv",)), "fsp", prefer=("fsp",))
if picked is None:
    common.to_the_lab(f"This page needs two finished convolutional {data.TITLES[name]} runs "
                      "(MLPs have no feature maps): a CNN teacher and an FSP student of it with the same "
                      "widths, e.g. cnn_l → cnn_s. Train them in the Training lab.")
    st.stop()
teacher_run, (student_run,) = picked
teacher, _ = common.load_model_or_stop(teacher_run.id)
student, _ = common.load_model_or_stop(student_run.id)
cfg = student_run.config
is_fsp = cfg.get("method") == "fsp" and cfg.get("teacher") == teacher_run.id
layers = cfg.get("fsp_layers") if is_fsp else teacher.fsp_layers

scope = st.radio("Average over", ["one test image", "a batch of test images"], horizontal=True, key="fsp_scope")
if scope == "one test image":
    idx = common.pick_test_image(ds, "fsp_image")
    images = ds.test_x[idx:idx + 1]
else:
    n = st.slider("Batch: the first N test images", 16, 1024, 256, 16, key="fsp_batch")
    images = ds.test_x[:n]
with st.spinner("Computing FSP matrices…"):
    pairs = explain.fsp_pairs(teacher, student, explain.normalize(images, name), layers)

differ = [p.name for p in pairs if p.loss is None]
if differ:
    st.warning(f"The channel counts differ at {', '.join(differ)}, so FSP cannot compare these matrices: "
               "it needs matching channels, as in Yim et al. 2017 and RepDistiller. Pick a student with the "
               "teacher's widths (cnn_l, cnn_s share 32/64/128; the ResNets share 16/32/64).")
cols = st.columns(len(pairs) + 1)
for col, p in zip(cols, pairs):
    col.metric(f"FSP loss {p.name}", "n/a" if p.loss is None else f"{p.loss:.3g}",
               help="Mean over images and matrix entries of (G_student − G_teacher)²")
if not differ:
    cols[-1].metric("Total (training term)", f"{sum(p.loss for p in pairs):.3g}")
st.plotly_chart(fviz.fsp_grid(pairs, f"Teacher · {teacher_run.config.get('model')}",
                              f"Student · {cfg.get('model')} ({cfg.get('method', 'plain')})"))
st.caption(f"Matrices averaged over {len(images)} image{'s' if len(images) > 1 else ''}; maps of "
           "different sizes (a stride-2 stage) are average-pooled to the smaller one first.")

st.subheader("Training: FSP stage, then labels")
if is_fsp:
    rows = common.store().metrics(student_run.id)
    after = {r["stage"]: r["test_acc"] for r in rows if r.get("kind") == "epoch"}
    for col, (stage, acc) in zip(st.columns(max(len(after), 1)), after.items()):
        col.metric(f"Test accuracy after the {stage} stage", f"{acc:.1%}")
    if "FSP" in after:
        st.caption("The FSP stage trains only the layers that make the feature maps; the classifier is still "
                   "untrained after it, so accuracy there is near chance. The label stage builds on the copied flow.")
    st.plotly_chart(tviz.loss_figure(rows, "fsp"))
else:
    common.to_the_lab("Pick an FSP student of this teacher to see its FSP-stage loss and its accuracy after the "
                      "label stage; train one in the Training lab (method: FSP).", show=st.caption)
