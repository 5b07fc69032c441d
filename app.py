"""Attention Explorer: the entrypoint. Shared sidebar + navigation; each page lives in pages/."""

import streamlit as st

from explorer import ui

st.set_page_config(page_title="Attention Explorer", page_icon="🔍", layout="wide")

PAGES = [
    st.Page("pages/home.py", title="Home", icon="🏠", default=True),
    st.Page("pages/heads.py", title="Attention heads", icon="🧩", url_path="heads"),
    st.Page("pages/qkv.py", title="Q, K, V", icon="🧮", url_path="qkv"),
    st.Page("pages/masking.py", title="Masking", icon="🎭", url_path="masking"),
    st.Page("pages/generation.py", title="Generation", icon="✍️", url_path="generation"),
    st.Page("pages/scratch.py", title="From scratch", icon="🛠️", url_path="scratch"),
    st.Page("pages/analysis.py", title="Head analysis", icon="📊", url_path="analysis"),
    st.Page("pages/compare.py", title="Compare", icon="⚖️", url_path="compare"),
]

page = st.navigation(PAGES)
ui.sidebar()
page.run()
ui.sync_query_params()
