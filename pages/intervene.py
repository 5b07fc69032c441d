"""Intervene: does this head matter? Switch heads off (ablation) or move their outputs between two texts (patching)."""

import streamlit as st

from explorer.i18n import _
from explorer.ui import intervene as ui_iv, state
from explorer.ui.tabs import lazy_tabs

state.require_entrypoint()

st.title(_("Intervene"))
st.caption(_("Does this head matter? Switch heads off and watch the predictions change, or move one head's output "
             "from a corrupted text into a clean one and measure how much of the answer it carries."))
ui_iv.heads_from_url()

lazy_tabs(ui_iv.TABS, key=ui_iv.TAB_KEY)  # only the open tab runs: patching traces two more texts
