"""From scratch: a textbook multi-head attention checked against the model, a tutorial's departures from it, and the
fused kernels that never build the n×n matrix. Each tab is one function of :mod:`explorer.ui.scratch`."""

import streamlit as st

from explorer.i18n import _
from explorer.ui import resources, scratch as us, state
from explorer.ui.tabs import lazy_tabs
from explorer.ui.widgets import guard, layer_head_selectors

state.require_entrypoint()

st.title(_("Attention from scratch"))
with guard():
    model = resources.current_model()
    trace = us.page_trace()  # at most SCRATCH_MAX_TOKENS: the textbook builds n × n matrices
    layer, head = layer_head_selectors(trace, key="scratch", container=st.container(horizontal=True, width=480))
    lazy_tabs(us.tabs(model, trace, layer, head), key="scratch_tab")  # only the open tab runs
