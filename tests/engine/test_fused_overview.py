"""The fused overview (explorer.capture.fused, explorer.analysis.overview's fused path, stats.fused_statistics)
against the exact maps: the same numbers within float32 bounds, with no map built.

References: ``trace.attentions(layer)`` (the whole (H, n, n) maps, whose parity with transformers' eager attention
tests/test_parity.py and tests/test_gemma3.py check), the streamed exact path (layer_overview(method="streamed"),
itself checked against whole maps in tests/test_overview.py) and block means written the plain way (pad, reshape,
nanmean). Cases: a causal GQA model (SmolLM2), the same text under a bidirectional override, a bidirectional encoder
(MiniLM) and the same under a causal override, Gemma 3's sliding (0) and global (5) layers on a text longer than its
512-token window.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

import explorer.capture.fused as fused_module
from explorer.analysis.overview import layer_overview
from explorer.analysis.stats import (
    FUSED_STATISTICS, TEXT_STATISTICS, induction, induction_probe, induction_scores,
)
from explorer.analysis.views import hide_sink
from explorer.capture import fused

from bounds import attention_bound, entropy_bound, f32_dot_bound, EPS32

pytestmark = pytest.mark.numeric

TEXT = " ".join(["The committee met on Tuesday to discuss the budget, and after a long debate it decided to "
                 "postpone the vote until the next session."] * 30)


def _gemma_text() -> str:
    """~600 tokens of varied sentences: longer than Gemma 3's 512-token window."""
    words = ["sailor", "child", "neighbour", "engineer", "baker", "driver", "student", "painter"]
    verbs = ["painted", "repaired", "described", "carried", "photographed", "forgot"]
    things = ["a wooden boat", "the broken clock", "seven red apples", "a green letter", "the island map"]
    return " ".join(f"The {w} {v} {t} on day {i}." for i, (w, v, t) in
                    enumerate((w, v, t) for w in words for v in verbs for t in things[:3]))


@pytest.fixture(scope="module")
def traces(smollm2, minilm, gemma3):
    gemma = gemma3.trace(_gemma_text())
    assert gemma.n_tokens > 512 + 32  # the window cuts on the sliding layers
    return {
        "smollm2": smollm2.trace(TEXT, max_tokens=600, keep_inputs=False),
        "smollm2 bidirectional": smollm2.trace(TEXT, max_tokens=300, mask="bidirectional", keep_inputs=False),
        "minilm": minilm.trace(TEXT, max_tokens=400, keep_inputs=False),
        "minilm causal": minilm.trace(TEXT, max_tokens=300, mask="causal", keep_inputs=False),
        "gemma3": gemma,
    }


class Layers:
    """Each case's whole maps and float32 bound, computed once for every test of the module."""

    def __init__(self, traces):
        self.traces, self._whole, self._bound = traces, {}, {}

    def whole(self, name: str, layer: int) -> torch.Tensor:
        if (name, layer) not in self._whole:
            self._whole[name, layer] = self.traces[name].attentions(layer)
        return self._whole[name, layer]

    def bound(self, name: str, layer: int) -> float:
        if (name, layer) not in self._bound:
            self._bound[name, layer] = attention_bound(self.traces[name], layer)
        return self._bound[name, layer]


@pytest.fixture(scope="module")
def layers(traces):
    return Layers(traces)


CASES = [("smollm2", 3), ("smollm2", 29), ("smollm2 bidirectional", 11), ("minilm", 2), ("minilm causal", 4),
         ("gemma3", 0), ("gemma3", 5)]  # gemma 0 slides, 5 is global


@pytest.fixture(autouse=True)
def small_sliding_chunks(monkeypatch):
    # several kernel calls per sliding layer, each over its own span of keys (the app's 512 would be one or two here)
    monkeypatch.setattr(fused_module, "SLIDING_CHUNK", 96)


