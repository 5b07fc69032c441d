"""Masking: the causal and bidirectional masks, one head under both, and what flipping the mask does to the output."""

from __future__ import annotations

import streamlit as st

from explorer.ui import common as ui, masking as ui_masking
from explorer.escape import md_escape
from explorer.figures import masking as fm
from explorer.figures.heatmap import token_heatmap
from explorer.figures.palette import DIVERGING
from explorer.analysis.mask_effects import (
    CAUSAL_MASK_LATEX,
    attention_difference,
    flip_summary,
    mask_matrix,
    share_on_later_tokens,
)

ui.require_entrypoint()

MASK_FORMULAS = {
    "causal": CAUSAL_MASK_LATEX,
    "bidirectional": r"M_{ij} = 0 \quad \text{for all } i, j",
}
PANEL_WIDTH = 460  # px: two panels side by side on a wide screen, one under the other on a narrow one
MASK_ROLES = {
    "causal": "Each token sees itself and the tokens before it (GPT-style language models).",
    "bidirectional": "Every token sees every token (BERT-style encoders).",
}

st.title("Masking")
st.caption(
    "Before the softmax, the mask adds 0 to the scores a query may use and −∞ to the others, so those keys get "
    "exactly zero attention:"
)
st.latex(r"A = \mathrm{softmax}\!\left(\frac{QK^\top}{\sqrt{d_k}} + M\right)")
with ui.guard():
    model = ui.current_model()
    causal, bidirectional = ui_masking.both_traces(model)
    trained = model.default_mask
    other = "bidirectional" if trained == "causal" else "causal"
    st.warning(
        f"**{md_escape(model.name)}** was trained with the **{trained}** mask. Running it with the {other} mask is a "
        "what-if: the model never learned to work that way, so what you see under that mask shows what the mask "
        "changes, not how the model behaves.",
        icon="⚠️",
    )
    st.caption("This page always shows both masks; the sidebar's mask setting does not apply here.")

    # the masks themselves --------------------------------------------------------------------------------------
    st.subheader("The two masks")
    n = causal.n_tokens
    m = min(n, fm.MASK_TOKENS)
    row = st.container(horizontal=True, gap="medium")
    for kind in ("causal", "bidirectional"):
        with row.container(width=PANEL_WIDTH):
            st.markdown(f"**{kind.capitalize()}**" + (" (what this model was trained with)" if kind == trained else ""))
            st.latex(MASK_FORMULAS[kind])
            st.caption(MASK_ROLES[kind])
            st.plotly_chart(fm.mask_figure(mask_matrix(kind, m), causal.tokens[:m], title=f"{kind} mask M"),
                            key=f"masking_matrix_{kind}", config={"displayModeBar": False})
    if n > m:
        st.caption(f"The first {m} of {n} tokens; the pattern is the same for any length.")

    # one head under both ----------------------------------------------------------------------------------------
    st.subheader("One head under both masks")
    controls = st.container(horizontal=True, vertical_alignment="bottom")
    layer, head = ui.layer_head_selectors(causal, key="masking", container=controls)
    maps = {"causal": causal.attention(layer, head).numpy(),
            "bidirectional": bidirectional.attention(layer, head).numpy()}
    zmax = max(float(a.max()) for a in maps.values())
    row = st.container(horizontal=True, gap="medium")
    for kind, attention in maps.items():
        title = f"{kind}" + (" (trained)" if kind == trained else " (what-if)")
        figure = token_heatmap(attention, causal.tokens, causal.tokens, title=title, zmax=zmax,
                               showscale=kind == "bidirectional")  # one colour bar: both share the scale
        row.container(width=PANEL_WIDTH).plotly_chart(fm.fit_panel(figure, max_ticks=10, max_height=PANEL_WIDTH),
                                                      key=f"masking_attention_{kind}")
    difference = attention_difference(causal, bidirectional, layer, head)
    figure = token_heatmap(difference, causal.tokens, causal.tokens, zmin=None, zmax=None, colorscale=DIVERGING,
                           value_name="bidirectional − causal",
                           title=f"Difference, layer {layer} head {head}: bidirectional − causal")
    st.container(width=2 * PANEL_WIDTH).plotly_chart(fm.fit_panel(figure, max_ticks=24, max_height=720),
                                                     key="masking_difference")
    later = share_on_later_tokens(maps["bidirectional"])
    st.caption(
        f"Red: more attention under the bidirectional mask; blue: less. Under it, queries put on average "
        f"**{later:.1%}** of this head's attention on later tokens, which the causal mask hides (the upper "
        "triangle). " + ("From layer 1 on the two runs also differ in their inputs, since every earlier layer "
                         "changed too." if layer > 0 else "In layer 0 both runs have the same Q and K: only the "
                                                          "mask differs.")
    )

    # what the flip does to the output ------------------------------------------------------------------------------
    st.subheader("What the flip does to the output")
    changes = ui_masking.output_changes(model, causal, bidirectional)
    summary = flip_summary(changes)
    if model.is_causal_lm:
        st.caption(
            "For each position, the model's prediction of the next token under the causal mask (trained) and the "
            "bidirectional one (what-if), and how far the whole distribution moved: KL(causal ‖ bidirectional). "
            "Under the bidirectional mask a position can already see the very token it is asked to predict. "
            "Amber bars: the top token changed."
        )
        c1, c2, c3 = st.columns(3)
        c1.metric("Mean KL (nats)", f"{summary['mean_kl']:.3f}")
        c2.metric("Top token changed", f"{summary['share_top_changed']:.0%}")
        c3.metric("Bidirectional top = actual next", f"{changes['bidirectional_says_next'].iloc[:-1].mean():.0%}"
                  if n > 1 else "–")
        st.plotly_chart(fm.kl_chart(changes), key="masking_kl")
    else:
        st.caption(
            f"{md_escape(model.name)} makes no next-token predictions; instead, how far each token's final hidden state "
            "turns when the mask flips: 1 − cos(h_causal, h_bidirectional). 0 means unchanged in direction."
        )
        c1, c2 = st.columns(2)
        c1.metric("Mean 1 − cosine", f"{summary['mean_cosine_change']:.3f}")
        c2.metric("Largest 1 − cosine", f"{summary['max_cosine_change']:.3f}")
        st.plotly_chart(fm.cosine_chart(changes), key="masking_cosine")
    st.dataframe(ui_masking.changes_table(changes), hide_index=True, key="masking_table")
