"""Q, K, V: one head's attention formula for one query token, step by step, with the model's real numbers."""

from __future__ import annotations

import streamlit as st

from explorer.ui import common as ui, qkv as ui_qkv
from explorer.figures import qkv as fq
from explorer.capture.tokens import unique_labels
from explorer.analysis.mask_effects import CAUSAL_MASK_LATEX
from explorer.from_scratch.walkthrough import formula_steps, token_window

ui.require_entrypoint()

WINDOW_DEFAULT = 32
WINDOW_MAX = 128  # d_model × 128 float32 cells stays well under the 1.5 MB figure budget

st.title("Q, K, V: one head, step by step")
st.caption(
    "Follow one query token through one attention head: its input is projected to queries, keys and values, "
    "scored against every key, masked, normalised by a softmax, and used to average the values. Every number "
    "is recomputed from the layer's input and weights, and checked against what the model computed."
)
with ui.guard():
    model = ui.current_model()
    trace = ui.current_trace()
    n = trace.n_tokens
    controls = st.container(horizontal=True, vertical_alignment="bottom")
    layer, head = ui.layer_head_selectors(trace, key="qkv", container=controls)
    query = ui_qkv.token_picker(trace, "Query token", "qkv_query", default=(2 * n) // 3, container=controls,
                                help="The token whose attention row is computed (row i of the map).")
    window = WINDOW_DEFAULT
    if n > 16:
        window = controls.slider("Tokens shown", 8, min(WINDOW_MAX, n), min(WINDOW_DEFAULT, n), 4, key="qkv_window",
                                 help="Charts show a window of tokens around the query (mostly before it); the "
                                      "table at the bottom has every key.")
    steps = formula_steps(model, trace, layer, head, query)
    key = ui_qkv.token_picker(trace, "Key token (for q ⊙ k)", "qkv_key", default=int(steps.probs.argmax()),
                              container=controls, help="The key whose score is taken apart per dimension.")
    start, stop = token_window(n, query, window)
    labels = unique_labels(trace.tokens)
    shown = labels[start:stop]
    query_label = labels[query]
    D, d = steps.head_dim, steps.d_model
    if stop - start < n:
        st.caption(f"Charts show tokens {start}–{stop - 1} of {n}. Query: {ui.quoted(trace.tokens[query])} "
                   f"(token {query}).")

    # 1. the input x ----------------------------------------------------------------------------------------
    with ui_qkv.step(1, "The input x", [rf"x \in \mathbb{{R}}^{{n \times d}},\quad n = {n},\ d = {d}"],
                     f"What layer {layer}'s attention reads: one {d}-dimensional vector per token (after the "
                     "block's norm in pre-norm models such as SmolLM2; the previous layer's output in BERT)."):
        st.plotly_chart(fq.vectors_heatmap(steps.x[start:stop].numpy(), shown, title=f"x at layer {layer}",
                                           value_name="x", highlight=query_label), key="qkv_x")

    # 2. projections ----------------------------------------------------------------------------------------
    bias = steps.b_q is not None
    gqa = trace.n_kv_heads < trace.n_heads
    kv = steps.kv_head
    formulas = [
        rf"Q = x\,W_q^{{({head})}}{' + b_q' if bias else ''}",
        rf"K = x\,W_k^{{({kv})}}{' + b_k' if bias else ''}",
        rf"V = x\,W_v^{{({kv})}}{' + b_v' if bias else ''}",
        rf"W \in \mathbb{{R}}^{{{d} \times {D}}}",
        rf"Q, K, V \in \mathbb{{R}}^{{{n} \times {D}}}",
    ]
    note = f"{ui.kv_sharing_note(trace, head)} (grouped-query attention)." if gqa else None
    rope_note = " Q and K here are before the rotary embedding (step 3 rotates them)." if steps.uses_rope else ""
    with ui_qkv.step(2, "Project to queries, keys and values", formulas, (note or "") + rope_note):
        q_first, k_first = (steps.q_pre, steps.k_pre) if steps.uses_rope else (steps.q, steps.k)
        suffix = " (before RoPE)" if steps.uses_rope else ""
        tab_q, tab_k, tab_v, tab_w = st.tabs(["Q", "K", "V", "The weights"])
        tab_q.plotly_chart(fq.vectors_heatmap(q_first[start:stop].numpy(), shown, title=f"Q, head {head}{suffix}",
                                              value_name="q", highlight=query_label), key="qkv_q_proj")
        tab_k.plotly_chart(fq.vectors_heatmap(k_first[start:stop].numpy(), shown, title=f"K, kv head {kv}{suffix}",
                                              value_name="k", highlight=query_label), key="qkv_k_proj")
        tab_v.plotly_chart(fq.vectors_heatmap(steps.v[start:stop].numpy(), shown, title=f"V, kv head {kv}",
                                              value_name="v", highlight=query_label), key="qkv_v")
        with tab_w:
            st.caption(f"The {D} columns of W_q, W_k, W_v that make this head (shown as {D} rows × {d} inputs).")
            for name, w in (("W_q", steps.w_q), ("W_k", steps.w_k), ("W_v", steps.w_v)):
                st.plotly_chart(fq.weights_heatmap(w.numpy(), title=name), key=f"qkv_{name}")

    number = 3
    if steps.uses_rope:
        rope_formulas = [
            r"q_i \leftarrow R_{i}\, q_i,\quad k_j \leftarrow R_{j}\, k_j",
            r"\small q'_m = q_m \cos i\theta_m - q_{m+D/2} \sin i\theta_m",
            r"\small q'_{m+D/2} = q_m \sin i\theta_m + q_{m+D/2} \cos i\theta_m",
            r"\small q'_i \cdot k'_j \text{ depends on } i - j",
        ]
        with ui_qkv.step(number, "Rotate Q and K by position (RoPE)", rope_formulas,
                         "Dimension m is paired with m + D/2, and each pair is turned by an angle that grows with "
                         "the token's position i (θ_m falls with m); the pair keeps its length. V is not rotated."):
            tab_vec, tab_q, tab_k = st.tabs(["q and k of two tokens", "Q after RoPE", "K after RoPE"])
            tab_vec.plotly_chart(fq.rope_comparison(
                {"q": steps.q_pre[query].numpy(), "k": steps.k_pre[key].numpy()},
                {"q": steps.q[query].numpy(), "k": steps.k[key].numpy()},
                labels={"q": f"q of {query_label} (position {query})",
                        "k": f"k of {labels[key]} (position {key})"}), key="qkv_rope")
            tab_q.plotly_chart(fq.vectors_heatmap(steps.q[start:stop].numpy(), shown, title="Q after RoPE",
                                                  value_name="q", highlight=query_label), key="qkv_q_rope")
            tab_k.plotly_chart(fq.vectors_heatmap(steps.k[start:stop].numpy(), shown, title="K after RoPE",
                                                  value_name="k", highlight=query_label), key="qkv_k_rope")
        number += 1

    # scores, and the neuron view of one of them ------------------------------------------------------------
    allowed = steps.allowed.numpy()
    with ui_qkv.step(number, "Score the query against every key",
                     [rf"s_j = q_i \cdot k_j = \sum_{{m=1}}^{{{D}}} q_{{i,m}}\, k_{{j,m}}"],
                     f"One dot product per key, for query {ui.quoted(trace.tokens[query])} (token {query}). "
                     "The amber bar is the key chosen above."):
        st.plotly_chart(fq.key_bars(steps.scores[start:stop].numpy(), shown, title="q·k", value_name="score",
                                    picked=labels[key]), key="qkv_scores")
    st.markdown(f"**Behind one score: q ⊙ k** (BertViz's neuron view) for key {ui.quoted(trace.tokens[key])} "
                f"(token {key}): the score is the sum of {D} products, one per dimension.")
    products = steps.products(key)
    row = st.container(horizontal=True, gap="medium")
    with row.container(width=ui_qkv.FORMULA_WIDTH):
        st.latex(rf"\sum_m q_{{i,m}} k_{{j,m}} = {float(products.sum()):.4f}")
        st.metric("Score q·k", f"{float(steps.scores[key]):.4f}")
    neuron = fq.neuron_view(steps.q[query].numpy(), steps.k[key].numpy(), products.numpy(),
                            query_label=query_label, key_label=labels[key])
    row.container(width="stretch").plotly_chart(neuron, key="qkv_neuron")
    number += 1

    # scale, mask, softmax -------------------------------------------------------------------------------------
    if abs(steps.scale * D**0.5 - 1) < 1e-6:
        relation = "=" if f"{steps.scale:.4g}" == f"{steps.scale:.12g}" else r"\approx"
        scale_formulas = [rf"\tilde s_j = \frac{{s_j}}{{\sqrt{{d_k}}}} = \frac{{s_j}}{{\sqrt{{{D}}}}}",
                          rf"{relation} s_j \times {steps.scale:.4g}"]
    else:  # e.g. GPT-2 variants that also divide by the layer index
        scale_formulas = [rf"\tilde s_j = s_j \times {steps.scale:.6g}"]
    with ui_qkv.step(number, "Scale", scale_formulas,
                     "Keeps the scores' spread independent of the head size, so the softmax is not saturated."):
        st.plotly_chart(fq.key_bars(steps.scaled[start:stop].numpy(), shown, title="scaled score",
                                    value_name="scaled", picked=labels[key]), key="qkv_scaled")
    number += 1
    mask_formula = {
        "causal": CAUSAL_MASK_LATEX,
        "bidirectional": r"M_{ij} = 0 \text{ for every } j",
    }.get(trace.mask, r"M_{ij} \in \{0, -\infty\}")
    hidden = int((~steps.allowed).sum())
    with ui_qkv.step(number, "Add the mask", [r"\hat s_j = \tilde s_j + M_{ij}", mask_formula],
                     (f"This run used the {trace.mask} mask: {hidden} of {n} keys get −∞ for this query "
                      "(shown as grey ×), so the softmax gives them exactly 0." if hidden else
                      f"This run used the {trace.mask} mask: this query may attend to every key.")
                     + ("" if trace.mask_is_model_default else " The model was trained with another mask: a what-if.")):
        st.plotly_chart(fq.key_bars(steps.masked[start:stop].numpy(), shown, title="scaled score + mask",
                                    value_name="masked score", allowed=allowed[start:stop], picked=labels[key]),
                        key="qkv_masked")
    number += 1
    in_window = float(steps.probs[start:stop].sum())
    with ui_qkv.step(number, "Softmax", [r"p_{ij} = \frac{e^{\hat s_j}}{\sum_{j'} e^{\hat s_{j'}}}",
                                         r"\sum_j p_{ij} = 1"],
                     f"The query's row of the attention map. p of the chosen key: {float(steps.probs[key]):.4f}."
                     + (f" The keys shown hold {in_window:.1%} of it." if stop - start < n else "")):
        st.plotly_chart(fq.key_bars(steps.probs[start:stop].numpy(), shown, title="attention p", value_name="p",
                                    allowed=allowed[start:stop], picked=labels[key]), key="qkv_probs")
    number += 1

    # weighted sum of values, and W_o ---------------------------------------------------------------------------
    with ui_qkv.step(number, "Average the values", [r"o_i = \sum_j p_{ij}\, v_j", rf"o_i \in \mathbb{{R}}^{{{D}}}"],
                     "Each key's value vector, weighted by its attention; their sum is the head's output."):
        tab_o, tab_pv = st.tabs(["The head's output o", "Each key's share p·v"])
        tab_o.plotly_chart(fq.vector_bars(steps.head_out.numpy(), title=f"o for {query_label}, head {head}",
                                          value_name="o"), key="qkv_head_out")
        tab_pv.plotly_chart(fq.vectors_heatmap(steps.weighted_values()[start:stop].numpy(), shown, title="p_j · v_j",
                                               value_name="p·v", highlight=query_label), key="qkv_pv")
    number += 1
    share = float(steps.head_contribution.norm() / steps.layer_out.norm()) if float(steps.layer_out.norm()) else 0.0
    with ui_qkv.step(number, "Mix the heads (W_o)",
                     [r"\mathrm{attn}_i = [\,o_i^{(0)}; \dots; o_i^{(H-1)}\,]\, W_o",
                      r"= \textstyle\sum_h o_i^{(h)} W_o^{(h)}",
                      rf"W_o \in \mathbb{{R}}^{{{trace.n_heads * D} \times {d}}}"],
                     "The layer's attention output for this token: every head's output concatenated and projected "
                     "back to the model's width (plus a bias in BERT), then added to the residual stream."):
        c1, c2, c3 = st.columns(3)
        c1.metric(f"‖head {head}'s part‖", f"{float(steps.head_contribution.norm()):.3f}")
        c2.metric("‖attention output‖", f"{float(steps.layer_out.norm()):.3f}")
        c3.metric("Share of the norm", f"{share:.2f}")
        st.plotly_chart(fq.vector_bars(steps.layer_out.numpy(), title=f"Attention output of layer {layer} for "
                                       f"{query_label}", value_name="output", height=220), key="qkv_layer_out")

    # all numbers + the check against the engine ------------------------------------------------------------------
    with st.expander(f"Every key's numbers for query {query} ({n} rows)"):
        st.dataframe(ui_qkv.numbers_table(steps, trace.tokens), hide_index=True, key="qkv_table")
    dp = float((steps.probs - trace.attention(layer, head)[query]).abs().max())
    do = float((steps.head_out - trace.head_output(layer, head)[query]).abs().max())
    st.caption(f"Check: recomputed from x and the weights, these agree with the model's own attention "
               f"(max |Δp| = {dp:.1e}, max |Δo| = {do:.1e}).")
