"""Fast parity on tiny random GPT-2, BERT and Llama configs: one recording attention serves every architecture.

These are unit tests of the mechanism (masks, GQA, scaling, fused kernel + log-sum-exp); the real models are
covered by test_parity.py.
"""

from __future__ import annotations

import pytest
import torch

from bounds import attention_bound, model_bound
from texts import TINY_TEXT as TEXT

pytestmark = pytest.mark.numeric


def test_maps_and_outputs_match_eager(tiny):
    name, model, eager = tiny
    trace = model.trace(TEXT)
    with torch.inference_mode():
        ref = eager(torch.tensor([trace.token_ids]), output_attentions=True, output_hidden_states=True)
    assert trace.mask == ("bidirectional" if name == "bert" else "causal")
    for layer, maps in enumerate(ref.attentions):
        assert (trace.attentions(layer) - maps[0]).abs().max().item() <= attention_bound(trace, layer)
    # The layer outputs agree too, so the fused kernel computed the same attention as the maps say (to the rounding
    # of the whole model, see bounds).
    for ours, theirs in zip(trace.hidden_states, ref.hidden_states):
        assert (ours - theirs[0]).abs().max().item() <= model_bound(model, float(theirs.abs().max()))
    if name != "bert":
        bound = model_bound(model, float(ref.logits.abs().max()))
        assert (trace.logits - ref.logits[0]).abs().max().item() <= bound
    else:
        assert trace.logits is None


def test_mask_override_is_a_real_what_if(tiny):
    """Overriding the mask changes the computation exactly as an eager model fed that mask computes it."""
    name, model, eager = tiny
    other = "causal" if name == "bert" else "bidirectional"
    trace = model.trace(TEXT, mask=other)
    assert trace.mask == other and not trace.mask_is_model_default
    n = trace.n_tokens
    allowed = torch.ones(n, n, dtype=torch.bool)
    if other == "causal":
        allowed = allowed.tril()
    # An explicit 4-D mask is used as given by transformers' eager attention (additive: 0 or -inf).
    additive = torch.zeros(1, 1, n, n).masked_fill(~allowed, torch.finfo(torch.float32).min)
    with torch.inference_mode():
        ref = eager(torch.tensor([trace.token_ids]), attention_mask=additive, output_attentions=True)
    for layer, maps in enumerate(ref.attentions):
        assert (trace.attentions(layer) - maps[0]).abs().max().item() <= attention_bound(trace, layer)
    if other == "bidirectional":
        assert trace.attention(0, 0).triu(1).sum().item() > 0.1  # the future is now visible


def test_gqa_sharing_is_reported(tiny):
    name, model, _ = tiny
    trace = model.trace(TEXT)
    if name == "llama":
        assert trace.n_kv_heads == 2 and [trace.kv_head(h) for h in range(4)] == [0, 0, 1, 1]
        assert trace.heads_sharing_kv(1) == [2, 3]
        assert torch.equal(trace.k(0, 2), trace.k(0, 3))
    else:
        assert trace.n_kv_heads == trace.n_heads
