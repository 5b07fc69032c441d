"""The Compare page's parts: which two maps (two texts, two models, or the two masks), each side drawn on a shared
colour scale, and their difference. Widgets are read by ``*_ui`` functions; figures come from
:func:`explorer.figures.heatmap.token_heatmap`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import streamlit as st

from . import maps, resources, state, widgets
from .caching import cached
from .maps import head_blocks, remember_view, show_figure, square_height
from ..analysis.difference import MapDifference, map_difference
from ..analysis.downsample import BlockMeans
from ..capture.embedded import EMBEDDED
from ..capture.model import Model
from ..capture.tokens import unique_labels
from ..capture.trace import Trace
from ..capture.word_trace import WordTrace
from ..escape import md_escape
from ..figures.heatmap import MAX_CELLS, token_heatmap
from ..figures.palette import DIVERGING
from ..i18n import N_, _, number

MODES = {"texts": N_("Two texts"), "models": N_("Two models"), "masks": N_("The two masks")}


@dataclass(frozen=True)
class Side:
    label: str
    model: Model
    trace: Trace | WordTrace
    layer: int
    head: int


@dataclass(frozen=True)
class Comparison:
    mode: str
    a: Side
    b: Side


def second_text(text: str) -> str:
    """A default second text: the first text with its first word swapped, so the two usually tokenise alike."""
    words = text.split(" ", 1)
    return ("A" if words[0] != "A" else "The") + (" " + words[1] if len(words) > 1 else "")


def clamp_selectors(n_layers: int, n_heads: int, layer: int, head: int, key: str) -> tuple[int, int]:
    """Layer/head inputs for the second model, starting from the first side's choice (clamped to its size)."""
    row = st.container(horizontal=True)
    lb = row.number_input(_("Layer (B)"), 0, n_layers - 1, min(layer, n_layers - 1), key=f"{key}_layer")
    hb = row.number_input(_("Head (B)"), 0, n_heads - 1, min(head, n_heads - 1), key=f"{key}_head")
    return int(lb), int(hb)


def comparison_ui() -> Comparison:
    """The mode, the head, and what B is: a second text, a second model (and its head), or the other mask."""
    sel = state.current_selection()
    mode = st.radio(_("Compare"), list(MODES), format_func=lambda m: _(MODES[m]), horizontal=True,
                    key="compare_mode")
    model_a = resources.current_model()
    trace_a = resources.current_trace()
    controls = st.columns([1, 2])
    with controls[0], st.container(horizontal=True):
        layer, head = widgets.layer_head_selectors(trace_a, key="compare")
    model_b, layer_b, head_b = model_a, layer, head
    with controls[1]:
        if mode == "texts":
            if "compare_text_b" not in st.session_state:
                st.session_state["compare_text_b"] = second_text(sel.text)
            text_b = st.text_area(_("Second text (B)"), key="compare_text_b", height=90, max_chars=state.MAX_TEXT_CHARS)
            trace_b = resources.trace_for(model_a, text_b, sel.mask)
            labels = (_("A (sidebar text)"), _("B (second text)"))
        elif mode == "models":
            others = [name for name in EMBEDDED if name != model_a.name] or list(EMBEDDED)
            name_b = st.selectbox(_("Second model (B)"), others, key="compare_model_b")
            model_b = resources.model_for(name_b, sel.device)
            trace_b = resources.trace_for(model_b, sel.text, None)
            layer_b, head_b = clamp_selectors(trace_b.n_layers, trace_b.n_heads, layer, head, key="compare_b")
            labels = (f"A ({model_a.name})", f"B ({model_b.name})")
        else:
            trace_a = resources.trace_for(model_a, sel.text, "causal")
            trace_b = resources.trace_for(model_a, sel.text, "bidirectional")
            labels = (_("A (causal)"), _("B (bidirectional)"))
            st.caption(_("The model's own mask is **{mask}**; the other one is a what-if that changes the computation "
                         "in every layer, not just this head.").format(mask=state.mask_name(model_a.default_mask)))
    trace_a, trace_b = maps.shown(trace_a), maps.shown(trace_b)  # by token or by word, as the sidebar says
    return Comparison(mode, Side(labels[0], model_a, trace_a, layer, head),
                      Side(labels[1], model_b, trace_b, layer_b, head_b))


@cached(max_entries=16)
def _difference(a: Trace, layer_a: int, head_a: int, b: Trace, layer_b: int, head_b: int) -> MapDifference:
    with widgets.progress(_("Comparing the two maps cell by cell, a block of queries at a time…")) as update:
        return map_difference(a, layer_a, head_a, b, layer_b, head_b, MAX_CELLS, on_progress=update)


