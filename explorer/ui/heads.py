"""The Attention heads page's tabs: every head of a layer, every layer × head (BertViz's model view), one head
large, and lines. Widgets are read by ``*_ui`` functions; figures come from :mod:`explorer.figures.heads`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import numpy as np
import streamlit as st

from . import state, widgets
from .long_context import draw_window, window_ui
from .maps import layer_maps, overview
from .tabs import Tab
from ..analysis.overview import LayerOverview
from ..analysis.stats import sink_share
from ..capture.trace import Trace
from ..capture.word_trace import WordTrace
from ..figures import heads as fh
from ..i18n import N_, _, join, percent

TAB_KEY = "heads_tab"
GRID_KEY = "heads_grid"
LINE_WINDOW = 40  # tokens on each side of the head view by default
MAX_LINE_WINDOW = 64  # beyond this the two columns of tokens no longer fit a screen


@dataclass(frozen=True)
class HeadsView:
    """What the controls above the tabs chose, and the layer's maps as shown (token 0 hidden or not)."""

    trace: Trace | WordTrace  # the sidebar's unit: maps by token, or by word
    layer: int
    head: int
    hide_sink: bool
    kv_heads: list[int] | None  # per query head, when heads share key/value heads (GQA)

    def maps(self) -> LayerOverview:
        """The layer as shown: exact maps up to MAX_CELLS tokens, else block means (computed when a tab asks)."""
        return layer_maps(self.trace, self.layer, self.hide_sink)


def _grid_key() -> str:
    # A fresh key after each pick clears plotly's selection, so clicking the same thumbnail later picks it again.
    return f"{GRID_KEY}_{st.session_state.get(GRID_KEY + '_n', 0)}"


def _pick_head_from_grid(key: str) -> None:
    """Selecting a thumbnail's marker chooses that layer and head and opens the one-head tab."""
    points = st.session_state[key].selection.get("points") or []
    custom = points[0].get("customdata") if points else None
    if custom:
        st.session_state["_ae_layer"], st.session_state["_ae_head"] = int(custom[0]), int(custom[1])
        st.session_state[TAB_KEY] = _("One head")
        st.session_state[GRID_KEY + "_n"] = st.session_state.get(GRID_KEY + "_n", 0) + 1


def gqa_caption(trace: Trace) -> str:
    if trace.n_kv_heads == 1:  # one key/value head for all (Gemma 3): multi-query attention, not groups
        return _("All {n} query heads read the same single key/value head (multi-query attention, MQA).").format(
            n=trace.n_heads)
    groups = fh.gqa_groups([trace.kv_head(h) for h in range(trace.n_heads)])
    parts = join(_("heads {first}–{last} → kv {kv}").format(first=hs[0], last=hs[-1], kv=kv)
                      for kv, hs in groups.items())
    return _("Grouped-query attention: {n} query heads share {n_kv} key/value heads ({parts}). Heads of one group "
             "score their own queries against the *same* keys and average the same values; labels read “head · kv”."
             ).format(n=trace.n_heads, n_kv=trace.n_kv_heads, parts=parts)


def heads_ui(trace: Trace | WordTrace) -> HeadsView:
    """The layer/head selectors and the sink toggle above the tabs."""
    gqa = trace.n_kv_heads < trace.n_heads
    controls = st.container(horizontal=True, vertical_alignment="bottom")
    layer, head = widgets.layer_head_selectors(trace, key="heads", container=controls)
    hide_sink = controls.toggle(
        _("Hide token 0 and renormalise (view transform)"), key="heads_hide_sink",
        help=_("Blanks the attention to the first token and rescales each row over the other keys, so patterns "
               "hidden by the 'sink' show. This changes only the picture, not the model."),
    )
    kv_heads = [trace.kv_head(h) for h in range(trace.n_heads)] if gqa else None
    return HeadsView(trace, layer, head, hide_sink, kv_heads)


def notes(view: HeadsView) -> None:
    """The word view, the first-token sink share, the GQA grouping, and the downsampling of long texts."""
    trace = view.trace
    widgets.word_view_note(trace)
    share = sink_share(trace, view.layer)  # NaN for a one-token text: no sink to speak of
    if not np.isnan(share) and trace.unit == "word":
        st.caption(_("Layer {layer}: words put on average **{share}** of their attention on word 0 ({token}), "
                     "averaged over heads and words 1…{last}. A large share is the usual first-token *sink*, not "
                     "meaning; its column is outlined.").format(
            layer=view.layer, share=percent(share, 1), token=widgets.quoted(trace.tokens[0]), last=trace.n_tokens - 1))
    elif not np.isnan(share):
        st.caption(_("Layer {layer}: queries put on average **{share}** of their attention on token 0 ({token}), "
                     "averaged over heads and queries 1…{last}. A large share is the usual first-token *sink*, not "
                     "meaning; its column is outlined.").format(
            layer=view.layer, share=percent(share, 1), token=widgets.quoted(trace.tokens[0]), last=trace.n_tokens - 1))
    if view.kv_heads:
        st.caption(gqa_caption(trace))
    if trace.n_tokens > fh.SMALL_CELLS:
        st.caption(_("Long text ({n} tokens): maps are downsampled, each cell the mean of a block of token pairs (the "
                     "titles say how many). Their colours span 0 to the largest block, leaving out query 0's own row; "
                     "hover shows the values.").format(n=f"{trace.n_tokens:,}"))


