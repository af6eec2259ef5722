"""Hints (FitNets): the teacher's hint layer next to the student's guided layer after the regressor."""
import streamlit as st

from kdviz import data, explain, losses
from kdviz.viz import features as fviz
from kdviz.viz import training as tviz
from pages import common

st.title("Hints (FitNets)")
st.markdown("""
**FitNets** (Romero et al. 2015) train a student in two stages. In stage 1 the student's
**guided layer** learns to predict the teacher's **hint layer**, an intermediate feature map,
through a small **regressor** (a 1×1 convolution here, a linear map for MLPs), which is needed
because the two layers usually have different numbers of channels. Stage 2 trains the whole
student with KD on the teacher's soft targets.

Romero et al. take the **middle** layers of both networks: a deeper guided layer has to copy the
teacher so closely that it over-regularises the student, leaving too few layers above it free to
solve the task its own way.
""")

name = common.pick_dataset("hints_dataset")
ds = common.dataset(name)
if ds is None:
    st.stop()
picked = common.pick_teacher_and_students(common.finished_runs(name), "hints", prefer=("fitnet",))
if picked is None:
    common.to_the_lab(f"This page needs two finished {data.TITLES[name]} runs: a teacher and a student, ideally a "
                      "FitNets student of that teacher. Train them in the Training lab.")
    st.stop()
teacher_run, (student_run,) = picked
teacher, _ = common.load_model_or_stop(teacher_run.id)
student, extras = common.load_model_or_stop(student_run.id)

cfg = student_run.config
is_fitnet = cfg.get("method") == "fitnet" and cfg.get("teacher") == teacher_run.id and "regressor" in extras
if is_fitnet:
    hint_layer, guided_layer = cfg["hint_layer"], cfg["guided_layer"]
    regressor = losses.regressor_from_state(extras["regressor"])
else:
    hint_layer, guided_layer, regressor = teacher.hint_layer, student.hint_layer, None
    why = (f"was distilled from another teacher ({cfg.get('teacher')})" if cfg.get("method") == "fitnet"
           else "was not trained with hints")
    st.info(f"This student {why}, so it has no regressor for this teacher: the maps below use a freshly "
            "initialised one (seed 0). Compare its MSE with a FitNets student's to see what stage 1 buys.")

idx = common.pick_test_image(ds, "hints_image")
x = explain.normalize(ds.test_x[idx:idx + 1], name)
try:
    view = explain.hint_view(teacher, student, x, hint_layer, guided_layer, regressor)
except ValueError as e:
    st.warning(f"FitNets cannot compare these two models: {e}.")
    st.stop()

channels = len(view.channel_mse)
left, mid, right = st.columns(3)
left.metric("Hint MSE for this image", f"{view.mse:.4f}",
            help="Mean over channels and positions of (teacher hint − regressed student)²: stage 1's loss.")
mid.metric("Teacher hint layer", f"{hint_layer} ({channels} ch.)")
right.metric("Student guided layer", guided_layer, help=f"{'trained' if is_fitnet else 'untrained'} regressor")
shown = st.slider("Channels to show (largest MSE first)", 1, channels, min(channels, 64), key="hints_channels")
st.plotly_chart(fviz.hint_tiles(view.hint, view.guided, view.channel_mse, shown,
                                f"Teacher hint ({teacher_run.config.get('model')}: {hint_layer})",
                                f"Student {guided_layer} after the regressor"))
st.plotly_chart(fviz.channel_mse_bars(view.channel_mse, shown))

st.subheader("Training: hint stage, then KD")
if is_fitnet:
    rows = common.store().metrics(student_run.id)
    st.plotly_chart(tviz.loss_figure(rows, "fitnet"))
    st.plotly_chart(tviz.accuracy_figure(rows, "fitnet"))
else:
    common.to_the_lab("Pick a FitNets student of this teacher to see its hint-stage and KD-stage curves; "
                      "train one in the Training lab (method: FitNets).", show=st.caption)
