"""What the other pages draw of a long text, streamed a block of queries at a time: attention rollout's block means
(the head analysis page), one head under both masks (Masking) and two heads cell by cell (Compare), each against
the whole-map computation on a text of a few hundred tokens.

References: transformers' eager attention (rollout, as tests/engine/test_analysis.py does for the whole matrix),
``trace.attention`` (one head's whole map; its parity with eager attention is tests/engine/test_parity.py's and
tests/engine/test_gemma3.py's), and block means written the plain way (tests/engine/test_figures_heads.py).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import explorer.analysis.difference as difference_module
import explorer.capture.trace as trace_module
from explorer.analysis.difference import map_difference
from explorer.analysis.mask_effects import head_under_both
from explorer.analysis.rollout import rollout_blocks

from bounds import EPS32, attention_bound, f32_dot_bound
from references import block_rounding, reference_block_mean
from texts import GEMMA_TEXTS, LONG_TEXT

pytestmark = pytest.mark.numeric

SMALL_BLOCKS = 1 << 20  # bytes: a few-hundred-token layer comes in many row blocks, each with its own key span
CELLS = 64  # a 300-token map in blocks of 5 × 5 tokens: the downsampled path, with partial blocks at the edges


@pytest.fixture(autouse=True)
def small_row_blocks(monkeypatch):
    monkeypatch.setattr(trace_module, "ROW_BLOCK_BYTES", SMALL_BLOCKS)
    monkeypatch.setattr(difference_module, "BLOCK_BYTES", 1 << 16)


@pytest.fixture(scope="module")
def smol_pair(smollm2):
    return tuple(smollm2.trace(LONG_TEXT, mask=mask, max_tokens=300) for mask in ("causal", "bidirectional"))


@pytest.fixture(scope="module")
def gemma_trace(gemma3):
    return gemma3.trace(GEMMA_TEXTS["long"])  # > 512 tokens: the window cuts on the sliding layers


def eager_rollout(reference, trace, last: int) -> np.ndarray:
    """R = Â_last ⋯ Â_0 from transformers' eager maps, written out in numpy (float64)."""
    with torch.inference_mode():
        out = reference(input_ids=torch.tensor([trace.token_ids]), output_attentions=True)
    n = trace.n_tokens
    r = np.eye(n)
    for a in out.attentions[: last + 1]:
        mixed = 0.5 * a[0].double().numpy().mean(0) + 0.5 * np.eye(n)
        r = (mixed / mixed.sum(-1, keepdims=True)) @ r
    return r


@pytest.mark.parametrize("name, last", [("smollm2", 11), ("gemma3", 17)])
def test_rollout_blocks_are_the_whole_rollouts_block_means(request, smol_pair, gemma_trace, name, last):
    trace = smol_pair[0] if name == "smollm2" else gemma_trace
    expected = eager_rollout(request.getfixturevalue(f"{name}_eager"), trace, last)
    heard: list[float] = []
    got = rollout_blocks(trace, CELLS, last, on_progress=heard.append)
    ref, rs, cs = reference_block_mean(expected, CELLS)
    assert (got.blocks.row_step, got.blocks.col_step) == (rs, cs) and got.blocks.downsampled
    # A product of row-stochastic matrices moves by at most the sum of its factors' row errors (test_analysis), and a
    # block mean of entries each that close is as close; then the rows and the block means round to float32.
    bound = sum(attention_bound(trace, layer) for layer in range(last + 1))
    np.testing.assert_allclose(got.blocks.values, ref, rtol=block_rounding(cs) + EPS32, atol=bound)
    assert got.first_share == pytest.approx(expected[1:, 0].mean(), abs=bound)
    assert got.row_sum_error < 1e-12  # float64 products of renormalised rows: ~(layers · n) · 2.2e-16
    assert heard == sorted(heard) and heard[-1] == pytest.approx(1.0)


def test_a_short_texts_rollout_is_exact(smollm2, smollm2_eager):
    trace = smollm2.trace("The cat sat on the mat because it was tired.")
    got = rollout_blocks(trace, CELLS, 5)
    assert not got.blocks.downsampled
    expected = eager_rollout(smollm2_eager, trace, 5)
    bound = sum(attention_bound(trace, layer) for layer in range(6))  # see above; one float32 rounding of R
    np.testing.assert_allclose(got.blocks.values, expected, rtol=EPS32, atol=bound)


def test_head_under_both_masks_is_the_whole_maps_block_means(smol_pair):
    causal, bidirectional = smol_pair
    layer, head = 3, 2
    heard: list[float] = []
    got = head_under_both(causal, bidirectional, layer, head, CELLS, on_progress=heard.append)
    whole = {"causal": causal.attention(layer, head).numpy(),
             "bidirectional": bidirectional.attention(layer, head).numpy()}
    bounds = {"causal": attention_bound(causal, layer), "bidirectional": attention_bound(bidirectional, layer)}
    for kind in whole:
        ref, rs, cs = reference_block_mean(whole[kind], CELLS)
        drawn = getattr(got, kind)
        assert (drawn.row_step, drawn.col_step) == (rs, cs)
        np.testing.assert_allclose(drawn.values, ref, rtol=block_rounding(cs), atol=bounds[kind])
    ref, _rs, cs = reference_block_mean(whole["bidirectional"] - whole["causal"], CELLS)
    # two block means, each as above, subtracted in float32 (one more rounding of numbers ≤ 1)
    np.testing.assert_allclose(got.difference.values, ref, rtol=0,
                               atol=sum(bounds.values()) + 2 * block_rounding(cs) + EPS32)
    n = causal.n_tokens
    later = float(np.triu(whole["bidirectional"].astype(np.float64), 1).sum(-1).mean())
    # the map's rounding, and float32 sums of ≤ n weights per query on either side
    assert got.later_share == pytest.approx(later, abs=bounds["bidirectional"] + f32_dot_bound(n, 1.0))
    assert got.later_share > 0.01  # a bidirectional map of a real head does look ahead
    assert heard == sorted(heard) and heard[-1] == pytest.approx(1.0)


