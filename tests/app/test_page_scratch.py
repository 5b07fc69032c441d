"""AppTest of the From scratch page: each tab runs without errors and shows the engine's own numbers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from apptest_helpers import chart_data, decode, open_page
from bounds import EPS32, attention_bound, entropy_bound

from explorer.from_scratch import kernels, checks as scratch_checks
from explorer.analysis import stats
from explorer.ui import state
from explorer.from_scratch.scratch import Departures, MultiHeadAttention, tutorial_variant

PAGE = "pages/scratch.py"
pytestmark = pytest.mark.usefixtures("navigation_like_a_server")


def metrics(at) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def test_textbook_tab_shows_the_parity_the_engine_measures(smollm2):
    at = open_page(PAGE, scratch_tab="Textbook vs the model", _ae_layer=17)
    (expected,) = scratch_checks.parity(smollm2, smollm2.encode(state.DEFAULT_TEXT), layers=[17])
    shown = metrics(at)
    assert shown["Output max |Δ|"] == f"{expected.output:.1e}"
    assert shown["Attention max |Δ|"] == f"{expected.probs:.1e}"
    assert shown["Within 1e-05"] == "yes ✓"
    assert any("after W_o" in c.value for c in at.caption)

    at.toggle(key="scratch_all_layers").set_value(True).run()
    assert not at.exception
    bars = chart_data(at, "scratch_parity_chart")[0]
    everything = scratch_checks.parity(smollm2, smollm2.encode(state.DEFAULT_TEXT))
    # the page's own measurements, sent as float32 (one rounding)
    np.testing.assert_allclose(decode(bars["y"]), [max(p.worst, 1e-9) for p in everything], rtol=EPS32)
    assert all(p.passed() for p in everything)


def test_textbook_tab_on_minilm_compares_before_w_o():
    at = open_page(PAGE, model_choice="minilm", scratch_tab="Textbook vs the model")
    assert metrics(at)["Within 1e-05"] == "yes ✓"
    assert any("before W_o" in c.value for c in at.caption)


def test_variant_tab_shows_the_entropies_of_the_chosen_departures(smollm2):
    at = open_page(PAGE, scratch_tab="The tutorial variant", _ae_layer=3, _ae_head=2)
    at.toggle(key="scratch_dep_shared").set_value(False)
    at.toggle(key="scratch_dep_fill").set_value(False).run()
    assert not at.exception and not at.error
    trace = smollm2.trace(state.DEFAULT_TEXT)
    textbook, ours = scratch_checks.textbook_output_for(smollm2, trace, 3)
    record = trace.record(3)
    with torch.inference_mode():
        variant = tutorial_variant(textbook, Departures(embed_scale=True), trace.x(3))
        theirs = variant(trace.x(3), record.allowed_matrix())
    bars = chart_data(at, "scratch_entropy_chart")
    # The page's maps are within attention_bound of ours (its own run of the model), its entropies within
    # entropy_bound, each sent as float32 (see bounds).
    p_bound = attention_bound(trace, 3)
    h_bound = entropy_bound(p_bound, trace.n_tokens)
    np.testing.assert_allclose(decode(bars[0]["y"]), stats.entropy(ours.probs).numpy(), atol=h_bound, rtol=EPS32)
    np.testing.assert_allclose(decode(bars[1]["y"]), stats.entropy(theirs.probs).numpy(), atol=h_bound, rtol=EPS32)
    assert (decode(bars[1]["y"]) >= decode(bars[0]["y"]) - 2 * h_bound).all()  # flatter, each within its bound
    heat = chart_data(at, "scratch_map_variant")[0]
    np.testing.assert_allclose(decode(heat["z"]), theirs.probs[2].numpy(), atol=p_bound, rtol=0)
    # the parameter table and the mask-fill table are the engine's
    counts = [df.value for df in at.dataframe if "tutorial" in df.value.columns][0]
    assert counts["tutorial"].tolist() == [12_288, 331_776, 344_064]
    fills = [df.value for df in at.dataframe if "float16" in df.value.columns][0]
    assert "overflow" in fills.loc["−1e20 (tutorial)", "float16"] and "NaN" in fills.loc["−∞ (textbook)", "float32"]


def test_variant_tab_with_every_departure_on(smollm2):
    at = open_page(PAGE, scratch_tab="The tutorial variant")
    # layer 0, all three departures, the shared projection fitted on the calibration paragraph
    trace = smollm2.trace(state.DEFAULT_TEXT)
    textbook, ours = scratch_checks.textbook_output_for(smollm2, trace, 0)
    fit_x = smollm2.trace(scratch_checks.CALIBRATION_TEXT).x(0)
    record = trace.record(0)
    with torch.inference_mode():
        variant = tutorial_variant(textbook, Departures(True, True, True), fit_x)
        effect = scratch_checks.variant_effect(ours, variant(trace.x(0), record.allowed_matrix()))
    assert metrics(at)["Output differs by"] == f"{effect.output_relative_diff:.1%}"
    assert any("calibration paragraph" in c.value for c in at.caption)
    textbook = MultiHeadAttention.from_model(smollm2, 0)
    assert textbook.n_parameters() == 884_736


def test_kernels_tab_times_on_a_button_press_and_keeps_the_result():
    at = open_page(PAGE, scratch_tab="Kernels and devices")
    assert not at.get("plotly_chart")  # nothing is timed until asked
    at.select_slider(key="scratch_max_n").set_value(256)
    at.number_input(key="scratch_repeats").set_value(1)
    at.button(key="scratch_run_sweep").click().run()
    assert not at.exception and not at.error
    times = at.dataframe[0].value
    assert times.index.tolist() == [128, 256]
    assert {kernels.SCRATCH, kernels.SDPA_DEFAULT, kernels.RECORDER} <= set(times.columns)
    assert times.loc[128, kernels.SDPA_DEFAULT].endswith("(1.00×)")
    lines = chart_data(at, "scratch_time_chart")
    assert {t["name"] for t in lines} >= {kernels.SCRATCH, kernels.SDPA_DEFAULT, "∝ n²"}
    memory = chart_data(at, "scratch_memory_chart")
    scratch_line = next(t for t in memory if t["name"] == kernels.SCRATCH)
    fused_line = next(t for t in memory if t["name"] == kernels.SDPA_DEFAULT)
    assert (decode(scratch_line["y"]) > 3 * decode(fused_line["y"])).all()
    at.run()  # a rerun shows the stored sweep without timing again
    assert at.dataframe[0].value.equals(times)
    if not torch.cuda.is_available():
        assert any("No GPU" in i.value for i in at.info)
