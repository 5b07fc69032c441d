"""AppTest of the Q, K, V page with the real models: change the widgets, and every number shown is the engine's."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from apptest_helpers import assert_clean, chart_data, decode, open_page
from bounds import attention_bound, attention_output_bound, f32_dot_bound, model_bound

from explorer.capture.tokens import display_label
from explorer.from_scratch.walkthrough import formula_steps, token_window

pytestmark = pytest.mark.usefixtures("navigation_like_a_server")

TEXT = "The cat sat on the mat because it was tired."
PAGE = "pages/qkv.py"
MAX_FIGURE_BYTES = 1_500_000


def _select(at, layer: int, head: int, query: int, key: int):
    at.number_input(key="qkv_layer").set_value(layer).run()
    at.number_input(key="qkv_head").set_value(head).run()
    at.selectbox(key="qkv_query").set_value(query).run()
    at.selectbox(key="qkv_key").set_value(key).run()
    assert_clean(at)
    return at


def _metric(at, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


# The page traces the text in its own script thread, whose float32 sums may run in another order than ours: what it
# shows is within the float32 bounds of our trace (see bounds), not bit for bit. Its q, k, v, x come out of its own
# run of the model (model_bound); a score adds a head_dim-term sum on top of the d_model-term projections.
def _score_bound(model, s) -> float:
    return model_bound(model, float(s.scores.abs().max())) + f32_dot_bound(s.head_dim, float(s.scores.abs().max()))


def test_smollm2_page_shows_the_engines_numbers(smollm2):
    at = _select(open_page(PAGE, model_choice="smollm2", text=TEXT), layer=17, head=6, query=9, key=2)
    trace = smollm2.trace(TEXT)
    s = formula_steps(smollm2, trace, 17, 6, 9)
    n = trace.n_tokens

    table = at.dataframe[0].value
    assert len(table) == n and list(table["token"]) == [display_label(t) for t in trace.tokens]
    p_bound, score_bound = attention_bound(trace, 17), _score_bound(smollm2, s)
    np.testing.assert_allclose(table["p (softmax)"], trace.attention(17, 6)[9].numpy(), atol=p_bound, rtol=0)
    np.testing.assert_allclose(table["q·k"], s.scores.numpy(), atol=score_bound, rtol=0)
    assert np.isneginf(table["+ mask"].to_numpy()[10:]).all()

    # Q, K, V heatmaps (dims × tokens), before and after RoPE
    for key, values in (("qkv_q_proj", s.q_pre), ("qkv_k_proj", s.k_pre), ("qkv_q_rope", s.q),
                        ("qkv_k_rope", s.k), ("qkv_v", s.v)):
        z = decode(chart_data(at, key)[0]["z"]).reshape(s.head_dim, n)
        bound = model_bound(smollm2, float(values.abs().max()))
        np.testing.assert_allclose(z, values.numpy().T, atol=bound, rtol=0, err_msg=key)
    q_bound = model_bound(smollm2, float(trace.q(17, 6).abs().max()))
    np.testing.assert_allclose(decode(chart_data(at, "qkv_q_rope")[0]["z"]).reshape(64, n), trace.q(17, 6).numpy().T,
                               atol=q_bound, rtol=0)
    w_q = smollm2.attention_modules[17].q_proj.weight[6 * 64 : 7 * 64].detach().numpy()  # head 6's rows
    np.testing.assert_array_equal(decode(chart_data(at, "qkv_W_q")[0]["z"]).reshape(64, 576), w_q)
    w_k = smollm2.attention_modules[17].k_proj.weight[2 * 64 : 3 * 64].detach().numpy()  # its kv head 2
    np.testing.assert_array_equal(decode(chart_data(at, "qkv_W_k")[0]["z"]).reshape(64, 576), w_k)
    rope = chart_data(at, "qkv_rope")
    q_pre_bound, k_bound = (model_bound(smollm2, float(t.abs().max())) for t in (s.q_pre, s.k))
    np.testing.assert_allclose(decode(rope[0]["y"]), s.q_pre[9].numpy(), atol=q_pre_bound, rtol=0)  # q before RoPE
    np.testing.assert_allclose(decode(rope[3]["y"]), s.k[2].numpy(), atol=k_bound, rtol=0)  # k after RoPE

    # the score row through scale, mask and softmax: masked keys are not drawn as bars but marked −∞
    probs = decode(chart_data(at, "qkv_probs")[0]["y"])
    np.testing.assert_allclose(probs[:10], trace.attention(17, 6)[9, :10].numpy(), atol=p_bound, rtol=0)
    assert np.isnan(probs[10])
    masked = chart_data(at, "qkv_masked")
    assert masked[1]["x"] == ["10\u2002."] and masked[1]["text"] == ["\u2212\u221e"]
    np.testing.assert_allclose(decode(chart_data(at, "qkv_scaled")[0]["y"]), (s.scores / 8).numpy(),
                               atol=score_bound / 8, rtol=0)

    # the neuron view: q, k and their products sum to the score shown
    neuron = chart_data(at, "qkv_neuron")
    np.testing.assert_allclose(decode(neuron[0]["y"]), trace.q(17, 6)[9].numpy(), atol=q_bound, rtol=0)
    np.testing.assert_allclose(decode(neuron[1]["y"]), trace.k(17, 6)[2].numpy(), atol=k_bound, rtol=0)
    np.testing.assert_allclose(decode(neuron[2]["y"]).sum(), float(s.scores[2]), atol=score_bound, rtol=0)
    score = float(_metric(at, "Score q·k"))  # shown to 4 places
    assert score == pytest.approx(float(s.scores[2]), abs=0.00005 + score_bound)

    # the head's output and the layer's output
    v_size = float(s.v.abs().max())
    out_bound = attention_output_bound(p_bound, n, s.d_model, v_size) + model_bound(smollm2, v_size)
    np.testing.assert_allclose(decode(chart_data(at, "qkv_head_out")[0]["y"]), trace.head_output(17, 6)[9].numpy(),
                               atol=out_bound, rtol=0)
    norm = float(s.layer_out.norm())  # shown to 3 places; relatively within p's bound and the model's rounding
    assert float(_metric(at, "‖attention output‖")) == pytest.approx(
        norm, abs=0.0005 + norm * (p_bound + model_bound(smollm2, 1.0)))
    assert any("max |Δp|" in c.value for c in at.caption)
    assert any(r"W_q^{(6)}" in l.value for l in at.latex) and any(r"W_k^{(2)}" in l.value for l in at.latex)


def test_minilm_page_has_biases_no_rope_and_the_engines_numbers(minilm):
    at = _select(open_page(PAGE, model_choice="minilm", text=TEXT), layer=3, head=5, query=4, key=6)
    trace = minilm.trace(TEXT)
    s = formula_steps(minilm, trace, 3, 5, 4)
    keys = [c.proto.id for c in at.get("plotly_chart")]
    assert not any(k.endswith(("qkv_rope", "qkv_q_rope", "qkv_k_rope")) for k in keys)
    np.testing.assert_allclose(at.dataframe[0].value["p (softmax)"], trace.attention(3, 5)[4].numpy(),
                               atol=attention_bound(trace, 3), rtol=0)
    assert len(chart_data(at, "qkv_masked")) == 1  # nothing masked in an encoder: no −∞ markers
    np.testing.assert_allclose(decode(chart_data(at, "qkv_q_proj")[0]["z"]).reshape(32, -1), trace.q(3, 5).numpy().T,
                               atol=model_bound(minilm, float(trace.q(3, 5).abs().max())), rtol=0)
    score = float(_metric(at, "Score q·k"))  # shown to 4 places
    assert score == pytest.approx(float(s.scores[6]), abs=0.00005 + _score_bound(minilm, s))
    assert any("+ b_q" in l.value for l in at.latex)


def test_long_text_shows_a_window_and_stays_small(smollm2):
    text = " ".join(f"word{i} is followed by another" for i in range(400))
    # the sidebar's causal mask is smollm2's own; the masking page's test then reuses this cached trace
    at = open_page(PAGE, model_choice="smollm2", text=text, mask="causal")
    ids = smollm2.encode(text, max_tokens=1024).token_ids
    assert len(ids) == 1024
    query = at.selectbox(key="qkv_query").value
    start, stop = token_window(1024, query, at.slider(key="qkv_window").value)
    assert stop - start == 32 and start <= query < stop
    with torch.inference_mode():  # layer 0's x, independently: the embeddings through the first block's norm
        x0 = smollm2.base.layers[0].input_layernorm(smollm2.base.embed_tokens(torch.tensor(ids[start:stop])))
    x = decode(chart_data(at, "qkv_x")[0]["z"]).reshape(576, -1)
    # RMSNorm's mean of squares sums d_model terms; the rest is elementwise
    np.testing.assert_allclose(x, x0.numpy().T, atol=f32_dot_bound(576, float(x0.abs().max())), rtol=0)
    assert len(at.dataframe[0].value) == 1024
    sizes = {c.proto.id.rsplit("-", 1)[-1]: len(c.proto.spec) for c in at.get("plotly_chart")}
    assert max(sizes.values()) <= MAX_FIGURE_BYTES, sizes


def test_gemma3_page_has_a_qk_norm_step_and_the_sliding_window(gemma3):
    """Gemma 3: x·W_q, then RMSNorm with (1 + w) scaling (checked against the model's own q_norm/k_norm modules),
    then RoPE; the first layer is a sliding-window layer, and the mask formula says so with its W."""
    at = _select(open_page(PAGE, model_choice="gemma3", text=TEXT), layer=0, head=1, query=9, key=2)
    trace = gemma3.trace(TEXT)
    record, module = trace.record(0), gemma3.attention_modules[0]
    assert record.mask_kind == "sliding" and trace.n_kv_heads == 1
    n, D = trace.n_tokens, trace.head_dim
    with torch.inference_mode():  # the model's own modules on its input x (rebuilt from the hidden state by its input norm)
        q_raw = module.q_proj(trace.x(0)).view(n, -1, D)[:, 1]  # (n, D) head 1
        k_raw = module.k_proj(trace.x(0)).view(n, -1, D)[:, 0]  # (n, D) the single kv head
        q_normed, k_normed = module.q_norm(q_raw), module.k_norm(k_raw)
    for key, values in (("qkv_q_proj", q_raw), ("qkv_k_proj", k_raw), ("qkv_q_norm", q_normed),
                        ("qkv_k_norm", k_normed)):
        z = decode(chart_data(at, key)[0]["z"]).reshape(D, n)
        # float32 matmul over d_model = 640 inputs of size ~1, then a norm: a few ulps × √640 of values up to ~30
        np.testing.assert_allclose(z, values.numpy().T, rtol=1e-5, atol=1e-4, err_msg=key)
    np.testing.assert_allclose(decode(chart_data(at, "qkv_q_rope")[0]["z"]).reshape(D, n), trace.q(0, 1).numpy().T,
                               atol=1e-5)
    headings = [m.value for m in at.markdown if m.value.startswith("#### ")]
    assert headings[2:4] == ["#### 3. Normalise Q and K (QK-norm)", "#### 4. Rotate Q and K by position (RoPE)"]
    assert any(r"(1 + w_q)" in l.value for l in at.latex)
    assert any(rf"W = {record.window}" in l.value for l in at.latex)
    assert any("multi-query attention" in c.value for c in at.caption)
    np.testing.assert_allclose(at.dataframe[0].value["p (softmax)"], trace.attention(0, 1)[9].numpy(), atol=1e-6)
