"""Explain: does the look move anything? Weight vs contribution, why a head looks there, which tokens drove a
prediction. Tab code: explorer/ui/explain/; figures: explorer/figures/attribution.py. Only the open tab runs."""

import streamlit as st

from explorer.i18n import N_, _
from explorer.ui import common as ui
from explorer.ui.explain import tokens, weights


def _qk_stub() -> None:
    st.info(_("QK attribution is built on another branch."))


SECTIONS = {N_("Weight vs contribution"): weights.tab, N_("Why it looks there"): _qk_stub,
            N_("Which tokens drove it"): tokens.tab}

ui.require_entrypoint()

st.title(_("Explain"))
tabs = st.tabs([_(name) for name in SECTIONS], key="explain_section", on_change="rerun")
for tab, draw in zip(tabs, SECTIONS.values()):
    if tab.open:
        with tab, ui.guard():
            draw()