def drawn_maps(c: Comparison) -> tuple[BlockMeans, BlockMeans, MapDifference | None]:
    """Both maps as drawn (exact up to MAX_CELLS tokens, else block means) and, when they have the same size, their
    cell-by-cell comparison; cached per traces and heads. A long text's maps are read a block of queries at a time."""
    if c.a.trace.n_tokens != c.b.trace.n_tokens:
        return head_blocks(c.a.trace, c.a.layer, c.a.head), head_blocks(c.b.trace, c.b.layer, c.b.head), None
    found = _difference(c.a.trace, c.a.layer, c.a.head, c.b.trace, c.b.layer, c.b.head)
    return found.a, found.b, found


def side_by_side_ui() -> bool:
    return st.toggle(_("Side by side"), value=True, key="compare_side_by_side",
                     help=_("Turn off on narrow screens to draw A above B at full width."))


def side(s: Side, matrix: BlockMeans, zmax: float, where, colour_bar: bool) -> None:
    """One side: what it is, its map on the colour scale shared with the other side, its downloads."""
    trace = s.trace
    with where:
        st.markdown(f"**{md_escape(s.label)}**")
        what_if = "" if trace.mask_is_model_default else " " + _("(what-if)")
        st.caption(_("{model} · layer {layer}, head {head} · mask {mask}{what_if} · {size}").format(
            model=md_escape(s.model.name), layer=s.layer, head=s.head, mask=state.mask_name(trace.mask),
            what_if=what_if, size=widgets.unit_count(trace.n_tokens, trace.unit)))
        fig = token_heatmap(matrix, trace.tokens, trace.tokens,
                            title=_("{side}: layer {layer}, head {head}").format(side=s.label, layer=s.layer,
                                                                                 head=s.head),
                            zmax=zmax, height=square_height(trace.n_tokens), showscale=colour_bar)
        show_figure(fig, (s.model.name, f"L{s.layer}H{s.head}", s.label.split(" ")[0]), key=f"compare_{s.label[0]}")


def sides(c: Comparison) -> MapDifference | None:
    """Both maps on one colour scale (equal colours mean equal weights); returns their comparison (None when their
    sizes differ)."""
    widgets.word_view_note(c.a.trace)
    if c.mode != "masks" and c.a.trace.unit == "token":  # exports rebuild token maps
        remember_view(c.a.trace, f"attention_L{c.a.layer}_H{c.a.head}", ("attention", c.a.layer, c.a.head))
    a, b, found = drawn_maps(c)
    zmax = float(max(np.nanmax(a.values), np.nanmax(b.values)))  # the cells drawn: exact, or block means
    stacked = not side_by_side_ui()
    left, right = (st.container(), st.container()) if stacked else st.columns(2)
    side(c.a, a, zmax, left, colour_bar=stacked)  # shared scale: one bar if paired
    side(c.b, b, zmax, right, colour_bar=True)
    return found


def difference(c: Comparison, found: MapDifference | None) -> None:
    """A − B cell by cell, with the largest and mean change, when the maps have the same shape."""
    st.subheader(_("Difference A − B"))
    if found is None and c.a.trace.unit == "word":
        st.info(_("A has {n_a} words and B has {n_b}: the maps have different shapes, so there is no cell-by-cell "
                  "difference. Texts with the same number of words can be compared; two models may cut one text into different "
                  "words (a token that spans two words joins them, and special tokens such as <bos> are words of their "
                  "own).").format(
            n_a=c.a.trace.n_tokens, n_b=c.b.trace.n_tokens))
        return
    if found is None:
        st.info(_("A has {n_a} tokens and B has {n_b}: the maps have different shapes, so there is no cell-by-cell "
                  "difference. Texts that tokenise to the same length can be compared.").format(
            n_a=c.a.trace.n_tokens, n_b=c.b.trace.n_tokens))
        return
    trace_a = c.a.trace
    q, k = found.largest_at
    rows_a = unique_labels(trace_a.tokens)
    c1, c2, c3 = st.columns(3)
    c1.metric(_("Largest |A − B|"), number(found.largest, 3),
              help=_("query {query}, key {key}").format(query=md_escape(rows_a[q]), key=md_escape(rows_a[k])))
    c2.metric(_("Mean |A − B|"), number(found.mean_abs, 4))
    c3.metric(_("Most changed row"), md_escape(rows_a[found.most_changed]),
              help=_("The query whose attention row moved the most (sum of |A − B| over keys)."))
    if trace_a.tokens != c.b.trace.tokens and trace_a.unit == "word":
        st.caption(_("The two word lists differ: cells are compared by position. Labels show A's words."))
    elif trace_a.tokens != c.b.trace.tokens:
        st.caption(_("The two token lists differ: cells are compared by position. Labels show A's tokens."))
    fig = token_heatmap(found.difference, trace_a.tokens, trace_a.tokens, zmin=None, zmax=None, colorscale=DIVERGING,
                        value_name="A − B", title=_("A − B (red: A attends more; blue: B attends more)"),
                        height=square_height(trace_a.n_tokens))
    show_figure(fig, (c.a.model.name, f"L{c.a.layer}H{c.a.head}", "difference", c.mode), key="compare_diff")