@pytest.mark.parametrize("layer_b, head_b", [(3, 2), (20, 7)])
def test_map_difference_is_the_whole_maps_difference(smol_pair, layer_b, head_b):
    a, b = smol_pair
    layer_a, head_a = 3, 2
    heard: list[float] = []
    got = map_difference(a, layer_a, head_a, b, layer_b, head_b, CELLS, on_progress=heard.append)
    pa, pb = a.attention(layer_a, head_a).numpy(), b.attention(layer_b, head_b).numpy()
    change = np.abs(pa.astype(np.float64) - pb)
    bound = attention_bound(a, layer_a) + attention_bound(b, layer_b)  # each map rounds apart from the reference
    n = a.n_tokens
    assert got.largest == pytest.approx(change.max(), abs=bound)
    assert change[got.largest_at] >= change.max() - 2 * bound  # the largest cell, up to ties within rounding
    assert got.mean_abs == pytest.approx(change.mean(), abs=bound + f32_dot_bound(n, 1.0))  # float32 row sums
    rows = change.sum(-1)
    assert rows[got.most_changed] >= rows.max() - 2 * (n * bound + f32_dot_bound(n, 1.0))  # n cells, each as above
    for drawn, whole, layer, trace in ((got.a, pa, layer_a, a), (got.b, pb, layer_b, b)):
        ref, _rs, cs = reference_block_mean(whole, CELLS)
        np.testing.assert_allclose(drawn.values, ref, rtol=block_rounding(cs), atol=attention_bound(trace, layer))
    ref, _rs, cs = reference_block_mean(pa - pb, CELLS)
    np.testing.assert_allclose(got.difference.values, ref, rtol=0, atol=bound + 2 * block_rounding(cs) + EPS32)
    assert heard == sorted(heard) and heard[-1] == pytest.approx(1.0) and len(heard) > 3


def test_map_difference_needs_maps_of_one_size(smollm2, smol_pair):
    from explorer import ExplorerError

    other = smollm2.trace(LONG_TEXT, max_tokens=200)
    with pytest.raises(ExplorerError, match="same number"):
        map_difference(smol_pair[0], 0, 0, other, 0, 0, CELLS)


@pytest.mark.parametrize("which, layer", [("causal", 4), ("bidirectional", 4), ("gemma3", 0), ("gemma3", 5)])
def test_allowed_rows_are_rows_of_the_whole_mask(smol_pair, gemma_trace, which, layer):
    trace = {"causal": smol_pair[0], "bidirectional": smol_pair[1], "gemma3": gemma_trace}[which]
    whole = trace.allowed(layer)
    n = trace.n_tokens
    for rows in (slice(0, 1), slice(n - 1, n), slice(n // 3, n // 3 + 40)):
        assert torch.equal(trace.allowed_rows(layer, rows), whole[rows])


@pytest.mark.parametrize("ablation", ["zero", "mean"])
def test_greedy_continuation_is_the_argmax_of_each_ablated_run_of_the_text_so_far(smollm2, ablation):
    from explorer.decoding.continuation import greedy_continuation

    ids = smollm2.encode_input("When Mary and John went to the store, John gave a drink to").token_ids
    heads = [(layer, head) for layer in (0, 1, 2) for head in range(9)]  # enough that the mean's value shows
    # Reference: the definition, a whole ablated trace of the text so far for every token (Model.trace's ablation)
    expected = list(ids)
    for _step in range(5):
        trace = smollm2.trace(expected, ablate=heads, ablation=ablation, keep_inputs=False)
        expected.append(int(trace.logits_at([trace.n_tokens - 1])[0].argmax()))
    heard: list[float] = []
    assert greedy_continuation(smollm2, ids, 5, heads, ablation, on_progress=heard.append) == expected[len(ids):]
    assert heard == [pytest.approx((i + 1) / 5) for i in range(5)]


def test_next_token_loss_reports_progress_to_the_end(smol_pair, monkeypatch):
    import explorer.analysis.loss as loss_module

    monkeypatch.setattr(loss_module, "CHUNK_BYTES", 8 * 49152 * 64)  # 64 positions a chunk: several chunks
    heard: list[float] = []
    losses = loss_module.next_token_loss(smol_pair[0], on_progress=heard.append)
    assert len(losses) == smol_pair[0].n_tokens - 1 and len(heard) > 3
    assert heard == sorted(heard) and heard[-1] == pytest.approx(1.0)
