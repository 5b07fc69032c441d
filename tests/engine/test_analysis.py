"""Head statistics, logit lens, rollout, geometry and export on the real embedded models, checked against
transformers' own eager attention and hidden states (an independent reference), plus the structure SmolLM2 has.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import explorer

from explorer.analysis import export, stats
from explorer.errors import ExplorerError
from explorer.figures.analysis import layer_head_heatmap
from explorer.analysis.geometry import query_plane, score_vs_distance
from explorer.analysis.lens import logit_lens
from explorer.analysis.rollout import trace_rollout

from bounds import attention_bound, entropy_bound, f32_dot_bound, model_bound

pytestmark = pytest.mark.numeric

TEXT = ("When Mary and John went to the store, John gave a drink to Mary. Then they walked home together along the "
        "river, talking about the weather and their plans for the summer holidays.")


def eager_attentions(reference, ids: list[int]) -> list[np.ndarray]:
    """(H, n, n) per layer from transformers' eager attention."""
    with torch.inference_mode():
        out = reference(input_ids=torch.tensor([ids]), output_attentions=True)
    return [a[0].double().numpy() for a in out.attentions]


@pytest.fixture(scope="module")
def smollm2_stats(smollm2):
    return explorer.head_stats(smollm2, TEXT)


@pytest.fixture(scope="module")
def probe(smollm2):
    return stats.induction_probe(smollm2)


# ---- the probe ----------------------------------------------------------------------------------------------------
def test_probe_is_deterministic_random_and_repeated(smollm2, probe):
    again = stats.induction_probe(smollm2)
    other = stats.induction_probe(smollm2, seed=1)
    ids = probe.encoded.token_ids
    assert ids == again.encoded.token_ids and ids != other.encoded.token_ids
    assert probe.start == 0 and len(ids) == 100  # SmolLM2's tokenizer adds no BOS
    first, second = ids[:50], ids[50:]
    assert first == second and len(set(first)) == 50
    assert not set(ids) & set(smollm2.tokenizer._hf.all_special_ids)  # the raw tokenizer: the reference
    assert all(1000 <= i < 20000 for i in ids)


def test_probe_is_a_real_induction_task_for_smollm2(smollm2, probe):
    """Random tokens are unpredictable (loss ≈ ln vocab or worse); their repeat is easy for a model with induction."""
    trace = smollm2.trace_ids(probe.encoded, keep_inputs=False)
    ids = torch.tensor(probe.encoded.token_ids)
    nll = -torch.log_softmax(trace.logits[:-1], -1)[torch.arange(99), ids[1:]]
    assert nll[:49].mean() > 8
    assert nll[50:].mean() < 4


# ---- statistics against the eager reference --------------------------------------------------------------------------
def test_text_statistics_match_eager_attention(smollm2, smollm2_eager, smollm2_stats):
    trace = smollm2.trace(TEXT, keep_inputs=False)
    n = trace.n_tokens
    for layer, maps in enumerate(eager_attentions(smollm2_eager, trace.token_ids)):
        rows = smollm2_stats[smollm2_stats.layer == layer].sort_values("head")
        # Each p is off by at most p·attention_bound (relative: see bounds.probs_bound). A mean of
        # probabilities inherits that, plus n roundings of its float32 sum.
        p_bound = attention_bound(trace, layer)
        mean_bound = p_bound + f32_dot_bound(n, 1.0)
        h_bound = entropy_bound(p_bound, n)
        for head, a in enumerate(maps):
            row = rows.iloc[head]
            plogp = np.where(a > 0, a * np.log(np.where(a > 0, a, 1)), 0)
            assert row["entropy"] == pytest.approx(-plogp.sum(-1).mean(), abs=h_bound)
            assert row["previous_token"] == pytest.approx(np.mean([a[i, i - 1] for i in range(1, n)]), abs=mean_bound)
            assert row["first_token"] == pytest.approx(a[1:, 0].mean(), abs=mean_bound)
            assert row["self"] == pytest.approx(np.trace(a) / n, abs=mean_bound)


def test_induction_scores_match_eager_attention(smollm2, smollm2_eager, smollm2_stats, probe):
    trace = smollm2.trace_ids(probe.encoded, keep_inputs=False)
    maps = eager_attentions(smollm2_eager, probe.encoded.token_ids)
    expected = np.array([[np.mean([a[h, i, i - 49] for i in range(50, 100)]) for h in range(a.shape[0])] for a in maps])
    got = smollm2_stats["induction"].to_numpy().reshape(expected.shape)
    for layer in range(trace.n_layers):  # a mean of 50 probabilities: theirs plus 50 roundings
        bound = attention_bound(trace, layer) + f32_dot_bound(50, 1.0)
        np.testing.assert_allclose(got[layer], expected[layer], atol=bound, rtol=0, err_msg=f"layer {layer}")


