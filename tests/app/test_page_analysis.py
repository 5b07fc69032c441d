"""AppTest of the Head analysis and Compare pages: they run without errors and show the engine's numbers."""

from __future__ import annotations

import json

import numpy as np
import pytest
from apptest_helpers import decode, open_page
from bounds import EPS32, attention_bound, entropy_bound, f32_dot_bound, model_bound
from streamlit.testing.v1 import AppTest

import explorer
from explorer.ui import state
from explorer.analysis.lens import logit_lens
from explorer.analysis.rollout import trace_rollout
from explorer.analysis.stats import FORMULAS, STATISTICS, induction_probe
from explorer.capture.tokens import unique_labels

TEXT = state.DEFAULT_TEXT
pytestmark = pytest.mark.usefixtures("navigation_like_a_server")


def chart_data(at: AppTest, index: int) -> list[dict]:
    """The traces of the index-th plotly chart on the page (several charts here share one key prefix)."""
    return json.loads(at.get("plotly_chart")[index].proto.spec)["data"]


@pytest.fixture(scope="module")
def trace(smollm2):
    return smollm2.trace(TEXT)


def test_statistics_table_and_heatmaps_show_the_engines_numbers(smollm2, trace):
    at = open_page("pages/analysis.py")
    expected = explorer.head_stats(smollm2, trace=trace).sort_values("induction", ascending=False, kind="stable")
    shown = at.dataframe[0].value
    assert list(shown.columns) == ["layer", "head", *STATISTICS]
    # The page ran the model in its own script thread, whose float32 sums may go in another order: each statistic
    # is then within its float32 bound (see test_analysis). Induction is measured on the probe.
    probe = smollm2.trace_ids(induction_probe(smollm2).encoded, keep_inputs=False)
    p_text = max(attention_bound(trace, layer) for layer in range(trace.n_layers))
    p_probe = max(attention_bound(probe, layer) for layer in range(probe.n_layers))
    mean = p_text + f32_dot_bound(trace.n_tokens, 1.0)
    atol = {"entropy": entropy_bound(p_text, trace.n_tokens), "previous_token": mean, "first_token": mean,
            "self": mean, "induction": p_probe + f32_dot_bound(50, 1.0)}
    for name in STATISTICS:
        np.testing.assert_allclose(shown[name].to_numpy(), expected[name].to_numpy(), atol=atol[name], rtol=0)
    assert shown.iloc[0][["layer", "head"]].tolist() == [18, 6]
    charts = at.get("plotly_chart")
    assert len(charts) == len(STATISTICS)
    for i, name in enumerate(STATISTICS):
        z = decode(chart_data(at, i)[0]["z"]).reshape(30, 9)  # float32 on the wire: one more rounding
        by_layer = expected.sort_values(["layer", "head"])[name].to_numpy().reshape(30, 9)
        np.testing.assert_allclose(z, by_layer, atol=atol[name], rtol=EPS32)
        assert chart_data(at, i)[1]["name"] == "click-target"
    assert [l.value.strip("$\n") for l in at.latex] == [FORMULAS[name] for name in STATISTICS]


def test_sorting_and_opening_a_head_on_the_heads_page():
    at = open_page("pages/analysis.py")
    at.selectbox(key="analysis_sort").set_value("previous_token").run()
    top = at.dataframe[0].value.iloc[0]
    assert top["previous_token"] == at.dataframe[0].value["previous_token"].max()
    at.selectbox(key="analysis_open_choice").set_value(0).run()
    at.button(key="analysis_open").click().run()
    assert not at.exception
    assert (at.session_state["_ae_layer"], at.session_state["_ae_head"]) == (int(top["layer"]), int(top["head"]))
    assert at.session_state["_ae_layer"] == 16  # SmolLM2's strongest previous-token head on this text: 16.0


def test_geometry_names_the_key_attention_favours(trace):
    at = open_page("pages/analysis.py", analysis_section="Q/K geometry", _ae_layer=18, _ae_head=6)
    query = trace.n_tokens - 1
    best = int(trace.attention(18, 6)[query].argmax())
    assert at.metric[0].value == unique_labels(trace.tokens)[best]
    data = chart_data(at, 0)
    assert [d["name"] for d in data[:2]] == ["queries", "keys"]
    assert len(decode(data[0]["x"])) == len(decode(data[1]["x"])) == trace.n_tokens
    assert any("largest" in i.value or "highest-scoring" in i.value for i in at.info)
    at.radio(key="analysis_projection").set_value("query").run()
    keys_x = decode(chart_data(at, 0)[1]["x"])
    assert int(np.argmax(keys_x)) == best  # along the query, the rightmost key is the top-scoring one


def test_logit_lens_shows_the_lens_and_confirms_the_models_prediction(smollm2, trace):
    at = open_page("pages/analysis.py", analysis_section="Logit lens")
    lens = logit_lens(smollm2, trace, top_k=3)
    z = decode(chart_data(at, 0)[0]["z"]).reshape(31, trace.n_tokens)
    # the page's run of the model rounds apart from ours (softmax: ≤ 2·Δz), and the chart sends float32
    bound = 2 * model_bound(smollm2, float(trace.logits.abs().max())) + EPS32
    np.testing.assert_allclose(z, lens.probs[:, :, 0], atol=bound, rtol=0)
    assert any(c.value.startswith("✓ The top row equals") for c in at.caption)


