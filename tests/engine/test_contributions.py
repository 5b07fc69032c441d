"""Norm-based attention (trace.value_norms / contributions / contribution_blocks) against a plain hook on a stock
eager transformers model: v from the value projection's output, W_o from the output projection's weight, α from
eager ``output_attentions``. All three embedded models and the tiny GPT-2 / BERT / Llama (GQA) configs."""

from __future__ import annotations

import math

import pytest
import torch

import explorer

from bounds import EPS32, attention_bound, f32_dot_bound, model_bound
from references import value_norm_reference as reference
from texts import TINY_TEXT as TEXT

pytestmark = pytest.mark.numeric

SENTENCE = "When Mary and John went to the store, John gave a drink to"


def check_layer(model, trace, layer: int, attn: torch.Tensor, norms: torch.Tensor, w_o: torch.Tensor) -> None:
    H, D = trace.n_heads, trace.head_dim
    d_model = w_o.shape[0]
    for head in range(H):
        ours = trace.value_norms(layer, head)
        # f = W_o^h v: v differs by the model's rounding up to this layer (model_bound of its size, per element,
        # √D of them in a norm) carried through ||W_o^h||, plus the D-term products and the d_model-term norm.
        w = w_o[:, head * D:(head + 1) * D]
        v_size = float(norms[head].max()) / max(float(torch.linalg.matrix_norm(w, ord=2)), EPS32)
        norm_tol = (float(torch.linalg.matrix_norm(w, ord=2)) * model_bound(model, v_size) * math.sqrt(D)
                    + f32_dot_bound(D * d_model, float(norms[head].max())))
        assert (ours - norms[head]).abs().max().item() <= norm_tol
        # contributions α r / Σ α r: each term's relative error is α's (attention_bound, relative to p too) plus
        # the norm's; normalising at most doubles it, and c ≤ 1 makes it absolute.
        rel = norm_tol / max(float(norms[head].min()), EPS32)
        expected = attn[head] * norms[head][None, :]
        expected = expected / expected.sum(-1, keepdim=True)
        got = trace.contributions(layer, head)
        assert (got - expected).abs().max().item() <= 2 * (attention_bound(trace, layer) + rel) + 4 * EPS32
        assert torch.allclose(got.sum(-1), torch.ones(trace.n_tokens), atol=f32_dot_bound(trace.n_tokens, 1.0) * 4)


def streamed_equals_whole(trace, layer: int) -> None:
    """contribution_blocks in small blocks give the blocks of contributions: the maps of a block of queries are the
    same sums in another blocking, so they agree to the attention bound (twice: normalising again)."""
    tol = 2 * attention_bound(trace, layer)
    whole = torch.stack([trace.contributions(layer, h) for h in range(trace.n_heads)])  # (H, n, n)
    seen = torch.zeros(trace.n_tokens, dtype=torch.int64)
    for queries, keys, block in trace.contribution_blocks(layer, max_bytes=4 * trace.n_heads * trace.n_tokens * 3):
        assert (block - whole[:, queries, keys]).abs().max().item() <= tol
        outside = whole[:, queries].clone()
        outside[:, :, keys] = 0
        assert outside.abs().max().item() == 0  # the mask hides every key outside the span
        seen[queries] += 1
    assert torch.equal(seen, torch.ones_like(seen))


@pytest.mark.parametrize("name", ["smollm2", "minilm", "gemma3"])
def test_embedded_models_match_hooks(name, request):
    model = request.getfixturevalue(name)
    eager = request.getfixturevalue(f"{name}_eager")
    trace = model.trace(SENTENCE)
    attns, norms, w_os = reference(eager, trace.token_ids)
    for layer in sorted({0, trace.n_layers // 2, trace.n_layers - 1}):
        check_layer(model, trace, layer, attns[layer], norms[layer], w_os[layer])
    streamed_equals_whole(trace, trace.n_layers - 1)


def test_tiny_configs_match_hooks(tiny):  # noqa: F811
    _name, model, eager = tiny
    trace = model.trace(TEXT)
    attns, norms, w_os = reference(eager, trace.token_ids)
    for layer in range(trace.n_layers):
        check_layer(model, trace, layer, attns[layer], norms[layer], w_os[layer])
    streamed_equals_whole(trace, 0)


def test_a_trace_does_not_keep_its_model_alive(tiny):  # noqa: F811
    """The trace holds the model weakly (like its unembedding): once it is gone, a clear error, not a stale W_o."""
    import gc
    import weakref

    from explorer import ExplorerError

    _name, model, _eager = tiny
    trace = model.trace(TEXT)
    alive = trace.value_norms(0, 0)
    assert trace._model() is model and isinstance(trace._model, weakref.ref)
    trace._model = weakref.ref(type(model).__new__(type(model)))  # a model object that is collected at once
    gc.collect()
    with pytest.raises(ExplorerError, match="no longer loaded"):
        trace.value_norms(0, 0)
    assert alive.shape == (trace.n_tokens,)


def test_contributions_by_word_follow_clarks_rule(smollm2):
    """By word, contributions aggregate like attention: a key word's pieces summed, a query word's pieces averaged
    (written out here with loops over the words, not through the engine's aggregation); rows still sum to 1."""
    trace = smollm2.trace("猫坐在垫子上。The cat's mat.")
    words = trace.words()
    assert len(words) < trace.n_tokens  # the byte pieces of each character join
    tokens = trace.contributions(17, 3).double()
    by_hand = torch.tensor([[tokens[q.start:q.end, k.start:k.end].sum(-1).mean().item() for k in words]
                            for q in words], dtype=torch.float64)
    ours = trace.contributions(17, 3, by="word")
    tol = trace.n_tokens * EPS32  # float32 sums of at most n terms ≤ 1 against float64 ones
    assert (ours.double() - by_hand).abs().max().item() <= tol
    assert (ours.double().sum(-1) - 1).abs().max().item() <= tol + attention_bound(trace, 17)
    with pytest.raises(explorer.ExplorerError):
        trace.contributions(17, 3, by="pieces")
