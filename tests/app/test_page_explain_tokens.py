"""AppTests of Explain's two tabs (weight vs contribution, which tokens drove it): the numbers shown equal the
engine's, bad input gives a message and keeps the text."""

from __future__ import annotations

import numpy as np
import pytest

import explorer
from explorer.analysis.sink_share import sink_shares

from apptest_helpers import chart_data, decode, open_page

PAGE = "pages/explain.py"
IOI = "When Mary and John went to the store, John gave a drink to"
SHORT = "The cat sat on the mat because it was tired."


@pytest.mark.numeric
def test_weights_tab_shows_the_engines_numbers(smollm2):
    at = open_page(PAGE, text=SHORT, _ae_layer=20, _ae_head=3)
    trace = smollm2.trace(SHORT)
    contrib = decode(chart_data(at, "explain_weights_contribution")[0]["z"])
    assert np.allclose(contrib, trace.contributions(20, 3).numpy(), atol=1e-6, equal_nan=True) or \
        np.allclose(np.nan_to_num(contrib), trace.contributions(20, 3).numpy(), atol=1e-6)
    norms = decode(chart_data(at, "explain_weights_norms")[0]["y"])
    assert np.allclose(norms, trace.value_norms(20, 3).numpy(), rtol=1e-6)
    lines = chart_data(at, "explain_weights_sink")
    shares = sink_shares(trace, [0])
    assert np.allclose(decode(lines[0]["y"]), shares["weight"], atol=1e-6)
    assert np.allclose(decode(lines[1]["y"]), shares["contribution"], atol=1e-6)
    assert (shares["contribution"][15:] < shares["weight"][15:]).all()  # the sink's values are small


def test_tokens_tab_worked_example(smollm2):
    at = open_page(PAGE, explain_tab="Which tokens drove it")
    assert any("Type a prompt" in i.value for i in at.info)
    at.multiselect(key="explain_tokens_methods").set_value(["gradient_x_input", "last_layer_attention"]).run()
    at.button(key="explain_tokens_ioi").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    expected = explorer.attribute(smollm2, IOI, " Mary", " John", method="gradient_x_input")
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Target F at the input (logit difference)"] == f"{expected.target:.3f}"
    scores = chart_data(at, "explain_tokens_scores")[0]
    assert np.allclose(decode(scores["customdata"])[0], expected.scores, rtol=1e-5, atol=1e-5)
    curve = explorer.deletion_curve(smollm2, IOI, expected, " Mary", " John", steps=5)
    shown = chart_data(at, "explain_tokens_deletion")
    assert np.allclose(decode(shown[0]["y"]), curve.targets, atol=1e-4)
    table = at.dataframe[0].value
    assert np.isclose(table.loc[table["method"] == "Gradient × input", "AOPC"].item(), round(curve.aopc, 4))
    assert any("Most faithful here" in m.value for m in at.markdown)


def test_tokens_tab_bad_input_keeps_the_text(smollm2):
    at = open_page(PAGE, explain_tab="Which tokens drove it")
    at.text_area(key="explain_tokens_text").input("<b>When</b> Mary went to").run()
    at.text_input(key="explain_tokens_answer").input(" Mary Jane").run()
    assert not at.exception
    assert any("not one" in e.value for e in at.error), [e.value for e in at.error]
    assert at.text_area(key="explain_tokens_text").value == "<b>When</b> Mary went to"


def test_an_encoder_is_told_no_token_attribution():
    at = open_page(PAGE, model_choice="minilm", explain_tab="Which tokens drove it")
    at.button(key="explain_tokens_ioi").click().run()
    assert not at.exception
    assert any("encoder" in e.value for e in at.error), [e.value for e in at.error]
    assert at.text_area(key="explain_tokens_text").value == IOI


@pytest.mark.numeric
def test_weights_tab_on_an_encoder_measures_cls_and_sep(minilm):
    at = open_page(PAGE, model_choice="minilm", text=SHORT)
    trace = minilm.trace(SHORT)
    sink = [0, trace.n_tokens - 1]  # [CLS] … [SEP]
    assert (trace.tokens[0], trace.tokens[-1]) == ("[CLS]", "[SEP]")
    shares = sink_shares(trace, sink)
    lines = chart_data(at, "explain_weights_sink")
    assert np.allclose(decode(lines[0]["y"]), shares["weight"], atol=1e-6)
    assert np.allclose(decode(lines[1]["y"]), shares["contribution"], atol=1e-6)
    assert any("CLS" in m.value and "SEP" in m.value for m in at.markdown)  # quoted, Markdown-escaped
