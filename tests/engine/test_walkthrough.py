"""The Q, K, V walk-through: every step recomputed from x and the weights equals what the model computed."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from explorer import ExplorerError
from explorer.capture.projections import layer_projections
from explorer.from_scratch.walkthrough import formula_steps, token_window

from bounds import attention_bound, attention_output_bound, f32_dot_bound

pytestmark = pytest.mark.numeric

TEXT = "The cat sat on the mat because it was tired."


@pytest.fixture(scope="module")
def smol_trace(smollm2):
    return smollm2.trace(TEXT)


@pytest.fixture(scope="module")
def smol_eager_attentions(smollm2_eager, smol_trace):
    with torch.inference_mode():
        out = smollm2_eager(torch.tensor([smol_trace.token_ids]), output_attentions=True)
    return [a[0] for a in out.attentions]


@pytest.fixture(scope="module")
def mini_trace(minilm):
    return minilm.trace(TEXT)


def _projection_bound(s, value: torch.Tensor) -> float:
    """x @ W.T (plus bias, RoPE) over d_model terms, recomputed apart from the model's own projection."""
    return f32_dot_bound(s.d_model, float(value.abs().max()))


def _head_out_bound(s, trace) -> float:
    """Σ_j p_j·v_j from a recomputed V, against the trace's."""
    return attention_output_bound(attention_bound(trace, s.layer), s.n_tokens, s.d_model, float(s.v.abs().max()))


def _attention_output(model, trace, layer: int) -> torch.Tensor:
    """The model's own attention output of ``layer`` (after W_o, before the residual), via a forward hook."""
    attn = model.attention_modules[layer]
    module = attn.o_proj if hasattr(attn, "o_proj") else model.base.encoder.layer[layer].attention.output.dense
    seen = {}
    handle = module.register_forward_hook(lambda m, args, out: seen.setdefault("out", out[0].detach()))
    try:
        with torch.inference_mode():
            model.base(input_ids=torch.tensor([trace.token_ids]))
    finally:
        handle.remove()
    return seen["out"].float()


@pytest.mark.parametrize("layer,head,query", [(0, 0, 7), (17, 6, 10), (29, 8, 0), (5, 4, 3)])
def test_smollm2_steps_equal_the_trace_and_eager_attention(smollm2, smol_trace, smol_eager_attentions, layer, head,
                                                           query):
    s = formula_steps(smollm2, smol_trace, layer, head, query)
    t = smol_trace
    for mine, theirs in ((s.q, t.q(layer, head)), (s.k, t.k(layer, head)), (s.v, t.v(layer, head))):
        torch.testing.assert_close(mine, theirs, atol=_projection_bound(s, theirs), rtol=0)
    bound = attention_bound(t, layer)  # a textbook softmax against the fused kernel's exp(s − lse)
    assert (s.probs - t.attention(layer, head)[query]).abs().max() <= bound
    assert (s.head_out - t.head_output(layer, head)[query]).abs().max() <= _head_out_bound(s, t)
    # transformers' own eager attention (the independent reference)
    assert (s.probs - smol_eager_attentions[layer][head, query]).abs().max() <= bound
    assert s.kv_head == head // 3 and s.scale == 64**-0.5


def test_each_step_follows_from_the_one_before(smollm2, smol_trace):
    s = formula_steps(smollm2, smol_trace, 3, 2, 6)
    n = smol_trace.n_tokens
    # one matrix-vector product against n dot products: the same head_dim-term sums, in other orders
    score_bound = f32_dot_bound(s.head_dim, float(s.scores.abs().max()))
    torch.testing.assert_close(s.scores, torch.stack([s.q[6] @ s.k[j] for j in range(n)]), atol=score_bound, rtol=0)
    assert torch.equal(s.scaled, s.scores / 8.0)  # × 2⁻³ is exact in floating point
    assert s.allowed.tolist() == [j <= 6 for j in range(n)]  # causal
    assert torch.isneginf(s.masked[7:]).all() and torch.equal(s.masked[:7], s.scaled[:7])
    assert (s.probs[7:] == 0).all() and float(s.probs.sum()) == pytest.approx(1.0, abs=f32_dot_bound(n, 1.0))
    sum_bound = f32_dot_bound(n, float(s.v.abs().max()))  # Σ_j p_j·v_j, n terms, summed in two orders
    torch.testing.assert_close(s.head_out, (s.probs[:, None] * s.v).sum(0), atol=sum_bound, rtol=0)
    torch.testing.assert_close(s.weighted_values().sum(0), s.head_out, atol=sum_bound, rtol=0)
    for key in (0, 4, 6):
        assert float(s.products(key).sum()) == pytest.approx(float(s.scores[key]), abs=score_bound)
    # the projections by hand: x @ W.T
    torch.testing.assert_close(s.x @ s.w_v.T, s.v, atol=_projection_bound(s, s.v), rtol=0)
    torch.testing.assert_close(s.x @ s.w_q.T, s.q_pre, atol=_projection_bound(s, s.q_pre), rtol=0)


