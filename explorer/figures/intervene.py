"""Figures of the Intervene page: the next-token distribution before and after an ablation, and attribution against
exact patching. Pure functions: numbers and token strings in, plotly figures out (token labels escaped here).

The layer × head map of patching effects uses :func:`explorer.figures.analysis.layer_head_heatmap`.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..capture.tokens import plotly_labels
from ..escape import plotly_escape
from ..errors import ExplorerError
from ..i18n import _
from . import palette
from .heatmap import _tick_axis


def changed_tokens(before: Sequence[int], after: Sequence[int]) -> set[int]:
    """Token ids in one top-k list and not in the other: what the intervention brought in or pushed out."""
    return set(before) ^ set(after)


def next_token_bars(
    before: tuple[Sequence[int], Sequence[str], Sequence[float]],
    after: tuple[Sequence[int], Sequence[str], Sequence[float]],
    *,
    titles: tuple[str, str],
    value_name: str,
    changed_name: str,
) -> go.Figure:
    """Two horizontal top-k bar charts side by side, (ids, token strings, probabilities) each, highest on top.

    A token in only one of the two lists is drawn in the highlight colour and its label starred, so that what the
    ablation changed stands out without reading every label."""
    changed = changed_tokens(before[0], after[0])
    fig = make_subplots(rows=1, cols=2, subplot_titles=[plotly_escape(t) for t in titles], horizontal_spacing=0.18)
    for col, (ids, tokens, probs) in enumerate((before, after), start=1):
        if not len(ids) == len(tokens) == len(probs):
            raise ExplorerError(_("Each top-k list needs as many ids, tokens and probabilities."))
        labels = [("★ " if i in changed else "") + label for i, label in zip(ids, plotly_labels(tokens))]
        colours = [palette.HIGHLIGHT if i in changed else palette.MAIN for i in ids]
        fig.add_trace(go.Bar(
            x=[float(p) for p in probs], y=labels, orientation="h", marker_color=colours, showlegend=False,
            name=plotly_escape(titles[col - 1]),
            hovertemplate="%{y}<br>" + plotly_escape(value_name) + ": %{x:.4f}<extra></extra>",
        ), row=1, col=col)
        fig.update_yaxes(autorange="reversed", row=1, col=col)
        fig.update_xaxes(title_text=plotly_escape(value_name), range=[0, 1], row=1, col=col)
    fig.add_annotation(text="★ " + plotly_escape(changed_name), xref="paper", yref="paper", x=1, y=-0.22,
                       showarrow=False, font=dict(color=palette.HIGHLIGHT))
    fig.update_layout(height=380, margin=dict(l=10, r=10, t=40, b=70))
    return fig


def attribution_scatter(
    attribution: np.ndarray,
    exact: np.ndarray,
    heads: Sequence[tuple[int, int]],
    *,
    title: str,
    x_name: str,
    y_name: str,
) -> go.Figure:
    """Each head's attribution estimate (x) against its exact patching effect (y), with the diagonal y = x."""
    x, y = np.asarray(attribution, dtype=np.float64), np.asarray(exact, dtype=np.float64)
    if x.shape != y.shape or x.shape != (len(heads),):
        raise ExplorerError(_("Attribution and exact effects must cover the same heads."))
    low = float(min(x.min(), y.min(), 0.0)) if len(x) else 0.0
    high = float(max(x.max(), y.max(), 0.0)) if len(x) else 1.0
    fig = go.Figure(go.Scatter(x=[low, high], y=[low, high], mode="lines", showlegend=False, hoverinfo="skip",
                               line=dict(color=palette.GUIDE, dash="dot")))
    fig.add_trace(go.Scatter(
        x=x.tolist(), y=y.tolist(), mode="markers", showlegend=False, marker=dict(color=palette.MAIN, size=7),
        customdata=[list(h) for h in heads],
        hovertemplate="%{customdata[0]}.%{customdata[1]}<br>" + plotly_escape(x_name) + ": %{x:.3f}<br>"
        + plotly_escape(y_name) + ": %{y:.3f}<extra></extra>",
    ))
    fig.update_layout(title=plotly_escape(title), height=420, margin=dict(l=10, r=10, t=50, b=10),
                      xaxis=dict(title=plotly_escape(x_name)), yaxis=dict(title=plotly_escape(y_name)))
    return fig


def loss_chart(tokens: Sequence[str], losses: Mapping[str, np.ndarray], *, title: str | None = None) -> go.Figure:
    """Per-token loss of several runs of the same tokens, one line each; x is the token being predicted.

    ``losses[name]`` has ``len(tokens) − 1`` entries (token 0 is never predicted).
    """
    labels = plotly_labels(tokens)[1:]
    fig = go.Figure()
    for (name, values), colour in zip(losses.items(), palette.RUNS * len(losses)):
        values = np.asarray(values, dtype=np.float64)
        if values.shape != (len(labels),):
            raise ExplorerError(_("'{name}' has {losses} losses for {tokens} predicted tokens.").format(
                name=name, losses=values.shape[0], tokens=len(labels)))
        fig.add_trace(go.Scatter(
            x=labels, y=values, mode="lines+markers",
            name=_("{name} (mean {mean})").format(name=plotly_escape(name), mean=f"{values.mean():.2f}"),
            line=dict(color=colour), marker=dict(size=4),
            hovertemplate=_("predicting %{x}<br>loss: %{y:.3f} nats") + f"<extra>{plotly_escape(name)}</extra>",
        ))
    fig.update_layout(
        title=title, height=360, margin=dict(l=10, r=10, t=40 if title else 10, b=10), hovermode="x unified",
        xaxis=dict(title=_("predicted token"), tickangle=-60, **_tick_axis(labels)),
        yaxis=dict(title=_("loss (nats)"), rangemode="tozero"),
        legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="right", x=1),
    )
    return fig
