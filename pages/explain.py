"""Explain: why does a head look where it looks, and does the look move anything? Weight vs contribution, QK
attribution, token attribution. Tab code: explorer/ui/explain/; figures: explorer/figures/explain.py."""

import streamlit as st

from explorer.i18n import _
from explorer.ui import explain as ue, state
from explorer.ui.tabs import lazy_tabs

state.require_entrypoint()

st.title(_("Explain"))
st.caption(_("Why does this head look there, and does the look move anything?"))
lazy_tabs(ue.TABS, key=ue.TAB_KEY)  # only the open tab runs: token attribution is costly
