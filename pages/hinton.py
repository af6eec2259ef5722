import streamlit as st

st.title("hinton")
st.info("This page is being built.")
