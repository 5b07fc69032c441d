"""Figures of the Attention heads page, checked against the real models' attention maps.

The reference for every number is ``trace.attention`` (itself checked against transformers' eager attention in
test_parity.py), recomputed here with plain torch/numpy operations: no figure value is trusted on its own.
"""

from __future__ import annotations

import math

import numpy as np
import plotly.io as pio
import pytest
import torch

from explorer.figures import heads as fh
from explorer.figures import palette
from explorer.analysis.downsample import block_means
from explorer.analysis.overview import model_overview
from explorer.analysis.stats import sink_share
from explorer.figures.heatmap import MAX_CELLS
from explorer.capture.tokens import unique_labels

from bounds import attention_bound, f32_dot_bound
from references import ONE_ROUNDING, block_rounding, reference_block_mean
from texts import LONG_TEXT

TEXT = "The cat sat on the mat because it was tired."
PAYLOAD_LIMIT = 1_500_000  # bytes of JSON per figure


@pytest.fixture(scope="module")
def short(smollm2):
    return smollm2.trace(TEXT)


@pytest.fixture(scope="module")
def short_minilm(minilm):
    return minilm.trace(TEXT)


@pytest.fixture(scope="module")
def long(smollm2):
    trace = smollm2.trace(LONG_TEXT, max_tokens=1024)
    assert trace.n_tokens == 1024
    return trace


def kv_list(trace):
    return [trace.kv_head(h) for h in range(trace.n_heads)] if trace.n_kv_heads < trace.n_heads else None


def reference_renormalised(a: torch.Tensor) -> np.ndarray:
    """Key 0 removed and each row rescaled, with torch (NaN where nothing is left)."""
    rest = a[:, 1:]
    out = torch.full_like(a, float("nan"), dtype=torch.float64)
    total = rest.sum(dim=1, keepdim=True).double()
    out[:, 1:] = torch.where(total > 0, rest.double() / total, torch.tensor(float("nan"), dtype=torch.float64))
    return out.numpy()


# ---- numbers ---------------------------------------------------------------------------------------------------
def test_hide_sink_renormalises_rows_over_keys_after_the_first(short):
    a = short.attention(20, 3)
    shown = fh.hide_sink(a.numpy())
    np.testing.assert_allclose(shown, reference_renormalised(a), rtol=2 * ONE_ROUNDING, atol=0, equal_nan=True)
    assert np.isnan(shown[:, 0]).all()
    assert np.isnan(shown[0]).all()  # causal: query 0 had only key 0
    # each value within 2 roundings of exact, and a float32 sum of n of them
    row_bound = f32_dot_bound(short.n_tokens, 1.0) + 2 * ONE_ROUNDING
    np.testing.assert_allclose(np.nansum(shown[1:], axis=1), 1.0, atol=row_bound, rtol=0)


def test_hide_sink_bidirectional_keeps_every_row(short_minilm):
    a = short_minilm.attentions(2).numpy()
    shown = fh.hide_sink(a)
    assert not np.isnan(shown[..., 1:]).any()
    row_bound = f32_dot_bound(short_minilm.n_tokens, 1.0) + 2 * ONE_ROUNDING  # as above
    np.testing.assert_allclose(shown[..., 1:].sum(-1), 1.0, atol=row_bound, rtol=0)


def test_sink_share_is_the_mean_attention_to_token_zero(short):
    maps = short.attentions(12)
    expected = float(maps[:, 1:, 0].double().mean())
    share = sink_share(short, 12)
    # float64 means of the same float32 weights, up to the maps' own rounding
    assert share == pytest.approx(expected, abs=attention_bound(short, 12))
    assert expected > 0.2  # SmolLM2 parks a large share on token 0 in later layers: the reason for the marking