def plain_block_means(matrix: np.ndarray, max_cells: int) -> np.ndarray:
    """Block means of one map the plain way (pad with NaN, reshape, nanmean)."""
    rows, cols = matrix.shape
    rs, cs = -(-rows // max_cells), -(-cols // max_cells)
    padded = np.pad(matrix.astype(np.float64), ((0, (-rows) % rs), (0, (-cols) % cs)), constant_values=np.nan)
    blocks = padded.reshape(padded.shape[0] // rs, rs, padded.shape[1] // cs, cs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN blocks are NaN
        return np.nanmean(blocks, axis=(1, 3))


@pytest.mark.parametrize("name, layer", CASES)
def test_gathered_cells_are_the_maps_cells(traces, layers, name, layer):
    trace = traces[name]
    n = trace.n_tokens
    whole = layers.whole(name, layer)  # (H, n, n)
    generator = torch.Generator().manual_seed(layer)
    queries = torch.randint(0, n, (500,), generator=generator)
    keys = torch.randint(-2, n + 2, (500,), generator=generator)  # masked and out-of-range keys too
    got = fused.cells(trace, layer, queries, keys)
    inside = (keys >= 0) & (keys < n)
    expected = torch.zeros(trace.n_heads, 500)
    expected[:, inside] = whole[:, queries[inside], keys[inside]]
    torch.testing.assert_close(got, expected, rtol=0, atol=layers.bound(name, layer))
    assert bool((got[:, ~inside] == 0).all())
    masked = inside & ~trace.allowed(layer)[queries, keys.clamp(0, n - 1)]
    assert bool((got[:, masked] == 0).all())  # hidden cells are exactly 0, not merely small
    some = fused.cells(trace, layer, queries, keys, heads=slice(1, 3))
    torch.testing.assert_close(some, got[1:3], rtol=0, atol=0)
    # the statistics' diagonals and columns, read from slices: every query's cell, 0 past the text's edges
    everyone = torch.arange(n)
    for offset in (-1, 0, 2):
        expected = torch.zeros(trace.n_heads, n)
        inside = (everyone + offset >= 0) & (everyone + offset < n)
        expected[:, inside] = whole[:, everyone[inside], everyone[inside] + offset]
        torch.testing.assert_close(fused.diagonal(trace, layer, offset), expected, rtol=0,
                                   atol=layers.bound(name, layer))
        torch.testing.assert_close(fused.diagonal(trace, layer, offset, heads=slice(1, 3)),
                                   fused.diagonal(trace, layer, offset)[1:3], rtol=0, atol=0)
    for key in (0, n - 1):
        torch.testing.assert_close(fused.column(trace, layer, key), whole[:, :, key], rtol=0,
                                   atol=layers.bound(name, layer))


@pytest.mark.parametrize("width", [5, 64, 300])
@pytest.mark.parametrize("name, layer", CASES)
def test_attention_times_any_v_is_the_maps_product(traces, layers, name, layer, width):
    trace = traces[name]
    n = trace.n_tokens
    values = torch.rand(n, width, generator=torch.Generator().manual_seed(width))  # ≥ 0, ≤ 1
    got = fused.attention_times(trace, layer, values)
    whole = layers.whole(name, layer).double()
    expected = (whole @ values.double()).float()
    # Σ_j p_ij v_j with v ∈ [0, 1]: p's relative error and the float32 sum of n terms ≤ 1
    bound = layers.bound(name, layer) + f32_dot_bound(n, 1.0)
    torch.testing.assert_close(got, expected, rtol=0, atol=bound)


@pytest.mark.parametrize("name, layer", CASES)
def test_mean_keys_is_the_attention_output_with_v_k(traces, layers, name, layer):
    trace = traces[name]
    heads = slice(1, trace.n_heads)
    keys = torch.stack([trace.k(layer, h) for h in range(heads.start, trace.n_heads)])  # (h, n, D)
    expected = layers.whole(name, layer)[heads].double() @ keys.double()
    got = fused.mean_keys(trace, layer, heads)
    size = float(keys.abs().max())
    bound = (layers.bound(name, layer) + f32_dot_bound(trace.n_tokens, 1.0)) * size
    torch.testing.assert_close(got, expected.float(), rtol=0, atol=bound)
    together, blocks = fused.mean_keys_and(trace, layer, torch.eye(trace.n_tokens)[:, :7], heads)
    torch.testing.assert_close(together, expected.float(), rtol=0, atol=bound)
    torch.testing.assert_close(blocks, layers.whole(name, layer)[heads, :, :7], rtol=0,
                               atol=layers.bound(name, layer) + f32_dot_bound(trace.n_tokens, 1.0))


@pytest.mark.parametrize("name, layer", CASES)
def test_fused_statistics_equal_the_whole_maps_and_the_streamed_path(traces, layers, name, layer):
    trace = traces[name]
    whole = layers.whole(name, layer)
    fused_values = layer_overview(trace, layer, statistics=tuple(FUSED_STATISTICS), method="fused").statistics
    streamed = layer_overview(trace, layer, statistics=tuple(FUSED_STATISTICS), method="streamed").statistics
    p_bound = layers.bound(name, layer)
    n = trace.n_tokens
    for stat in FUSED_STATISTICS:
        expected = TEXT_STATISTICS[stat](whole).double().numpy()
        size = float(np.abs(expected).max())
        if stat == "entropy":
            # H_i = lse_i − Σ_j p_ij s_ij: the maps' rounding through −p ln p (the reference), plus lse's and the
            # mean score's own roundings (numbers the size of the largest score and lse)
            lse_size = max(float(trace.lse(layer, h).abs().max()) for h in range(trace.n_heads))
            bound = entropy_bound(p_bound, n) + 2 * p_bound * (1 + lse_size)
        else:
            bound = p_bound
        atol = bound + f32_dot_bound(n, size)
        np.testing.assert_allclose(fused_values[stat], expected, rtol=0, atol=atol, err_msg=stat)
        np.testing.assert_allclose(fused_values[stat], streamed[stat], rtol=0, atol=atol, err_msg=stat)


# (96, 32, 7): wider together than any head here but Gemma's, a grid at a time over spans of keys (key_block_sums);
# (16,): narrower than every head, one call with V = [K | the blocks' indicators]
@pytest.mark.parametrize("cells", [(96, 32, 7), (16,)])
@pytest.mark.parametrize("hide", [False, True])
@pytest.mark.parametrize("name, layer", CASES)
def test_fused_block_means_equal_the_whole_maps_block_means(traces, layers, name, layer, hide, cells):
    trace = traces[name]
    transform = hide_sink if hide else None
    got = layer_overview(trace, layer, cells=cells, transform=transform, method="fused").blocks
    streamed = layer_overview(trace, layer, cells=cells, transform=transform, method="streamed").blocks
    whole = layers.whole(name, layer).numpy()
    shown = hide_sink(whole) if hide else whole
    # p's rounding (relative; after renormalising over the row's weight off key 0, relative to that weight, which
    # the reference rounds twice), and the kernel's float32 sum of each row's block, n terms ≤ 1
    tol = layers.bound(name, layer) * (3 if hide else 1) + f32_dot_bound(trace.n_tokens, 1.0)
    for c in cells:
        assert (got[c].row_step, got[c].col_step) == (streamed[c].row_step, streamed[c].col_step)
        for head in range(trace.n_heads):
            ref = plain_block_means(shown[head], c)
            np.testing.assert_allclose(got[c].values[head], ref, rtol=4 * EPS32, atol=tol, equal_nan=True)
        assert np.array_equal(np.isnan(got[c].values), np.isnan(streamed[c].values))


@pytest.mark.parametrize("step", [3, 40])
@pytest.mark.parametrize("name, layer", CASES)
def test_key_block_sums_over_spans_of_keys_are_the_maps_block_sums(traces, layers, name, layer, step):
    trace = traces[name]
    n = trace.n_tokens
    whole = layers.whole(name, layer).double()
    indicators = torch.zeros(n, -(-n // step), dtype=torch.float64)
    indicators[torch.arange(n), torch.arange(n) // step] = 1.0
    bound = layers.bound(name, layer) + f32_dot_bound(n, 1.0)
    got = fused.key_block_sums(trace, layer, step)
    torch.testing.assert_close(got, (whole @ indicators).float(), rtol=0, atol=bound)
    indicators[0] = 0.0
    skipped = fused.key_block_sums(trace, layer, step, heads=slice(2, 4), skip_first_key=True)
    torch.testing.assert_close(skipped, (whole[2:4] @ indicators).float(), rtol=0, atol=bound)


def test_auto_takes_the_fused_path_where_it_is_the_faster_way(traces, monkeypatch):
    calls = []
    real = fused_module._kernel
    monkeypatch.setattr(fused_module, "_kernel", lambda *a: calls.append(a[2].shape[-1]) or real(*a))
    streamed = []
    real_blocks = type(traces["smollm2"]).row_blocks
    monkeypatch.setattr(type(traces["smollm2"]), "row_blocks",
                        lambda self, *a, **k: streamed.append(a) or real_blocks(self, *a, **k))
    smollm2 = traces["smollm2"]
    layer_overview(smollm2, 3, cells=(32,), statistics=tuple(TEXT_STATISTICS))
    assert calls == [smollm2.head_dim + 32] and not streamed  # V = [K | the 32 blocks' indicators], no map
    calls.clear()
    layer_overview(smollm2, 3, cells=(400, 96), statistics=("self",))  # 300 + 86 block columns, causal
    assert calls and max(calls) == smollm2.head_dim and not streamed  # spans of keys, each call one head wide
    calls.clear()
    gemma = traces["gemma3"]  # a sliding layer: one call as wide as the grid, wider than 256 columns is streamed
    layer_overview(gemma, 0, cells=(400,))
    assert not calls and len(streamed) == 1


def test_induction_scores_gathered_equal_the_whole_maps(smollm2):
    probe = induction_probe(smollm2, period=20)
    probe_trace = smollm2.trace_ids(probe.encoded, keep_inputs=False)
    got = induction_scores(probe_trace, probe)
    expected = np.stack([induction(probe_trace.attentions(layer), probe.period, probe.start).double().numpy()
                         for layer in range(probe_trace.n_layers)])
    bound = max(attention_bound(probe_trace, layer) for layer in range(probe_trace.n_layers))
    np.testing.assert_allclose(got, expected, rtol=0, atol=bound + f32_dot_bound(probe.period, 1.0))
    assert got.max() > 0.3  # SmolLM2 has strong induction heads (layers 17–18): the probe measures something
    assert not math.isnan(float(got.sum()))