def one_layer(view: HeadsView) -> None:
    st.plotly_chart(
        fh.layer_small_multiples(view.maps().blocks[fh.SMALL_CELLS], view.trace.tokens, layer=view.layer, kv_heads=view.kv_heads,
                                 selected_head=view.head, sink_hidden=view.hide_sink),
        key="heads_small_multiples",
    )


def model_view(view: HeadsView) -> None:
    trace = view.trace
    seen = overview(trace, view.hide_sink)
    st.caption(_("Rows are layers, columns heads; every thumbnail is one head's query × key map. Click a thumbnail to "
                 "open that head in **One head**.")
               + (" " + _("Dotted lines separate the groups that share a key/value head.") if view.kv_heads else ""))
    st.plotly_chart(
        fh.model_view_grid(seen.thumbs, kv_heads=view.kv_heads, selected=(view.layer, view.head), tokens_per_cell=seen.step,
                           n_tokens=trace.n_tokens, sink_hidden=view.hide_sink),
        key=_grid_key(), on_select=partial(_pick_head_from_grid, _grid_key()), selection_mode="points",
        config={"displayModeBar": False},
    )


def one_head(view: HeadsView) -> None:
    st.plotly_chart(
        fh.head_heatmap(view.maps().blocks[fh.MAX_CELLS][view.head], view.trace.tokens, layer=view.layer, head=view.head,
                        kv_heads=view.kv_heads, sink_hidden=view.hide_sink),
        key="heads_one_head",
    )
    note = widgets.kv_sharing_note(view.trace, view.head)
    if note:
        st.caption(note)
    left, right = st.columns(2)
    if left.button(_("Intervene on this head"), icon=":material/science:", key="heads_intervene"):
        state.open_intervene([(view.layer, view.head)])
    if right.button(_("Why does this head look there?"), icon=":material/psychology_alt:", key="heads_explain"):
        state.open_explain(view.layer, view.head)
    if view.trace.n_tokens > fh.MAX_CELLS:  # block means hide single cells: a window of exact ones, and one query's keys
        with st.expander(_("Exact cells of a window, and where one query looks"), expanded=True):
            draw_window(view.trace, view.layer, view.head, window_ui(view.trace.n_tokens))


def line_window_ui(view: HeadsView) -> tuple[int, int]:
    """The tokens shown in both columns: all of a short text, a window of at most MAX_LINE_WINDOW otherwise."""
    n = view.trace.n_tokens
    if n <= LINE_WINDOW:
        return 0, n
    lo, hi = st.slider(_("Tokens shown (both columns)"), 0, n - 1, (0, LINE_WINDOW - 1), key="heads_window",
                       help=_("At most {n} tokens fit; lines to keys outside are not drawn.").format(n=MAX_LINE_WINDOW))
    start, stop = lo, min(hi + 1, lo + MAX_LINE_WINDOW)
    if hi + 1 > stop:
        st.info(_("Showing tokens {first}–{last}: at most {n} at a time.").format(first=start, last=stop - 1,
                                                                                   n=MAX_LINE_WINDOW))
    return start, stop


def lines(view: HeadsView) -> None:
    start, stop = line_window_ui(view)
    rows = view.trace.attention_window(view.layer, view.head, queries=slice(start, stop)).numpy()  # (stop − start, n)
    rows = fh.hide_sink(rows) if view.hide_sink else rows
    if view.trace.n_tokens > LINE_WINDOW:
        outside = 1.0 - float(np.nansum(rows[:, start:stop])) / max(1e-12, float(np.nansum(rows)))
        st.caption(_("{share} of these queries' attention goes to keys outside the window and is not drawn.").format(
            share=percent(outside, 1)))
    st.plotly_chart(
        fh.head_view_lines(rows, view.trace.tokens, start=start, stop=stop,
                           title=_("Layer {layer} · {head}").format(layer=view.layer,
                                                                    head=fh.head_label(view.head, view.kv_heads)),
                           sink_hidden=view.hide_sink),
        key="heads_lines", config={"displayModeBar": False},
    )
    st.caption(_("Line width is proportional to the attention weight; lines into token 0 (the usual sink) are amber. "
                 "Hover a line's middle for the numbers."))


TABS = [(N_("Heads of one layer"), one_layer), (N_("All layers × heads"), model_view), (N_("One head"), one_head),
        (N_("Lines (head view)"), lines)]


def tabs(view: HeadsView) -> list[Tab]:
    """The page's tabs, each drawing its part of ``view`` (only the open one runs: the model view is costly)."""
    return [(label, lambda draw=draw: draw(view)) for label, draw in TABS]
