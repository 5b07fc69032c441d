"""Figures of the Explain page's weight-vs-contribution and token-attribution tabs. Pure functions: numbers and
token strings in, plotly figures out (every outside string escaped here, token labels through plotly_labels)."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

from ..capture.tokens import plotly_labels
from ..errors import ExplorerError
from ..escape import plotly_escape
from ..i18n import _
from . import palette

MAX_BARS = 400  # value norms of a longer text are shown for its first MAX_BARS tokens (the title says so)


def value_norm_bars(tokens: Sequence[str], norms: Sequence[float], *, title: str, value_name: str,
                    sink: Sequence[int] = ()) -> go.Figure:
    """One bar per key: ``||f_j||``, the size of what key j can move into the head's output; sink keys highlighted."""
    if len(tokens) != len(norms):
        raise ExplorerError(_("Each token needs one value norm."))
    shown = min(len(tokens), MAX_BARS)
    labels = plotly_labels(list(tokens))[:shown]
    colours = [palette.HIGHLIGHT if i in set(sink) else palette.MAIN for i in range(shown)]
    fig = go.Figure(go.Bar(x=labels, y=np.asarray(norms, dtype=np.float32)[:shown], marker_color=colours,
                           hovertemplate="%{x}<br>" + plotly_escape(value_name) + ": %{y:.4g}<extra></extra>"))
    fig.update_layout(title=plotly_escape(title), height=260, margin=dict(l=10, r=10, t=40, b=10),
                      xaxis=dict(type="category"), yaxis=dict(title=plotly_escape(value_name)))
    return fig


def sink_share_lines(layers: Sequence[int], by_weight: Sequence[float], by_contribution: Sequence[float], *,
                     title: str, weight_name: str, contribution_name: str, y_name: str) -> go.Figure:
    """The sink's share over layers, by weight and by contribution, as two lines."""
    fig = go.Figure()
    for values, name, colour in ((by_weight, weight_name, palette.FIRST), (by_contribution, contribution_name,
                                                                           palette.SECOND)):
        fig.add_trace(go.Scatter(x=list(layers), y=[float(v) for v in values], mode="lines+markers",
                                 name=plotly_escape(name), line=dict(color=colour),
                                 hovertemplate="%{x}: %{y:.3f}<extra>" + plotly_escape(name) + "</extra>"))
    fig.update_layout(title=plotly_escape(title), height=320, margin=dict(l=10, r=10, t=40, b=10),
                      xaxis=dict(title=plotly_escape(_("layer")), dtick=1 if len(layers) <= 20 else 5),
                      yaxis=dict(title=plotly_escape(y_name), range=[0, 1]))
    return fig


def token_scores(tokens: Sequence[str], scores: Mapping[str, Sequence[float]], *, title: str,
                 value_name: str) -> go.Figure:
    """The tokens coloured by each method (one row per method): each row divided by its largest |score| so that
    methods of different units share one signed colour scale; the hover gives the raw score."""
    labels = plotly_labels(list(tokens))
    raw = np.array([np.asarray(s, dtype=np.float64) for s in scores.values()])  # (methods, n)
    if raw.shape[1:] != (len(tokens),):
        raise ExplorerError(_("Each method needs one score per token."))
    scale = np.abs(raw).max(axis=1, keepdims=True)
    shown = np.divide(raw, scale, out=np.zeros_like(raw), where=scale > 0)
    names = [plotly_escape(m) for m in scores]
    fig = go.Figure(go.Heatmap(
        z=shown.astype(np.float32), x=labels, y=names, customdata=raw.astype(np.float32), zmin=-1, zmax=1,
        colorscale=palette.DIVERGING, colorbar=dict(title=plotly_escape(_("share of the row's largest"))),
        hovertemplate="%{y}<br>%{x}<br>" + plotly_escape(value_name) + ": %{customdata:.4g}<extra></extra>",
    ))
    fig.update_layout(title=plotly_escape(title), height=120 + 40 * len(names), margin=dict(l=10, r=10, t=40, b=10),
                      xaxis=dict(type="category"), yaxis=dict(type="category", autorange="reversed"))
    return fig


def deletion_curves(curves: Mapping[str, Sequence[float]], random: Sequence[float], *, title: str, random_name: str,
                    x_name: str, y_name: str) -> go.Figure:
    """The target after deleting the top-k tokens of each method, k = 0 … K, with the random order dashed."""
    fig = go.Figure()
    for name, values in curves.items():
        fig.add_trace(go.Scatter(x=list(range(len(values))), y=[float(v) for v in values], mode="lines+markers",
                                 name=plotly_escape(name), hovertemplate="k = %{x}: %{y:.3f}<extra>"
                                 + plotly_escape(name) + "</extra>"))
    fig.add_trace(go.Scatter(x=list(range(len(random))), y=[float(v) for v in random], mode="lines",
                             name=plotly_escape(random_name), line=dict(color=palette.MUTED, dash="dash"),
                             hovertemplate="k = %{x}: %{y:.3f}<extra>" + plotly_escape(random_name) + "</extra>"))
    fig.update_layout(title=plotly_escape(title), height=360, margin=dict(l=10, r=10, t=40, b=10),
                      xaxis=dict(title=plotly_escape(x_name), dtick=1), yaxis=dict(title=plotly_escape(y_name)))
    return fig
