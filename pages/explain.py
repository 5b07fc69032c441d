"""Explain: why does a head look where it looks, and does the look move anything? Weight vs contribution, QK
attribution, token attribution. Tab code: explorer/ui/explain/; figures: explorer/figures/explain.py."""

import streamlit as st

from explorer.i18n import _
from explorer.ui import common as ui
from explorer.ui.explain import qk, tokens, weights

ui.require_entrypoint()

st.title(_("Explain"))
st.caption(_("Why does this head look there, and does the look move anything?"))
weight_tab, qk_tab, token_tab = st.tabs([_("Weight vs contribution"), _("Why it looks there"),
                                         _("Which tokens drove it")])
with weight_tab, ui.guard():
    weights.tab()
with qk_tab, ui.guard():
    qk.tab()
with token_tab, ui.guard():
    tokens.tab()
