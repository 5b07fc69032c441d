"""AppTest of the Explain page's "Why it looks there" tab: the numbers shown are the engine's (and the engine is
checked against stock eager models in tests/engine/test_qk_attribution.py); bad input keeps the text; the worked
example finds the induction head and the previous-token head on the key side; charts stay small."""

from __future__ import annotations

import numpy as np
import pytest
from apptest_helpers import chart_data, decode, open_page

import explorer

pytestmark = pytest.mark.usefixtures("navigation_like_a_server")
PAGE = "pages/explain.py"
QK_TAB = {"explain_tab": "Why it looks there"}  # only the open tab runs
TEXT = "The cat sat on the mat. The cat sat on the"
MAX_PAYLOAD = 1_500_000  # bytes of one chart's JSON (the app's limit for what a browser receives)


def metrics(at) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def assert_small_charts(at) -> None:
    for chart in at.get("plotly_chart"):
        assert len(chart.proto.spec) <= MAX_PAYLOAD, chart.proto.id


def test_numbers_are_the_engines(smollm2):
    at = open_page(PAGE, text=TEXT, _ae_layer=18, _ae_head=6, **QK_TAB)
    trace = smollm2.trace(TEXT)
    query = trace.n_tokens - 1
    key = int(trace.top_keys(18, 6, query, k=1)[0][0])  # the default key: the query's top key
    want = explorer.qk_attribution(trace, 18, 6, query, key, baseline="mean")
    assert at.number_input(key="explain_qk_query").value == query
    assert at.number_input(key="explain_qk_key").value == key
    shown = metrics(at)
    assert shown["Score s"] == f"{want.score:.4f}"
    assert shown["Raw score q·k·scale"] == f"{want.raw_score:.4f}"
    bars = chart_data(at, "explain_qk_key_bars")[0]
    top = want.key_parts.reindex(want.key_parts.abs().sort_values(ascending=False).index[:12])
    assert list(bars["y"]) == list(top.index)
    np.testing.assert_allclose(decode(bars["x"]), top.to_numpy(), rtol=1e-12)
    # The raw score, and another key picked with the widget (as a click on the row does)
    at.radio(key="explain_qk_baseline").set_value("none").run()
    at.number_input(key="explain_qk_key").set_value(2).run()
    raw = explorer.qk_attribution(trace, 18, 6, query, 2)
    assert metrics(at)["Score s"] == f"{raw.score:.4f}"
    heat = chart_data(at, "explain_qk_map")[0]
    np.testing.assert_allclose(decode(heat["z"])[1:], raw.head_grid("key").to_numpy(), rtol=1e-12)
    assert_small_charts(at)


def test_a_key_the_mask_hides_gives_a_message_and_keeps_the_text(smollm2):
    at = open_page(PAGE, text=TEXT, **QK_TAB)
    at.number_input(key="explain_qk_query").set_value(2).run()
    at.number_input(key="explain_qk_key").set_value(5).run()
    assert any("hides key 5 from query 2" in e.value for e in at.error), [e.value for e in at.error]
    assert not at.exception
    assert at.session_state["text"] == TEXT


def test_worked_example_names_the_previous_token_head(smollm2):
    at = open_page(PAGE, text=TEXT, **QK_TAB)
    at.button(key="explain_qk_example_button").click().run()
    assert not at.exception and not at.error
    stats = explorer.head_stats(smollm2)
    best = stats.loc[stats["induction"].idxmax()]
    assert (at.session_state["_ae_layer"], at.session_state["_ae_head"]) == (int(best.layer), int(best["head"]))
    found = " ".join(s.value for s in at.success)
    assert f"Head {int(best.layer)}.{int(best['head'])} is the strongest induction head" in found
    # The largest key-side head part is a previous-token head of the probe (16.0 in SmolLM2: 0.91)
    prev = stats.sort_values("previous_token", ascending=False).iloc[0]  # stats here: previous_token on the probe
    assert f"The previous-token head {int(prev.layer)}.{int(prev['head'])} stands out" in found
    assert at.session_state["text"] == TEXT  # the sidebar's text is kept
    assert_small_charts(at)


@pytest.mark.parametrize("page, state, button", [
    ("pages/heads.py", {"heads_tab": "One head"}, "heads_explain"),
    ("pages/intervene.py", {"intervene_heads": [(17, 3)], "intervene_continue": 0}, "intervene_explain"),
])
def test_heads_and_intervene_pages_open_explain_with_the_head(smollm2, page, state, button):
    at = open_page(page, text=TEXT, _ae_layer=17, _ae_head=3, **state)
    at.button(key=button).click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert at.number_input(key="explain_qk_layer").value == 17
    assert at.number_input(key="explain_qk_head").value == 3
    assert at.session_state["text"] == TEXT