def test_rope_is_the_position_rotation_of_pairs(smollm2, smol_trace):
    s = formula_steps(smollm2, smol_trace, 4, 1, 9)
    assert s.uses_rope
    D = s.head_dim
    theta = smollm2.config.rope_parameters["rope_theta"]
    freqs = theta ** (-torch.arange(0, D, 2, dtype=torch.float64) / D)  # θ_m, m = 0 … D/2 − 1
    for name, pre, post in (("q", s.q_pre, s.q), ("k", s.k_pre, s.k)):
        pos = torch.arange(pre.shape[0], dtype=torch.float64)[:, None]
        cos, sin = torch.cos(pos * freqs), torch.sin(pos * freqs)
        a, b = pre[:, : D // 2].double(), pre[:, D // 2 :].double()
        expected = torch.cat([a * cos - b * sin, a * sin + b * cos], dim=-1)
        # Two float32 terms of size ≤ |a| + |b|; the float32 angle pos·θ_m ≤ n − 1 is off relatively, by ~n ulps
        # absolutely, which moves the result by as many ulps of |a| + |b|.
        size = float((a.abs() + b.abs()).max()) * pre.shape[0]
        torch.testing.assert_close(post.double(), expected, atol=f32_dot_bound(2, size), rtol=0, msg=name)
        assert torch.equal(post[0], pre[0])  # position 0: cos 0 = 1 and sin 0 = 0 leave it exactly as it was


@pytest.mark.parametrize("layer,head,query", [(0, 0, 0), (3, 7, 12), (5, 11, 6)])
def test_minilm_steps_equal_the_trace_and_eager_attention(minilm, minilm_eager, mini_trace, layer, head, query):
    s = formula_steps(minilm, mini_trace, layer, head, query)
    t = mini_trace
    assert not s.uses_rope and s.q_pre is None and s.b_q is not None
    torch.testing.assert_close(s.q, t.q(layer, head), atol=_projection_bound(s, t.q(layer, head)), rtol=0)
    torch.testing.assert_close(s.k, t.k(layer, head), atol=_projection_bound(s, t.k(layer, head)), rtol=0)
    assert s.allowed.all() and not torch.isinf(s.masked).any()
    bound = attention_bound(t, layer)  # a textbook softmax against the fused kernel's exp(s − lse)
    assert (s.probs - t.attention(layer, head)[query]).abs().max() <= bound
    assert (s.head_out - t.head_output(layer, head)[query]).abs().max() <= _head_out_bound(s, t)
    with torch.inference_mode():
        eager = minilm_eager(torch.tensor([t.token_ids]), output_attentions=True).attentions[layer][0, head, query]
    assert (s.probs - eager).abs().max() <= bound
    torch.testing.assert_close(s.x @ s.w_k.T + s.b_k, s.k, atol=_projection_bound(s, s.k), rtol=0)


@pytest.mark.parametrize("name,layer,query", [("smollm2", 6, 8), ("minilm", 2, 5)])
def test_layer_output_is_the_models_attention_output(request, name, layer, query):
    model = request.getfixturevalue(name)
    trace = request.getfixturevalue("smol_trace" if name == "smollm2" else "mini_trace")
    s = formula_steps(model, trace, layer, 0, query)
    contributions = [formula_steps(model, trace, layer, h, query).head_contribution for h in range(trace.n_heads)]
    # V and W_o sum d_model and H·D terms; Σ_h |head h's part| (+ |bias|) is the size of W_o's running sums.
    size = float(sum(c.abs() for c in contributions).max())
    bias = layer_projections(model, layer).b_o
    if bias is not None:
        size += float(bias.abs().max())
    summed = s.d_model + trace.n_heads * trace.head_dim
    bound = attention_output_bound(attention_bound(trace, layer), trace.n_tokens, summed, size)
    torch.testing.assert_close(s.layer_out, _attention_output(model, trace, layer)[query], atol=bound, rtol=0)
    # the heads' parts (plus the bias) add up to the whole
    torch.testing.assert_close(sum(contributions) + (bias if bias is not None else 0), s.layer_out, atol=bound, rtol=0)


def test_a_what_if_mask_reaches_the_steps(smollm2):
    trace = smollm2.trace(TEXT, mask="bidirectional")
    s = formula_steps(smollm2, trace, 2, 3, 1)
    assert s.allowed.all() and (s.probs[2:] > 0).all()
    assert (s.probs - trace.attention(2, 3)[1]).abs().max() <= attention_bound(trace, 2)


def test_bad_indices_are_clear_errors(smollm2, smol_trace):
    with pytest.raises(ExplorerError, match="Query 11 is out of range"):
        formula_steps(smollm2, smol_trace, 0, 0, 11)
    with pytest.raises(ExplorerError, match="Layer 30"):
        formula_steps(smollm2, smol_trace, 30, 0, 0)
    with pytest.raises(ExplorerError, match="not layer 1"):
        formula_steps(smollm2, smol_trace, 1, 0, 0, projections=layer_projections(smollm2, 0))
    with pytest.raises(ExplorerError, match="Key 99"):
        formula_steps(smollm2, smol_trace, 0, 0, 0).products(99)


@given(n=st.integers(1, 2000), focus=st.integers(-5, 2100), size=st.integers(1, 300))
def test_token_window_holds_the_focus_and_stays_in_bounds(n, focus, size):
    start, stop = token_window(n, focus, size)
    clamped = min(max(focus, 0), n - 1)
    assert 0 <= start <= clamped < stop <= n
    assert stop - start == min(size, n)
    if stop - start < n and start > 0 and stop < n:
        assert clamped - start >= (stop - start) // 2  # most of the window lies before the focus
