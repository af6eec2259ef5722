"""Dark knowledge: which classes the teacher thinks are alike, read from its soft targets."""
import streamlit as st

from kdviz import analysis, data, explain
from kdviz.viz import dark as viz
from pages import common

st.title("Dark knowledge")
st.markdown(
    "A trained teacher puts small probabilities on the wrong classes, and they are not random: a 2 "
    "looks a little like a 3 or a 7. Hinton, Vinyals & Dean (2015) called this *dark knowledge*; it is "
    "what a student learns from soft targets beyond the label. Averaged over the test set it shows "
    "which classes the teacher finds similar.")

pickers = st.columns([1, 2])
with pickers[0]:
    name = common.pick_dataset("dark_dataset")
ds = common.dataset(name)
if ds is None:
    st.stop()
runs = common.finished_runs(name)
with pickers[1]:
    picked = common.pick_teacher_and_students(runs, "dark", prefer=("kd",))
    teacher, students = picked or (common.pick_run("Teacher", runs, key="dark_teacher"), [None])
student = students[0]
if teacher is None:
    common.to_the_lab(f"No finished teacher run for {data.TITLES[name]} yet. Train one in the Training lab "
                      "(e.g. mlp1200 on MNIST or Fashion-MNIST, resnet20 on CIFAR-10), then come back.")
    st.stop()
classes, labels = ds.classes, ds.test_y
common.load_model_or_stop(teacher.id)
logits = common.test_logits(teacher.id, name)
if student is not None:
    common.load_model_or_stop(student.id)
student_logits = common.test_logits(student.id, name) if student else None


@st.fragment
def similarity_view(classes, labels, logits, student_logits):
    """Everything that depends on T: a slider move reruns only this."""
    st.subheader("Where each class's wrong-class probability goes")
    T = st.select_slider("Temperature T (log scale, no unit)", analysis.TEMPERATURES, value=1.0,
                         format_func=lambda t: f"{t:g}", key="dark_T")
    similarity, true_class_prob = analysis.class_similarity(logits, labels, T, len(classes))
    st.caption(f"Mean soft targets at T = {T:g} over the test images of each true class ({len(labels):,} in all); "
               "the diagonal (probability of the true class) is moved to the right-hand column and each row is "
               "renormalised over the wrong classes, so it sums to 100 %.")
    st.plotly_chart(common.shared(viz.similarity_heatmap, similarity, true_class_prob, classes,
                                  f"Teacher {teacher.id}, T = {T:g}"), key="dark_matrix")
    left, right = st.columns([2, 3])
    with left:
        st.markdown("**Most confusable pairs**")
        st.dataframe(analysis.confusable_pairs(similarity, classes), hide_index=True, key="dark_pairs",
                     column_config={
                         "pair": "classes (a ↔ b)",
                         "a_to_b": st.column_config.NumberColumn("a → b", format="percent",
                                                                 help="share of a's wrong-class mass on b"),
                         "b_to_a": st.column_config.NumberColumn("b → a", format="percent",
                                                                 help="share of b's wrong-class mass on a"),
                         "mean": st.column_config.NumberColumn("mean", format="percent")})
    with right:
        st.plotly_chart(common.shared(viz.class_map, common.shared(analysis.class_map, similarity), classes),
                        key="dark_map")
        st.caption("Metric MDS (Sammon-weighted SMACOF) on the distance 1.1 − similarity ∕ max similarity: "
                   "classes the teacher often mixes up sit close.")

    st.subheader("Teacher vs student")
    if student_logits is None:
        common.to_the_lab(f"No other finished run for {data.TITLES[name]} to compare with. Distil a student from this "
                          "teacher in the Training lab (method KD), then come back.")
        return
    student_similarity, _ = analysis.class_similarity(student_logits, labels, T, len(classes))
    st.plotly_chart(common.shared(viz.similarity_difference, similarity, student_similarity, classes, student.id),
                    key="dark_difference")
    st.caption(f"The same matrix for the student picked at the top, at T = {T:g}. Positive (red): the student "
               "sends more of a class's wrong-class mass there than the teacher does.")

    st.subheader("Decoupled KD: the target part and the rest")
    split = analysis.dkd_split(logits, student_logits, labels, T)
    st.plotly_chart(common.shared(viz.dkd_bars, split, T), key="dark_dkd")
    st.caption(f"Zhao et al. (CVPR 2022) split KL(teacher ‖ student) at T into TCKD (the binary target vs "
               f"non-target probabilities) and NCKD (the wrong classes among themselves, renormalised): KD = TCKD + "
               f"(1 − p_t)·NCKD, exactly ({split['kd']:.3g} nats here, per image on average). The teacher's mean "
               f"1 − p_t is {split['weight']:.3g} at T = {T:g}, so KD almost ignores NCKD, the dark knowledge, "
               "where the teacher is sure; DKD (method *dkd*) weights it β = 8 instead.")


similarity_view(classes, labels, logits, student_logits)

st.subheader("Relations between images (relational KD)")
st.caption("Relational KD (Park et al. 2019) transfers how far apart the teacher places the images of a batch, "
           "not its outputs. Each square is the distance between two test images' embeddings (the vector before "
           "the classifier), divided by the mean distance; images are sorted by class, so dark blocks on the "
           "diagonal mean the classes form tight clusters.")
batch = explain.relation_batch(labels, per_class=5)
x = explain.normalize(ds.test_x[batch], name)
matrices = {f"teacher {teacher.id}": explain.relation_matrix(common.load_model(teacher.id)[0], x).numpy()}
if student is not None:
    matrices[f"student {student.id}"] = explain.relation_matrix(common.load_model(student.id)[0], x).numpy()
st.plotly_chart(common.shared(viz.relation_matrices, matrices, labels[batch].numpy(), classes), key="dark_relations")
st.markdown("**DarkRank** (Chen, Wang & Zhang 2018) transfers only the *order* of each row: for every image, which "
            "others are nearest. The student learns the teacher's ranking of the nearest four with a listwise loss.")
query = st.slider("Query image (position in the batch above, sorted by class)", 0, len(batch) - 1, 0, key="dark_query")
ranked = {who: analysis.nearest_neighbours(m, query) for who, m in zip(("teacher", "student"), matrices.values())}
st.plotly_chart(common.shared(viz.neighbour_rankings, ds.test_x[batch[query]], {
    who: (ds.test_x[batch[nn]], labels[batch[nn]], m[query][nn]) for (who, nn), m in zip(ranked.items(), matrices.values())},
    classes), key="dark_rankings")

st.subheader("The images that carry the most dark knowledge")
st.caption("Correctly classified test images with the most probability on wrong classes at T = 1: "
           "the true class in black, the wrong classes in orange (log scale).")
shown, _ = analysis.dark_knowledge_examples(logits, labels, top=8)
st.plotly_chart(common.shared(viz.dark_examples, ds.test_x[shown], analysis.softmax_at(logits[shown], 1.0),
                              labels[shown], classes), key="dark_examples")
