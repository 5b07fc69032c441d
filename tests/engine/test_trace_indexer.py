"""One way to read attention: ``trace.attention(layer, head=None, queries=…, keys=…)`` against transformers' own
eager maps (every head, one head, blocks of queries × keys), the streaming readers built on it, and the public
per-layer view that replaces the internal record."""

from __future__ import annotations

import pytest
import torch

from tests.bounds import attention_bound

TEXT = "The cat sat on the mat because it was tired."


@pytest.fixture(scope="module")
def traced(smollm2, smollm2_eager):
    trace = smollm2.trace(TEXT)
    with torch.inference_mode():
        out = smollm2_eager(torch.tensor([trace.token_ids]), output_attentions=True)
    return trace, [a[0] for a in out.attentions]  # (H, n, n) per layer


@pytest.mark.numeric
def test_every_form_of_the_indexer_equals_eager(traced):
    trace, ref = traced
    n = trace.n_tokens
    for layer in (0, 17, 29):
        bound = attention_bound(trace, layer)
        whole = trace.attention(layer)
        assert whole.shape == (9, n, n) and whole.dtype == torch.float32 and whole.device.type == "cpu"
        assert (whole - ref[layer]).abs().max().item() <= bound
        for head in (0, 4, 8):
            one = trace.attention(layer, head)  # the two-argument form teammates rely on: (n, n)
            assert one.shape == (n, n) and (one - ref[layer][head]).abs().max().item() <= bound
            for queries, keys in ((slice(3, 7), slice(None)), (slice(None), slice(2, 5)), (slice(5, 6), slice(0, 6))):
                block = trace.attention(layer, head, queries=queries, keys=keys)
                assert (block - ref[layer][head][queries, keys]).abs().max().item() <= bound
                assert torch.equal(block, trace.attention_window(layer, head, queries, keys))
        block = trace.attention(layer, queries=slice(4, 9), keys=slice(1, 8))  # every head, one block: (H, Tq, Sk)
        assert block.shape == (9, 5, 7) and (block - ref[layer][:, 4:9, 1:8]).abs().max().item() <= bound


@pytest.mark.numeric
def test_streaming_readers_agree_with_the_indexer(traced):
    trace, ref = traced
    layer = 17
    bound = attention_bound(trace, layer)
    covered = []
    for queries, keys, probs in trace.row_blocks(layer, heads=slice(2, 5), max_bytes=4 * 3 * 11 * 3):  # 3 rows a block
        assert (probs - ref[layer][2:5, queries, keys]).abs().max().item() <= bound
        outside = ref[layer][2:5, queries].clone()
        outside[..., keys] = 0
        assert outside.abs().max().item() == 0  # keys left out of a block carry no weight
        covered += range(queries.start, queries.stop)
    assert covered == list(range(trace.n_tokens))
    positions, weights = trace.top_keys(layer, 3, query=9, k=4)
    expected = ref[layer][3, 9].topk(4)
    assert positions.tolist() == expected.indices.tolist()
    assert (weights - expected.values).abs().max().item() <= bound


def test_the_layer_view_says_what_ran(traced, smollm2):
    trace, _ = traced
    views = trace.layers
    assert len(views) == trace.n_layers == smollm2.config.num_hidden_layers
    view = trace.layer(5)
    assert (view.index, view.mask_kind, view.window, view.mask_is_model_default) == (5, "causal", None, True)
    assert (view.n_heads, view.n_kv_heads, view.group_size, view.head_dim) == (9, 3, 3, 64)
    assert (view.n_queries, view.n_keys) == (trace.n_tokens, trace.n_tokens)
    assert view.scale == trace.scale(5) == 64**-0.5
    assert torch.equal(view.q()[4], trace.q(5, 4)) and torch.equal(view.k()[1], trace.k(5, 4))  # head 4 reads kv 1
    assert torch.equal(view.lse()[4], trace.lse(5, 4)) and torch.equal(view.v()[1], trace.v(5, 4))
    flipped = smollm2.trace(TEXT, mask="bidirectional")
    assert {(v.mask_kind, v.mask_is_model_default) for v in flipped.layers} == {("bidirectional", False)}


def test_old_readers_still_work_and_say_they_will_go(traced):
    trace, _ = traced
    with pytest.warns(DeprecationWarning, match="trace.layer"):
        record = trace.record(2)
    assert record.mask_kind == trace.layer(2).mask_kind
    with pytest.warns(DeprecationWarning, match=r"trace.attention\(layer\)"):
        assert torch.equal(trace.attentions(2), trace.attention(2))


def test_bad_indices_are_clear_errors(traced):
    import explorer

    trace, _ = traced
    for call in (lambda: trace.attention(30), lambda: trace.attention(0, 9), lambda: trace.layer(-1),
                 lambda: trace.attention(0, 0, queries=slice(5, 5)), lambda: trace.attention(0, keys=slice(0, 9, 2))):
        with pytest.raises(explorer.ExplorerError):
            call()
