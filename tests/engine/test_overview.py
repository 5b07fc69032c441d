"""Long texts' overviews, streamed a block of queries at a time (Trace.row_blocks, explorer.analysis.overview with
``method="streamed"``, the exact path tests/engine/test_fused_overview.py compares the fused path against): the same numbers as the whole maps give, on a causal GQA model (SmolLM2), a bidirectional one (MiniLM) and Gemma 3's
sliding-window layers, where each block scores only the keys its window reaches.

References: ``trace.attentions(layer)`` (the whole (H, n, n) maps, whose parity with transformers' eager attention
tests/engine/test_parity.py and tests/engine/test_gemma3.py check), block means written the plain way (tests/engine/test_figures_heads.py)
and the statistics' functions on whole maps (checked on hand-made maps in tests/engine/test_stats.py).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import explorer.capture.trace as trace_module
from explorer.analysis.overview import layer_overview, model_overview
from explorer.analysis.stats import TEXT_STATISTICS
from explorer.figures import heads as fh

from bounds import attention_bound, entropy_bound, f32_dot_bound
from references import block_rounding, reference_block_mean
from texts import GEMMA_TEXTS, LONG_TEXT

pytestmark = pytest.mark.numeric

SMALL_BLOCKS = 1 << 20  # bytes: a 700-token layer then comes in dozens of row blocks, each with its own key span


@pytest.fixture(scope="module")
def traces(smollm2, minilm, gemma3):
    return {
        "smollm2": smollm2.trace(LONG_TEXT, max_tokens=700),
        "minilm": minilm.trace(LONG_TEXT[:2400], max_tokens=500),
        "gemma3": gemma3.trace(GEMMA_TEXTS["long"]),  # > 512 tokens: the window cuts on the sliding layers
    }


CASES = [("smollm2", 3), ("smollm2", 29), ("minilm", 2), ("gemma3", 0), ("gemma3", 5)]  # gemma 0 slides, 5 is global


@pytest.fixture(autouse=True)
def small_row_blocks(monkeypatch):
    monkeypatch.setattr(trace_module, "ROW_BLOCK_BYTES", SMALL_BLOCKS)


@pytest.mark.parametrize("name, layer", CASES)
def test_row_blocks_put_together_are_the_whole_maps(traces, name, layer):
    trace = traces[name]
    whole = trace.attentions(layer)
    rebuilt = torch.full_like(whole, float("nan"))
    blocks = list(trace.row_blocks(layer))
    assert len(blocks) > 3
    for queries, keys, probs in blocks:
        rebuilt[:, queries] = 0.0
        rebuilt[:, queries, keys] = probs
    # every query once; outside each block's key span the whole maps hold exact zeros (the mask)
    assert not rebuilt.isnan().any()
    torch.testing.assert_close(rebuilt, whole, rtol=0, atol=attention_bound(trace, layer))
    if name == "gemma3" and layer == 0:  # a sliding layer: late blocks skip the keys before their window
        assert blocks[-1][1].start > 0


def test_row_blocks_of_some_heads_are_those_heads_maps(traces):
    trace = traces["smollm2"]  # 9 query heads over 3 key/value heads: heads 2…4 straddle two groups
    whole = trace.attentions(7)[2:5]
    rebuilt = torch.zeros_like(whole)
    for queries, keys, probs in trace.row_blocks(7, heads=slice(2, 5)):
        rebuilt[:, queries, keys] = probs
    torch.testing.assert_close(rebuilt, whole, rtol=0, atol=attention_bound(trace, 7))


@pytest.mark.parametrize("hide_sink", [False, True])
@pytest.mark.parametrize("name, layer", CASES)
def test_streamed_block_means_equal_the_whole_maps_block_means(traces, name, layer, hide_sink):
    trace = traces[name]
    cells = (400, 96, 32, 7)
    transform = fh.hide_sink if hide_sink else None
    got = layer_overview(trace, layer, cells=cells, transform=transform, method="streamed").blocks
    whole = trace.attentions(layer).numpy()
    shown = fh.hide_sink(whole) if hide_sink else whole
    for c in cells:
        for head in (0, trace.n_heads - 1):
            ref, rs, cs = reference_block_mean(shown[head], c)
            assert (got[c].row_step, got[c].col_step) == (rs, cs)
            # the maps' own rounding (relative to a weight ≤ 1, and after renormalising over ≥ half of 1) and the sums
            tol = attention_bound(trace, layer) * (3 if hide_sink else 1)
            np.testing.assert_allclose(got[c].values[head], ref, rtol=block_rounding(cs), atol=tol, equal_nan=True)


@pytest.mark.parametrize("name, layer", CASES)
def test_streamed_statistics_equal_the_whole_maps_statistics(traces, name, layer):
    trace = traces[name]
    got = layer_overview(trace, layer, statistics=tuple(TEXT_STATISTICS), method="streamed").statistics
    whole = trace.attentions(layer)
    p_bound = attention_bound(trace, layer)
    for stat, fn in TEXT_STATISTICS.items():
        expected = fn(whole).double().numpy()
        # a mean of per-query values each off by the maps' rounding (entropy: through −p ln p), plus the float32
        # mean over n queries on the reference's side
        bound = entropy_bound(p_bound, trace.n_tokens) if stat == "entropy" else p_bound
        size = float(np.abs(expected).max())
        np.testing.assert_allclose(got[stat], expected, rtol=0, atol=bound + f32_dot_bound(trace.n_tokens, size))


@pytest.mark.parametrize("method", ["streamed", "auto"])
def test_model_overview_reports_progress_to_the_end(traces, method):
    trace = traces["minilm"]
    heard: list[float] = []
    layers = model_overview(trace, cells=(32,), on_progress=heard.append, method=method)
    assert len(layers) == trace.n_layers
    assert heard == sorted(heard) and heard[-1] == pytest.approx(1.0)
    # streamed: after every block of queries; fused (thumbnails of a 500-token text): after each layer's kernel call
    assert len(heard) > trace.n_layers if method == "streamed" else len(heard) == trace.n_layers
