"""Compare: one head's map for two texts, two models, or the two masks side by side, and their difference.
Code: explorer/ui/compare.py; figures: explorer/figures/heatmap.py."""

import streamlit as st

from explorer.i18n import _
from explorer.ui import compare as uc, state
from explorer.ui.widgets import guard

state.require_entrypoint()

with guard():
    st.title(_("Compare"))
    comparison = uc.comparison_ui()
    uc.difference(comparison, uc.sides(comparison))
