"""kdviz: an interactive lab for teaching knowledge distillation. Run: streamlit run app.py"""
import streamlit as st

from pages import common

st.set_page_config(page_title="kdviz: knowledge distillation lab", page_icon=":material/school:", layout="wide")

nav = st.navigation({
    "Start": [st.Page("pages/home.py", title="Home", icon=":material/home:", default=True)],
    "Learn": [st.Page("pages/temperature.py", title="Temperature", icon=":material/device_thermostat:"),
              st.Page("pages/dark_knowledge.py", title="Dark knowledge", icon=":material/dark_mode:")],
    "Lab": [st.Page("pages/train.py", title="Training lab", icon=":material/science:"),
            st.Page("pages/compare.py", title="Compare methods", icon=":material/leaderboard:")],
    "Inside the student": [st.Page("pages/hints.py", title="Hints (FitNets)", icon=":material/explore:"),
                           st.Page("pages/attention.py", title="Attention", icon=":material/visibility:"),
                           st.Page("pages/fsp.py", title="FSP matrices", icon=":material/grid_on:")],
    "Replay": [st.Page("pages/hinton.py", title="Hinton's omitted 3", icon=":material/replay:")],
})
common.sidebar()
nav.run()
