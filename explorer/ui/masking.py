"""Streamlit parts of the Masking page: both traces of the sidebar's text, and the cached effects of the flip."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from . import common as ui
from ..analysis.mask_effects import final_state_changes, next_token_changes
from ..capture.model import Model
from ..capture.tokens import display_label
from ..capture.trace import Trace


def both_traces(model: Model) -> tuple[Trace, Trace]:
    """The sidebar's text traced under the causal and the bidirectional mask (shared trace cache)."""
    causal = ui.current_trace(mask="causal")  # shows the truncation notice once
    text = ui.current_selection().text
    return causal, ui.trace_for(model, text, "bidirectional")


def _key(trace: Trace) -> tuple:
    return (trace.model_name, str(trace.device), trace.text, trace.n_tokens)


@st.cache_data(show_spinner="Comparing next-token predictions under both masks…", max_entries=16)
def _next_token_changes(_model: Model, _causal: Trace, _bidirectional: Trace, key: tuple) -> pd.DataFrame:
    return next_token_changes(_model, _causal, _bidirectional)


@st.cache_data(show_spinner=False, max_entries=16)
def _final_state_changes(_causal: Trace, _bidirectional: Trace, key: tuple) -> pd.DataFrame:
    return final_state_changes(_causal, _bidirectional)


def output_changes(model: Model, causal: Trace, bidirectional: Trace) -> pd.DataFrame:
    """Next-token changes for a causal LM, final-state cosine changes otherwise (cached per model and text)."""
    if model.is_causal_lm:
        return _next_token_changes(model, causal, bidirectional, _key(causal))
    return _final_state_changes(causal, bidirectional, _key(causal))


TOKEN_COLUMNS = ("token", "actual_next", "top_causal", "top_bidirectional")
COLUMN_NAMES = {
    "position": "position", "token": "token", "actual_next": "actual next", "top_causal": "top (causal)",
    "p_causal": "p (causal)", "top_bidirectional": "top (bidirectional)", "p_bidirectional": "p (bidirectional)",
    "top_changed": "top changed", "bidirectional_says_next": "bidirectional top = actual next", "kl": "KL (nats)",
    "cosine": "cosine", "cosine_change": "1 − cosine", "norm_causal": "‖h‖ causal",
    "norm_bidirectional": "‖h‖ bidirectional",
}


def changes_table(changes: pd.DataFrame) -> pd.DataFrame:
    """The engine's table with readable column names and tokens with visible whitespace (shown as plain text)."""
    shown = changes.copy()
    for column in TOKEN_COLUMNS:
        if column in shown:
            shown[column] = [display_label(t) if t else "" for t in shown[column]]
    return shown.rename(columns=COLUMN_NAMES)
