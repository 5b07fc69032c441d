"""Figures for the Generation page: the sampling pipeline stage by stage, the new token's attention, the output.

Pure functions (data in, plotly figure or escaped HTML string out), so they are testable without a browser.
"""

from __future__ import annotations

import html
from typing import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.colors import sample_colorscale
from plotly.subplots import make_subplots

from ..escape import plotly_escape
from ..decoding.sampling import Stage
from ..capture.tokens import display_label, plotly_labels
from .heatmap import _tick_axis
from . import palette
from ..i18n import _
from .palette import SEQUENTIAL

SHOWN_STAGES = ("softmax", "temperature", "top-k", "top-p")  # "final" equals the last cut; it is not drawn again


def candidate_label(text: str) -> str:
    """A candidate token quoted, so that leading spaces show (' Paris' vs 'Paris')."""
    return f"'{display_label(text)}'" if text.strip() else display_label(text)


def top_candidates(stages: Sequence[Stage], n: int) -> list[int]:
    """The ``n`` token ids the model itself ranks highest (raw softmax): the same rows in every stage's panel."""
    raw = stages[0].probs
    return [int(i) for i in np.argsort(-raw.numpy(), kind="stable")[:n]]


def stage_chart(
    stages: Sequence[Stage],
    token_text: dict[int, str],
    candidates: Sequence[int],
    chosen: int | None = None,
    height: int | None = None,
) -> go.Figure:
    """One panel per stage (softmax, ÷T, top-k, top-p): the candidates' probabilities as horizontal bars.

    A bar a stage cuts stays visible in grey at the height it had before the cut, and the panel's title says
    how much mass the stage kept and cut. The last row, "all others", is the mass on every other token.
    """
    shown = [s for s in stages if s.name in SHOWN_STAGES]
    ids = list(candidates)
    labels = [plotly_escape(f"{rank + 1}. {candidate_label(token_text.get(i, str(i)))}")
              for rank, i in enumerate(ids)]
    others = _("all others")
    fig = make_subplots(
        rows=1, cols=len(shown), shared_yaxes=True, horizontal_spacing=0.02,
        subplot_titles=[_stage_title(s) for s in shown],
    )
    previous = None
    for col, stage in enumerate(shown, start=1):
        probs = stage.probs.numpy()
        values = [float(probs[i]) for i in ids]
        rest = max(0.0, 1.0 - float(np.sum(values)))
        cut_here = [
            bool(stage.kept is not None and not stage.kept[i] and previous is not None and previous[i] > 0) for i in ids
        ]
        colours = [palette.SECOND if i == chosen else palette.FIRST for i in ids]
        fig.add_trace(
            go.Bar(
                x=values + [rest], y=labels + [others], orientation="h", name=_("kept"),
                marker_color=colours + [palette.FIRST_FADED],
                hovertemplate="%{y}: %{x:.4f}<extra>" + plotly_escape(stage.label) + "</extra>",
            ),
            row=1, col=col,
        )
        if stage.kept is not None and previous is not None:
            before = [float(previous[i]) if c else 0.0 for i, c in zip(ids, cut_here)]
            rest_cut = _mass_cut_outside(stage, previous, ids)
            fig.add_trace(
                go.Bar(
                    x=before + [rest_cut], y=labels + [others], orientation="h", name=_("cut by this stage"),
                    marker=dict(color=palette.CUT, pattern=dict(shape="/")),
                    hovertemplate=_("%{y}: cut (had %{x:.4f})") + "<extra>" + plotly_escape(stage.label) + "</extra>",
                ),
                row=1, col=col,
            )
        previous = probs
    # One legend entry per kind of bar, whichever panel carries it.
    seen: set[str] = set()
    for trace in fig.data:
        trace.showlegend = trace.name not in seen
        seen.add(trace.name)
    fig.update_layout(
        barmode="overlay",
        height=height or 125 + 24 * (len(ids) + 1),
        margin=dict(l=10, r=10, t=80, b=45),
        legend=dict(orientation="h", yref="container", yanchor="bottom", y=0, x=0),
        bargap=0.25,
    )
    fig.update_yaxes(autorange="reversed", type="category")
    # One inner tick: a panel's "100%" would run into the next panel's "0%", and narrow panels have room for one.
    fig.update_xaxes(range=[0, 1.0], tickvals=[0.5], ticktext=["50%"], tickangle=0)
    fig.update_annotations(font_size=12)
    return fig


