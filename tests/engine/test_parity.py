"""The recorded attention equals transformers' own eager attention, on the real embedded models."""

from __future__ import annotations

import math

import pytest
import torch

from bounds import attention_bound, f32_dot_bound, model_bound

pytestmark = pytest.mark.numeric

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
    for layer in range(trace.n_layers):
        bound = attention_bound(trace, layer)
        assert (trace.attentions(layer) - ref[layer]).abs().max().item() <= bound, layer
        if layer in (0, 17, 29):  # the per-head accessor agrees with the per-layer one
            for head in range(trace.n_heads):
                assert (trace.attention(layer, head) - ref[layer][head]).abs().max().item() <= bound


@pytest.mark.parametrize("lang", TEXTS)
def test_minilm_maps_match_eager(minilm, minilm_eager, lang):
    trace = minilm.trace(TEXTS[lang])
    ref, _ = _eager_attentions(minilm_eager, trace.token_ids)
    assert trace.n_layers == 6 and trace.n_heads == 12 and trace.mask == "bidirectional"
    for layer in range(6):
        assert (trace.attentions(layer) - ref[layer]).abs().max().item() <= attention_bound(trace, layer), layer
    assert trace.logits is None


@pytest.mark.parametrize("lang", TEXTS)
def test_smollm2_logits_match_sdpa(smollm2, smollm2_sdpa, lang):
    trace = smollm2.trace(TEXTS[lang])
    with torch.inference_mode():
        ref = smollm2_sdpa(torch.tensor([trace.token_ids])).logits[0]
    assert trace.logits.shape == (trace.n_tokens, 49152)
    assert (trace.logits - ref).abs().max().item() <= model_bound(smollm2, float(ref.abs().max()))


def test_softmax_of_recorded_qk_reproduces_map(smollm2, minilm):
    for model in (smollm2, minilm):
        trace = model.trace(TEXTS["english"])
        n = trace.n_tokens
        for layer in range(0, trace.n_layers, 3):
            bound = attention_bound(trace, layer)  # softmax and exp(s − lse): the same scores, summed apart
            for head in range(trace.n_heads):
                scores = trace.q(layer, head) @ trace.k(layer, head).T / math.sqrt(trace.head_dim)
                if trace.mask == "causal":
                    scores = scores.masked_fill(~torch.ones(n, n, dtype=torch.bool).tril(), float("-inf"))
                p = torch.softmax(scores, dim=-1)
                assert (p - trace.attention(layer, head)).abs().max().item() <= bound


def test_rows_sum_to_one_and_causal_is_lower_triangular(smollm2):
    trace = smollm2.trace("One two three four five six.")
    a = trace.attention(5, 3)
    # each p carries the map's rounding (relative, p ≤ 1), and the row sum adds n more roundings
    bound = attention_bound(trace, 5) + f32_dot_bound(trace.n_tokens, 1.0)
    assert (a.sum(-1) - 1).abs().max().item() <= bound
    assert a.triu(1).abs().max().item() == 0.0
    assert trace.mask == "causal" and trace.mask_is_model_default
