"""Figures for long texts: an exact window of one head's map, and where one query looks over the whole text.

Pure builders over numbers and token strings (no trace): the engine computes the window
(``Trace.attention_window``) and the top keys (``Trace.top_keys``). A window is at most ``MAX_WINDOW`` cells a side,
so every cell is an exact probability, never a block mean, and the payload stays under ~0.9 MB.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import plotly.graph_objects as go

from ..capture.tokens import display_label, plotly_labels
from ..escape import plotly_escape
from ..i18n import _
from .heatmap import MAX_CELLS, _tick_axis, token_heatmap
from .palette import SEQUENTIAL

MAX_WINDOW = MAX_CELLS  # 400 × 400 exact cells ≈ 0.6 MB of float32 plus labels


def window_heatmap(probs: np.ndarray, tokens: Sequence[str], q_start: int, k_start: int, *, title: str) -> go.Figure:
    """Exact cells of one head on queries q_start… × keys k_start… of the text (``probs`` (rows, cols), at most
    ``MAX_WINDOW`` a side; ``tokens`` are the whole text's). Rows are normalised over the whole text, so a window's
    rows need not sum to 1."""
    probs = np.asarray(probs, dtype=np.float32)
    rows, cols = probs.shape
    if rows > MAX_WINDOW or cols > MAX_WINDOW:
        raise ValueError(_("A window shows at most {most} × {most} exact cells, not {rows} × {cols}.").format(
            most=MAX_WINDOW, rows=rows, cols=cols))
    zmax = float(probs.max()) if probs.size and probs.max() > 0 else 1.0
    fig = token_heatmap(probs, tokens[q_start : q_start + rows], tokens[k_start : k_start + cols], title=title,
                        zmin=0.0, zmax=zmax, height=max(420, min(900, 160 + 12 * rows)))
    # token_heatmap numbers tokens from 0; a window names them by their place in the whole text.
    y = plotly_labels(tokens[q_start : q_start + rows], range(q_start, q_start + rows))
    x = plotly_labels(tokens[k_start : k_start + cols], range(k_start, k_start + cols))
    fig.update_traces(x=x, y=y)
    fig.update_xaxes(**_tick_axis(x))
    fig.update_yaxes(**_tick_axis(y))
    return fig


def top_keys_chart(positions: Sequence[int], weights: Sequence[float], tokens: Sequence[str], query: int,
                   *, title: str | None = None) -> go.Figure:
    """Where does one query look? Horizontal bars of its top keys over the whole text, heaviest on top."""
    positions = [int(p) for p in positions]
    labels = plotly_labels([tokens[p] for p in positions], positions)  # unique: each names its position
    fig = go.Figure(go.Bar(
        x=np.asarray(weights, dtype=np.float32), y=labels, orientation="h",
        marker=dict(color=np.asarray(weights, dtype=np.float32), colorscale=SEQUENTIAL, cmin=0.0),
        hovertemplate=_("key %{y}<br>weight %{x:.4f}") + "<extra></extra>",
    ))
    heading = title or _("Top {k} keys of query {query} ({token})").format(
        k=len(positions), query=query, token=display_label(tokens[query]))
    fig.update_layout(title=plotly_escape(heading), height=max(240, 60 + 24 * len(positions)),
                      xaxis_title=_("attention weight"), yaxis=dict(autorange="reversed", type="category"),
                      margin=dict(l=10, r=10, t=60, b=40))
    return fig
