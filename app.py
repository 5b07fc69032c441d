"""Attention Explorer: the entrypoint. Shared sidebar + navigation; each page lives in pages/."""

import streamlit as st

from explorer.i18n import _
from explorer.ui import state
from explorer.ui.sidebar import sidebar

st.set_page_config(page_title="Attention Explorer", page_icon=":material/visibility:", layout="wide")
state.init_language()  # before the pages: their titles are translated

# page= by name: a file path, not text for the reader (the i18n test reads first arguments as text)
PAGES = [
    st.Page(page="pages/home.py", title=_("Home"), icon=":material/home:", default=True),
    st.Page(page="pages/heads.py", title=_("Attention heads"), icon=":material/grid_view:", url_path="heads"),
    st.Page(page="pages/qkv.py", title=_("Q, K, V"), icon=":material/functions:", url_path="qkv"),
    st.Page(page="pages/masking.py", title=_("Masking"), icon=":material/visibility_off:", url_path="masking"),
    st.Page(page="pages/generation.py", title=_("Generation"), icon=":material/edit_note:", url_path="generation"),
    st.Page(page="pages/scratch.py", title=_("From scratch"), icon=":material/build:", url_path="scratch"),
    st.Page(page="pages/analysis.py", title=_("Head analysis"), icon=":material/query_stats:", url_path="analysis"),
    st.Page(page="pages/intervene.py", title=_("Intervene"), icon=":material/science:", url_path="intervene"),
    st.Page(page="pages/explain.py", title=_("Explain"), icon=":material/psychology_alt:", url_path="explain"),
    st.Page(page="pages/compare.py", title=_("Compare"), icon=":material/compare:", url_path="compare"),
]

page = st.navigation(PAGES)
sidebar()
page.run()
state.sync_query_params()
