"""Q, K, V: one head's attention formula for one query token, step by step, with the model's real numbers.

Each step is one function of :mod:`explorer.ui.qkv`; its number is its place in the model's list of steps."""

from __future__ import annotations

import streamlit as st

from explorer.i18n import _
from explorer.ui import maps, qkv as uq, resources, state
from explorer.ui.widgets import guard

state.require_entrypoint()

st.title(_("Q, K, V: one head, step by step"))
st.caption(_(
    "Follow one query token through one attention head: its input is projected to queries, keys and values, "
    "scored against every key, masked, normalised by a softmax, and used to average the values. Every number "
    "is recomputed from the layer's input and weights, and checked against what the model computed."
))
with guard():
    model = resources.current_model()
    trace = resources.current_trace()
    words = maps.shown(trace) if state.current_selection().unit == "words" else None  # pick a word, then its piece
    view = uq.view_ui(trace, words)
    if words is not None:
        uq.word_row(words, view)
    walk = uq.walk(model, trace, view)
    uq.window_caption(walk)
    for number, draw in enumerate(uq.steps_for(walk.steps), start=1):
        draw(number, walk)
    uq.numbers_and_check(walk)