def test_rollout_map_is_the_engines_rollout(trace):
    at = open_page("pages/analysis.py", analysis_section="Rollout")
    z = decode(chart_data(at, 0)[0]["z"]).reshape(trace.n_tokens, trace.n_tokens)  # log colour by default
    # Rollout multiplies positive terms, each off relatively by ≤ 2·attention_bound (p, then the renormalisation):
    # log10 R moves by ≤ that sum ÷ ln 10; the chart's float32 adds half an ulp of |log10 R| ≤ 12.
    relative = 2 * sum(attention_bound(trace, layer) for layer in range(trace.n_layers))
    np.testing.assert_allclose(z, np.log10(np.maximum(trace_rollout(trace).numpy(), 1e-12)),
                               atol=relative / np.log(10) + 12 * EPS32, rtol=0)
    at.radio(key="analysis_rollout_scale").set_value("linear").run()
    at.slider(key="analysis_rollout_layer").set_value(3).run()
    z = decode(chart_data(at, 0)[0]["z"]).reshape(trace.n_tokens, trace.n_tokens)
    bound = sum(attention_bound(trace, layer) for layer in range(4)) + EPS32  # see test_analysis's rollout test
    np.testing.assert_allclose(z, trace_rollout(trace, 3).numpy(), atol=bound, rtol=0)
    assert any("Assumptions" in i.value for i in at.info)


def test_export_offers_csv_npz_and_figure_downloads(trace):
    at = open_page("pages/analysis.py", analysis_section="Export", _ae_layer=2, _ae_head=1)
    labels = [b.label for b in at.get("download_button")]
    assert "This head's map as CSV (layer 2, head 1)" in labels and "The whole trace as .npz" in labels
    assert "HTML" in labels
    z = decode(chart_data(at, 0)[0]["z"]).reshape(trace.n_tokens, trace.n_tokens)
    np.testing.assert_allclose(z, trace.attention(2, 1).numpy(), atol=attention_bound(trace, 2), rtol=0)
    assert any("attention_L2_H1" in c.value for c in at.caption)  # the viewed map goes into the .npz


def test_encoder_gets_a_message_not_an_error_in_the_lens():
    at = open_page("pages/analysis.py", analysis_section="Logit lens", model_choice="minilm")
    assert any("encoder" in i.value for i in at.info)


def test_compare_masks_shows_the_difference(smollm2):
    at = open_page("pages/compare.py", compare_mode="masks", _ae_layer=5, _ae_head=2)
    traces = [smollm2.trace(TEXT, mask=m) for m in ("causal", "bidirectional")]
    diff = traces[0].attention(5, 2).numpy() - traces[1].attention(5, 2).numpy()
    bound = sum(attention_bound(t, 5) for t in traces)  # a difference of two maps, each rounded apart from ours
    assert float(at.metric[0].value) == pytest.approx(np.abs(diff).max(), abs=0.0005 + bound)  # shown to 3 places
    assert len(at.get("plotly_chart")) == 3
    np.testing.assert_allclose(decode(chart_data(at, 2)[0]["z"]).reshape(diff.shape), diff, atol=bound, rtol=0)


def _shown_maps(at: AppTest) -> list[np.ndarray]:
    return [decode(json.loads(c.proto.spec)["data"][0]["z"]) for c in at.get("plotly_chart")]


def test_compare_texts_and_models(smollm2, minilm):
    """Two texts: A's map, B's map and A − B, each the engine's (layer 0, head 0); two models of different tokenizers:
    both maps, and no cell-by-cell difference (the page says why, with both lengths)."""
    at = open_page("pages/compare.py")
    text_b = "A cat sat on the mat because it was tired."
    assert at.text_area(key="compare_text_b").value == text_b
    a, b = smollm2.trace(TEXT), smollm2.trace(text_b)
    expected = [a.attention(0, 0).numpy(), b.attention(0, 0).numpy()]
    expected.append(expected[0] - expected[1])
    bound = attention_bound(a, 0) + attention_bound(b, 0)  # each map rounded apart from ours; their difference both
    for shown, reference in zip(_shown_maps(at), expected, strict=True):
        np.testing.assert_allclose(shown.reshape(reference.shape), reference, rtol=0, atol=bound)
    assert float(at.metric[0].value) == pytest.approx(np.abs(expected[2]).max(), abs=0.0005 + bound)  # 3 places
    at.toggle(key="compare_side_by_side").set_value(False).run()  # stacked: same maps, each with its colour bar
    assert chart_data(at, 0)[0]["showscale"] is True
    for shown, reference in zip(_shown_maps(at), expected, strict=True):
        np.testing.assert_allclose(shown.reshape(reference.shape), reference, rtol=0, atol=bound)
    at.radio(key="compare_mode").set_value("models").run()
    assert not at.exception and not at.error
    other = minilm.trace(TEXT)
    maps = _shown_maps(at)  # different tokenizers: A and B only
    assert len(maps) == 2
    np.testing.assert_allclose(maps[1].reshape(other.n_tokens, other.n_tokens), other.attention(0, 0).numpy(),
                               rtol=0, atol=attention_bound(other, 0))
    assert any(f"A has {a.n_tokens} tokens and B has {other.n_tokens}" in i.value for i in at.info)
