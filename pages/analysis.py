"""Head analysis: per-head statistics, Q/K geometry, the logit lens, attention rollout, and export.
Section code: explorer/ui/analysis.py; figures: explorer/figures/analysis.py."""

import streamlit as st

from explorer.i18n import _
from explorer.ui import analysis as ua, resources, state
from explorer.ui.tabs import lazy_tabs
from explorer.ui.widgets import guard

state.require_entrypoint()

with guard():
    st.title(_("Head analysis"))
    lazy_tabs(ua.tabs(resources.current_model(), resources.current_trace()), key="analysis_section")
