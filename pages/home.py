import streamlit as st

st.title("kdviz: a knowledge-distillation lab")
st.markdown("""
**Knowledge distillation** trains a small *student* network to imitate a large *teacher*.
Instead of learning only from hard labels ("this is a 3"), the student also learns from the
teacher's *soft targets*: the full probability distribution, softened by a temperature *T*,
which says how much a 3 looks like a 5 or an 8. Hinton et al. (2015) called this hidden
information *dark knowledge*.

**Where to start**
1. **Learn → Temperature**: see how *T* softens a teacher's prediction.
2. **Learn → Dark knowledge**: which classes the teacher thinks are alike.
3. **Lab → Training lab**: train a teacher and a student yourself (runs in the background).
4. **Lab → Compare methods**: KD, FitNets, attention transfer and FSP side by side.
5. **Lab → Sweeps**: which T for which student size, from many small runs in one picture.
6. **Inside the student**: hint maps, attention heatmaps and FSP matrices.
7. **Replay → Hinton's omitted 3**: a student that never saw a 3 still recognises them.
8. **Beyond the data**: a student taught with no data, a teacher that sees more than its student, and
   transfer sets that are not the teacher's data.
""")
st.page_link("pages/map.py", label="The map of distillation: every method by what it transfers and how it learns",
             icon=":material/map:")
