"""Figures of the Explain page: one head's score split into residual-stream parts (bars, a layers × heads map) and
the query's attention row to pick a key from. Pure functions: numbers and token strings in, plotly figures out
(token labels escaped here)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..capture.tokens import plotly_labels
from ..escape import plotly_escape
from . import palette


def part_bars(parts: pd.Series, *, title: str, value_name: str, top: int = 12) -> go.Figure:
    """The ``top`` parts of largest |value| as horizontal bars, largest on top, on the diverging scale."""
    chosen = parts.reindex(parts.abs().sort_values(ascending=False).index[:top])
    values = [float(v) for v in chosen.to_numpy()]
    fig = go.Figure(go.Bar(
        x=values, y=[plotly_escape(name) for name in chosen.index], orientation="h", showlegend=False,
        # coloured on the same diverging scale as the layers × heads map, so a part reads the same in both
        marker=dict(color=values, colorscale=palette.DIVERGING, cmid=0),
        hovertemplate="%{y}<br>" + plotly_escape(value_name) + ": %{x:.4f}<extra></extra>",
    ))
    fig.update_yaxes(autorange="reversed", type="category")
    fig.update_layout(title=plotly_escape(title), height=60 + 26 * max(len(values), 3),
                      margin=dict(l=10, r=10, t=50, b=10), xaxis=dict(title=plotly_escape(value_name)))
    return fig


def head_parts_map(grid: np.ndarray, others: pd.Series, *, title: str, value_name: str, embed_name: str,
                   mlp_name: str, layer_name: str, head_name: str) -> go.Figure:
    """Each earlier head's part as a layers × heads heatmap (``grid`` (L, H)), with the embeddings and each layer's
    MLP in a narrow column beside it (``others``: "embed", "mlpL", …). One diverging scale, centred on 0."""
    L, H = grid.shape
    rows = [plotly_escape(embed_name)] + [str(l) for l in range(L)]
    heads = np.vstack([np.full((1, H), np.nan), grid])  # (L + 1, H): the embed row has no heads
    side = np.array([[float(others.get("embed", np.nan))]]
                    + [[float(others.get(f"mlp{l}", np.nan))] for l in range(L)])  # (L + 1, 1)
    limit = float(np.nanmax(np.abs(np.concatenate([heads.ravel(), side.ravel()])))) if L else 1.0
    limit = limit if np.isfinite(limit) and limit > 0 else 1.0
    fig = make_subplots(rows=1, cols=2, column_widths=[0.86, 0.14], shared_yaxes=True, horizontal_spacing=0.03)
    style = dict(colorscale=palette.DIVERGING, zmin=-limit, zmax=limit, zmid=0)
    fig.add_trace(go.Heatmap(
        z=heads, x=[str(h) for h in range(H)], y=rows, colorbar=dict(title=plotly_escape(value_name)), **style,
        hovertemplate=plotly_escape(layer_name) + " %{y} · " + plotly_escape(head_name) + " %{x}<br>"
        + plotly_escape(value_name) + ": %{z:.4f}<extra></extra>",
    ), row=1, col=1)
    fig.add_trace(go.Heatmap(
        z=side, x=[plotly_escape(mlp_name)], y=rows, showscale=False, **style,
        hovertemplate="%{y} · %{x}<br>" + plotly_escape(value_name) + ": %{z:.4f}<extra></extra>",
    ), row=1, col=2)
    fig.update_yaxes(autorange="reversed", type="category", title_text=plotly_escape(layer_name), row=1, col=1)
    fig.update_xaxes(type="category", title_text=plotly_escape(head_name), row=1, col=1)
    fig.update_xaxes(type="category", row=1, col=2)
    fig.update_layout(title=plotly_escape(title), height=max(320, min(900, 120 + 18 * (L + 1))),
                      margin=dict(l=10, r=10, t=50, b=10))
    return fig


def attention_row(weights: np.ndarray, tokens: Sequence[str], *, query: int, key: int, title: str,
                  value_name: str) -> go.Figure:
    """One query's attention over the keys as bars (a click on a bar picks that key: bar charts report clicks,
    heatmaps do not); the query's own bar in the accent colour, the picked key in the highlight colour."""
    n = len(weights)
    labels = [f"{j}: {label}" for j, label in enumerate(plotly_labels(list(tokens)[:n]))]
    colours = [palette.HIGHLIGHT if j == key else palette.ACCENT if j == query else palette.MAIN for j in range(n)]
    values = [float(w) for w in weights]
    fig = go.Figure(go.Bar(x=list(range(n)), y=values, marker_color=colours, showlegend=False, hoverinfo="skip"))
    # A transparent full-height bar over each key takes the hover and the click, so that a key with a tiny weight
    # is as easy to pick as the top one.
    fig.add_trace(go.Bar(
        x=list(range(n)), y=[1.0] * n, marker_color="rgba(0, 0, 0, 0)", showlegend=False,
        customdata=[[label, value] for label, value in zip(labels, values)],
        hovertemplate="%{customdata[0]}<br>" + plotly_escape(value_name) + ": %{customdata[1]:.4f}<extra></extra>",
    ))
    fig.update_layout(title=plotly_escape(title), height=260, margin=dict(l=10, r=10, t=50, b=10),
                      yaxis=dict(title=plotly_escape(value_name), range=[0, 1]), xaxis=dict(title=None),
                      clickmode="event+select", barmode="overlay")
    return fig
