"""Attention Explorer: the entrypoint. Shared sidebar + navigation; each page lives in pages/."""

import streamlit as st

from explorer.ui import common as ui

st.set_page_config(page_title="Attention Explorer", page_icon=":material/visibility:", layout="wide")

PAGES = [
    st.Page("pages/home.py", title="Home", icon=":material/home:", default=True),
    st.Page("pages/heads.py", title="Attention heads", icon=":material/grid_view:", url_path="heads"),
    st.Page("pages/qkv.py", title="Q, K, V", icon=":material/functions:", url_path="qkv"),
    st.Page("pages/masking.py", title="Masking", icon=":material/visibility_off:", url_path="masking"),
    st.Page("pages/generation.py", title="Generation", icon=":material/edit_note:", url_path="generation"),
    st.Page("pages/scratch.py", title="From scratch", icon=":material/build:", url_path="scratch"),
    st.Page("pages/analysis.py", title="Head analysis", icon=":material/query_stats:", url_path="analysis"),
    st.Page("pages/intervene.py", title="Intervene", icon=":material/science:", url_path="intervene"),
    st.Page("pages/compare.py", title="Compare", icon=":material/compare:", url_path="compare"),
]

page = st.navigation(PAGES)
ui.sidebar()
page.run()
ui.sync_query_params()