def _stage_title(stage: Stage) -> str:
    """Three short lines (panels are narrow on small screens): the stage, then what it kept and cut."""
    label = plotly_escape(stage.label)
    if stage.name == "softmax":
        return label + "<br>" + _("the model's own") + "<br>&nbsp;"
    nothing = _("cuts nothing")
    if stage.name == "temperature":
        return label + "<br>" + (_("reshapes") if stage.active else _("unchanged")) + "<br>" + nothing
    if not stage.active:
        return label + "<br>&nbsp;<br>" + nothing
    return f"{label}<br>" + _("kept {kept}<br>cut {cut}").format(kept=f"{stage.mass_kept:.1%}",
                                                                 cut=f"{1 - stage.mass_kept:.1%}")


def _mass_cut_outside(stage: Stage, previous: np.ndarray, ids: Sequence[int]) -> float:
    """Mass the stage removed from tokens not among the shown candidates."""
    if stage.kept is None:
        return 0.0
    cut = ~stage.kept.numpy()
    cut[list(ids)] = False
    return float(previous[cut].sum())


def attention_row_chart(
    row: np.ndarray, tokens: Sequence[str], title: str | None = None, height: int = 300, query: int | None = None
) -> go.Figure:
    """One query's attention over the context, as bars; the query's own bar (default: the last token) stands out."""
    labels = plotly_labels(tokens)
    values = np.asarray(row, dtype=np.float32)
    query = len(labels) - 1 if query is None else query
    colours = [palette.SECOND if i == query else palette.FIRST for i in range(len(labels))]
    fig = go.Figure(
        go.Bar(x=labels, y=values, marker_color=colours, hovertemplate=_("key %{x}<br>attention %{y:.4f}") + "<extra></extra>")
    )
    fig.update_layout(
        title=plotly_escape(title) if title else None, height=height,
        margin=dict(l=10, r=10, t=40 if title else 10, b=10),
        xaxis=dict(title=_("key (context token)"), tickangle=-60, **_tick_axis(labels)),
        yaxis=dict(title=_("attention"), rangemode="tozero"),
    )
    return fig


def attention_heads_chart(rows: np.ndarray, tokens: Sequence[str], title: str | None = None) -> go.Figure:
    """All heads of a layer: heads × context tokens, the newest token's attention in each head."""
    labels = plotly_labels(tokens)
    heads = [_("head {h}").format(h=h) for h in range(rows.shape[0])]
    fig = go.Figure(
        go.Heatmap(
            z=np.asarray(rows, dtype=np.float32), x=labels, y=heads, colorscale=SEQUENTIAL, zmin=0.0,
            hovertemplate=_("%{y}<br>key %{x}<br>attention %{z:.4f}") + "<extra></extra>",
        )
    )
    fig.update_layout(
        title=plotly_escape(title) if title else None, height=max(260, 90 + 26 * len(heads)),
        margin=dict(l=10, r=10, t=40 if title else 10, b=10),
        xaxis=dict(title=_("key (context token)"), tickangle=-60, **_tick_axis(labels)),
        yaxis=dict(autorange="reversed", type="category"),
    )
    return fig


def probability_colour(p: float, alpha: float = 0.45) -> str:
    """A background colour for probability ``p`` (Viridis: dark purple = unlikely, yellow = likely), translucent
    so that the theme's own text colour stays readable on light and dark backgrounds."""
    rgb = sample_colorscale(SEQUENTIAL, [min(1.0, max(0.0, float(p)))], colortype="tuple")[0]
    r, g, b = (int(round(255 * c)) for c in rgb)
    return f"rgba({r}, {g}, {b}, {alpha})"


def coloured_text_html(prompt: str, pieces: Sequence[str], probs: Sequence[float], notes: Sequence[str] = ()) -> str:
    """The prompt, then each generated token on a background coloured by ``probs``. All text is HTML-escaped.

    ``notes`` (optional, one per token) become the tooltip.
    """
    parts = [f'<span style="opacity:0.65">{html.escape(prompt)}</span>']
    for i, (piece, p) in enumerate(zip(pieces, probs)):
        note = notes[i] if i < len(notes) else f"p = {p:.3f}"
        shown = piece if piece else "\u2205"  # an empty piece (e.g. a special token decoded to nothing) stays visible
        parts.append(
            f'<span title="{html.escape(note, quote=True)}" style="background:{probability_colour(p)};'
            f'border-radius:3px;padding:1px 0">{html.escape(shown)}</span>'
        )
    body = "".join(parts)
    return (
        '<div data-testid="ae-generated-text" style="white-space:pre-wrap;line-height:1.9;font-size:1.05rem;'
        f'word-break:break-word">{body}</div>'
    )


def colour_legend_html() -> str:
    """A small legend for :func:`coloured_text_html`."""
    stops = "".join(
        f'<span style="background:{probability_colour(p)};padding:1px 6px">{p:.0%}</span>'
        for p in (0, 0.25, 0.5, 0.75, 1)
    )
    caption = html.escape(_("probability when chosen:"))
    return f'<div style="font-size:0.8rem;opacity:0.85">{caption} {stops}</div>'
