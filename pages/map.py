"""The map of distillation: every method of kdviz by the knowledge it transfers and how it learns."""
import streamlit as st

from kdviz import distillation_map as kdmap

st.title("The map of distillation")
st.markdown(
    "Knowledge distillation methods differ along two axes. **Rows**: *what* is transferred, from the teacher's "
    "outputs to its hidden features, its weights, the relations between examples or layers, and graphs. "
    "**Columns**: *how* teacher and student learn: from a frozen teacher (offline), together (online), from "
    "itself (self), without data, from several teachers, or from a teacher that sees more than the student "
    "(privileged). Each method links to where you can run it; hover a link for its idea.")

cells = kdmap.grid()
widths = [1.2] + [1] * len(kdmap.MODES)
header = st.columns(widths)
header[0].markdown("**Knowledge ↓ · Mode →**")
for col, (title, about) in zip(header[1:], kdmap.MODES.values()):
    col.markdown(f"**{title}**", help=about)

for row, (title, about) in kdmap.KNOWLEDGE.items():
    cols = st.columns(widths, border=True)
    cols[0].markdown(f"**{title}**  \n{about}")
    for col, mode in zip(cols[1:], kdmap.MODES):
        entries = cells[(row, mode)]
        if not entries:
            col.caption("Not in kdviz.")
        for e in entries:
            hint = f"{e.paper}: {e.idea}" if e.paper else e.idea
            if e.page:
                col.page_link(e.page, label=e.label, help=hint)
            else:
                col.page_link("pages/train.py", label=e.label, help=f"Open the Training lab with this method. {hint}",
                              query_params={"method": e.name})
            col.caption(e.paper)
    if row in kdmap.EMPTY_NOTES and not any(cells[(row, m)] for m in kdmap.MODES):
        st.caption(kdmap.EMPTY_NOTES[row])

st.subheader("Every method, its paper and its idea")
st.dataframe(kdmap.table(), hide_index=True, placeholder="—")
if missing := kdmap.unplaced():
    st.caption("Registered but not yet placed on the map (their classes name no knowledge form or mode): "
               + ", ".join(e.label for e in missing) + ".")
st.caption("The plain student (labels only) is the baseline every method is measured against, so it has no cell. "
           "Knowledge forms follow Gou et al., *Knowledge Distillation: A Survey* (IJCV 2021), §2.")
