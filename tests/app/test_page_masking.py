"""AppTest of the Masking page with the real models: the masks, one head under both, and the flip's effect."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from apptest_helpers import assert_clean, chart_data, decode, open_page
from bounds import EPS32, attention_bound, model_bound

from explorer.analysis.mask_effects import final_state_changes, next_token_changes
from explorer.capture.tokens import display_label

pytestmark = pytest.mark.usefixtures("navigation_like_a_server")

TEXT = "The cat sat on the mat because it was tired."
PAGE = "pages/masking.py"


def _metric(at, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


# The page traces the text in its own script thread, whose float32 sums may run in another order than ours: its
# numbers are within the float32 bounds of our traces' (see bounds), not bit for bit.


def test_smollm2_masks_heads_and_next_token_changes(smollm2):
    at = open_page(PAGE, model_choice="smollm2", text=TEXT, mask="bidirectional")  # the sidebar mask is ignored
    at.number_input(key="masking_layer").set_value(12).run()
    at.number_input(key="masking_head").set_value(4).run()
    assert_clean(at)
    causal, bidi = smollm2.trace(TEXT, mask="causal"), smollm2.trace(TEXT, mask="bidirectional")
    n = causal.n_tokens
    assert any("what-if" in w.value and "trained with the **causal** mask" in w.value for w in at.warning)

    z = decode(chart_data(at, "masking_matrix_causal")[0]["z"]).reshape(n, n)
    np.testing.assert_array_equal(z, np.tril(np.ones((n, n))))
    assert chart_data(at, "masking_matrix_causal")[0]["text"][0][1] == "\u2212\u221e"
    assert decode(chart_data(at, "masking_matrix_bidirectional")[0]["z"]).min() == 1

    shown_c = decode(chart_data(at, "masking_attention_causal")[0]["z"]).reshape(n, n)
    shown_b = decode(chart_data(at, "masking_attention_bidirectional")[0]["z"]).reshape(n, n)
    np.testing.assert_allclose(shown_c, causal.attention(12, 4).numpy(), atol=attention_bound(causal, 12), rtol=0)
    np.testing.assert_allclose(shown_b, bidi.attention(12, 4).numpy(), atol=attention_bound(bidi, 12), rtol=0)
    difference = chart_data(at, "masking_difference")[0]
    # the page's own maps, subtracted and sent as float32: one rounding of a value ≤ 1
    np.testing.assert_allclose(decode(difference["z"]).reshape(n, n), shown_b - shown_c, atol=EPS32, rtol=0)
    assert difference["zmin"] == -difference["zmax"]  # diverging, centred on 0

    expected = next_token_changes(smollm2, causal, bidi)
    table = at.dataframe[0].value
    # Both logit rows within dz of ours: KL moves by ≤ 2·dz·(Σ p_c·|log p_c − log p_b + 1| + 1) (see
    # test_mask_effects); the chart sends float32.
    log_c, log_b = (torch.log_softmax(t.logits.double(), -1) for t in (causal, bidi))
    dz = model_bound(smollm2, float(max(causal.logits.abs().max(), bidi.logits.abs().max())))
    kl_bound = 2 * dz * ((log_c.exp() * (log_c - log_b + 1).abs()).sum(-1).numpy() + 1)
    np.testing.assert_array_less(np.abs(table["KL (nats)"] - expected["kl"]), kl_bound)
    assert list(table["top (bidirectional)"]) == [display_label(t) for t in expected["top_bidirectional"]]
    assert list(table["top (causal)"]) == [display_label(t) for t in expected["top_causal"]]
    charted = decode(chart_data(at, "masking_kl")[0]["y"])
    np.testing.assert_array_less(np.abs(charted - expected["kl"]), kl_bound + EPS32 * expected["kl"])
    mean_kl = float(_metric(at, "Mean KL (nats)"))  # shown to 3 places
    assert mean_kl == pytest.approx(expected["kl"].mean(), abs=0.0005 + kl_bound.mean())
    assert _metric(at, "Top token changed") == f"{expected['top_changed'].mean():.0%}"


def test_minilm_shows_the_cosine_change_of_final_states(minilm):
    at = open_page(PAGE, model_choice="minilm", text=TEXT)
    causal, bidi = minilm.trace(TEXT, mask="causal"), minilm.trace(TEXT, mask="bidirectional")
    assert any("trained with the **bidirectional** mask" in w.value for w in at.warning)
    expected = final_state_changes(causal, bidi)
    # each final state within δ = √d·dh of ours (see test_mask_effects): a cosine moves by ≤ 2·δ/‖h‖ per state
    states = (causal.final_hidden, bidi.final_hidden)
    dh = model_bound(minilm, max(float(h.abs().max()) for h in states))
    delta = math.sqrt(causal.final_hidden.shape[-1]) * dh
    bound = 2 * 2 * delta / min(float(h.norm(dim=-1).min()) for h in states)
    np.testing.assert_allclose(at.dataframe[0].value["1 − cosine"], expected["cosine_change"], atol=bound, rtol=0)
    np.testing.assert_allclose(decode(chart_data(at, "masking_cosine")[0]["y"]), expected["cosine_change"],
                               atol=bound, rtol=EPS32)  # float32 on the wire
    mean_change = float(_metric(at, "Mean 1 − cosine"))  # shown to 3 places
    assert mean_change == pytest.approx(expected["cosine_change"].mean(), abs=0.0005 + bound)
    assert not [c for c in at.get("plotly_chart") if c.proto.id.endswith("masking_kl")]


def test_long_text_stays_within_the_payload_budget(smollm2):
    text = " ".join(f"word{i} is followed by another" for i in range(400))
    at = open_page(PAGE, model_choice="smollm2", text=text)
    sizes = {c.proto.id.rsplit("-", 1)[-1]: len(c.proto.spec) for c in at.get("plotly_chart")}
    assert max(sizes.values()) <= 1_500_000, sizes
    assert len(at.dataframe[0].value) == 1024
    mask = decode(chart_data(at, "masking_matrix_causal")[0]["z"])
    assert mask.size == 16 * 16  # only the first tokens: the pattern, legible


def test_the_models_own_mask_reuses_the_sidebar_trace():
    """The page asks for "causal" by name; for SmolLM2 that is the sidebar's trace (mask=None), not a second one."""
    from explorer.ui import resources

    text = "A fresh sentence for the masking cache test."
    at = open_page("pages/home.py", model_choice="smollm2", text=text)  # Home traces the sidebar's text first
    at.switch_page(PAGE).run()
    assert_clean(at)
    cache = resources._trace_cache()
    key = lambda mask: resources.make_trace_key("smollm2", "cpu", "float32", text, mask)  # noqa: E731
    assert key(None) in cache
    assert key("bidirectional") in cache
    assert key("causal") not in cache


