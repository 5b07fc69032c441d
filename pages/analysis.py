"""Head analysis: per-head statistics, Q/K geometry, the logit lens, attention rollout, and export.
Section code: explorer/ui/analysis.py; figures: explorer/figures/analysis.py."""

import streamlit as st

from explorer.i18n import _
from explorer.ui import analysis as ua, common as ui

ui.require_entrypoint()

with ui.guard():
    st.title(_("Head analysis"))
    model = ui.current_model()
    trace = ui.current_trace()
    tabs = st.tabs([_(name) for name in ua.SECTIONS], key="analysis_section", on_change="rerun")
    for tab, name in zip(tabs, ua.SECTIONS):
        if tab.open:
            with tab, ui.guard():
                ua.DRAW[name](model, trace)
