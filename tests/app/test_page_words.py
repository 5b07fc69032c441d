"""AppTests of the sidebar's "Attention between: tokens | words" switch: its URL parameter ``by`` round-trips and is
parsed strictly, and in word view the heads, Q/K/V, Masking, Compare and Home pages draw the engine's by-word maps
(recomputed here from a trace of our own with ``trace.attention(layer, head, by="word")``)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from explorer.ui import state

from apptest_helpers import assert_clean, chart_data, decode, open_page
from bounds import attention_bound, f32_dot_bound
from markup import assert_data_not_markup, open_link, shown

CHINESE = "猫坐在垫子上。"
MIXED = "GPT-3 是一个自回归模型"
WORDS = {"by": "words"}

pytestmark = pytest.mark.usefixtures("navigation_like_a_server")


@pytest.fixture(scope="module")
def chinese(smollm2):
    return smollm2.trace(CHINESE)


def word_bound(trace, layer: int) -> float:
    # Each token p is off by at most attention_bound (relative to p), so a word cell (a mean of sums of p ≤ 1) is
    # too, plus the float32 rounding of the sums.
    return attention_bound(trace, layer) + f32_dot_bound(trace.n_tokens, 1.0)


def x_labels(data: dict) -> list[str]:
    return [str(x).split("\u2002", 1)[-1] for x in data["x"]]


# ---- the URL parameter ------------------------------------------------------------------------------------------------
def test_url_parser_takes_tokens_or_words_only():
    assert state.parse_url({"by": "words"}, allow_any_model=False) == state.UrlView(by="words")
    assert state.parse_url({"by": "tokens"}, allow_any_model=False) == state.UrlView(by="tokens")
    for raw in ("Words", "word", "words ", "", "ｗｏｒｄｓ"):
        view = state.parse_url({"by": raw}, allow_any_model=False)
        assert view.by is None and len(view.notices) == 1


def test_crafted_by_in_link_is_ignored_as_data():
    raw = "[w](https://evil.example/w) <b>words</b>"
    at = open_link("pages/heads.py", {"by": raw, "text": CHINESE})
    assert_data_not_markup(at, [raw])
    assert at.radio(key="unit").value == "tokens"
    assert f"The link's by “{raw}” was ignored" in shown(at)


def test_word_view_round_trips_through_the_url(chinese):
    at = open_page("pages/heads.py", {**WORDS, "text": CHINESE})
    assert at.radio(key="unit").value == "words"
    assert at.query_params["by"] == "words"  # kept in the link
    W = len(chinese.words())
    (small,) = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    assert decode(small["data"][0]["z"]).shape == (W, W)
    at.radio(key="unit").set_value("tokens").run()
    assert_clean(at)
    assert "by" not in at.query_params  # tokens, the default, is left out of the link
    (small,) = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    assert decode(small["data"][0]["z"]).shape == (chinese.n_tokens,) * 2


# ---- the pages in word view --------------------------------------------------------------------------------------------
@pytest.mark.numeric
def test_heads_page_draws_the_engines_word_maps(chinese):
    at = open_page("pages/heads.py", {**WORDS, "text": CHINESE, "layer": "3", "head": "4"})
    small = chart_data(at, "heads_small_multiples")
    bound = word_bound(chinese, 3)
    for head in (0, 4, 8):
        np.testing.assert_allclose(decode(small[head]["z"]), chinese.attention(3, head, by="word").numpy(),
                                   atol=bound, rtol=0)
    assert x_labels(small[0]) == ["猫", "坐在", "垫子", "上", "。"]
    assert "Word view: 5 words from 12 tokens" in " ".join(c.value for c in at.caption)
    for tab in ("One head", "Lines (head view)", "All layers × heads"):
        at.session_state["heads_tab"] = tab
        at.run()
        assert_clean(at)
    at.session_state["heads_tab"] = "One head"
    at.run()
    big = chart_data(at, "heads_one_head")
    np.testing.assert_allclose(decode(big[0]["z"]), chinese.attention(3, 4, by="word").numpy(), atol=bound, rtol=0)


@pytest.mark.numeric
def test_qkv_page_picks_a_word_and_shows_its_pieces(chinese):
    at = open_page("pages/qkv.py", {**WORDS, "text": CHINESE, "layer": "2", "head": "1"})
    words = chinese.words()
    at.selectbox(key="qkv_word").set_value(2).run()  # 垫子: three byte pieces of 垫, then 子
    assert_clean(at)
    assert list(at.selectbox(key="qkv_piece").options) == [f"{i} · {chinese.tokens[i]}" for i in range(6, 10)]
    assert at.selectbox(key="qkv_piece").value == words[2].end - 1  # the last piece by default
    row = chart_data(at, "qkv_word_row")[0]
    np.testing.assert_allclose(decode(row["y"]), chinese.attention(2, 1, by="word")[2].numpy(),
                               atol=word_bound(chinese, 2), rtol=0)
    assert "is 4 tokens" in " ".join(m.value for m in at.markdown)


@pytest.mark.numeric
def test_masking_page_in_word_view(smollm2):
    causal, bidirectional = smollm2.trace(MIXED, mask="causal"), smollm2.trace(MIXED, mask="bidirectional")
    at = open_page("pages/masking.py", {**WORDS, "text": MIXED, "layer": "1", "head": "0"})
    for kind, trace in (("causal", causal), ("bidirectional", bidirectional)):
        z = decode(chart_data(at, f"masking_attention_{kind}")[0]["z"])
        np.testing.assert_allclose(z, trace.attention(1, 0, by="word").numpy(), atol=word_bound(trace, 1), rtol=0)
    assert x_labels(chart_data(at, "masking_attention_causal")[0])[:3] == ["GPT", "-", "3"]


@pytest.mark.numeric
def test_compare_two_models_by_word(smollm2, gemma3):
    # SmolLM2 cuts 是 into three byte pieces and Gemma 3 keeps it whole; by word both maps are 8 × 8 and comparable.
    a, b = smollm2.trace(MIXED), gemma3.trace(MIXED)
    at = open_page("pages/compare.py", {**WORDS, "text": MIXED})
    at.radio(key="compare_mode").set_value("models").run()
    at.selectbox(key="compare_model_b").set_value("gemma3").run()
    assert_clean(at)
    za = decode(chart_data(at, "compare_A")[0]["z"])
    zb = decode(chart_data(at, "compare_B")[0]["z"])
    np.testing.assert_allclose(za, a.attention(0, 0, by="word").numpy(), atol=word_bound(a, 0), rtol=0)
    W_b = len(b.words())
    assert zb.shape == (W_b, W_b) and W_b == len(a.words()) + 1  # Gemma's <bos> is a word of its own
    assert "different shapes" in " ".join(i.value for i in at.info)


@pytest.mark.numeric
def test_home_names_a_head_by_word(chinese):
    at = open_page("pages/home.py", {**WORDS, "text": CHINESE})
    said = " ".join(m.value for m in at.markdown)
    assert "word" in said and "Your text, word by word" in " ".join(s.value for s in at.subheader)
    head = chart_data(at, "home_head")[0]
    assert x_labels(head) == ["猫", "坐在", "垫子", "上", "。"]
    title = json.loads(next(c.proto.spec for c in at.get("plotly_chart") if c.proto.id.endswith("-home_head")))
    layer, head_index = _layer_head(title["layout"]["title"]["text"])
    np.testing.assert_allclose(decode(head["z"]), chinese.attention(layer, head_index, by="word").numpy(),
                               atol=word_bound(chinese, layer), rtol=0)


def _layer_head(title: str) -> tuple[int, int]:
    """"Layer 16 · head 3 · kv 1" → (16, 3)."""
    parts = title.replace("<br>", " ").split("·")
    return int(parts[0].split()[-1]), int(parts[1].split()[1])
