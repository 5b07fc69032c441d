"""Home: what the app is, what each page shows, and the current text's tokens."""

import streamlit as st

from explorer.ui import common as ui
from explorer.capture.tokens import display_label

ui.require_entrypoint()

st.title("Attention Explorer")
st.markdown(
    "See what a transformer's attention does with **your** sentence, with the real numbers of a real model.\n\n"
    "- **Attention heads**: every head of a layer, all layers × heads at a glance, one head large, BertViz-style lines.\n"
    "- **Q, K, V**: follow $\\mathrm{softmax}(QK^\\top/\\sqrt{d_k} + M)\\,V$ step by step for one token.\n"
    "- **Masking**: causal vs bidirectional on the same model, and what the flip changes.\n"
    "- **Generation**: the next-token distribution through temperature, top-k and top-p, one step at a time.\n"
    "- **From scratch**: a textbook multi-head attention on CPU or GPU, checked against the model.\n"
    "- **Head analysis**: which heads matter: statistics, Q/K geometry, logit lens, rollout, export."
)
with ui.guard():
    trace = ui.current_trace()
    model = ui.current_model()
    st.subheader("Your text, as the model sees it")
    st.caption(
        f"**{trace.n_tokens}** tokens · {trace.n_layers} layers × {trace.n_heads} heads"
        + (f" ({trace.n_kv_heads} key/value heads, shared)" if trace.n_kv_heads != trace.n_heads else "")
        + f" · mask: {trace.mask}{'' if trace.mask_is_model_default else ' (what-if)'} · device: {model.device}"
    )
    st.dataframe(
        {"position": list(range(trace.n_tokens)), "token": [display_label(t) for t in trace.tokens],
         "id": trace.token_ids},
        hide_index=True,
        height=min(400, 38 + 35 * trace.n_tokens),
    )