@pytest.mark.parametrize("with_nan", [False, True])
@pytest.mark.parametrize("cells", [7, 96, 400])
def test_block_mean_of_a_stack_matches_the_plain_block_mean_of_each_map(long, cells, with_nan):
    maps = long.attentions(9).numpy()[:3, :700, :1000]  # uneven sizes: padded blocks
    maps = maps.copy()
    if with_nan:
        maps[1] = fh.hide_sink(maps[1])  # NaN cells must be skipped like nanmean does
    got = block_means(maps, cells)
    for h in range(3):
        ref, rs_ref, cs_ref = reference_block_mean(maps[h], cells)
        assert (got.row_step, got.col_step) == (rs_ref, cs_ref)
        np.testing.assert_allclose(got.values[h], ref, rtol=block_rounding(got.col_step), atol=0, equal_nan=True)


def test_quantise_error_is_at_most_half_a_level(short):
    values = short.attention(4, 1).numpy()
    q = fh.quantise(values)
    assert q.dtype == np.uint8
    assert np.abs(q / 255.0 - values).max() <= 0.5 / 255 + 1e-12  # float64 arithmetic: only the level's rounding


# ---- one head --------------------------------------------------------------------------------------------------
def test_head_heatmap_shows_the_exact_map_with_token_labels_and_sink_outline(short):
    a = short.attention(7, 4)
    fig = fh.head_heatmap(a.numpy(), short.tokens, layer=7, head=4, kv_heads=kv_list(short))
    heat = fig.data[0]
    np.testing.assert_array_equal(np.asarray(heat.z), a.numpy())
    assert list(heat.x) == unique_labels(short.tokens) == list(heat.y)
    assert "query" in heat.hovertemplate and "key" in heat.hovertemplate and "%{z" in heat.hovertemplate
    assert "head 4 · kv 1" in fig.layout.title.text
    outline = [s for s in fig.layout.shapes if s.type == "rect"]
    assert len(outline) == 1 and (outline[0].x0, outline[0].x1) == (-0.5, 0.5)
    assert fig.layout.coloraxis.cmax is None and heat.zmax == 1.0


def test_head_heatmap_sink_hidden_is_labelled_and_renormalised(short):
    a = short.attention(25, 0)
    fig = fh.head_heatmap(fh.hide_sink(a.numpy()), short.tokens, layer=25, head=0, sink_hidden=True)
    np.testing.assert_allclose(np.asarray(fig.data[0].z), reference_renormalised(a), rtol=2 * ONE_ROUNDING, atol=0,
                               equal_nan=True)
    assert "token 0 hidden" in fig.layout.title.text
    assert any("hidden" in (ann.text or "") for ann in fig.layout.annotations)


# ---- small multiples -------------------------------------------------------------------------------------------
def test_small_multiples_hold_every_head_of_the_layer_with_gqa_labels(short):
    maps = short.attentions(17)
    fig = fh.layer_small_multiples(maps.numpy(), short.tokens, layer=17, kv_heads=kv_list(short), selected_head=5)
    assert len(fig.data) == short.n_heads
    for h, heat in enumerate(fig.data):
        np.testing.assert_array_equal(np.asarray(heat.z), short.attention(17, h).numpy())
    titles = [a.text for a in fig.layout.annotations][: short.n_heads]
    assert titles == [f"head {h} · kv {h // 3}" for h in range(9)]
    assert fig.layout.annotations[5].font.color == palette.ACCENT
    # one sink outline per head, plus the frame of the selected head
    assert sum(s.line.dash == "dot" for s in fig.layout.shapes) == short.n_heads
    assert fig.layout.coloraxis.cmax == 1.0


def test_small_multiples_without_gqa_say_only_head(short_minilm):
    fig = fh.layer_small_multiples(short_minilm.attentions(0).numpy(), short_minilm.tokens, layer=0)
    assert [a.text for a in fig.layout.annotations][:12] == [f"head {h}" for h in range(12)]
    assert len(fig.data) == 12


