"""Intervene: does this head matter? Switch heads off (ablation) or move their outputs between two texts (patching)."""

import streamlit as st

from explorer.i18n import _
from explorer.ui import intervene as ui_iv, state
from explorer.ui.widgets import guard

state.require_entrypoint()

st.title(_("Intervene"))
st.caption(_("Does this head matter? Switch heads off and watch the predictions change, or move one head's output "
             "from a corrupted text into a clean one and measure how much of the answer it carries."))
ui_iv.heads_from_url()

ablate, patch = st.tabs([_("Ablate"), _("Patch")])
with ablate, guard():
    ui_iv.ablate_tab()
with patch, guard():
    ui_iv.patch_tab()
