"""Figures of the Q, K, V walk-through: vectors as dims × tokens heatmaps, one score row as bars, the neuron view.

Payload: a walk-through shows a window of tokens around the query (``explorer.walkthrough.token_window``), never
all 1,024: the widest map is d_model × window (576 × 128 float32 ≈ 0.4 MB in base64), well under 1.5 MB.
Token labels are built from the *whole* text (``unique_labels``) and sliced, so "17 cat" is token 17 everywhere.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..escape import plotly_escape
from ..i18n import _
from .heatmap import _short, _tick_axis
from . import palette
from .palette import DIVERGING

# Mid-tone colours readable on Streamlit's light and dark backgrounds.
NEG_INF = "\u2212\u221e"  # "−∞"

SATURATE_PERCENTILE = 99.0


def _symmetric_bound(values: np.ndarray, percentile: float = 100.0) -> float:
    finite = np.abs(values[np.isfinite(values)])
    bound = float(np.percentile(finite, percentile)) if finite.size else 0.0
    return bound if bound > 0 else 1.0


def vectors_heatmap(
    vectors: np.ndarray,
    labels: Sequence[str],
    *,
    title: str,
    value_name: str,
    highlight: str | None = None,
    height: int | None = None,
) -> go.Figure:
    """Vectors of several tokens, one column each: (tokens, dims) in, a dims × tokens heatmap out.

    ``labels`` are the tokens' unique labels (one per row of ``vectors``, plain text: escaped here); ``highlight``
    outlines one column (the query token). Signed values use a diverging scale centred on 0.
    """
    z = np.asarray(vectors, dtype=np.float32).T  # (dims, tokens)
    # A few outlier dimensions (e.g. "massive activations" in x) would wash out the rest: the colour scale
    # saturates at the 99th percentile of |value|; hover still shows the exact number.
    bound = _symmetric_bound(z, SATURATE_PERCENTILE)
    labels = list(labels)
    column = labels.index(highlight) if highlight in labels else None
    labels = [plotly_escape(label) for label in labels]
    fig = go.Figure(
        go.Heatmap(
            z=z, x=labels, y=np.arange(z.shape[0]), colorscale=DIVERGING, zmin=-bound, zmax=bound,
            hovertemplate=_("token: %{{x}}<br>dimension: %{{y}}<br>{value_name}: %{{z:.4f}}").format(
                value_name=value_name) + "<extra></extra>",
            colorbar=dict(thickness=12),
        )
    )
    if column is not None:
        fig.add_shape(type="rect", x0=column - 0.5, x1=column + 0.5, y0=-0.5, y1=z.shape[0] - 0.5, xref="x", yref="y",
                      line=dict(color=palette.ACCENT, width=2))
    fig.update_layout(
        title=plotly_escape(title),
        xaxis=dict(title=_("token"), tickangle=-60, **_tick_axis(labels)),
        yaxis=dict(title=_("dimension"), autorange="reversed"),
        margin=dict(l=10, r=10, t=40, b=10),
        height=height or int(min(460, max(270, 150 + 1.2 * z.shape[0]))),
    )
    return fig


def weights_heatmap(weights: np.ndarray, *, title: str, height: int = 280) -> go.Figure:
    """One head's slice of a projection matrix, (D, d_model) in ``nn.Linear`` layout: output dims × input dims."""
    z = np.asarray(weights, dtype=np.float32)
    bound = _symmetric_bound(z, SATURATE_PERCENTILE)
    fig = go.Figure(go.Heatmap(
        z=z, colorscale=DIVERGING, zmin=-bound, zmax=bound, colorbar=dict(thickness=12),
        hovertemplate=_("input dimension: %{x}<br>head dimension: %{y}<br>weight: %{z:.4f}") + "<extra></extra>",
    ))
    fig.update_layout(title=plotly_escape(title), height=height, margin=dict(l=10, r=10, t=40, b=10),
                      xaxis=dict(title=_("input dimension (of x)")),
                      yaxis=dict(title=_("head dimension"), autorange="reversed"))
    return fig


def key_bars(
    values: np.ndarray,
    labels: Sequence[str],
    *,
    title: str,
    value_name: str,
    allowed: np.ndarray | None = None,
    picked: str | None = None,
    height: int = 240,
) -> go.Figure:
    """One query's value for every key in the window as bars; keys the mask hides are marked "−∞" at 0.

    ``allowed`` (bool per key) marks masked keys; their bars are not drawn (their value is −∞ or, after
    softmax, exactly 0) and a grey "−∞" marker stands in. ``picked`` colours the chosen key's bar. Labels are plain
    text (escaped here).
    """
    values = np.asarray(values, dtype=np.float64)
    colours = [palette.HIGHLIGHT if lab == picked else palette.MAIN for lab in labels]
    labels = [plotly_escape(label) for label in labels]
    allowed = np.ones(len(labels), dtype=bool) if allowed is None else np.asarray(allowed, dtype=bool)
    shown = np.where(allowed & np.isfinite(values), values, np.nan)
    fig = go.Figure(
        go.Bar(x=labels, y=shown, marker_color=colours, name=value_name,
               hovertemplate=_("key: %{{x}}<br>{value_name}: %{{y:.4f}}").format(value_name=value_name) + "<extra></extra>")
    )
    if not allowed.all():
        hidden = [lab for lab, ok in zip(labels, allowed) if not ok]
        fig.add_trace(go.Scatter(
            x=hidden, y=[0.0] * len(hidden), mode="markers+text", text=[NEG_INF] * len(hidden),
            textposition="top center", marker=dict(symbol="x-thin", size=9, color=palette.MUTED,
                                                   line=dict(width=2, color=palette.MUTED)),
            textfont=dict(color=palette.MUTED), name=_("masked (−∞)"),
            hovertemplate=_("key: %{{x}}<br>{value_name}: {neg_inf} (masked)").format(value_name=value_name, neg_inf=NEG_INF)
            + "<extra></extra>",
        ))
    fig.update_layout(
        title=plotly_escape(title), showlegend=False, height=height, bargap=0.15,
        xaxis=dict(tickangle=-60, **_tick_axis(labels)),
        yaxis=dict(title=value_name, zeroline=True),
        margin=dict(l=10, r=10, t=40, b=10),
    )
    return fig


