"""Flipping the mask: the masks, one head under both, and the change in the outputs, against direct computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from explorer import ExplorerError
from explorer.analysis import mask_effects as me

from bounds import attention_bound, f32_dot_bound, model_bound

pytestmark = pytest.mark.numeric

TEXT = "The cat sat on the mat because it was tired."


@pytest.fixture(scope="module")
def smol_pair(smollm2):
    return smollm2.trace(TEXT, mask="causal"), smollm2.trace(TEXT, mask="bidirectional")


@pytest.fixture(scope="module")
def mini_pair(minilm):
    return minilm.trace(TEXT, mask="causal"), minilm.trace(TEXT, mask="bidirectional")


def test_mask_matrices():
    causal = me.mask_matrix("causal", 5)
    assert causal.dtype == bool and np.array_equal(causal, np.tril(np.ones((5, 5), dtype=bool)))
    assert me.mask_matrix("bidirectional", 3).all()
    additive = me.additive_mask(causal)
    assert (additive[causal] == 0).all() and np.isneginf(additive[~causal]).all()
    with pytest.raises(ExplorerError, match="Unknown mask"):
        me.mask_matrix("sliding", 3)


def test_layer0_under_each_mask_is_the_masked_softmax_of_the_same_scores(smol_pair):
    """Layer 0 has the same Q and K under both masks (nothing before it depends on the mask)."""
    causal, bidi = smol_pair
    assert torch.equal(causal.q(0, 4), bidi.q(0, 4))  # the same computation on the same input
    scores = (causal.q(0, 4) @ causal.k(0, 4).T).double() * causal.scale(0)
    n = causal.n_tokens
    tril = torch.tril(torch.ones(n, n, dtype=torch.bool))
    expected_causal = torch.softmax(scores.masked_fill(~tril, float("-inf")), -1)
    expected_bidi = torch.softmax(scores, -1)
    diff = me.attention_difference(causal, bidi, 0, 4)
    bound = attention_bound(causal, 0) + attention_bound(bidi, 0)  # a difference of two maps, each rounded
    np.testing.assert_allclose(diff, (expected_bidi - expected_causal).numpy(), atol=bound, rtol=0)
    assert me.share_on_later_tokens(expected_causal) == 0.0
    later = float((expected_bidi * ~tril).sum(-1).mean())
    share_bound = attention_bound(bidi, 0) + f32_dot_bound(n, 1.0)  # a mean of row sums of probabilities
    assert me.share_on_later_tokens(bidi.attention(0, 4)) == pytest.approx(later, abs=share_bound)


def test_next_token_changes_against_the_eager_model(smollm2, smollm2_eager, smol_pair):
    causal, bidi = smol_pair
    table = me.next_token_changes(smollm2, causal, bidi)
    n = causal.n_tokens
    assert list(table["position"]) == list(range(n)) and list(table["token"]) == causal.tokens
    assert list(table["actual_next"]) == causal.tokens[1:] + [""]
    with torch.inference_mode():
        eager_logits = smollm2_eager(torch.tensor([causal.token_ids])).logits[0].double()
    log_c = torch.log_softmax(eager_logits, -1)  # the trained (causal) run, by transformers' eager attention
    log_b = torch.log_softmax(bidi.logits.double(), -1)
    kl = torch.nn.functional.kl_div(log_b, log_c, log_target=True, reduction="none").sum(-1)
    # The eager logits differ from ours by the rounding of the whole model, dz; a log-softmax then moves by
    # ≤ 2·dz, and KL = Σ p_c·(log p_c − log p_b) by 2·dz·Σ p_c·|log p_c − log p_b + 1| through log p_c, by
    # 2·dz·Σ p_c = 2·dz through log p_b.
    dz = model_bound(smollm2, float(eager_logits.abs().max()))
    spread = (log_c.exp() * (log_c - log_b + 1).abs()).sum(-1).numpy()
    kl_bound = 2 * dz * spread
    np.testing.assert_array_less(np.abs(table["kl"] - kl.numpy()), kl_bound)
    top_c, top_b = log_c.argmax(-1), log_b.argmax(-1)
    assert list(table["top_causal"]) == [smollm2.decode_token(int(t)) for t in top_c]
    assert list(table["top_bidirectional"]) == [smollm2.decode_token(int(t)) for t in top_b]
    np.testing.assert_allclose(table["p_causal"], log_c.max(-1).values.exp().numpy(), rtol=2 * dz)
    np.testing.assert_array_equal(table["top_changed"], (top_c != top_b).numpy())
    says_next = [int(top_b[i]) == causal.token_ids[i + 1] for i in range(n - 1)] + [False]
    assert list(table["bidirectional_says_next"]) == says_next
    # a model that sees the next token mostly says it: the what-if is not a better model, it peeks
    assert sum(says_next) >= (n - 1) // 2
    # chunking is only a memory bound
    small = me.next_token_changes(smollm2, causal, bidi, chunk=3)
    # float32 matmul blocking: only the unembedding's d_model-term sums change order, in both distributions
    dz_chunk = f32_dot_bound(causal.final_hidden.shape[-1], float(eager_logits.abs().max()))
    np.testing.assert_array_less(np.abs(small["kl"] - table["kl"]), 2 * dz_chunk * (spread + 1))
    summary = me.flip_summary(table)
    assert summary["mean_kl"] == pytest.approx(float(kl.mean()), abs=float(kl_bound.mean()))
    assert summary["share_top_changed"] == float((top_c != top_b).double().mean())  # a share of n booleans


def test_final_state_changes_against_the_eager_encoder(minilm, minilm_eager, mini_pair):
    causal, bidi = mini_pair
    table = me.final_state_changes(causal, bidi)
    with torch.inference_mode():
        trained = minilm_eager(torch.tensor([bidi.token_ids])).last_hidden_state[0].double()
    what_if = causal.final_hidden.double()
    cos = (trained * what_if).sum(-1) / (trained.norm(dim=-1) * what_if.norm(dim=-1))
    # Our bidirectional run and the eager one round apart through the model: each component of the final state by
    # dh, a whole vector by δ = √d·dh. A norm moves by ≤ δ, a cosine by ≤ 2·δ/‖h‖.
    dh = model_bound(minilm, float(trained.abs().max()))
    delta = math.sqrt(trained.shape[-1]) * dh
    cos_bound = 2 * delta / float(trained.norm(dim=-1).min())
    np.testing.assert_allclose(table["cosine"], cos.numpy(), atol=cos_bound, rtol=0)
    np.testing.assert_allclose(table["cosine_change"], 1 - cos.numpy(), atol=cos_bound, rtol=0)
    np.testing.assert_allclose(table["norm_bidirectional"], trained.norm(dim=-1).numpy(), atol=delta, rtol=0)
    assert (table["cosine_change"] > 1e-3).all()  # every token moves when it loses its right context
    assert me.flip_summary(table)["max_cosine_change"] == pytest.approx(float((1 - cos).max()), abs=cos_bound)


def test_wrong_inputs_are_clear_errors(smollm2, minilm, smol_pair, mini_pair):
    causal, bidi = smol_pair
    with pytest.raises(ExplorerError, match="Expected a causal and a bidirectional"):
        me.attention_difference(bidi, causal, 0, 0)
    with pytest.raises(ExplorerError, match="different texts"):
        me.final_state_changes(causal, smollm2.trace("Another text.", mask="bidirectional"))
    with pytest.raises(ExplorerError, match="not a causal language model"):
        me.next_token_changes(minilm, *mini_pair)


def test_fit_panel_thins_labels_bounds_height_and_keeps_the_downsampling_note():
    from explorer.figures.heatmap import token_heatmap
    from explorer.figures.masking import fit_panel

    tokens = [f"t{i}" for i in range(900)]
    figure = fit_panel(token_heatmap(np.eye(900), tokens, tokens, title="causal"), max_ticks=10, max_height=460)
    assert len(figure.layout.xaxis.tickvals) <= 10 and len(figure.layout.yaxis.ticktext) <= 10
    assert figure.layout.height == 460
    assert figure.layout.title.text == "causal<br><sup>(downsampled: each cell averages 3×3 token pairs)</sup>"
