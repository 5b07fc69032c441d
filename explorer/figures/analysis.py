"""Figures of the head-analysis and compare pages: layer × head maps, the Q/K plane, the logit lens.

Pure functions: arrays in, plotly figures out. Token × token maps (rollout, comparisons) use
:func:`explorer.figures.heatmap.token_heatmap`.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import plotly.graph_objects as go

from ..escape import plotly_escape
from ..analysis.geometry import QKPlane
from ..analysis.lens import LensResult
from ..capture.tokens import display_label, plotly_labels
from .heatmap import _short
from . import palette
from .palette import SEQUENTIAL
from ..i18n import _

CLICK_TRACE = "click-target"  # name of the invisible scatter that makes heatmap cells clickable


def layer_head_heatmap(
    values: np.ndarray,
    title: str,
    value_name: str,
    *,
    zmin: float | None = None,
    zmax: float | None = None,
    selected: tuple[int, int] | None = None,
    height: int | None = None,
) -> go.Figure:
    """A layers × heads heatmap (layer 0 at the top). Each cell also carries an invisible marker, because
    Streamlit reports clicks on scatter points but not on heatmap cells; its customdata is (layer, head, value)."""
    values = np.asarray(values, dtype=np.float64)
    n_layers, n_heads = values.shape
    layers, heads = np.meshgrid(np.arange(n_layers), np.arange(n_heads), indexing="ij")
    fig = go.Figure(
        go.Heatmap(
            z=values,
            x=list(range(n_heads)),
            y=list(range(n_layers)),
            colorscale=SEQUENTIAL,
            zmin=zmin,
            zmax=zmax,
            colorbar=dict(title=dict(text=value_name, side="right"), thickness=12),
            hoverinfo="skip",  # the markers on top answer hovers and clicks
        )
    )
    fig.add_trace(
        go.Scatter(
            x=heads.ravel(),
            y=layers.ravel(),
            mode="markers",
            name=CLICK_TRACE,
            marker=dict(size=14, color="rgba(0,0,0,0)", symbol="square"),
            customdata=np.stack([layers.ravel(), heads.ravel(), values.ravel()], axis=1).tolist(),  # lists: plotly.js
            # hands typed-array customdata to Streamlit as an object, which loses it
            hovertemplate=_("layer %{customdata[0]} · head %{customdata[1]}") + f"<br>{value_name}: "
            "%{customdata[2]:.3f}<br>" + _("click to open") + "<extra></extra>",
            showlegend=False,
        )
    )
    if selected is not None:
        layer, head = selected
        fig.add_shape(type="rect", x0=head - 0.5, x1=head + 0.5, y0=layer - 0.5, y1=layer + 0.5,
                      line=dict(color=palette.ACCENT, width=2))
    fig.update_layout(
        title=plotly_escape(title),
        # Fixed ranges: the click markers must not pad the axes beyond the cells.
        xaxis=dict(title=_("head"), dtick=1, side="top", range=[-0.5, n_heads - 0.5]),
        yaxis=dict(title=_("layer"), dtick=1 if n_layers <= 40 else None, range=[n_layers - 0.5, -0.5]),
        margin=dict(l=10, r=10, t=70, b=10),
        height=height or max(320, min(900, 110 + 18 * n_layers)),
        clickmode="event+select",
        dragmode=False,
    )
    return fig


def qk_plane_figure(
    plane: QKPlane,
    tokens: Sequence[str],
    query_index: int,
    *,
    allowed: Sequence[bool] | None = None,
    scores: np.ndarray | None = None,
    top_key: int | None = None,
    nearest_key: int | None = None,
    title: str | None = None,
) -> go.Figure:
    """Queries (circles) and keys (diamonds) in one plane, coloured by position; the chosen query is a large star,
    the highest-scoring key and the nearest key are ringed. Keys the mask hides from this query are faded."""
    labels = plotly_labels(tokens)
    n = len(labels)
    positions = np.arange(n)
    colour = dict(color=positions, colorscale=SEQUENTIAL, cmin=0, cmax=max(1, n - 1))
    allowed_arr = np.ones(n, bool) if allowed is None else np.asarray(allowed, bool)
    key_hover = (_("key %{text}<br>score with query: %{customdata:.3f}") if scores is not None else
                 _("key %{text}")) + "<extra></extra>"
    shown_scores = np.where(np.isfinite(scores), scores, np.nan) if scores is not None else None
    fig = go.Figure()
    fig.add_trace(go.Scatter(
        x=plane.queries[:, 0], y=plane.queries[:, 1], mode="markers", name=_("queries"), text=labels,
        marker=dict(symbol="circle", size=9, line=dict(width=0.5, color="white"), **colour,
                    colorbar=dict(title=dict(text=_("position"), side="right"), thickness=12)),
        hovertemplate=_("query %{text}") + "<extra></extra>",
    ))
    fig.add_trace(go.Scatter(
        x=plane.keys[:, 0], y=plane.keys[:, 1], mode="markers", name=_("keys"), text=labels, customdata=shown_scores,
        marker=dict(symbol="diamond", size=10, line=dict(width=1, color="black"), opacity=1.0, **colour),
        selectedpoints=list(np.flatnonzero(allowed_arr)) if not allowed_arr.all() else None,
        unselected=dict(marker=dict(opacity=0.25)),
        hovertemplate=key_hover,
    ))
    fig.add_trace(go.Scatter(
        x=[plane.queries[query_index, 0]], y=[plane.queries[query_index, 1]], mode="markers+text",
        name=_("query {index}").format(index=query_index), text=[f"q: {_short(plotly_escape(display_label(tokens[query_index])), 16)}"],
        hovertext=[labels[query_index]], textposition="top center",
        marker=dict(symbol="star", size=20, color=palette.ACCENT, line=dict(width=1, color="black")),
        hovertemplate=_("the chosen query: %{hovertext}") + "<extra></extra>",
    ))
    for index, name, colour_ring, dash in (
        (top_key, _("highest score"), palette.ACCENT, "solid"), (nearest_key, _("nearest key"), palette.FIRST, "dot")
    ):
        if index is None:
            continue
        fig.add_trace(go.Scatter(
            x=[plane.keys[index, 0]], y=[plane.keys[index, 1]], mode="markers",
            name=f"{name}: {_short(labels[index], 16)}",
            marker=dict(symbol="circle-open", size=24 if dash == "solid" else 30,
                        line=dict(width=2.5, color=colour_ring)),
            hoverinfo="skip",
        ))
    fig.update_layout(
        title=plotly_escape(title) if title else None,
        xaxis=dict(title=plane.axis_titles[0], zeroline=True),
        yaxis=dict(title=plane.axis_titles[1], zeroline=True, scaleanchor="x", scaleratio=1),
        # Below the plot: above it, a wrapped legend would run into the title on narrow screens.
        legend=dict(orientation="h", yanchor="top", y=-0.14, x=0),
        margin=dict(l=10, r=10, t=40 if title else 10, b=10),
        height=600,
    )
    return fig


def lens_figure(result: LensResult, input_tokens: Sequence[str], title: str | None = None) -> go.Figure:
    """Layers (embeddings at the bottom, output at the top) × positions: each cell shows the top prediction for the
    next token read from that layer, coloured by its probability; hover lists the top-k."""
    labels = plotly_labels(input_tokens)
    columns = [labels[p] for p in result.positions]
    top = [[_short(plotly_escape(display_label(t)), 8) for t in row] for row in result.top_tokens]
    k = result.probs.shape[-1]
    hover = [
        ["<br>".join(f"{plotly_escape(repr(display_label(result.tokens[l][c][j])))}: {result.probs[l, c, j]:.3f}"
                     for j in range(k))
         for c in range(len(columns))]
        for l in range(len(result.layer_labels))
    ]
    fig = go.Figure(go.Heatmap(
        z=result.probs[:, :, 0],
        x=columns,
        y=result.layer_labels,
        text=top,
        texttemplate="%{text}",
        textfont=dict(size=10),
        customdata=hover,
        colorscale=SEQUENTIAL,
        zmin=0,
        zmax=1,
        colorbar=dict(title=dict(text=_("probability"), side="right"), thickness=12),
        hovertemplate="%{y}<br>" + _("at %{x}, next token:") + "<br>%{customdata}<extra></extra>",
    ))
    fig.update_layout(
        title=plotly_escape(title) if title else None,
        xaxis=dict(title=_("position (input token; the cell predicts the token after it)"), type="category",
                   tickangle=-60, side="bottom"),
        yaxis=dict(title=_("residual stream after"), type="category"),
        margin=dict(l=10, r=10, t=40 if title else 10, b=10),
        height=max(360, 110 + 21 * len(result.layer_labels)),
    )
    return fig

