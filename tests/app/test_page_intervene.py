"""AppTest of the Intervene page: the worked examples show the engine's numbers, checked against independent
computations; crafted inputs give messages, not exceptions; charts stay small."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from apptest_helpers import APP, assert_clean, chart_data, decode, open_page
from streamlit.testing.v1 import AppTest

import explorer
from explorer.analysis.stats import induction_probe
from explorer.capture.intervention import ablation_intervention, intervening
from explorer.ui import intervene as ui_iv

pytestmark = pytest.mark.usefixtures("navigation_like_a_server")
PAGE = "pages/intervene.py"
PATCH_TAB = {"intervene_tab": "Patch"}  # only the open tab runs
MAX_PAYLOAD = 1_500_000  # bytes of one chart's JSON (the app's limit for what a browser receives)


def assert_small_charts(at) -> None:
    for chart in at.get("plotly_chart"):
        assert len(chart.proto.spec) <= MAX_PAYLOAD, chart.proto.id


def cross_entropy(logits: torch.Tensor, ids: list[int]) -> np.ndarray:
    """Independent of the page's helper: −log_softmax at each next token, in float64."""
    logp = torch.log_softmax(logits[:-1].double(), dim=-1)  # (n − 1, vocab)
    return (-logp[torch.arange(len(ids) - 1), torch.tensor(ids[1:])]).numpy()


def test_induction_example_wrecks_the_second_half(smollm2):
    at = open_page(PAGE)
    assert [i.value for i in at.info][0].startswith("Choose heads")  # nothing chosen yet: a hint, no numbers
    at.button(key="intervene_induction_example").click().run()
    assert_clean(at)
    stats = explorer.head_stats(smollm2)  # induction is measured on the probe whatever the text
    top5 = sorted(map(tuple, stats.sort_values("induction", ascending=False, kind="stable")
                      .head(5)[["layer", "head"]].to_numpy().tolist()))
    heads = [tuple(h) for h in at.session_state["intervene_heads"]]
    assert heads == top5 == [(17, 3), (17, 4), (17, 5), (18, 6), (18, 7)]
    probe = induction_probe(smollm2)
    ids = probe.encoded.token_ids
    before = cross_entropy(smollm2.trace(ids).logits, ids)
    after = cross_entropy(smollm2.trace(ids, ablate=heads, ablation="zero").logits, ids)
    second = slice(probe.start + probe.period, probe.start + 2 * probe.period - 1)  # predicting t_2 … t_P, copy 2
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Mean loss before (nats)"] == f"{before.mean():.3f}"
    assert metrics["Mean loss after (nats)"] == f"{after.mean():.3f}"
    assert metrics["Second half: loss before → after (nats)"] == f"{before[second].mean():.3f} → {after[second].mean():.3f}"
    assert before[second].mean() < 3 < 9 < after[second].mean()  # the induction heads carry the second half
    lines = chart_data(at, "intervene_loss")
    # Same logits, both reduced in float64: only the log-softmax's summation order differs (~1e-12 nats).
    np.testing.assert_allclose(decode(lines[0]["y"]), before, atol=1e-9)
    np.testing.assert_allclose(decode(lines[1]["y"]), after, atol=1e-9)
    assert_small_charts(at)


def test_ioi_example_attribution_then_exact(smollm2):
    at = open_page(PAGE, **PATCH_TAB)
    at.button(key="intervene_ioi_example").click().run()
    assert_clean(at)
    args = (ui_iv.IOI["clean"], ui_iv.IOI["corrupt"], ui_iv.IOI["answer"], ui_iv.IOI["wrong"])
    expected = smollm2.patch_heads(*args, method="attribution")
    z = decode(chart_data(at, "intervene_attr_map")[0]["z"]).reshape(30, 9)
    # The page runs the same computation on the same inputs; only float32 → JSON float64 rounding remains.
    np.testing.assert_allclose(z, expected.effects.numpy(), rtol=1e-6, atol=1e-7)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Logit difference, clean"] == f"{expected.ld_clean:.3f}" == "6.120"
    assert metrics["Logit difference, corrupt"] == f"{expected.ld_corrupt:.3f}"
    at.button(key="intervene_exact").click().run()
    assert_clean(at)
    exact = smollm2.patch_heads(*args, method="exact")
    z = decode(chart_data(at, "intervene_exact_map")[0]["z"]).reshape(30, 9)
    # The page patches 3 layers per call, the engine all at once: batches differ, so float32 logits (|LD| ≈ 10)
    # differ by ~1e-5 (ulps × √d_model); divided by LD_corrupt − LD_clean ≈ −11.6 that stays below 1e-5.
    np.testing.assert_allclose(z, exact.effects.numpy(), atol=1e-5)
    assert int(np.nanargmax(z)) == 23 * 9 + 3  # head 23.3 carries most of the name
    assert chart_data(at, "intervene_scatter")[1]["customdata"][0] == [0, 0]
    assert_small_charts(at)


