"""The recorded attention equals transformers' own eager attention, on the real embedded models."""

from __future__ import annotations

import math

import pytest
import torch

TEXTS = {
    "english": "The quick brown fox jumps over the lazy dog, and then the dog sleeps again.",
    "chinese": "大规模语言模型正在改变我们使用计算机的方式。",
}


def _eager_attentions(hf, ids):
    with torch.inference_mode():
        out = hf(torch.tensor([ids]), output_attentions=True)
    return [a[0] for a in out.attentions], out


@pytest.mark.parametrize("lang", TEXTS)
def test_smollm2_maps_match_eager(smollm2, smollm2_eager, lang):
    trace = smollm2.trace(TEXTS[lang])
    ref, _ = _eager_attentions(smollm2_eager, trace.token_ids)
    assert trace.n_layers == len(ref) == 30 and trace.n_heads == 9 and trace.n_kv_heads == 3
    worst = max((trace.attentions(layer) - ref[layer]).abs().max().item() for layer in range(trace.n_layers))
    assert worst <= 1e-5
    for layer in (0, 17, 29):  # the per-head accessor agrees with the per-layer one
        for head in range(trace.n_heads):
            assert (trace.attention(layer, head) - ref[layer][head]).abs().max().item() <= 1e-5


@pytest.mark.parametrize("lang", TEXTS)
def test_minilm_maps_match_eager(minilm, minilm_eager, lang):
    trace = minilm.trace(TEXTS[lang])
    ref, _ = _eager_attentions(minilm_eager, trace.token_ids)
    assert trace.n_layers == 6 and trace.n_heads == 12 and trace.mask == "bidirectional"
    for layer in range(6):
        assert (trace.attentions(layer) - ref[layer]).abs().max().item() <= 1e-5
    assert trace.logits is None


@pytest.mark.parametrize("lang", TEXTS)
def test_smollm2_logits_match_sdpa(smollm2, smollm2_sdpa, lang):
    trace = smollm2.trace(TEXTS[lang])
    with torch.inference_mode():
        ref = smollm2_sdpa(torch.tensor([trace.token_ids])).logits[0]
    assert trace.logits.shape == (trace.n_tokens, 49152)
    assert (trace.logits - ref).abs().max().item() <= 1e-4


def test_softmax_of_recorded_qk_reproduces_map(smollm2, minilm):
    for model in (smollm2, minilm):
        trace = model.trace(TEXTS["english"])
        n = trace.n_tokens
        for layer in range(0, trace.n_layers, 3):
            for head in range(trace.n_heads):
                scores = trace.q(layer, head) @ trace.k(layer, head).T / math.sqrt(trace.head_dim)
                if trace.mask == "causal":
                    scores = scores.masked_fill(~torch.ones(n, n, dtype=torch.bool).tril(), float("-inf"))
                p = torch.softmax(scores, dim=-1)
                assert (p - trace.attention(layer, head)).abs().max().item() <= 1e-5


def test_rows_sum_to_one_and_causal_is_lower_triangular(smollm2):
    trace = smollm2.trace("One two three four five six.")
    a = trace.attention(5, 3)
    assert torch.allclose(a.sum(-1), torch.ones(trace.n_tokens), atol=1e-5)
    assert a.triu(1).abs().max().item() == 0.0
    assert trace.mask == "causal" and trace.mask_is_model_default
