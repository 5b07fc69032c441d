"""Heatmap primitives shared by every page: token-labelled, downsampled for long texts, readable in both themes.

Payload: plotly sends float32 arrays base64-encoded, 4 bytes a cell. A 1,024 × 1,024 map would be ~5.6 MB
on the wire, so maps larger than ``max_cells`` per side are reduced server-side by block averaging (each
displayed cell is the mean of a block of queries × keys, so rows still sum to ~1) and the title says so.
At most 400 × 400 cells ≈ 0.9 MB leaves room for labels under the 1.5 MB-per-figure budget.
"""

from __future__ import annotations

import re
from typing import Sequence

import numpy as np
import plotly.graph_objects as go

from ..analysis.downsample import BlockMeans, block_means
from ..escape import plotly_escape
from ..capture.tokens import plotly_labels
from .palette import DIVERGING, SEQUENTIAL
from ..i18n import N_, _

DOWNSAMPLED_NOTE = N_("downsampled: each cell averages {rows}×{cols} token pairs")

MAX_CELLS = 400
MAX_TICKS = 60  # beyond this, tick labels are thinned; hover still names every token


def _block_labels(labels: list[str], step: int) -> list[str]:
    if step == 1:
        return labels
    return [f"{labels[i]} … {labels[min(i + step, len(labels)) - 1]}" for i in range(0, len(labels), step)]


def _tick_axis(labels: list[str], max_ticks: int = MAX_TICKS) -> dict:
    """Show at most ``max_ticks`` labels so they never overlap into illegibility; hover names every token."""
    step = max(1, -(-len(labels) // max_ticks))
    idx = range(0, len(labels), step)
    return dict(type="category", tickmode="array", tickvals=[labels[i] for i in idx],
                ticktext=[_short(labels[i]) for i in idx])


_ENTITY_OR_CHARACTER = re.compile(r"&#?\w+;|.", re.DOTALL)


def _short(label: str, width: int = 14) -> str:
    """At most ``width`` characters; an escaped label's entities count as one and are never cut in half."""
    units = _ENTITY_OR_CHARACTER.findall(label)
    return label if len(units) <= width else "".join(units[: width - 1]) + "…"


def token_heatmap(
    matrix: np.ndarray | BlockMeans,
    row_tokens: Sequence[str],
    col_tokens: Sequence[str],
    *,
    title: str | None = None,
    zmin: float | None = 0.0,
    zmax: float | None = None,
    colorscale: str = SEQUENTIAL,
    value_name: str | None = None,
    row_title: str | None = None,
    col_title: str | None = None,
    max_cells: int = MAX_CELLS,
    height: int | None = None,
    showscale: bool = True,
) -> go.Figure:
    """A query × key heatmap with token labels and a hover naming both tokens and the value. ``matrix`` is the
    whole map, or its :class:`BlockMeans` when a long one was reduced as it streamed. ``title`` is plain
    text (it may name a model or a token). ``value_name``, ``row_title``, ``col_title`` default to attention, query
    and key, in the reader's language."""
    value_name = _("attention") if value_name is None else value_name
    row_title = _("query") if row_title is None else row_title
    col_title = _("key") if col_title is None else col_title
    title = plotly_escape(title) if title else title
    rows, cols = plotly_labels(row_tokens), plotly_labels(col_tokens)
    blocks = block_means(matrix, max_cells)
    z, rs, cs = blocks.values, blocks.row_step, blocks.col_step
    rows, cols = _block_labels(rows, rs), _block_labels(cols, cs)
    if colorscale == DIVERGING and zmin is None and zmax is None:
        bound = float(np.nanmax(np.abs(z))) if z.size else 1.0
        zmin, zmax = -bound, bound
    # Category axes of unique labels: hover names both tokens without a per-cell string array (which would be
    # far bigger than the numbers themselves).
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=cols,
            y=rows,
            hovertemplate=f"{row_title}: %{{y}}<br>{col_title}: %{{x}}<br>{value_name}: %{{z:.4f}}<extra></extra>",
            colorscale=colorscale,
            zmin=zmin,
            zmax=zmax,
            showscale=showscale,
        )
    )
    if rs > 1 or cs > 1:
        note = _(DOWNSAMPLED_NOTE).format(rows=rs, cols=cs)
        title = f"{title} ({note})" if title else note
    fig.update_layout(
        title=title,
        xaxis=dict(title=col_title, side="bottom", tickangle=-60, **_tick_axis(cols)),
        yaxis=dict(title=row_title, autorange="reversed", **_tick_axis(rows)),
        margin=dict(l=10, r=10, t=40 if title else 10, b=10),
        height=height or max(320, min(900, 120 + 14 * len(rows))),
    )
    return fig
