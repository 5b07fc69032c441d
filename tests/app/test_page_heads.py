"""AppTest of the Attention heads page on the real embedded models: widgets drive the figures, and the figures
show the engine's numbers (recomputed here from a trace of our own, not the page's cached one)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from explorer.ui import state
from explorer.figures import heads as fh

from apptest_helpers import assert_clean, decode, open_page
from bounds import EPS32, attention_bound

PAGE = "pages/heads.py"
TEXT = state.DEFAULT_TEXT


pytestmark = pytest.mark.usefixtures("navigation_like_a_server")


@pytest.fixture(scope="module")
def smollm2_trace(smollm2):
    return smollm2.trace(TEXT)


@pytest.fixture(scope="module")
def minilm_trace(minilm):
    return minilm.trace(TEXT)


def open_heads(query: dict | None = None, **state) -> AppTest:
    return open_page(PAGE, query, **state)


def show_tab(at: AppTest, label: str) -> None:
    at.session_state["heads_tab"] = label
    at.run()
    assert_clean(at)


def charts(at: AppTest) -> list[dict]:
    return [json.loads(el.proto.spec) for el in at.get("plotly_chart")]


# The page traces the text in its own script thread, whose float32 sums may run in another order than ours: its
# maps are within attention_bound of our trace's (see bounds), not bit for bit.
def shown_percent(value: float, bound: float) -> set[str]:
    """The ways a share within ``bound`` of ``value`` can be printed to one decimal of a percent."""
    return {f"{value - bound:.1%}", f"{value + bound:.1%}"}


def test_smollm2_widgets_drive_every_view(smollm2_trace):
    tr = smollm2_trace
    at = open_heads()
    # default tab: all heads of layer 0, exact maps, GQA labels and caption, sink share caption
    (small,) = charts(at)
    assert len(small["data"]) == 9
    for h in (0, 4, 8):
        np.testing.assert_allclose(decode(small["data"][h]["z"]), tr.attention(0, h).numpy(),
                                   atol=attention_bound(tr, 0), rtol=0)
    titles = [a["text"] for a in small["layout"]["annotations"]][:9]
    assert titles[4] == "head 4 · kv 1"
    captions = " ".join(c.value for c in at.caption)
    assert "9 query heads share 3 key/value heads" in captions
    share = float(tr.attentions(0)[:, 1:, 0].mean())
    assert any(s in captions for s in shown_percent(share, attention_bound(tr, 0)))

    at.number_input(key="heads_layer").set_value(3).run()
    at.number_input(key="heads_head").set_value(7).run()
    assert_clean(at)
    (small,) = charts(at)
    bound = attention_bound(tr, 3)
    np.testing.assert_allclose(decode(small["data"][7]["z"]), tr.attention(3, 7).numpy(), atol=bound, rtol=0)
    share = float(tr.attentions(3)[:, 1:, 0].mean())
    assert any(s in " ".join(c.value for c in at.caption) for s in shown_percent(share, bound))

    show_tab(at, "One head")
    (big,) = charts(at)
    np.testing.assert_allclose(decode(big["data"][0]["z"]), tr.attention(3, 7).numpy(), atol=bound, rtol=0)
    assert "Layer 3 · head 7 · kv 2" in big["layout"]["title"]["text"]
    assert "shared with heads 6, 8" in " ".join(c.value for c in at.caption)
    assert at.query_params["layer"] == "3" and at.query_params["head"] == "7"  # the link reproduces the view

    at.toggle(key="heads_hide_sink").set_value(True).run()
    assert_clean(at)
    (big,) = charts(at)
    a = tr.attention(3, 7).numpy().astype(np.float64)
    expected = np.full_like(a, np.nan)
    expected[1:, 1:] = a[1:, 1:] / a[1:, 1:].sum(axis=1, keepdims=True)
    # p off relatively by the bound, and once more through the renormalisation
    np.testing.assert_allclose(decode(big["data"][0]["z"]), expected, atol=2 * bound, rtol=0, equal_nan=True)
    assert "token 0 hidden" in big["layout"]["title"]["text"]
    at.toggle(key="heads_hide_sink").set_value(False).run()

    show_tab(at, "Lines (head view)")
    (lines_fig,) = charts(at)
    a = tr.attention(3, 7).numpy()
    lines = [d for d in lines_fig["data"] if d.get("mode") == "lines"]
    assert len(lines) == int((a > 0).sum())
    for line in lines:
        q, k = line["y"]
        # p's error is relative to p (see bounds.probs_bound), plus one float32 rounding of the width
        assert line["line"]["width"] == pytest.approx(fh.LINE_WIDTH_PER_UNIT * float(a[q, k]), rel=bound + EPS32)

    show_tab(at, "All layers × heads")
    (grid,) = charts(at)
    per_level = grid["layout"]["meta"]["value_per_level"]
    for layer, head in [(0, 0), (3, 7), (29, 8)]:
        z = decode(grid["data"][layer * 9 + head]["z"]) * per_level  # half a level, on the page's own map
        bound = per_level / 2 + attention_bound(tr, layer)
        np.testing.assert_allclose(z, tr.attention(layer, head).numpy(), atol=bound, rtol=0)
    overlay = grid["data"][-1]
    assert overlay["type"] == "scatter" and overlay["customdata"][3 * 9 + 7][:2] == [3, 7]


def test_minilm_heads_without_gqa(minilm_trace):
    tr = minilm_trace
    at = open_heads(model_choice="minilm")
    at.number_input(key="heads_layer").set_value(5).run()
    assert_clean(at)
    (small,) = charts(at)
    assert len(small["data"]) == 12
    assert [a["text"] for a in small["layout"]["annotations"]][:12] == [f"head {h}" for h in range(12)]
    bound = attention_bound(tr, 5)
    for h in (0, 11):
        np.testing.assert_allclose(decode(small["data"][h]["z"]), tr.attention(5, h).numpy(), atol=bound, rtol=0)
    assert "key/value heads" not in " ".join(c.value for c in at.caption)
    at.number_input(key="heads_head").set_value(11).run()
    show_tab(at, "One head")
    (big,) = charts(at)
    np.testing.assert_allclose(decode(big["data"][0]["z"]), tr.attention(5, 11).numpy(), atol=bound, rtol=0)
    assert big["layout"]["title"]["text"].startswith("Layer 5 · head 11")


def test_out_of_range_layer_in_the_url_warns_and_shows_layer_zero(smollm2_trace):
    at = open_heads({"layer": "99", "head": "2"})
    assert any("out of range" in w.value for w in at.warning), [w.value for w in at.warning]
    assert at.number_input(key="heads_layer").value == 0
    (small,) = charts(at)
    np.testing.assert_allclose(decode(small["data"][2]["z"]), smollm2_trace.attention(0, 2).numpy(),
                               atol=attention_bound(smollm2_trace, 0), rtol=0)


def test_garbage_layer_and_a_head_out_of_range_for_the_model(minilm_trace):
    at = open_heads({"model": "minilm", "layer": "x1", "head": "40"})
    assert any("Head 40 is out of range" in w.value for w in at.warning), [w.value for w in at.warning]
    assert at.number_input(key="heads_head").value == 0


def test_a_long_text_gets_a_window_of_exact_cells_and_one_querys_top_keys(smollm2):
    # Over 400 tokens (and under the app's cap): the one-head map is block-averaged, so the page adds exact cells.
    text = " ".join(f"word{i % 97} and" for i in range(150))
    ours = smollm2.trace(text)
    assert fh.MAX_CELLS < ours.n_tokens < 1024
    at = open_heads(text=text, _ae_layer=16, _ae_head=0)
    show_tab(at, "One head")
    layer, head, last = 16, 0, ours.n_tokens - 1
    window = charts(at)[1]["data"][0]  # after the one-head map: the default window, the last 400 queries × keys
    shown = decode(window["z"])
    expected = ours.attention(layer, head)[last + 1 - shown.shape[0]:, last + 1 - shown.shape[1]:].numpy()
    assert shown.shape == (fh.MAX_CELLS, fh.MAX_CELLS)
    assert np.abs(shown - expected).max() <= attention_bound(ours, layer)  # exact cells, not block means
    bars = charts(at)[2]["data"][0]  # where the last query looks: its top keys over the whole text, heaviest first
    weights = decode(bars["x"])
    top = ours.attention(layer, head)[last].topk(len(weights)).values.numpy()
    assert np.abs(weights - top).max() <= attention_bound(ours, layer)