def neuron_view(q: np.ndarray, k: np.ndarray, products: np.ndarray, *, query_label: str, key_label: str) -> go.Figure:
    """BertViz's neuron view for one (query, key) pair: q and k per dimension, then q ⊙ k, whose sum is the score.

    The lower panel's bars are coloured by sign: blue dimensions push the score up, red ones pull it down.
    """
    q, k, products = (np.asarray(a, dtype=np.float64) for a in (q, k, products))
    dims = np.arange(q.shape[0])
    score = float(products.sum())
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.12,
                        subplot_titles=(plotly_escape(_("q of {query} and k of {key}").format(
                                            query=_short(query_label, 20), key=_short(key_label, 20))),
                                        _("q ⊙ k per dimension: Σ = {score} = the score q·k").format(
                                            score=f"{score:.4f}")))
    fig.add_trace(go.Bar(x=dims, y=q, name="q", marker_color=palette.ACCENT,
                         hovertemplate=_("dimension %{x}<br>q: %{y:.4f}") + "<extra></extra>"), row=1, col=1)
    fig.add_trace(go.Bar(x=dims, y=k, name="k", marker_color=palette.HIGHLIGHT,
                         hovertemplate=_("dimension %{x}<br>k: %{y:.4f}") + "<extra></extra>"), row=1, col=1)
    fig.add_trace(go.Bar(x=dims, y=products, name="q ⊙ k", showlegend=False,
                         marker_color=np.where(products >= 0, palette.POSITIVE, palette.NEGATIVE).tolist(),
                         hovertemplate=_("dimension %{x}<br>q·k term: %{y:.4f}") + "<extra></extra>"), row=2, col=1)
    fig.update_layout(
        barmode="group", height=440, bargap=0.1, margin=dict(l=10, r=10, t=50, b=10),
        legend=dict(orientation="h", yanchor="bottom", y=1.08, xanchor="right", x=1),
    )
    fig.update_xaxes(title_text=_("dimension"), row=2, col=1)
    return fig


def rope_comparison(
    before: dict[str, np.ndarray], after: dict[str, np.ndarray], *, labels: dict[str, str],
    before_name: str | None = None, after_name: str | None = None,
) -> go.Figure:
    """Vectors before and after the rotary embedding, per dimension: one panel per name ("q", "k").

    ``labels`` name each panel (e.g. "q of 7 it (position 7)"). RoPE rotates pairs of dimensions by an angle
    that grows with the position; each pair keeps its length. ``before_name``/``after_name`` name the two lines
    (RoPE by default; the QK-norm step passes its own).
    """
    before_name = before_name or _("before RoPE")
    after_name = after_name or _("after RoPE (as scored)")
    names = list(before)
    fig = make_subplots(rows=len(names), cols=1, shared_xaxes=True, vertical_spacing=0.14,
                        subplot_titles=[plotly_escape(labels[n]) for n in names])
    for row, name in enumerate(names, start=1):
        b, a = np.asarray(before[name], dtype=np.float64), np.asarray(after[name], dtype=np.float64)
        dims = np.arange(b.shape[0])
        fig.add_trace(go.Scatter(x=dims, y=b, name=before_name, mode="lines+markers", showlegend=row == 1,
                                 line=dict(color=palette.MUTED, dash="dot"), marker=dict(size=4),
                                 hovertemplate=_("dimension %{x}<br>before: %{y:.4f}") + "<extra></extra>"), row=row, col=1)
        fig.add_trace(go.Scatter(x=dims, y=a, name=after_name, mode="lines+markers",
                                 showlegend=row == 1, line=dict(color=palette.MAIN), marker=dict(size=4),
                                 hovertemplate=_("dimension %{x}<br>after: %{y:.4f}") + "<extra></extra>"), row=row, col=1)
    fig.update_layout(height=200 + 180 * len(names), margin=dict(l=10, r=10, t=60, b=10),
                      legend=dict(orientation="h", yanchor="bottom", y=1.06, xanchor="right", x=1))
    fig.update_xaxes(title_text=_("dimension"), row=len(names), col=1)
    return fig


def vector_bars(values: np.ndarray, *, title: str, value_name: str, height: int = 240) -> go.Figure:
    """One vector (e.g. the head's output) as bars per dimension, coloured by sign."""
    values = np.asarray(values, dtype=np.float64)
    fig = go.Figure(go.Bar(
        x=np.arange(values.shape[0]), y=values,
        marker_color=np.where(values >= 0, palette.POSITIVE, palette.NEGATIVE).tolist(),
        hovertemplate=_("dimension %{{x}}<br>{value_name}: %{{y:.4f}}").format(value_name=value_name) + "<extra></extra>",
    ))
    fig.update_layout(title=plotly_escape(title), height=height, bargap=0.1, margin=dict(l=10, r=10, t=40, b=10),
                      xaxis=dict(title=_("dimension")), yaxis=dict(title=value_name))
    return fig