def test_window_hidden_pairs_counts_what_the_window_cuts():
    """Against the engine's own masks: pairs the causal mask allows and the sliding window does not."""
    from explorer.capture.recorder import causal_allowed, sliding_allowed
    from explorer.figures.masking import window_hidden_pairs

    for n, window in [(5, 8), (8, 8), (9, 8), (40, 7), (600, 512)]:
        cut = causal_allowed(n, n) & ~sliding_allowed(n, n, window)
        assert window_hidden_pairs(n, window) == int(cut.sum())


def test_gemma3_shows_its_sliding_window_against_a_global_layer(gemma3):
    at = open_page(PAGE, model_choice="gemma3", text=TEXT)
    assert_clean(at)
    own = gemma3.trace(TEXT)
    local = [r.layer for r in own.records if r.mask_kind == "sliding"]
    full = [r.layer for r in own.records if r.mask_kind != "sliding"]
    assert full == [5, 11, 17] and own.records[local[0]].window == 512
    m = min(own.n_tokens, 16)
    for layer in (local[0], full[0]):
        z = decode(chart_data(at, f"masking_sliding_L{layer}")[0]["z"]).reshape(m, m)
        np.testing.assert_array_equal(z, own.allowed(layer)[:m, :m].numpy())
    # a short text: the window reaches key 0 from every query, so the masks coincide, and the page says so
    assert any("no more than the window of 512" in c.value and "the two masks are the same" in c.value
               for c in at.caption)
    assert any(r"i - 512 < j \le i" in f.value and r"\text{otherwise}" in f.value for f in at.latex)
    sketch = chart_data(at, "masking_window_sketch")
    band = sketch[1]  # query i keeps keys i − 511 … i: the band's left edge leaves key 0 at query 511
    assert list(band["x"]) == [0, 0, 576 - 512, 575, 0] and list(band["y"]) == [0, 511, 575, 575, 0]
