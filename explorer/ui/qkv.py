"""Streamlit parts of the Q, K, V page: token pickers, one formula step beside its numbers, the numbers table.

The walk-through's numbers come from :func:`explorer.walkthrough.formula_steps`; this module only lays them out.
"""

from __future__ import annotations

from typing import Sequence

import pandas as pd
import streamlit as st

from ..capture.tokens import display_label
from ..capture.trace import Trace
from ..from_scratch.walkthrough import FormulaSteps


def token_option(trace: Trace, i: int) -> str:
    return f"{i} · {display_label(trace.tokens[i])}"


def token_picker(trace: Trace, label: str, key: str, default: int, container=None, help: str | None = None) -> int:
    """A selectbox over the trace's tokens whose choice survives reruns; reset to ``default`` if out of range.

    A new text may have fewer tokens than the remembered choice: then the default is used, without an error.
    """
    n = trace.n_tokens
    value = st.session_state.get(key)
    if not isinstance(value, int) or not 0 <= value < n:
        st.session_state[key] = min(max(default, 0), n - 1)
    where = container or st
    return int(where.selectbox(label, range(n), key=key, format_func=lambda i: token_option(trace, i), help=help))


FORMULA_WIDTH = 330  # px: the formula card; on narrow screens the numbers wrap below it


def step(number: int, title: str, formulas: Sequence[str], note: str | None = None):
    """Draw one step's heading and formulas and return the container for its numbers, beside them when the screen
    is wide enough and below them otherwise (a wrapping row: formulas never get squeezed into a sliver)."""
    st.markdown(f"#### {number}. {title}")
    row = st.container(horizontal=True, gap="medium")
    left = row.container(width=FORMULA_WIDTH)
    with left:
        for formula in formulas:
            st.latex(formula)
        if note:
            st.caption(note)
    return row.container(width="stretch")


def numbers_table(steps: FormulaSteps, tokens: Sequence[str]) -> pd.DataFrame:
    """Every key's numbers for the chosen query: the table a reader can check the charts against."""
    return pd.DataFrame({
        "key": range(steps.n_tokens),
        "token": [display_label(t) for t in tokens],
        "allowed": steps.allowed.numpy(),
        "q·k": steps.scores.numpy(),
        "× scale": steps.scaled.numpy(),
        "+ mask": steps.masked.numpy(),
        "p (softmax)": steps.probs.numpy(),
        "‖p·v‖": steps.weighted_values().norm(dim=-1).numpy(),
    })
