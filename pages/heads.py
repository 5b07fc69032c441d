"""Attention heads: every head of a layer, every layer × head (BertViz's model view), one head large, and lines."""

from __future__ import annotations

from functools import partial

import numpy as np
import streamlit as st

from explorer.ui import common as ui
from explorer.figures import heads as fh
from explorer.capture.trace import Trace

ui.require_entrypoint()

TABS = ["Heads of one layer", "All layers × heads", "One head", "Lines (head view)"]
TAB_KEY = "heads_tab"
GRID_KEY = "heads_grid"
LINE_WINDOW = 40  # tokens on each side of the head view by default
MAX_LINE_WINDOW = 64  # beyond this the two columns of tokens no longer fit a screen


@st.cache_data(show_spinner="Building thumbnails of every head…", max_entries=8)
def _thumbnails(_trace: Trace, key: tuple, hide_sink: bool) -> tuple[np.ndarray, int]:
    """(L, H, c, c) thumbnails of every head; ``key`` identifies the trace (it is not hashed itself)."""
    maps = (_trace.attentions(layer).numpy() for layer in range(_trace.n_layers))
    return fh.thumbnails(fh.hide_sink(m) if hide_sink else m for m in maps)


def _grid_key() -> str:
    # A fresh key after each pick clears plotly's selection, so clicking the same thumbnail later picks it again.
    return f"{GRID_KEY}_{st.session_state.get(GRID_KEY + '_n', 0)}"


def _pick_head_from_grid(key: str) -> None:
    """Selecting a thumbnail's marker chooses that layer and head and opens the one-head tab."""
    points = st.session_state[key].selection.get("points") or []
    custom = points[0].get("customdata") if points else None
    if custom:
        st.session_state["_ae_layer"], st.session_state["_ae_head"] = int(custom[0]), int(custom[1])
        st.session_state[TAB_KEY] = "One head"
        st.session_state[GRID_KEY + "_n"] = st.session_state.get(GRID_KEY + "_n", 0) + 1


def _gqa_caption(trace: Trace) -> str:
    groups = fh.gqa_groups([trace.kv_head(h) for h in range(trace.n_heads)])
    parts = ", ".join(f"heads {hs[0]}–{hs[-1]} → kv {kv}" for kv, hs in groups.items())
    return (
        f"Grouped-query attention: {trace.n_heads} query heads share {trace.n_kv_heads} key/value heads ({parts}). "
        "Heads of one group score their own queries against the *same* keys and average the same values; "
        "labels read “head · kv”."
    )


st.title("Attention heads")
with ui.guard():
    trace = ui.current_trace()
    gqa = trace.n_kv_heads < trace.n_heads
    kv_heads = [trace.kv_head(h) for h in range(trace.n_heads)] if gqa else None
    controls = st.container(horizontal=True, vertical_alignment="bottom")
    layer, head = ui.layer_head_selectors(trace, key="heads", container=controls)
    hide_sink = controls.toggle(
        "Hide token 0 and renormalise (view transform)", key="heads_hide_sink",
        help="Blanks the attention to the first token and rescales each row over the other keys, so patterns "
             "hidden by the 'sink' show. This changes only the picture, not the model.",
    )
    layer_maps = trace.attentions(layer).numpy()
    share = fh.sink_share(layer_maps)
    if share is not None:
        st.caption(
            f"Layer {layer}: queries put on average **{share:.1%}** of their attention on token 0 "
            f"({ui.quoted(trace.tokens[0])}), averaged over heads and queries 1…{trace.n_tokens - 1}. A large share is "
            "the usual first-token *sink*, not meaning; its column is outlined."
        )
    if gqa:
        st.caption(_gqa_caption(trace))
    shown = fh.hide_sink(layer_maps) if hide_sink else layer_maps

    if trace.n_tokens > fh.SMALL_CELLS:
        st.caption(
            f"Long text ({trace.n_tokens:,} tokens): maps are downsampled, each cell the mean of a block of token "
            "pairs (the titles say how many). Their colours span 0 to the largest block, leaving out query 0's own "
            "row; hover shows the values."
        )
    tabs = st.tabs(TABS, key=TAB_KEY, on_change="rerun")  # only the open tab runs: the model view is costly
    with tabs[0]:
        if tabs[0].open:
            st.plotly_chart(
                fh.layer_small_multiples(shown, trace.tokens, layer=layer, kv_heads=kv_heads, selected_head=head,
                                         sink_hidden=hide_sink),
                key="heads_small_multiples",
            )
    with tabs[1]:
        if tabs[1].open:
            thumbs, step = _thumbnails(trace, ui.trace_key(trace), hide_sink)
            st.caption("Rows are layers, columns heads; every thumbnail is one head's query × key map. "
                       "Click a thumbnail to open that head in **One head**." +
                       (" Dotted lines separate the groups that share a key/value head." if gqa else ""))
            st.plotly_chart(
                fh.model_view_grid(thumbs, kv_heads=kv_heads, selected=(layer, head), tokens_per_cell=step,
                                   n_tokens=trace.n_tokens, sink_hidden=hide_sink),
                key=_grid_key(), on_select=partial(_pick_head_from_grid, _grid_key()), selection_mode="points",
                config={"displayModeBar": False},
            )
    with tabs[2]:
        if tabs[2].open:
            st.plotly_chart(
                fh.head_heatmap(shown[head], trace.tokens, layer=layer, head=head, kv_heads=kv_heads,
                                sink_hidden=hide_sink),
                key="heads_one_head",
            )
            if gqa:
                st.caption(ui.kv_sharing_note(trace, head) + ".")
    with tabs[3]:
        if tabs[3].open:
            n = trace.n_tokens
            start, stop = 0, n
            if n > LINE_WINDOW:
                lo, hi = st.slider("Tokens shown (both columns)", 0, n - 1, (0, LINE_WINDOW - 1), key="heads_window",
                                   help=f"At most {MAX_LINE_WINDOW} tokens fit; lines to keys outside are not drawn.")
                start, stop = lo, min(hi + 1, lo + MAX_LINE_WINDOW)
                if hi + 1 > stop:
                    st.info(f"Showing tokens {start}–{stop - 1}: at most {MAX_LINE_WINDOW} at a time.")
                outside = 1.0 - float(np.nansum(shown[head][start:stop, start:stop])) / max(
                    1e-12, float(np.nansum(shown[head][start:stop])))
                st.caption(f"{outside:.1%} of these queries' attention goes to keys outside the window "
                           "and is not drawn.")
            st.plotly_chart(
                fh.head_view_lines(shown[head], trace.tokens, start=start, stop=stop,
                                   title=f"Layer {layer} · {fh.head_label(head, kv_heads)}", sink_hidden=hide_sink),
                key="heads_lines", config={"displayModeBar": False},
            )
            st.caption("Line width is proportional to the attention weight; lines into token 0 (the usual sink) are "
                       "amber. Hover a line's middle for the numbers.")