def test_crafted_inputs_give_messages(smollm2):
    at = AppTest.from_file(APP, default_timeout=180)  # a link straight to /intervene: its first run is this page
    at.query_params["heads"] = "²,17.3,<b>x</b>,99.1"
    at.switch_page(PAGE).run()
    assert not at.exception
    assert [tuple(h) for h in at.session_state["intervene_heads"]] == [(17, 3)]  # 99.1 is no SmolLM2 head: dropped
    warning = " ".join(w.value for w in at.warning)
    assert "²" in warning and "<b>" not in warning  # shown escaped
    at.session_state["intervene_tab"] = "Patch"
    at.run()
    at.text_area(key="intervene_clean").input("<script>alert(1)</script> Mary went").run()
    at.text_area(key="intervene_corrupt").input("John").run()
    at.text_input(key="intervene_answer").input(" Mary").run()
    at.text_input(key="intervene_wrong").input(" John").run()
    assert not at.exception
    assert any("same number of tokens" in e.value for e in at.error), [e.value for e in at.error]
    assert at.text_area(key="intervene_clean").value == "<script>alert(1)</script> Mary went"  # the text is kept
    at.text_area(key="intervene_corrupt").input("<script>alert(1)</script> John went").run()
    at.text_input(key="intervene_answer").input(" Mary Jane").run()
    assert not at.exception
    assert any("2 tokens" in e.value and "not one" in e.value for e in at.error), [e.value for e in at.error]
    for tab in ("Ablate", "Patch"):  # away and back: the Patch tab's inputs are kept while it is closed
        at.session_state["intervene_tab"] = tab
        at.run()
    assert at.text_area(key="intervene_clean").value == "<script>alert(1)</script> Mary went"
    assert at.text_input(key="intervene_answer").value == " Mary Jane"


def test_encoder_ablates_but_does_not_patch():
    at = AppTest.from_file(APP, default_timeout=180)
    at.run()
    state = dict(model_choice="minilm", intervene_heads=[(2, 3)], intervene_clean="a b", intervene_corrupt="a c",
                 intervene_answer="b", intervene_wrong="c")
    for key, value in state.items():
        at.session_state[key] = value
    at.switch_page(PAGE).run()
    assert not at.exception
    assert not at.metric  # no next-token numbers for an encoder
    assert any("encoder" in i.value for i in at.info)
    assert {c.proto.id.rsplit("-", 1)[1] for c in at.get("plotly_chart")} == {"intervene_map_before", "intervene_map_after"}
    at.session_state["intervene_tab"] = "Patch"
    at.run()
    assert not at.exception
    assert any("not a causal language model" in e.value for e in at.error)
    at.session_state["intervene_tab"] = "Ablate"
    at.run()  # back on Ablate: the heads chosen there are still chosen
    assert [tuple(h) for h in at.multiselect(key="intervene_heads").value] == [(2, 3)]


def test_greedy_continuation_equals_generate_with_the_hook(smollm2):
    ids = smollm2.encode_input("The capital of France is").token_ids
    heads = ((17, 3), (18, 6))
    ids_t = torch.tensor([ids])
    # Reference: transformers' own greedy generate (KV cache, one token per step), with the heads zeroed by the
    # engine's hook for every forward it makes.
    with intervening(ablation_intervention(smollm2, ids_t, heads, "zero")):
        reference = smollm2.hf.generate(ids_t, max_new_tokens=6, do_sample=False)[0, len(ids):].tolist()
    assert ui_iv.greedy_continuation(smollm2, ids, 6, heads, "zero") == reference
    plain = smollm2.hf.generate(ids_t, max_new_tokens=6, do_sample=False)[0, len(ids):].tolist()
    assert ui_iv.greedy_continuation(smollm2, ids, 6) == plain


def test_parse_heads_is_strict():
    assert ui_iv.parse_heads("17.3, 18.6,17.3") == ([(17, 3), (18, 6)], [])
    assert ui_iv.parse_heads("²,١٢.3,1.2.3,-1.2,,4.5") == ([(4, 5)], ["²", "١٢.3", "1.2.3", "-1.2"])
