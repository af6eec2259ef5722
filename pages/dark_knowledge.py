import streamlit as st

st.title("dark_knowledge")
st.info("This page is being built.")
