"""Figures of attention heads: one head large, all heads of a layer, every layer × head, and BertViz-style lines.

Everything here is pure (numpy in, plotly out) so that it can be tested against the trace's numbers.

Payload budget (≤ 1.5 MB of JSON per figure at 1,024 tokens):
- one head: :func:`token_heatmap` (≤ 400 × 400 float32 cells);
- the small multiples of one layer: ≤ ``SMALL_CELLS`` per side per head (12 heads × 96² × 4 B ≈ 0.6 MB in base64);
- the model view: every head as a thumbnail of ≤ ``THUMB_CELLS`` per side, quantised to uint8 (1 B a cell: a
  thumbnail only has to show a pattern; hover names the head, not a cell), 270 heads × 32² ≈ 0.4 MB;
- the lines view: at most ``MAX_LINES`` lines over a window of tokens.

The first-token "sink": many models park a large share of attention on token 0, which hides every other
pattern. We outline that column (:func:`mark_sink`) and offer :func:`hide_sink`, a labelled *view transform*
that blanks key 0 and renormalises each row over the remaining keys.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..escape import plotly_escape
from ..capture.tokens import plotly_labels, unique_labels
from ..analysis.downsample import BlockMeans, block_means
from .heatmap import DOWNSAMPLED_NOTE, MAX_CELLS, _short, token_heatmap
from . import palette
from .palette import SEQUENTIAL
from ..i18n import _, join

SMALL_CELLS = 96  # per side, per head, in the small multiples of one layer
THUMB_CELLS = 32  # per side, per head, in the model view
MAX_LINES = 200  # lines drawn in the head view
LINE_WIDTH_PER_UNIT = 10.0  # px of line width for an attention weight of 1 (widths are proportional)
# Category ticks that plotly thins when it draws, to one per 1.2 × font size of axis length: labels never overlap,
# whatever the window's width (a fixed count, as token_heatmap's, overlaps on a 400 px plot). With x labels at
# -90° that spacing is enough. Hover still names every token.
WIDTH_AWARE_TICKS = dict(type="category", tickmode="auto", nticks=0, tickvals=None, ticktext=None)


# ---- numbers -------------------------------------------------------------------------------------------------
def hide_sink(attention: np.ndarray, first_key: int = 0) -> np.ndarray:
    """View transform: blank key 0 (NaN) and renormalise each row over keys 1…n−1.

    Works on (..., rows, keys): whole rows, or a block of keys ``first_key``… outside which every weight is 0 (the
    mask's span, Trace.row_blocks), so that a long text's rows need not be widened first. A row with no attention
    left (under a causal mask, query 0 sees only key 0) is NaN.
    """
    out = np.array(attention, dtype=np.float32, copy=True)  # float32 in place: this runs on 30 × (H, n, n) maps
    others = out[..., 1:] if first_key == 0 else out  # the keys other than key 0 in this block
    rest = others.sum(axis=-1, keepdims=True, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        others /= np.where(rest > 0, rest, np.nan).astype(np.float32)
    if first_key == 0:
        out[..., 0] = np.nan
    return out


def quantise(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] as uint8 0…255 (NaN, i.e. nothing left to show, becomes 0). Error ≤ 1/510."""
    v = np.nan_to_num(np.asarray(values, dtype=np.float64), nan=0.0)
    return np.rint(np.clip(v, 0.0, 1.0) * 255).astype(np.uint8)


def colour_max(shown: np.ndarray, exact: bool, downsampled: bool = False) -> float:
    """Top of the colour scale: 1 for exact maps; else the largest shown value outside the first query row.

    Block means (long texts) and renormalised rows have their own range: a fixed 0…1 scale would paint them all
    dark. The first row is left out because query 0 puts all its attention on itself under a causal mask, which
    would set the scale and hide everything else. When downsampled, the last row and column of blocks are left out
    too: they may be partial (n not a multiple of the block), so a 1×1 "block" is one undiluted weight.
    """
    if exact:
        return 1.0
    body = shown[..., 1:, :] if shown.shape[-2] > 1 else shown
    if downsampled and body.shape[-2] > 1 and body.shape[-1] > 1:
        body = body[..., :-1, :-1]
    finite = body[np.isfinite(body)]
    top = float(finite.max()) if finite.size else 1.0
    return top if top > 0 else 1.0


# ---- labels --------------------------------------------------------------------------------------------------
def head_label(head: int, kv_heads: Sequence[int] | None) -> str:
    """"head 4 · kv 1" when query heads share key/value heads (GQA), else "head 4"."""
    if kv_heads is None:
        return _("head {head}").format(head=head)
    return _("head {head} · kv {kv}").format(head=head, kv=kv_heads[head])


def gqa_groups(kv_heads: Sequence[int]) -> dict[int, list[int]]:
    """{kv head: [query heads that read it]}."""
    groups: dict[int, list[int]] = {}
    for head, kv in enumerate(kv_heads):
        groups.setdefault(kv, []).append(head)
    return groups


# ---- sink marking --------------------------------------------------------------------------------------------
def notes_text(notes: Sequence[str]) -> str:
    """A figure title's notes as one parenthesised line in the reader's language ("(a; b)" / "（a；b）")."""
    return _("({notes})").format(notes=join(notes, "clauses"))


def mark_sink(fig: go.Figure, *, xref: str = "x", yref: str = "y", hidden: bool = False, label: bool = True) -> None:
    """Outline key column 0 (the first displayed column; category index 0) of one heatmap, in place."""
    fig.add_shape(
        type="rect", xref=xref, yref=f"{yref} domain", x0=-0.5, x1=0.5, y0=0, y1=1,
        line=dict(color=palette.HIGHLIGHT, width=2, dash="dot"), fillcolor="rgba(0,0,0,0)", layer="above",
    )
    if label:
        fig.add_annotation(
            xref=xref, yref=f"{yref} domain", x=0, y=1, yanchor="bottom", xanchor="left", showarrow=False,
            text=_("token 0 hidden (view transform)") if hidden else _("token 0: sink?"),
            font=dict(color=palette.HIGHLIGHT, size=11),
        )


# ---- one head ------------------------------------------------------------------------------------------------
def head_heatmap(
    attention: np.ndarray | BlockMeans,
    tokens: Sequence[str],
    *,
    layer: int,
    head: int,
    kv_heads: Sequence[int] | None = None,
    sink_hidden: bool = False,
    height: int | None = None,
) -> go.Figure:
    """One head large: query rows, key columns, hover = query token, key token, weight; column 0 outlined.
    ``attention`` is the (n, n) map or, for a long text, its block means."""
    title = _("Layer {layer} · {head}").format(layer=layer, head=head_label(head, kv_heads))
    if sink_hidden:
        title += " ({note})".format(note=_("token 0 hidden, rows renormalised"))
    exact = len(tokens) <= MAX_CELLS and not sink_hidden
    blocks = block_means(attention, MAX_CELLS)
    zmax = colour_max(blocks.values, exact, downsampled=blocks.downsampled)
    fig = token_heatmap(blocks, tokens, tokens, title=title, zmin=0.0, zmax=zmax,
                        height=height or max(420, min(900, 160 + 16 * len(tokens))))
    if len(tokens):
        fig.update_layout(margin=dict(t=95 if " (" in (fig.layout.title.text or "") else 70))
        mark_sink(fig, hidden=sink_hidden)
    fig.update_xaxes(tickangle=-90, **WIDTH_AWARE_TICKS)
    fig.update_yaxes(**WIDTH_AWARE_TICKS)
    if fig.layout.title.text:  # the "downsampled" note on its own line: one long line is cut off in narrow windows
        fig.update_layout(title_text=_two_line_title(fig.layout.title.text))
    return fig


def _two_line_title(title: str) -> str:
    head, sep, note = title.partition(" (")
    return f"{head}<br><span style='font-size:12px'>({note}</span>" if sep else title


# ---- small multiples of one layer ----------------------------------------------------------------------------
def layer_small_multiples(
    attentions: np.ndarray | BlockMeans,
    tokens: Sequence[str],
    *,
    layer: int,
    kv_heads: Sequence[int] | None = None,
    selected_head: int | None = None,
    sink_hidden: bool = False,
    max_cells: int = SMALL_CELLS,
    columns: int | None = None,
) -> go.Figure:
    """Every head of one layer as a small heatmap with token labels, one shared colour scale.

    ``attentions`` are the layer's (H, n, n) maps or, for a long text, their block means. Under GQA, columns =
    heads per KV group, so each row of the grid is one key/value head's group.
    """
    blocks = block_means(attentions, max_cells)
    z, rs, cs = blocks.values, blocks.row_step, blocks.col_step
    n_heads = z.shape[0]
    if columns is None:
        group = n_heads // len(set(kv_heads)) if kv_heads is not None else 0
        columns = group if 2 <= group <= 6 else 4 if n_heads >= 8 else min(3, n_heads)
    rows = math.ceil(n_heads / columns)
    # Downsampled blocks are labelled by their positions only ("66–76"): token pairs like "66 a … 76 until" would
    # take a third of a map's width in a narrow window.
    row_labels = _position_blocks(len(tokens), rs) if rs > 1 else plotly_labels(tokens)
    col_labels = _position_blocks(len(tokens), cs) if cs > 1 else plotly_labels(tokens)
    n_side = len(row_labels)
    # Fixed pixel sizes. The maps share their axes (same tokens), so only the left column names queries and only
    # the bottom map of each column names keys: labels never run into a neighbouring map, even at 800 px.
    plot_px = 240 if n_side > 24 else max(170, 60 + 12 * n_side)
    gap_px, top_px, bottom_px = 34, 100 if rs > 1 or cs > 1 or sink_hidden else 80, 10
    height = top_px + bottom_px + rows * plot_px + (rows - 1) * gap_px
    fig = make_subplots(
        rows=rows, cols=columns, subplot_titles=[head_label(h, kv_heads) for h in range(n_heads)],
        shared_xaxes=True, shared_yaxes=True,
        horizontal_spacing=0.025, vertical_spacing=gap_px / (height - top_px - bottom_px) if rows > 1 else 0.0,
    )
    zmax = colour_max(z, exact=not sink_hidden and rs == 1 and cs == 1, downsampled=rs > 1 or cs > 1)
    for h in range(n_heads):
        r, c = divmod(h, columns)
        fig.add_trace(
            go.Heatmap(
                z=z[h], x=col_labels, y=row_labels, coloraxis="coloraxis",
                hovertemplate=head_label(h, kv_heads) + "<br>"
                + _("query: %{y}<br>key: %{x}<br>attention: %{z:.4f}") + "<extra></extra>",
            ),
            row=r + 1, col=c + 1,
        )
        axis = "" if h == 0 else str(h + 1)
        fig.update_xaxes(tickangle=-90, tickfont=dict(size=9), ticks="", **WIDTH_AWARE_TICKS,
                         row=r + 1, col=c + 1,
                         showticklabels=h + columns >= n_heads)
        fig.update_yaxes(autorange="reversed", tickfont=dict(size=9), ticks="", **WIDTH_AWARE_TICKS,
                         row=r + 1, col=c + 1)
        mark_sink(fig, xref=f"x{axis}", yref=f"y{axis}", hidden=sink_hidden, label=False)
        if h == selected_head:
            fig.add_shape(type="rect", xref=f"x{axis} domain", yref=f"y{axis} domain", x0=-0.01, x1=1.01,
                          y0=-0.01, y1=1.01, line=dict(color=palette.ACCENT, width=3))
    for title in fig.layout.annotations:  # subplot titles: small enough for ~90 px maps in a narrow window
        title.font.size = 12
    # Subplot titles are annotations; the selected head's title is coloured too, so it reads without the frame.
    if selected_head is not None and 0 <= selected_head < n_heads:
        fig.layout.annotations[selected_head].font.color = palette.ACCENT
    title = _("Layer {layer}: all {n} heads").format(layer=layer, n=n_heads)
    notes: list[str] = [_(DOWNSAMPLED_NOTE).format(rows=rs, cols=cs)] if rs > 1 or cs > 1 else []
    if sink_hidden:
        notes.append(_("token 0 hidden, rows renormalised"))
    if notes:
        title += f"<br><span style='font-size:12px'>{notes_text(notes)}</span>"
    fig.update_layout(
        title=title,
        coloraxis=dict(colorscale=SEQUENTIAL, cmin=0.0, cmax=zmax, colorbar=dict(title=_("attention"), thickness=12)),
        height=height,
        margin=dict(l=10, r=10, t=top_px, b=bottom_px),
    )
    return fig


def _position_blocks(n: int, step: int) -> list[str]:
    return [f"{i}–{min(i + step, n) - 1}" for i in range(0, n, step)]


# ---- model view: every layer × head --------------------------------------------------------------------------
def model_view_grid(
    thumbs: np.ndarray,
    *,
    kv_heads: Sequence[int] | None = None,
    selected: tuple[int, int] | None = None,
    tokens_per_cell: int = 1,
    n_tokens: int | None = None,
    sink_hidden: bool = False,
    thumb_px: int | None = None,
) -> go.Figure:
    """BertViz's model view as one figure: rows = layers, columns = heads, one small heatmap per head.

    Each thumbnail is its own heatmap trace placed on shared axes (gaps between them come free). Values are
    quantised to uint8 (:func:`quantise`) for a small payload. An invisible scatter marker sits on each
    thumbnail: heatmaps report no clicks in Streamlit (#8760), markers do, so selecting one picks the head
    (``customdata`` = [layer, head]); its hover names the head.
    """
    n_layers, n_heads, c = thumbs.shape[0], thumbs.shape[1], thumbs.shape[2]
    pitch = c + max(1, round(c * 0.15))  # cell units from one thumbnail's start to the next
    # uint8 levels over 0…vmax (see colour_max); values above vmax (query 0's own row) saturate.
    vmax = colour_max(thumbs, exact=tokens_per_cell == 1 and not sink_hidden, downsampled=tokens_per_cell > 1)
    q = quantise(thumbs / vmax)
    fig = go.Figure()
    for layer in range(n_layers):
        for head in range(n_heads):
            fig.add_trace(go.Heatmap(
                z=q[layer, head], x0=head * pitch, dx=1, y0=layer * pitch, dy=1, coloraxis="coloraxis",
                hoverinfo="skip",
            ))
    # Overlay: one invisible marker per thumbnail, centred on it, about as large as it is drawn.
    px = thumb_px or _thumb_px(n_layers, n_heads)
    centres_x = [h * pitch + (c - 1) / 2 for _layer in range(n_layers) for h in range(n_heads)]
    centres_y = [layer * pitch + (c - 1) / 2 for layer in range(n_layers) for _head in range(n_heads)]
    custom = [[layer, head, kv_heads[head] if kv_heads is not None else head]
              for layer in range(n_layers) for head in range(n_heads)]
    kv_text = _(" · kv %{customdata[2]}") if kv_heads is not None else ""
    fig.add_trace(go.Scatter(
        x=centres_x, y=centres_y, customdata=custom, mode="markers", name=_("heads"),
        marker=dict(symbol="square", size=max(6, int(px * 0.9)), opacity=0, color="#888"),
        hovertemplate=_("layer %{customdata[0]} · head %{customdata[1]}") + kv_text + "<extra></extra>",
        showlegend=False,
    ))
    if selected is not None:
        layer, head = selected
        fig.add_shape(type="rect", x0=head * pitch - 1.2, x1=head * pitch + c + 0.2, y0=layer * pitch - 1.2,
                      y1=layer * pitch + c + 0.2, line=dict(color=palette.ACCENT, width=3))
    if kv_heads is not None:  # thin separators between the groups of query heads that share a KV head
        for h in range(1, n_heads):
            if kv_heads[h] != kv_heads[h - 1]:
                x = h * pitch - (pitch - c) / 2 - 0.5
                fig.add_shape(type="line", x0=x, x1=x, y0=-1, y1=n_layers * pitch - (pitch - c),
                              line=dict(color=palette.GUIDE, width=1, dash="dot"))
    notes = []
    if tokens_per_cell > 1:
        notes.append(_("{n} tokens: each thumbnail cell averages {cell}×{cell} token pairs").format(
            n=n_tokens or "?", cell=tokens_per_cell))
    if sink_hidden:
        notes.append(_("token 0 hidden, rows renormalised"))
    # "h4<br>kv1": two short lines stay narrow enough for ~25 px columns in a narrow window
    head_ticks = [f"h{h}" + (f"<br>KV{kv_heads[h]}" if kv_heads is not None else "") for h in range(n_heads)]
    fig.update_layout(
        title=_("Every layer × head") + (f"<br><span style='font-size:12px'>{notes_text(notes)}</span>" if notes else ""),
        coloraxis=dict(
            colorscale=SEQUENTIAL, cmin=0, cmax=255,
            colorbar=dict(title=_("attention"), thickness=12, tickvals=[0, 64, 128, 191, 255],
                          ticktext=[f"{vmax * k / 4:.3g}" for k in range(5)]),
        ),
        meta=dict(value_per_level=vmax / 255),  # z × value_per_level = attention (what tests and exports read)
        xaxis=dict(tickmode="array", tickvals=[h * pitch + (c - 1) / 2 for h in range(n_heads)], ticktext=head_ticks,
                   side="top", showgrid=False, zeroline=False, range=[-1.5, n_heads * pitch], tickangle=0,
                   tickfont=dict(size=10)),
        yaxis=dict(tickmode="array", tickvals=[layer * pitch + (c - 1) / 2 for layer in range(n_layers)],
                   ticktext=[f"L{layer}" for layer in range(n_layers)], range=[n_layers * pitch, -1.5], showgrid=False,
                   zeroline=False),
        height=n_layers * px + 110,
        width=None,
        margin=dict(l=10, r=10, t=(135 if notes else 100), b=10),  # two-line title above two-line head ticks
        dragmode=False,
        hovermode="closest",
    )
    return fig


def _thumb_px(n_layers: int, n_heads: int) -> int:
    """Drawn height of one thumbnail: about its width in a 1,440 px window, ≥ 56 px for deep models.

    Thumbnails fill the width (no fixed aspect): with a fixed aspect, a narrow window would shrink the whole grid
    and leave most of the figure's fixed height empty.
    """
    return int(max(56, min(110, 2400 / max(n_layers, 1), 1000 / max(n_heads, 1))))


# ---- head view: lines from queries to keys -------------------------------------------------------------------
def head_view_lines(
    attention: np.ndarray,
    tokens: Sequence[str],
    *,
    start: int = 0,
    stop: int | None = None,
    max_lines: int = MAX_LINES,
    title: str | None = None,
    sink_hidden: bool = False,
) -> go.Figure:
    """BertViz's head view: queries on the left, keys on the right, a line per (query, key), width ∝ attention.
    ``attention`` is the head's (n, n) map, or only its rows ``start…stop−1`` ((stop − start, n)) for a long text.

    Only tokens ``start…stop−1`` appear on both sides, and only the ``max_lines`` strongest lines among them are
    drawn; the title (plain text) says when either limit applies. Line width = ``LINE_WIDTH_PER_UNIT`` × weight (exactly
    proportional, comparable across heads); the midpoint of each line carries the hover.
    """
    a = np.asarray(attention, dtype=np.float32)
    n = a.shape[1]
    stop = n if stop is None else min(stop, n)
    start = max(0, min(start, stop))
    window = a[start:stop, start:stop] if a.shape[0] == n else a[:, start:stop]  # the whole map, or its rows
    raw_labels = unique_labels(tokens)[start:stop]
    labels = [plotly_escape(label) for label in raw_labels]
    qi, kj = np.nonzero(np.nan_to_num(window, nan=0.0) > 0)
    weights = window[qi, kj]
    total = len(weights)
    if total > max_lines:
        keep = np.argsort(weights, kind="stable")[::-1][:max_lines]
        qi, kj, weights = qi[keep], kj[keep], weights[keep]
    order = np.argsort(weights, kind="stable")  # strongest drawn last, on top
    qi, kj, weights = qi[order], kj[order], weights[order]
    peak = float(weights.max()) if weights.size else 1.0
    fig = go.Figure()
    for i, j, w in zip(qi.tolist(), kj.tolist(), weights.tolist()):
        to_sink = start == 0 and j == 0  # lines into token 0 in the sink colour, so they read as "sink", not meaning
        fig.add_trace(go.Scatter(
            x=[0, 1], y=[i, j], mode="lines", hoverinfo="skip", showlegend=False,
            line=dict(width=LINE_WIDTH_PER_UNIT * w, color=palette.HIGHLIGHT if to_sink else palette.MAIN),
            opacity=0.25 + 0.75 * w / peak,
        ))
    fig.add_trace(go.Scatter(
        x=[0.5] * len(weights), y=((qi + kj) / 2).tolist(), mode="markers", showlegend=False,
        marker=dict(size=8, opacity=0), customdata=[[labels[i], labels[j], w] for i, j, w in
                                                     zip(qi.tolist(), kj.tolist(), weights.tolist())],
        hovertemplate=_("query: %{customdata[0]}<br>key: %{customdata[1]}<br>attention: %{customdata[2]:.4f}")
        + "<extra></extra>",
    ))
    rows = list(range(len(labels)))
    short = [_short(label, 18) for label in labels]  # _short never cuts an entity in half
    for x, pos in ((0, "middle left"), (1, "middle right")):
        fig.add_trace(go.Scatter(
            x=[x] * len(rows), y=rows, mode="markers+text", text=short, textposition=pos, showlegend=False,
            marker=dict(size=5, color=palette.GUIDE), hovertext=labels, hoverinfo="text",
        ))
    notes = [_("token 0 hidden, rows renormalised")] if sink_hidden else []
    if start > 0 or stop < n:
        notes.append(_("tokens {first}–{last} of {n}").format(first=start, last=stop - 1, n=n))
    if total > len(weights):
        notes.append(_("the {shown} strongest of {total} lines").format(shown=len(weights), total=total))
    note = f"<br><span style='font-size:12px'>{notes_text(notes)}</span>" if notes else ""
    full = plotly_escape(title or _("Head view")) + note
    fig.update_layout(
        title=full,
        xaxis=dict(range=[-0.75, 1.75], visible=False, fixedrange=True),
        yaxis=dict(range=[len(rows) - 0.5, -0.5], visible=False),
        annotations=[dict(x=0, y=1, xref="x", yref="paper", text="<b>{}</b>".format(_("query")), showarrow=False, yanchor="bottom"),
                     dict(x=1, y=1, xref="x", yref="paper", text="<b>{}</b>".format(_("key")), showarrow=False, yanchor="bottom")],
        height=max(320, 90 + 22 * len(rows)),
        margin=dict(l=10, r=10, t=90 if notes else 70, b=10),
        hovermode="closest",
    )
    return fig
