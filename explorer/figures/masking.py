"""Figures of the masking page: the masks as token × token matrices, and what flipping one does to the outputs.

Attention maps and their difference use :func:`explorer.figures.heatmap.token_heatmap` (downsampled for long texts).
The mask matrices show only the first few tokens (the pattern is the same for any length), annotated "0" / "−∞".
The per-position charts are one bar per token: 1,024 float64 values and short hover strings stay far below 1.5 MB.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from ..escape import plotly_escape
from ..capture.tokens import display_label, plotly_labels
from .heatmap import DOWNSAMPLED_NOTE, _tick_axis
from . import palette
from .qkv import NEG_INF
from ..i18n import N_, _

MASK_TOKENS = 16  # tokens shown in a mask matrix: enough to see the pattern, small enough to read every cell


def mask_figure(allowed: np.ndarray, tokens: Sequence[str], *, title: str, height: int = 360) -> go.Figure:
    """A token × token mask: blue cells (added value 0) may be attended to, grey cells get −∞."""
    allowed = np.asarray(allowed, dtype=bool)
    labels = plotly_labels(tokens)
    fig = go.Figure(go.Heatmap(
        z=allowed.astype(np.float32), x=labels, y=labels, zmin=0, zmax=1, showscale=False,
        colorscale=[[0.0, palette.MUTED], [0.5, palette.MUTED], [0.5, palette.MAIN], [1.0, palette.MAIN]],
        text=np.where(allowed, "0", NEG_INF), texttemplate="%{text}",
        textfont=dict(color="white", size=11 if len(labels) <= 12 else 9),
        xgap=1, ygap=1,
        hovertemplate=_("query: %{y}<br>key: %{x}<br>added to the score: %{text}") + "<extra></extra>",
    ))
    fig.update_layout(
        title=plotly_escape(title), height=height, margin=dict(l=10, r=10, t=40, b=10),
        xaxis=dict(title=_("key"), tickangle=-60, type="category"),
        yaxis=dict(title=_("query"), autorange="reversed", type="category"),
    )
    return fig


def window_span(window: int) -> int:
    """Positions in the sliding-window sketch: the window and a few more, so the band's far edge shows."""
    return window + max(8, window // 8)


def window_hidden_pairs(n: int, window: int) -> int:
    """Query–key pairs (j ≤ i) that a window of ``window`` keys hides in an n-token text: j ≤ i − window."""
    k = max(0, n - window)  # queries i ≥ window each lose i − window + 1 keys: 1 + 2 + … + k
    return k * (k + 1) // 2


def window_figure(window: int, n: int, *, text_tokens: int, title: str, height: int = 420) -> go.Figure:
    """The causal triangle of a global layer and the band a sliding window keeps, over positions 0…n−1, drawn as
    exact polygons (a 576 × 576 matrix would be 330k cells for two straight edges). A dashed line marks where the
    reader's text ends."""
    last = n - 1
    causal_x, causal_y = [0, 0, last, 0], [0, last, last, 0]
    # query i keeps keys max(0, i − window + 1) … i: the band's left edge starts to rise at query window − 1
    band_x, band_y = [0, 0, last - window + 1, last, 0], [0, window - 1, last, last, 0]
    fig = go.Figure([
        go.Scatter(x=causal_x, y=causal_y, fill="toself", mode="lines", line=dict(color=palette.MUTED),
                   fillcolor=palette.MUTED, name=_("outside the window: global layers only"), hoverinfo="name"),
        go.Scatter(x=band_x, y=band_y, fill="toself", mode="lines", line=dict(color=palette.MAIN),
                   fillcolor=palette.MAIN, name=_("inside the window of {w}: every layer").format(w=window), hoverinfo="name"),
    ])
    end = min(text_tokens, n) - 0.5
    fig.add_shape(type="line", x0=-0.5, x1=last, y0=end, y1=end, line=dict(color=palette.HIGHLIGHT, dash="dash"))
    fig.add_annotation(x=last, y=end, xanchor="right", yanchor="bottom", showarrow=False,
                       text=plotly_escape(_("your text ends here ({n} tokens)").format(n=text_tokens)))
    fig.update_layout(
        title=plotly_escape(title), height=height, margin=dict(l=10, r=10, t=40, b=10),
        xaxis=dict(title=_("key position"), range=[-0.5, last + 0.5], constrain="domain"),
        yaxis=dict(title=_("query position"), range=[last + 0.5, -0.5], scaleanchor="x", scaleratio=1),
        legend=dict(orientation="h", yanchor="top", y=-0.15),
    )
    return fig


def fit_panel(fig: go.Figure, *, max_ticks: int, max_height: int) -> go.Figure:
    """Fit a :func:`explorer.figures.heatmap.token_heatmap` into a narrow panel: fewer tick labels and a bounded height.

    The shared heatmap labels up to 60 tokens per axis, legible across a full-width chart; in a half-width panel
    they would overlap. Hover still names every token.
    """
    for axis in (fig.layout.xaxis, fig.layout.yaxis):
        values, text = axis.tickvals, axis.ticktext
        if values is not None and len(values) > max_ticks:
            step = -(-len(values) // max_ticks)
            axis.tickvals, axis.ticktext = values[::step], text[::step]
    if fig.layout.height and fig.layout.height > max_height:
        fig.update_layout(height=max_height)
    title = fig.layout.title.text
    marker = " (" + _(DOWNSAMPLED_NOTE).split("{", 1)[0]  # how token_heatmap appends its note to a title
    if title and marker in title:  # the heatmap's downsampling note, on its own line so it is not cut off
        head, note = title.split(marker, 1)
        fig.update_layout(title_text=f"{head}<br><sup>{marker[1:]}{note}</sup>", margin_t=60)
    return fig


def _hover_table(columns: Sequence[Sequence[str]]) -> np.ndarray:
    # plotly reads a few HTML tags in hover text; tokens are data, so they are escaped
    return np.stack([np.asarray([plotly_escape(display_label(str(v))) for v in col], dtype=object) for col in columns],
                    axis=-1)


KL_TITLE = N_("KL(causal ‖ bidirectional) of the next-token prediction")
COSINE_TITLE = N_("How far each token's final state turns: 1 − cosine")


def kl_chart(changes: pd.DataFrame, *, title: str = KL_TITLE) -> go.Figure:
    """One bar per position: how far the next-token distribution moved; amber where the top token changed."""
    labels = plotly_labels(changes["token"].tolist())
    custom = _hover_table([changes["top_causal"], changes["top_bidirectional"], changes["actual_next"]])
    colours = np.where(changes["top_changed"].to_numpy(), palette.HIGHLIGHT, palette.MAIN).tolist()
    fig = go.Figure(go.Bar(
        x=labels, y=changes["kl"].to_numpy(dtype=np.float64), marker_color=colours, customdata=custom,
        hovertemplate=_("position: %{x}<br>KL: %{y:.4f} nats<br>top (causal): %{customdata[0]}"
                        "<br>top (bidirectional): %{customdata[1]}<br>actual next: %{customdata[2]}")
        + "<extra></extra>",
    ))
    fig.update_layout(
        title=plotly_escape(_(title)), height=320, bargap=0.1, margin=dict(l=10, r=10, t=40, b=10),
        xaxis=dict(title=_("position (its token)"), tickangle=-60, **_tick_axis(labels)),
        yaxis=dict(title=_("KL (nats)"), rangemode="tozero"),
    )
    return fig


def cosine_chart(changes: pd.DataFrame, *, title: str = COSINE_TITLE) -> go.Figure:
    """One bar per token: 1 − cos(final state under causal, final state under bidirectional)."""
    labels = plotly_labels(changes["token"].tolist())
    fig = go.Figure(go.Bar(
        x=labels, y=changes["cosine_change"].to_numpy(dtype=np.float64), marker_color=palette.MAIN,
        customdata=changes["cosine"].to_numpy(dtype=np.float64),
        hovertemplate=_("token: %{x}<br>1 − cosine: %{y:.4f}<br>cosine: %{customdata:.4f}") + "<extra></extra>",
    ))
    fig.update_layout(
        title=plotly_escape(_(title)), height=320, bargap=0.1, margin=dict(l=10, r=10, t=40, b=10),
        xaxis=dict(title=_("token"), tickangle=-60, **_tick_axis(labels)),
        yaxis=dict(title=_("1 − cosine"), rangemode="tozero"),
    )
    return fig
