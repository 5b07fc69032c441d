"""Compare: one head's map for two texts, two models, or the two masks side by side, and their difference."""

import numpy as np
import streamlit as st

from explorer.ui import common as ui
from explorer.ui import analysis as ua
from explorer.capture.embedded import EMBEDDED
from explorer.escape import md_escape
from explorer.figures.heatmap import token_heatmap
from explorer.figures.palette import DIVERGING
from explorer.capture.tokens import unique_labels

ui.require_entrypoint()

MODES = {"texts": "Two texts", "models": "Two models", "masks": "The two masks"}


def second_text(text: str) -> str:
    """A default second text: the first text with its first word swapped, so the two usually tokenise alike."""
    words = text.split(" ", 1)
    return ("A" if words[0] != "A" else "The") + (" " + words[1] if len(words) > 1 else "")


def clamp_selectors(n_layers: int, n_heads: int, layer: int, head: int, key: str) -> tuple[int, int]:
    """Layer/head inputs for the second model, starting from the first side's choice (clamped to its size)."""
    row = st.container(horizontal=True)
    lb = row.number_input("Layer (B)", 0, n_layers - 1, min(layer, n_layers - 1), key=f"{key}_layer")
    hb = row.number_input("Head (B)", 0, n_heads - 1, min(head, n_heads - 1), key=f"{key}_head")
    return int(lb), int(hb)


def side(label: str, model, trace, layer: int, head: int, matrix: np.ndarray, zmax: float, where,
         colour_bar: bool) -> None:
    """One side: what it is, its map on the colour scale shared with the other side, its downloads."""
    with where:
        st.markdown(f"**{md_escape(label)}**")
        st.caption(f"{md_escape(model.name)} · layer {layer}, head {head} · mask {trace.mask}"
                   f"{'' if trace.mask_is_model_default else ' (what-if)'} · {trace.n_tokens} tokens")
        fig = token_heatmap(matrix, trace.tokens, trace.tokens, title=f"{label}: layer {layer}, head {head}",
                            zmax=zmax, height=ua.square_height(trace.n_tokens), showscale=colour_bar)
        ua.show_figure(fig, (model.name, f"L{layer}H{head}", label.split(" ")[0]), key=f"compare_{label[0]}")


with ui.guard():
    st.title("Compare")
    sel = ui.current_selection()
    mode = st.radio("Compare", list(MODES), format_func=MODES.get, horizontal=True, key="compare_mode")
    model_a = ui.current_model()
    trace_a = ui.current_trace()
    controls = st.columns([1, 2])
    with controls[0], st.container(horizontal=True):
        layer, head = ui.layer_head_selectors(trace_a, key="compare")
    model_b, layer_b, head_b = model_a, layer, head
    with controls[1]:
        if mode == "texts":
            if "compare_text_b" not in st.session_state:
                st.session_state["compare_text_b"] = second_text(sel.text)
            text_b = st.text_area("Second text (B)", key="compare_text_b", height=90, max_chars=ui.MAX_TEXT_CHARS)
            trace_b = ui.trace_for(model_a, text_b, sel.mask)
            labels = ("A (sidebar text)", "B (second text)")
        elif mode == "models":
            others = [name for name in EMBEDDED if name != model_a.name] or list(EMBEDDED)
            name_b = st.selectbox("Second model (B)", others, key="compare_model_b")
            model_b = ui.model_for(name_b, sel.device)
            trace_b = ui.trace_for(model_b, sel.text, None)
            layer_b, head_b = clamp_selectors(trace_b.n_layers, trace_b.n_heads, layer, head, key="compare_b")
            labels = (f"A ({model_a.name})", f"B ({model_b.name})")
        else:
            trace_a = ui.trace_for(model_a, sel.text, "causal")
            trace_b = ui.trace_for(model_a, sel.text, "bidirectional")
            labels = ("A (causal)", "B (bidirectional)")
            st.caption(f"The model's own mask is **{model_a.default_mask}**; the other one is a what-if that changes "
                       "the computation in every layer, not just this head.")
    if mode != "masks":
        ua.remember_view(trace_a, f"attention_L{layer}_H{head}", ("attention", layer, head))

    a = trace_a.attention(layer, head).numpy()
    b = trace_b.attention(layer_b, head_b).numpy()
    zmax = float(max(a.max(), b.max()))  # one colour scale for both, so equal colours mean equal weights
    stacked = not st.toggle("Side by side", value=True, key="compare_side_by_side",
                            help="Turn off on narrow screens to draw A above B at full width.")
    left, right = (st.container(), st.container()) if stacked else st.columns(2)
    side(labels[0], model_a, trace_a, layer, head, a, zmax, left, colour_bar=stacked)  # shared scale: one bar if paired
    side(labels[1], model_b, trace_b, layer_b, head_b, b, zmax, right, colour_bar=True)

    st.subheader("Difference A − B")
    if a.shape != b.shape:
        st.info(f"A has {a.shape[0]} tokens and B has {b.shape[0]}: the maps have different shapes, so there is no "
                "cell-by-cell difference. Texts that tokenise to the same length can be compared.")
    else:
        diff = a - b
        q, k = np.unravel_index(np.abs(diff).argmax(), diff.shape)
        rows_a = unique_labels(trace_a.tokens)
        c1, c2, c3 = st.columns(3)
        c1.metric("Largest |A − B|", f"{abs(diff[q, k]):.3f}",
                  help=f"query {md_escape(rows_a[q])}, key {md_escape(rows_a[k])}")
        c2.metric("Mean |A − B|", f"{np.abs(diff).mean():.4f}")
        c3.metric("Most changed row", md_escape(rows_a[int(np.abs(diff).sum(-1).argmax())]),
                  help="The query whose attention row moved the most (sum of |A − B| over keys).")
        if trace_a.tokens != trace_b.tokens:
            st.caption("The two token lists differ: cells are compared by position. Labels show A's tokens.")
        fig = token_heatmap(diff, trace_a.tokens, trace_a.tokens, zmin=None, zmax=None, colorscale=DIVERGING,
                            value_name="A − B", title="A − B (red: A attends more; blue: B attends more)",
                            height=ua.square_height(trace_a.n_tokens))
        ua.show_figure(fig, (model_a.name, f"L{layer}H{head}", "difference", mode), key="compare_diff")
