"""kdviz: an interactive lab for teaching knowledge distillation. Run: streamlit run app.py"""
import streamlit as st

from pages import common

st.set_page_config(page_title="kdviz: knowledge distillation lab", page_icon="🎓", layout="wide")

nav = st.navigation({
    "Start": [st.Page("pages/home.py", title="Home", icon="🏠", default=True)],
    "Learn": [st.Page("pages/temperature.py", title="Temperature", icon="🌡️"),
              st.Page("pages/dark_knowledge.py", title="Dark knowledge", icon="🌑")],
    "Lab": [st.Page("pages/train.py", title="Training lab", icon="🧪"),
            st.Page("pages/compare.py", title="Compare methods", icon="📊")],
    "Inside the student": [st.Page("pages/hints.py", title="Hints (FitNets)", icon="🧭"),
                           st.Page("pages/attention.py", title="Attention", icon="👁️"),
                           st.Page("pages/fsp.py", title="FSP matrices", icon="🔀")],
    "Replay": [st.Page("pages/hinton.py", title="Hinton's omitted 3", icon="3️⃣")],
})
common.sidebar()
nav.run()