def test_text_none_measures_the_probe(smollm2):
    frame = explorer.head_stats(smollm2, period=10)
    probe = stats.induction_probe(smollm2, period=10)
    trace = smollm2.trace_ids(probe.encoded, keep_inputs=False)
    bound = attention_bound(trace, 29) + f32_dot_bound(trace.n_tokens, 1.0)  # means of one layer's probabilities
    np.testing.assert_allclose(frame["self"].to_numpy()[-9:], stats.self_attention(trace.attentions(29)).numpy(),
                               atol=bound, rtol=0)
    np.testing.assert_allclose(frame["induction"].to_numpy()[-9:], stats.induction(trace.attentions(29), 10).numpy(),
                               atol=bound, rtol=0)


# ---- the structure SmolLM2 has (the README's worked example) -----------------------------------------
def test_smollm2_has_strong_induction_heads_in_upper_middle_layers(smollm2_stats):
    best = smollm2_stats.sort_values("induction", ascending=False).iloc[0]
    assert best["induction"] > 0.5
    assert 15 <= best["layer"] <= 20  # of 30 layers
    strong = smollm2_stats[smollm2_stats.induction > 0.5]
    assert set(strong.layer) <= set(range(15, 25)) and len(strong) >= 3
    assert smollm2_stats[smollm2_stats.layer < 10].induction.max() < 0.2  # early layers do not do it


def test_smollm2_has_previous_token_heads(smollm2_stats):
    prev = smollm2_stats[smollm2_stats.previous_token > 0.6]
    assert len(prev) >= 3
    assert prev.previous_token.max() > 0.7


def test_smollm2_later_layers_sink_about_half_their_attention_into_the_first_token(smollm2_stats):
    later = smollm2_stats[smollm2_stats.layer >= 15].first_token.mean()
    first_layers = smollm2_stats[smollm2_stats.layer <= 1].first_token.mean()
    assert 0.4 < later < 0.75
    assert first_layers < 0.15


def test_minilm_encoder_probe_wraps_cls_and_sep(minilm):
    probe = stats.induction_probe(minilm, period=20)
    tok = minilm.tokenizer._hf  # the raw tokenizer: the reference
    assert probe.start == 1 and probe.encoded.token_ids[0] == tok.cls_token_id
    assert probe.encoded.token_ids[-1] == tok.sep_token_id
    frame = explorer.head_stats(minilm, "The cat sat on the mat.", period=20)
    assert frame.shape == (6 * 12, 7)
    assert frame[list(stats.STATISTICS[1:])].to_numpy().min() >= 0
    # means of probabilities: ≤ 1, but p = exp(s − lse) may round above 1 by the maps' own error
    traces = (minilm.trace("The cat sat on the mat.", keep_inputs=False), minilm.trace_ids(probe.encoded))
    slack = max(attention_bound(t, layer) for t in traces for layer in range(t.n_layers))
    assert frame[list(stats.STATISTICS[1:])].to_numpy().max() <= 1 + slack


# ---- logit lens ---------------------------------------------------------------------------------------------------
def test_logit_lens_last_layer_is_the_models_own_prediction(smollm2, smollm2_eager):
    text = "The capital of France is"
    trace = smollm2.trace(text)
    lens = logit_lens(smollm2, trace, top_k=3)
    with torch.inference_mode():
        ref = smollm2_eager(input_ids=torch.tensor([trace.token_ids]), output_hidden_states=True)
    probs = torch.softmax(ref.logits[0].float(), -1)
    top = probs.topk(3, -1)
    # The eager model's logits differ from ours by the rounding of the whole model; a softmax moves by
    # p·|Δz − Δlse| ≤ 2·max|Δz|.
    bound = 2 * model_bound(smollm2, float(ref.logits.abs().max()))
    np.testing.assert_array_equal(lens.token_ids[-1], top.indices.numpy())
    np.testing.assert_allclose(lens.probs[-1], top.values.numpy(), atol=bound, rtol=0)
    assert lens.tokens[-1][-1][0] == " Paris"
    # A middle row: the eager model's residual stream after block 9, through its final norm and LM head.
    with torch.inference_mode():
        mid = torch.softmax(smollm2_eager.lm_head(smollm2_eager.model.norm(ref.hidden_states[10][0])), -1)
    np.testing.assert_array_equal(lens.token_ids[10, :, 0], mid.argmax(-1).numpy())
    np.testing.assert_allclose(lens.probs[10, :, 0], mid.max(-1).values.numpy(), atol=bound, rtol=0)
    assert lens.layer_labels[0] == "embeddings" and len(lens.layer_labels) == 31


def test_logit_lens_refuses_encoders(minilm):
    with pytest.raises(ExplorerError, match="encoder"):
        logit_lens(minilm, minilm.trace("The cat sat."))


