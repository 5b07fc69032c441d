"""Streamlit parts for long texts: pick a window of queries × keys and a query, then draw the window's exact cells
and that query's top keys over the whole text. The heads page calls :func:`window_ui` and :func:`draw_window`."""

from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

from ..capture.trace import Trace
from ..figures import long_context as flc
from ..i18n import _


@dataclass(frozen=True)
class WindowParams:
    """A window of the map (half-open ranges of positions) and the query whose top keys to list."""

    q_start: int
    q_stop: int
    k_start: int
    k_stop: int
    query: int
    k: int


def window_ui(n_tokens: int, key: str = "window") -> WindowParams:
    """Widgets for a window of at most ``flc.MAX_WINDOW`` queries × keys, a query and how many top keys to list."""
    size = min(flc.MAX_WINDOW, n_tokens)
    last = max(n_tokens - 1, 0)
    cols = st.columns(4)
    q_start = int(cols[0].number_input(_("First query"), 0, last, max(0, n_tokens - size), key=f"{key}_q"))
    k_start = int(cols[1].number_input(_("First key"), 0, last, max(0, n_tokens - size), key=f"{key}_k"))
    query = int(cols[2].number_input(_("Where does this query look?"), 0, last, last, key=f"{key}_query"))
    k = int(cols[3].number_input(_("Top keys"), 1, min(50, n_tokens), min(10, n_tokens), key=f"{key}_topk"))
    return WindowParams(q_start, min(q_start + size, n_tokens), k_start, min(k_start + size, n_tokens), query, k)


def draw_window(trace: Trace, layer: int, head: int, params: WindowParams) -> None:
    """The window's exact cells, then the query's top keys over the whole text (each one row of n, never n × n)."""
    with st.spinner(_("Computing the window's exact cells…")):
        probs = trace.attention_window(layer, head, slice(params.q_start, params.q_stop),
                                       slice(params.k_start, params.k_stop)).numpy()
        positions, weights = trace.top_keys(layer, head, params.query, params.k)
    title = _("Layer {layer} · head {head}: queries {q0}–{q1} × keys {k0}–{k1} (exact cells)").format(
        layer=layer, head=head, q0=params.q_start, q1=params.q_stop - 1, k0=params.k_start, k1=params.k_stop - 1)
    st.plotly_chart(flc.window_heatmap(probs, trace.tokens, params.q_start, params.k_start, title=title),
                    key=f"window_{layer}_{head}", width="stretch")
    st.plotly_chart(flc.top_keys_chart(positions.tolist(), weights.tolist(), trace.tokens, params.query),
                    key=f"top_keys_{layer}_{head}", width="stretch")
