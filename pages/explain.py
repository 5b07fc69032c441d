"""Explain: does the look move anything? Weight vs contribution, why a head looks there, which tokens drove a
prediction. Tab code: explorer/ui/explain/; figures: explorer/figures/attribution.py."""

import streamlit as st

from explorer.i18n import _
from explorer.ui import common as ui
from explorer.ui.explain import tokens, weights

ui.require_entrypoint()

st.title(_("Explain"))
weights_tab, qk_tab, tokens_tab = st.tabs([_("Weight vs contribution"), _("Why it looks there"),
                                           _("Which tokens drove it")])
with weights_tab, ui.guard():
    weights.tab()
with qk_tab:
    st.info(_("QK attribution is built on another branch."))
with tokens_tab, ui.guard():
    tokens.tab()
