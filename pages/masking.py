"""Masking: the causal and bidirectional masks, Gemma 3's sliding window, one head under both masks, and what
flipping the mask does to the output. Section code: explorer/ui/masking.py; figures: explorer/figures/masking.py."""

from __future__ import annotations

import streamlit as st

from explorer.i18n import _
from explorer.ui import masking as um, resources, state
from explorer.ui.widgets import guard

state.require_entrypoint()

SECTIONS = [um.masks, um.sliding_window, um.one_head, um.output_change]

st.title(_("Masking"))
um.intro()
with guard():
    flip = um.flip(resources.current_model())
    um.trained_warning(flip)
    for section in SECTIONS:
        section(flip)
