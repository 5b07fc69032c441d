"""Attention heads: every head of a layer, every layer × head (BertViz's model view), one head large, and lines.
Tab code: explorer/ui/heads.py; figures: explorer/figures/heads.py."""

from __future__ import annotations

import streamlit as st

from explorer.i18n import _
from explorer.ui import heads as uh, maps, resources, state
from explorer.ui.tabs import lazy_tabs
from explorer.ui.widgets import guard

state.require_entrypoint()

st.title(_("Attention heads"))
with guard():
    view = uh.heads_ui(maps.shown(resources.current_trace()))  # by token or by word, as the sidebar says
    uh.notes(view)
    lazy_tabs(uh.tabs(view), key=uh.TAB_KEY)  # only the open tab runs: the model view is costly
