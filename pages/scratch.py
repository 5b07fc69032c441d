"""From scratch: a textbook multi-head attention checked against the model, a tutorial's departures from it, and the
fused kernels that never build the n×n matrix. Each tab is one function of :mod:`explorer.ui.scratch`."""

import streamlit as st

from explorer.i18n import N_, _
from explorer.ui import common as ui
from explorer.ui import scratch as us

ui.require_entrypoint()

TABS = [N_("Textbook vs the model"), N_("The tutorial variant"), N_("Kernels and devices")]

st.title(_("Attention from scratch"))
with ui.guard():
    model = ui.current_model()
    trace = us.page_trace()  # at most SCRATCH_MAX_TOKENS: the textbook builds n × n matrices
    layer, head = ui.layer_head_selectors(trace, key="scratch", container=st.container(horizontal=True, width=480))
    sections = (lambda: us.textbook_section(model, trace, layer), lambda: us.variant_section(model, trace, layer, head),
                lambda: us.kernels_section(model))
    tabs = st.tabs([_(name) for name in TABS], key="scratch_tab", on_change="rerun")  # only the open tab runs
    for tab, draw in zip(tabs, sections):
        if tab.open:
            with tab, ui.guard():
                draw()
