"""Explain: why does a head look where it looks, and does the look move anything? Weight vs contribution, QK
attribution, token attribution. Tab code: explorer/ui/explain/; figures: explorer/figures/explain.py."""

import streamlit as st

from explorer.i18n import _
from explorer.ui import common as ui
from explorer.ui import explain as ue

ui.require_entrypoint()

st.title(_("Explain"))
st.caption(_("Why does this head look there, and does the look move anything?"))
# only the open tab runs: token attribution is costly
tabs = st.tabs([_(name) for name in ue.TABS], key=ue.TAB_KEY, on_change="rerun")
for tab, name in zip(tabs, ue.TABS):
    if tab.open:
        with tab, ui.guard():
            ue.DRAW[name]()