def test_small_multiples_downsample_long_texts_to_block_means(long):
    maps = long.attentions(3).numpy()
    fig = fh.layer_small_multiples(maps, long.tokens, layer=3, kv_heads=kv_list(long))
    step = math.ceil(1024 / fh.SMALL_CELLS)
    assert f"{step}×{step}" in fig.layout.title.text
    for h in (0, 8):
        ref, _, _ = reference_block_mean(maps[h], fh.SMALL_CELLS)
        np.testing.assert_allclose(np.asarray(fig.data[h].z), ref, rtol=block_rounding(step), atol=0)
    # colour range: the largest full block outside query block 0, not 1 (blocks of a causal map are ≤ 1/11 here);
    # 1024 = 93 × 11 + 1, so the last block is a single undiluted weight and is left out of the range
    z = np.stack([np.asarray(d.z) for d in fig.data])
    assert fig.layout.coloraxis.cmax == float(z[:, 1:-1, :-1].max())
    # a block's rows each carry ≤ 1 (plus the maps' own rounding) over its step columns, then one float32 rounding
    assert fig.layout.coloraxis.cmax <= (1 + attention_bound(long, 3)) * (1 + block_rounding(step)) / step


# ---- model view ------------------------------------------------------------------------------------------------
def decode_grid(fig, n_layers, n_heads):
    """{(layer, head): attention thumbnail} from the grid figure: z levels × the figure's value per level."""
    per_level = fig.layout.meta["value_per_level"]
    return {(i // n_heads, i % n_heads): np.asarray(fig.data[i].z, dtype=np.float64) * per_level
            for i in range(n_layers * n_heads)}


def thumbnails(trace) -> tuple[np.ndarray, int]:
    """What the pages' model view draws: every layer's (H, c, c) block means, streamed a block of queries at a time."""
    layers = model_overview(trace, cells=(fh.THUMB_CELLS,))
    return np.stack([one.blocks[fh.THUMB_CELLS].values for one in layers]), layers[0].blocks[fh.THUMB_CELLS].row_step


def test_model_view_grid_shows_every_head_exactly_for_short_texts(short):
    thumbs, step = thumbnails(short)
    assert step == 1 and thumbs.shape == (30, 9, short.n_tokens, short.n_tokens)
    fig = fh.model_view_grid(thumbs, kv_heads=kv_list(short), selected=(4, 2))
    grid = decode_grid(fig, 30, 9)
    for layer, head in [(0, 0), (4, 2), (17, 8), (29, 5)]:
        # half a level of 1/255 (float64 arithmetic otherwise)
        np.testing.assert_allclose(grid[(layer, head)], short.attention(layer, head).numpy(), atol=0.5 / 255 + 1e-12,
                                   rtol=0)
    overlay = fig.data[-1]
    assert overlay.type == "scatter" and overlay.marker.opacity == 0
    assert [list(c) for c in overlay.customdata][9 * 17 + 8] == [17, 8, 2]
    # each marker sits on the centre of its own thumbnail
    heat = fig.data[9 * 17 + 8]
    assert overlay.x[9 * 17 + 8] == heat.x0 + (short.n_tokens - 1) / 2
    assert overlay.y[9 * 17 + 8] == heat.y0 + (short.n_tokens - 1) / 2
    assert all(d.hoverinfo == "skip" for d in fig.data[:-1])  # the overlay alone answers hover and clicks


def test_model_view_grid_downsamples_long_texts_within_the_payload(long):
    thumbs, step = thumbnails(long)
    assert step == 1024 // fh.THUMB_CELLS and thumbs.shape[-1] == fh.THUMB_CELLS
    fig = fh.model_view_grid(thumbs, kv_heads=kv_list(long), tokens_per_cell=step, n_tokens=1024)
    grid = decode_grid(fig, 30, 9)
    per_level = fig.layout.meta["value_per_level"]
    vmax = per_level * 255
    for layer, head in [(0, 0), (18, 4), (29, 8)]:
        ref, _, _ = reference_block_mean(long.attention(layer, head).numpy(), fh.THUMB_CELLS)
        # values above the colour range (query 0's own block, see colour_max) saturate at the top level; half a
        # level, plus the float32 step by which the block means may differ before quantising
        np.testing.assert_allclose(grid[(layer, head)], np.minimum(ref, vmax),
                                   atol=per_level / 2 + block_rounding(step) * vmax, rtol=0)
    assert "1024 tokens" in fig.layout.title.text and f"{step}×{step}" in fig.layout.title.text
    assert len(pio.to_json(fig, validate=False)) <= PAYLOAD_LIMIT


# ---- head view -------------------------------------------------------------------------------------------------
def line_traces(fig):
    return [d for d in fig.data if d.mode == "lines"]


def test_head_view_line_widths_are_proportional_to_attention(short):
    a = short.attention(5, 4).numpy()
    fig = fh.head_view_lines(a, short.tokens)
    lines = line_traces(fig)
    assert len(lines) == int((a > 0).sum())  # every pair the causal mask allows, nothing else
    for line in lines:
        (q, k) = line.y
        assert line.x == (0, 1)
        # float32 weight × float constant: one float32 rounding
        assert line.line.width == pytest.approx(fh.LINE_WIDTH_PER_UNIT * float(a[q, k]), rel=ONE_ROUNDING)
        assert k <= q  # causal
    sink_lines = [ln for ln in lines if ln.y[1] == 0]
    assert sink_lines and all(ln.line.color == palette.HIGHLIGHT for ln in sink_lines)
    token_columns = [d for d in fig.data if d.mode == "markers+text"]
    assert [list(d.x)[0] for d in token_columns] == [0, 1]
    assert [t.split("\u2002", 1)[0] for t in token_columns[0].text] == [str(i) for i in range(short.n_tokens)]


def test_head_view_window_keeps_the_strongest_lines_and_says_so(long):
    a = long.attention(18, 2).numpy()
    fig = fh.head_view_lines(a, long.tokens, start=100, stop=140, max_lines=50)
    lines = line_traces(fig)
    assert len(lines) == 50
    window = a[100:140, 100:140]
    kept = sorted(float(window[ln.y[0], ln.y[1]]) for ln in lines)
    np.testing.assert_array_equal(kept, np.sort(window[window > 0])[-50:])  # the same float32 values
    for ln in lines:
        width = fh.LINE_WIDTH_PER_UNIT * float(window[ln.y[0], ln.y[1]])
        assert ln.line.width == pytest.approx(width, rel=ONE_ROUNDING)
    assert "tokens 100–139 of 1024" in fig.layout.title.text and "50 strongest" in fig.layout.title.text
    labels = [d for d in fig.data if d.mode == "markers+text"][0].hovertext
    assert labels[0].startswith("100\u2002")
    assert len(pio.to_json(fig, validate=False)) <= PAYLOAD_LIMIT


# ---- payload at the app's token cap ----------------------------------------------------------------------------
def test_every_figure_fits_the_payload_budget_at_1024_tokens(long):
    maps = long.attentions(10).numpy()
    kv = kv_list(long)
    figures = {
        "one head": fh.head_heatmap(maps[4], long.tokens, layer=10, head=4, kv_heads=kv),
        "one head, sink hidden": fh.head_heatmap(fh.hide_sink(maps[4]), long.tokens, layer=10, head=4,
                                                 kv_heads=kv, sink_hidden=True),
        "small multiples": fh.layer_small_multiples(maps, long.tokens, layer=10, kv_heads=kv, selected_head=4),
        "lines": fh.head_view_lines(maps[4], long.tokens, start=0, stop=64),
    }
    for name, fig in figures.items():
        size = len(pio.to_json(fig, validate=False))
        assert size <= PAYLOAD_LIMIT, (name, size)
    assert np.asarray(figures["one head"].data[0].z).shape == (math.ceil(1024 / math.ceil(1024 / MAX_CELLS)),) * 2


def test_token_text_is_escaped_for_plotly():
    """Plotly renders <b>, <a>, <br> in ticks and hover: tokens are user data and must show literally."""
    tokens = ["<b>x</b>", "a&b", "<br>"]
    a = np.array([[1, 0, 0], [0.5, 0.5, 0], [0.2, 0.3, 0.5]], dtype=np.float32)
    lines = fh.head_view_lines(a, tokens)
    texts = [d for d in lines.data if d.mode == "markers+text"][0].text
    assert list(texts) == ["0\u2002&lt;b&gt;x&lt;/b&gt;", "1\u2002a&amp;b", "2\u2002&lt;br&gt;"]
    small = fh.layer_small_multiples(a[None], tokens, layer=0)
    assert list(small.data[0].x) == list(texts)
    assert all("<b>" not in label and "<br>" not in label for label in small.data[0].y)
