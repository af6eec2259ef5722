import streamlit as st

st.title("hints")
st.info("This page is being built.")
