"""Attention heads: every head of a layer, every layer × head (BertViz's model view), one head large, and lines.
Tab code: explorer/ui/heads.py; figures: explorer/figures/heads.py."""

from __future__ import annotations

import streamlit as st

from explorer.i18n import _
from explorer.ui import common as ui, heads as uh

ui.require_entrypoint()

st.title(_("Attention heads"))
with ui.guard():
    view = uh.heads_ui(ui.shown(ui.current_trace()))  # by token or by word, as the sidebar says
    uh.notes(view)
    # only the open tab runs: the model view is costly
    tabs = st.tabs([_(name) for name in uh.TABS], key=uh.TAB_KEY, on_change="rerun")
    for tab, name in zip(tabs, uh.TABS):
        if tab.open:
            with tab:
                uh.DRAW[name](view)