# ---- rollout ------------------------------------------------------------------------------------------------------
def test_rollout_rows_sum_to_one_and_match_eager_reference(smollm2, smollm2_eager):
    trace = smollm2.trace("The cat sat on the mat because it was tired.")
    expected = np.eye(trace.n_tokens)
    for a in eager_attentions(smollm2_eager, trace.token_ids)[:12]:
        mixed = 0.5 * a.mean(0) + 0.5 * np.eye(trace.n_tokens)
        expected = (mixed / mixed.sum(-1, keepdims=True)) @ expected
    r = trace_rollout(trace, last_layer=11).numpy()
    # A product of row-stochastic matrices moves by at most the sum of its factors' row errors, and a row of A is off
    # by Σ_j p_j·attention_bound = attention_bound (the error of p is relative to p).
    bound = sum(attention_bound(trace, layer) for layer in range(12))
    np.testing.assert_allclose(r, expected, atol=bound, rtol=0)
    full = trace_rollout(trace).numpy()
    # float64 throughout: 30 renormalised products of n-term sums stay within ~30·n·2.2e-16 of 1
    np.testing.assert_allclose(full.sum(-1), np.ones(trace.n_tokens), atol=1e-12)
    assert (np.triu(full, 1) == 0).all()  # causal: no flow from later tokens (products of lower-triangular maps)


# ---- geometry on a real head --------------------------------------------------------------------------------------
def test_highest_score_key_is_the_attention_argmax(smollm2):
    trace = smollm2.trace("The cat sat on the mat because it was tired.")
    layer, head, query = 18, 6, trace.n_tokens - 1
    q, k = trace.q(layer, head), trace.k(layer, head)
    result = score_vs_distance(q, k, query, trace.scale(layer), trace.allowed(layer)[query])
    assert result.top_score_key == int(trace.attention(layer, head)[query].argmax())
    plane = query_plane(q, k, query)
    scores = (k @ q[query]).numpy()  # float32, against the plane's float64: one dot product of head_dim terms
    bound = f32_dot_bound(trace.head_dim, float(np.abs(scores).max()))
    np.testing.assert_allclose(plane.keys[:, 0] * q[query].norm().item(), scores, atol=bound, rtol=0)


# ---- export round trips -------------------------------------------------------------------------------------------
def test_npz_round_trip_gives_the_same_maps(smollm2):
    trace = smollm2.trace("The cat sat on the mat.")
    maps = {"attention_L3_H1": trace.attention(3, 1).numpy(), "rollout_to_L29": trace_rollout(trace).numpy()}
    arrays = export.read_trace_npz(export.trace_npz(trace, maps))
    for name, matrix in export.npz_maps(arrays).items():
        np.testing.assert_array_equal(matrix, maps[name])
    assert set(export.npz_maps(arrays)) == set(maps)
    assert arrays["tokens"].tolist() == trace.tokens and arrays["token_ids"].tolist() == trace.token_ids
    assert arrays["q"].shape == (30, 9, trace.n_tokens, 64) and arrays["k"].shape == (30, 3, trace.n_tokens, 64)
    np.testing.assert_array_equal(arrays["q"][7, 2], trace.q(7, 2).numpy())
    np.testing.assert_array_equal(arrays["v"][7, 0], trace.v(7, 1).numpy())  # heads 0–2 share KV head 0
    assert str(arrays["model"]) == "smollm2" and str(arrays["mask"]) == "causal"
    # The saved q/k/lse rebuild the saved map as the engine does.
    scores = arrays["q"][3, 1] @ arrays["k"][3, 0].T * arrays["scale"][3]
    scores = np.where(np.tril(np.ones_like(scores, dtype=bool)), scores, -np.inf)
    # The same q, k and lse, but numpy's matmul sums the scores in another order than torch's (and another again on
    # another machine): the map agrees to the float32 bound of the scores, not bit for bit.
    np.testing.assert_allclose(np.exp(scores - arrays["lse"][3, 1][:, None]), maps["attention_L3_H1"],
                               atol=attention_bound(trace, 3), rtol=0)


def test_head_map_csv_of_a_real_head_round_trips(smollm2):
    trace = smollm2.trace("The cat sat on the mat.")
    matrix = trace.attention(17, 3).numpy()
    back = export.read_head_map_csv(export.head_map_csv(matrix, trace.tokens))
    np.testing.assert_array_equal(back.to_numpy(dtype=np.float32), matrix)


def test_figures_export_as_standalone_html_and_png():
    fig = layer_head_heatmap(np.arange(6.0).reshape(3, 2), "test", "value")
    html = export.figure_html(fig)
    assert html.lower().startswith("<!doctype html>") and "plotly.js" in html.lower() and '"type":"heatmap"' in html.replace(" ", "")
    ok, why = export.png_export_status()
    if not ok:
        pytest.skip(why)
    png = export.figure_png(fig, scale=1)
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 1000
