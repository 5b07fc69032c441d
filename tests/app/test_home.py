"""AppTest of Home's first look: after typing a sentence, Home draws attention at once (one telling head, named
with the reason, and every head small), and one click opens that head on the heads page with the text kept. The
named head and its map are checked against a trace and statistics of our own, not the page's cached ones."""

from __future__ import annotations

import json

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from explorer.analysis.stats import text_statistics, telling_head
from explorer.i18n import percent

from apptest_helpers import APP, assert_clean, chart_data, decode

pytestmark = pytest.mark.usefixtures("navigation_like_a_server")

ENGLISH = "Alice gave Bob a book, and then Bob gave Alice a pen."
CHINESE = "小猫坐在垫子上，因为它累了。"


def home_with(text: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=300)
    at.run()
    assert_clean(at)
    at.text_area(key="text").set_value(text).run()
    assert_clean(at)
    return at


@pytest.fixture(scope="module")
def english(smollm2):
    trace = smollm2.trace(ENGLISH)
    return trace, telling_head(text_statistics(trace))


def test_home_shows_the_telling_head_of_the_typed_sentence(english):
    trace, expected = english
    at = home_with(ENGLISH)
    named = " ".join(m.value for m in at.markdown)
    assert f"head {expected.layer}.{expected.head}**" in named, named
    assert f"(layer {expected.layer}, head {expected.head})" in named
    assert percent(expected.score) in named
    z = decode(chart_data(at, "home_head")[0]["z"])
    # The same float32 computation in this process, serialised: equal to a float32 ulp of values ≤ 1 (6e-8); 1e-6
    # leaves room for another summation order under a different thread count.
    np.testing.assert_allclose(z, trace.attention(expected.layer, expected.head).numpy(), atol=1e-6)
    grid = [json.loads(c.proto.spec) for c in at.get("plotly_chart") if c.proto.id.endswith("-home_grid")]
    assert len(grid) == 1
    heatmaps = [t for t in grid[0]["data"] if t["type"] == "heatmap"]
    assert len(heatmaps) == trace.n_layers * trace.n_heads  # every layer × head, as a thumbnail
    strip = " ".join(m.value for m in at.markdown if m.value.startswith(":gray-background["))
    assert "Alice" in strip and "Bob" in strip


def test_the_button_opens_the_named_head_on_the_heads_page_with_the_text_kept(english):
    _, expected = english
    at = home_with(ENGLISH)
    at.button(key="home_open_head").click().run()
    assert_clean(at)
    assert at.session_state["_ae_layer"] == expected.layer and at.session_state["_ae_head"] == expected.head
    assert at.number_input(key="heads_layer").value == expected.layer  # the heads page ran, on that head
    assert at.number_input(key="heads_head").value == expected.head
    assert at.session_state["text"] == ENGLISH
    assert at.query_params["text"] == ENGLISH  # and the link reproduces the view


def test_chinese_text_shows_attention_and_readable_tokens(smollm2):
    trace = smollm2.trace(CHINESE)
    expected = telling_head(text_statistics(trace))
    at = home_with(CHINESE)
    named = " ".join(m.value for m in at.markdown)
    assert f"(layer {expected.layer}, head {expected.head})" in named
    strip = " ".join(m.value for m in at.markdown if m.value.startswith(":gray-background["))
    assert "猫" in strip and "垫" in strip  # characters, not byte soup


def test_the_sidebar_says_when_tf32_breaks_the_parity(monkeypatch):
    """On CUDA with TF32 matmuls on, the 1e-5 agreement does not hold: the sidebar says so; on the CPU it says
    nothing. (No GPU here: CUDA's presence and the TF32 switch are stood in for; the model then fails to load on
    CUDA, which the page reports as an error of its own.)"""
    from explorer.ui import sidebar, state

    monkeypatch.setattr(state, "cuda_available", lambda: True)
    monkeypatch.setattr(sidebar, "tf32_enabled", lambda: True)
    at = AppTest.from_file(APP, default_timeout=300)
    at.query_params["device"] = "cuda"
    at.run()
    assert not at.exception
    assert any("TF32" in notice.value and "1e-5" in notice.value for notice in at.sidebar.info)
    at.radio(key="device").set_value("cpu").run()
    assert_clean(at)
    assert not any("TF32" in notice.value for notice in at.sidebar.info)
